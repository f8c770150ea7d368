"""Decoding of OTLP trace exports (ExportTraceServiceRequest) as written to S3.

Accepts what real exporters write: OTLP/JSON with hex (any case) or base64 ids,
enums as integers or names, int64 as strings or numbers, every AnyValue type,
several requests in one object (JSON Lines or concatenated documents), and
gzip or zstd compression detected by magic bytes rather than by the key suffix.
OTLP/protobuf objects (``.binpb``) are decoded with the opentelemetry-proto
messages.

The output is a flat :class:`DecodedSpan` per span, with attributes turned into
plain JSON values. Normalisation to typed cost columns happens in
:mod:`spancost.normalize`.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from spancost.errors import BadExport

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
DEFAULT_MAX_DECOMPRESSED = 1 << 30  # 1 GiB: a bigger expansion is treated as a gzip bomb

SPAN_KINDS = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
STATUS_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


# --- the OTLP/JSON shape, as msgspec structs (unknown fields are ignored) ---------------


class _AnyValue(msgspec.Struct, rename="camel", omit_defaults=True):
    string_value: str | None = None
    bool_value: bool | None = None
    int_value: int | str | None = None
    double_value: float | str | None = None
    bytes_value: str | None = None
    array_value: _ArrayValue | None = None
    kvlist_value: _KvList | None = None


class _KeyValue(msgspec.Struct, rename="camel"):
    key: str = ""
    value: _AnyValue | None = None


class _ArrayValue(msgspec.Struct, rename="camel"):
    values: list[_AnyValue] = []


class _KvList(msgspec.Struct, rename="camel"):
    values: list[_KeyValue] = []


class _Status(msgspec.Struct, rename="camel"):
    message: str | None = None
    code: int | str | None = None


class _Event(msgspec.Struct, rename="camel"):
    time_unix_nano: int | str | None = None
    name: str = ""
    attributes: list[_KeyValue] = []
    dropped_attributes_count: int = 0


class _Link(msgspec.Struct, rename="camel"):
    trace_id: str = ""
    span_id: str = ""
    trace_state: str = ""
    attributes: list[_KeyValue] = []
    flags: int | None = None


class _Span(msgspec.Struct, rename="camel"):
    trace_id: str = ""
    span_id: str = ""
    trace_state: str = ""
    parent_span_id: str = ""
    flags: int | None = None
    name: str = ""
    kind: int | str | None = None
    start_time_unix_nano: int | str | None = None
    end_time_unix_nano: int | str | None = None
    attributes: list[_KeyValue] = []
    events: list[_Event] = []
    links: list[_Link] = []
    status: _Status | None = None


class _Scope(msgspec.Struct, rename="camel"):
    name: str = ""
    version: str = ""
    attributes: list[_KeyValue] = []


class _ScopeSpans(msgspec.Struct, rename="camel"):
    scope: _Scope | None = None
    spans: list[_Span] = []
    schema_url: str = ""


class _Resource(msgspec.Struct, rename="camel"):
    attributes: list[_KeyValue] = []


class _ResourceSpans(msgspec.Struct, rename="camel"):
    resource: _Resource | None = None
    scope_spans: list[_ScopeSpans] = []
    schema_url: str = ""


class _Request(msgspec.Struct, rename="camel"):
    resource_spans: list[_ResourceSpans] = []


_DECODER = msgspec.json.Decoder(_Request)


# --- what callers get ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecodedSpan:
    """One span with its resource and scope, ids as lowercase hex (or the raw text if bad)."""

    trace_id: str | None
    span_id: str | None
    parent_span_id: str | None
    name: str
    kind: int
    start_time_unix_nano: int | None
    end_time_unix_nano: int | None
    status_code: int
    status_message: str | None
    attributes: dict[str, Any]
    resource_attributes: dict[str, Any]
    scope_name: str | None
    scope_version: str | None
    scope_attributes: dict[str, Any]
    events: list[dict[str, Any]]
    links: list[dict[str, Any]]
    problems: tuple[tuple[str, str], ...]  # (field, message) found while decoding this span


# --- decompression ---------------------------------------------------------------------


def decompress(data: bytes, *, where: str, limit: int = DEFAULT_MAX_DECOMPRESSED) -> bytes:
    """Undo gzip or zstd, detected by magic bytes; other bytes are returned unchanged."""
    if data.startswith(GZIP_MAGIC):
        out = bytearray()
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
                while chunk := stream.read(1 << 20):
                    out += chunk
                    if len(out) > limit:
                        raise BadExport(
                            f"{where}: gzip expands past {limit} bytes (possible gzip bomb)"
                        )
        except (OSError, EOFError, zlib.error) as exc:
            raise BadExport(f"{where}: corrupt gzip data: {exc}") from exc
        return bytes(out)
    if data.startswith(ZSTD_MAGIC):
        import zstandard

        try:
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
            out = bytearray()
            while chunk := reader.read(1 << 20):
                out += chunk
                if len(out) > limit:
                    raise BadExport(
                        f"{where}: zstd expands past the {limit}-byte limit (possible bomb)"
                    )
        except zstandard.ZstdError as exc:
            raise BadExport(f"{where}: corrupt zstd data: {exc}") from exc
        return bytes(out)
    return data


# --- documents ---------------------------------------------------------------------------


def split_documents(text: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, document) for JSON Lines or back-to-back JSON documents."""
    lines = text.strip().split(b"\n")
    if len(lines) > 1 and all(line.strip()[:1] in (b"{", b"") for line in lines):
        try:
            msgspec.json.decode(lines[0])
        except msgspec.DecodeError:
            pass  # the first line is not a whole document: pretty-printed documents
        else:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield number, line
            return
    yield from _scan_concatenated(text)


def _scan_concatenated(text: bytes) -> Iterator[tuple[int, bytes]]:
    """Split back-to-back JSON documents by brace depth (strings and escapes respected)."""
    depth = 0
    in_string = False
    escaped = False
    start = 0
    line = 1
    start_line = 1
    for index, byte in enumerate(text):
        if byte == 0x0A:
            line += 1
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
            continue
        if byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):
            if depth == 0:
                start = index
                start_line = line
            depth += 1
        elif byte in (0x7D, 0x5D):
            depth -= 1
            if depth == 0:
                yield start_line, text[start : index + 1]
    if depth != 0 or in_string:
        yield start_line, text[start:]  # truncated tail: the decoder reports where


# --- values ----------------------------------------------------------------------------


def any_value(value: _AnyValue | None) -> Any:
    """Turn an OTLP AnyValue into a plain JSON value."""
    if value is None:
        return None
    if value.string_value is not None:
        return value.string_value
    if value.bool_value is not None:
        return value.bool_value
    if value.int_value is not None:
        return int(value.int_value)
    if value.double_value is not None:
        return float(value.double_value)
    if value.bytes_value is not None:
        return value.bytes_value  # kept as its base64 text
    if value.array_value is not None:
        return [any_value(item) for item in value.array_value.values]
    if value.kvlist_value is not None:
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return None


def attributes(items: list[_KeyValue]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in items}


def normalize_id(raw: str, size: int) -> str | None:
    """Lowercase hex for a ``size``-byte id given as hex (any case) or base64; None if empty."""
    if not raw:
        return None
    if len(raw) == size * 2:
        try:
            bytes.fromhex(raw)
        except ValueError:
            pass
        else:
            return raw.lower()
    try:
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) == size:
        return decoded.hex()
    raise ValueError(f"not a {size}-byte id in hex or base64: {raw!r}")


def _enum(value: int | str | None, names: dict[str, int], field: str) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    if value in names:
        return names[value]
    if value.isdigit():
        return int(value)
    raise ValueError(f"unknown {field} {value!r}")


def _nanos(value: int | str | None) -> int | None:
    if value is None or value == "" or value == 0 or value == "0":
        return None
    return int(value)


def _span(
    span: _Span,
    resource_attrs: dict[str, Any],
    scope: _Scope | None,
    scope_attrs: dict[str, Any],
) -> DecodedSpan:
    problems: list[tuple[str, str]] = []

    def ident(raw: str, size: int, field: str) -> str | None:
        try:
            return normalize_id(raw, size)
        except ValueError as exc:
            problems.append((field, str(exc)))
            return raw

    def enum(value: int | str | None, names: dict[str, int], field: str) -> int:
        try:
            return _enum(value, names, field)
        except ValueError as exc:
            problems.append((field, str(exc)))
            return 0

    def nanos(value: int | str | None, field: str) -> int | None:
        try:
            return _nanos(value)
        except ValueError:
            problems.append((field, f"not an integer: {value!r}"))
            return None

    try:
        attrs = attributes(span.attributes)
    except (ValueError, TypeError) as exc:
        problems.append(("attributes", f"bad attribute value: {exc}"))
        attrs = {}
    status = span.status
    return DecodedSpan(
        trace_id=ident(span.trace_id, 16, "traceId"),
        span_id=ident(span.span_id, 8, "spanId"),
        parent_span_id=ident(span.parent_span_id, 8, "parentSpanId"),
        name=span.name,
        kind=enum(span.kind, SPAN_KINDS, "kind"),
        start_time_unix_nano=nanos(span.start_time_unix_nano, "startTimeUnixNano"),
        end_time_unix_nano=nanos(span.end_time_unix_nano, "endTimeUnixNano"),
        status_code=enum(status.code if status else None, STATUS_CODES, "status.code"),
        status_message=(status.message or None) if status else None,
        attributes=attrs,
        resource_attributes=resource_attrs,
        scope_name=(scope.name or None) if scope else None,
        scope_version=(scope.version or None) if scope else None,
        scope_attributes=scope_attrs,
        events=[
            {
                "name": event.name,
                "time_unix_nano": str(event.time_unix_nano or ""),
                "attributes": attributes(event.attributes),
            }
            for event in span.events
        ],
        links=[
            {
                "trace_id": link.trace_id.lower(),
                "span_id": link.span_id.lower(),
                "attributes": attributes(link.attributes),
            }
            for link in span.links
        ],
        problems=tuple(problems),
    )


def _spans_of(request: _Request) -> Iterator[DecodedSpan]:
    for resource_spans in request.resource_spans:
        resource_attrs = (
            attributes(resource_spans.resource.attributes) if resource_spans.resource else {}
        )
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            scope_attrs = attributes(scope.attributes) if scope else {}
            for span in scope_spans.spans:
                yield _span(span, resource_attrs, scope, scope_attrs)


def decode_json(text: bytes, *, where: str) -> list[DecodedSpan]:
    """Decode OTLP/JSON: one document, JSON Lines, or documents back to back."""
    if not text.strip():
        raise BadExport(f"{where}: empty object, no trace export in it")
    try:
        return list(_spans_of(_DECODER.decode(text)))
    except msgspec.ValidationError as exc:
        raise BadExport(f"{where}: not a trace export: {exc}") from exc
    except msgspec.DecodeError as exc:
        if "trailing characters" not in str(exc):
            raise BadExport(f"{where}: invalid JSON: {exc}") from exc
    spans: list[DecodedSpan] = []
    for line, document in split_documents(text):
        try:
            request = _DECODER.decode(document)
        except msgspec.ValidationError as exc:
            raise BadExport(
                f"{where}: document at line {line} is not a trace export: {exc}"
            ) from exc
        except msgspec.DecodeError as exc:
            raise BadExport(f"{where}: invalid JSON in document at line {line}: {exc}") from exc
        spans.extend(_spans_of(request))
    return spans


def decode_protobuf(data: bytes, *, where: str) -> list[DecodedSpan]:
    """Decode OTLP/protobuf (one ExportTraceServiceRequest) via its JSON mapping."""
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    message = ExportTraceServiceRequest()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise BadExport(f"{where}: invalid OTLP protobuf: {exc}") from exc
    as_json = json_format.MessageToJson(message, indent=None).encode()
    return decode_json(as_json, where=where)


def decode_yaml(data: bytes, *, where: str) -> list[DecodedSpan]:
    """Decode the YAML form of a trace export (the collector's pdatatest golden files)."""
    import yaml  # type: ignore[import-untyped]

    try:
        document = yaml.safe_load(data)
        request = msgspec.convert(document, _Request)
    except yaml.YAMLError as exc:
        raise BadExport(f"{where}: invalid YAML: {exc}") from exc
    except msgspec.ValidationError as exc:
        raise BadExport(f"{where}: not a trace export: {exc}") from exc
    return list(_spans_of(request))


def decode_object(
    key: str, data: bytes, *, limit: int = DEFAULT_MAX_DECOMPRESSED
) -> list[DecodedSpan]:
    """Decode one S3 object of trace exports; raises BadExport naming the object."""
    payload = decompress(data, where=key, limit=limit)
    head = payload.lstrip()[:1]
    base = key.removesuffix(".gz").removesuffix(".zst")
    if base.endswith((".yaml", ".yml")):
        return decode_yaml(payload, where=key)
    if base.endswith(".binpb") or (head not in (b"{", b"[") and not base.endswith(".json")):
        return decode_protobuf(payload, where=key)
    if head == b"[":
        raise BadExport(
            f"{key}: top-level JSON array; expected an ExportTraceServiceRequest object"
        )
    return decode_json(payload, where=key)
