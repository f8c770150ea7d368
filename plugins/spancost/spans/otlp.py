"""Decoding of OTLP trace exports (ExportTraceServiceRequest) as written to S3.

Accepts what real exporters write: OTLP/JSON with hex (any case) or base64 ids,
enums as integers or names, int64 as strings or numbers, every AnyValue type,
several requests in one object (JSON Lines or concatenated documents), and
gzip or zstd compression detected by magic bytes rather than by the key suffix.
OTLP/protobuf objects (``.binpb``) are decoded with the opentelemetry-proto
messages.

The output is the export requests as typed msgspec structs (not tracked by the
cyclic garbage collector: they never form cycles, and tracking millions of them
tripled decoding time). :mod:`spancost.spans.normalize` walks them once, straight into
rows: ids, enums and AnyValues are converted there, with the helpers below.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import math
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from spancost.errors import BadExport

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
DEFAULT_MAX_DECOMPRESSED = 1 << 30  # 1 GiB: a bigger expansion is treated as a gzip bomb
DEFAULT_MAX_COMPRESSION_RATIO = 100  # real OTLP JSON compresses 10-30x; zeros compress 1000x
RATIO_FLOOR = 16 << 20  # a small object may always expand to this, whatever its ratio
DEFAULT_MAX_ATTRIBUTE_DEPTH = 32  # AnyValue levels (arrays and kvlists) in one attribute
MAX_ATTRIBUTE_DEPTH = 100  # the setting's ceiling: deeper JSON is cut before decoding
# JSON containers nested deeper than this are cut before decoding (4 JSON levels per
# AnyValue level, plus the export's own ~10): msgspec, like Python, recurses per level.
MAX_JSON_DEPTH = 4 * MAX_ATTRIBUTE_DEPTH + 32
REPLACEMENT = "\ufffd".encode()

# What a change to a value is counted as (on the manifest row, in ``changes``).
INVALID_UTF8 = "invalid_utf8"
NON_FINITE_DOUBLE = "non_finite_double"

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


class AnyValue(msgspec.Struct, rename="camel", omit_defaults=True, gc=False):
    string_value: str | None = None
    bool_value: bool | None = None
    int_value: int | str | None = None
    double_value: float | str | None = None
    bytes_value: str | None = None
    array_value: ArrayValue | None = None
    kvlist_value: KvList | None = None


class KeyValue(msgspec.Struct, rename="camel", gc=False):
    key: str = ""
    value: AnyValue | None = None


class ArrayValue(msgspec.Struct, rename="camel", gc=False):
    values: list[AnyValue] = []


class KvList(msgspec.Struct, rename="camel", gc=False):
    values: list[KeyValue] = []


class Status(msgspec.Struct, rename="camel", gc=False):
    message: str | None = None
    code: int | str | None = None


class Event(msgspec.Struct, rename="camel", gc=False):
    time_unix_nano: int | str | None = None
    name: str = ""
    attributes: list[KeyValue] = []
    dropped_attributes_count: int = 0


class Link(msgspec.Struct, rename="camel", gc=False):
    trace_id: str = ""
    span_id: str = ""
    trace_state: str = ""
    attributes: list[KeyValue] = []
    flags: int | None = None


class Span(msgspec.Struct, rename="camel", gc=False):
    trace_id: str = ""
    span_id: str = ""
    trace_state: str = ""
    parent_span_id: str = ""
    flags: int | None = None
    name: str = ""
    kind: int | str | None = None
    start_time_unix_nano: int | str | None = None
    end_time_unix_nano: int | str | None = None
    attributes: list[KeyValue] = []
    events: list[Event] = []
    links: list[Link] = []
    status: Status | None = None


class Scope(msgspec.Struct, rename="camel", gc=False):
    name: str = ""
    version: str = ""
    attributes: list[KeyValue] = []


class ScopeSpans(msgspec.Struct, rename="camel", gc=False):
    scope: Scope | None = None
    spans: list[Span] = []
    schema_url: str = ""


class Resource(msgspec.Struct, rename="camel", gc=False):
    attributes: list[KeyValue] = []


class ResourceSpans(msgspec.Struct, rename="camel", gc=False):
    resource: Resource | None = None
    scope_spans: list[ScopeSpans] = []
    schema_url: str = ""


class ExportRequest(msgspec.Struct, rename="camel", gc=False):
    resource_spans: list[ResourceSpans] = []


_DECODER = msgspec.json.Decoder(ExportRequest)


# --- decompression ---------------------------------------------------------------------


def expansion_limit(
    compressed_bytes: int,
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
    max_ratio: int = DEFAULT_MAX_COMPRESSION_RATIO,
) -> int:
    """How far an object of ``compressed_bytes`` may inflate before it counts as a bomb.

    Both limits are applied while inflating, so memory stays bounded: at most
    ``max_decompressed`` bytes, and at most ``max_ratio`` times the compressed
    size (but always :data:`RATIO_FLOOR`). ``max_ratio`` 0 turns the ratio off.
    """
    if max_ratio <= 0:
        return max_decompressed
    return min(max_decompressed, max(RATIO_FLOOR, compressed_bytes * max_ratio))


def decompress(data: bytes, *, where: str, limit: int = DEFAULT_MAX_DECOMPRESSED) -> bytes:
    """Undo gzip or zstd, detected by magic bytes; other bytes are returned unchanged.

    gzip goes through ISA-L (the ``isal`` package, when installed) first: it
    inflates span exports about twice as fast as zlib. Whatever ISA-L does not
    finish cleanly (an error, a member with header flags, the limit) is
    inflated again by zlib, which says what is wrong exactly as without ISA-L.
    """
    if _ISAL is not None and data.startswith(GZIP_MAGIC):
        inflated = _isal_inflate(data, limit)
        if inflated is not None:
            return inflated
    return b"".join(decompress_stream([data], where=where, limit=limit))


def _load_isal() -> Any:
    try:
        return importlib.import_module("isal.isal_zlib")
    except ImportError:  # optional: zlib gives the same bytes, slower
        return None


_ISAL = _load_isal()


def _isal_inflate(data: bytes, limit: int) -> bytes | None:
    """The gzip members of ``data`` inflated by ISA-L, or None to leave them to zlib.

    Only plain members are taken: header flags (a file name, a header CRC,
    reserved bits) and anything else ISA-L and zlib might judge differently
    give None, as do errors, a truncated stream and the expansion limit.
    """
    parts: list[bytes] = []
    total = 0
    inflater = _ISAL.decompressobj(wbits=31)
    fresh = True  # the next input starts a member
    started = False  # the current member has had input, so it must reach its end
    pending = data
    try:
        while pending:
            if fresh:
                if len(pending) < 10 or not pending.startswith(GZIP_MAGIC) or pending[3] != 0:
                    return None
                fresh = False
            started = True
            out = inflater.decompress(pending, limit - total + 1)  # past the limit: None
            pending = inflater.unconsumed_tail
            if inflater.eof:  # the next gzip member, if any, starts in unused_data
                pending = (inflater.unused_data + pending).lstrip(b"\0")  # padding
                inflater = _ISAL.decompressobj(wbits=31)
                fresh, started = True, False
            total += len(out)
            if total > limit:
                return None
            parts.append(out)
    except _ISAL.error:
        return None
    return None if started else b"".join(parts)


def decompress_stream(
    chunks: Iterable[bytes], *, where: str, limit: int = DEFAULT_MAX_DECOMPRESSED
) -> Iterator[bytes]:
    """Like :func:`decompress`, chunk by chunk, so a big object never sits whole in memory.

    gzip members and zstd frames may follow one another (both tools append
    that way); the expansion limit applies to the whole object.
    """
    stream = iter(chunks)
    first = b""
    for chunk in stream:
        first += chunk
        if len(first) >= 4:
            break
    if first.startswith(GZIP_MAGIC):
        yield from _inflate(first, stream, where=where, limit=limit)
    elif first.startswith(ZSTD_MAGIC):
        yield from _unzstd(first, stream, where=where, limit=limit)
    else:
        if first:
            yield first
        yield from stream


def _inflate(first: bytes, rest: Iterator[bytes], *, where: str, limit: int) -> Iterator[bytes]:
    inflater = zlib.decompressobj(wbits=31)
    started = False  # the current member has had input, so it must reach its end
    total = 0
    pending = first
    try:
        while True:
            while pending:
                started = True
                out = inflater.decompress(pending, 1 << 20)
                pending = inflater.unconsumed_tail
                if inflater.eof:  # the next gzip member, if any, starts in unused_data
                    pending = (inflater.unused_data + pending).lstrip(b"\0")  # padding
                    inflater = zlib.decompressobj(wbits=31)
                    started = False
                total += len(out)
                if total > limit:
                    raise BadExport(
                        f"{where}: gzip expands past {limit} bytes (possible gzip bomb; "
                        "SPANCOST_MAX_DECOMPRESSED_BYTES, SPANCOST_MAX_COMPRESSION_RATIO)",
                        error_type="DecompressionBomb",
                    )
                if out:
                    yield out
            chunk = next(rest, None)
            if chunk is None:
                break
            pending = chunk
    except zlib.error as exc:
        raise BadExport(f"{where}: corrupt gzip data: {exc}") from exc
    if started:
        raise BadExport(f"{where}: corrupt gzip data: the stream ends before the data does")


def _unzstd(first: bytes, rest: Iterator[bytes], *, where: str, limit: int) -> Iterator[bytes]:
    import zstandard

    class _Source:
        def __init__(self) -> None:
            self.buffer = first

        def read(self, size: int = -1) -> bytes:
            while len(self.buffer) < max(size, 1):
                chunk = next(rest, None)
                if chunk is None:
                    break
                self.buffer += chunk
            if size < 0:
                size = len(self.buffer)
            out, self.buffer = self.buffer[:size], self.buffer[size:]
            return out

    reader = zstandard.ZstdDecompressor().stream_reader(
        _Source(),  # type: ignore[arg-type]  # any object with read() will do
        read_across_frames=True,
    )
    total = 0
    try:
        while chunk := reader.read(1 << 20):
            total += len(chunk)
            if total > limit:
                raise BadExport(
                    f"{where}: zstd expands past {limit} bytes (possible zstd bomb; "
                    "SPANCOST_MAX_DECOMPRESSED_BYTES, SPANCOST_MAX_COMPRESSION_RATIO)",
                    error_type="DecompressionBomb",
                )
            yield chunk
    except zstandard.ZstdError as exc:
        raise BadExport(f"{where}: corrupt zstd data: {exc}") from exc


# --- documents ---------------------------------------------------------------------------


def split_documents(text: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, document) for JSON Lines or back-to-back JSON documents."""
    lines = text.strip().split(b"\n")
    if len(lines) > 1 and all(line.strip()[:1] in (b"{", b"") for line in lines):
        try:
            msgspec.json.decode(lines[0])
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            pass  # the first line is not a whole document: pretty-printed documents
        else:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield number, line
            return
    yield from _scan_concatenated(text)


_STRUCTURE = re.compile(rb'"(?:[^"\\]|\\.)*"|"|[{}\[\]]', re.DOTALL)


def _structure(text: bytes) -> Iterator[tuple[int, int]]:
    """(offset, byte) of each brace and bracket outside JSON strings, escapes respected;
    last (offset, ``"``) when a string is still open at the end of the text."""
    for match in _STRUCTURE.finditer(text):
        token = match.group()
        if token[0] != 0x22:
            yield match.start(), token[0]
        elif len(token) == 1:
            yield match.start(), 0x22
            return


def _scan_concatenated(text: bytes) -> Iterator[tuple[int, bytes]]:
    """Split back-to-back JSON documents by brace depth (strings and escapes respected)."""
    depth = 0
    open_string = False
    start = 0
    line = 1
    counted = 0  # newlines are counted up to here
    for index, byte in _structure(text):
        if byte == 0x22:
            open_string = True
        elif byte in (0x7B, 0x5B):
            if depth == 0:
                line += text.count(b"\n", counted, index)
                counted = index
                start = index
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                yield line, text[start : index + 1]
    if depth != 0 or open_string:
        yield line, text[start:]  # truncated tail: the decoder reports where


class NotJsonLines(Exception):  # noqa: N818 - a signal, not an error to report
    """The stream's first document does not fit on its line: not JSON Lines."""


def numbered_lines(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number, line) for each non-blank line of a byte stream."""
    number = 0
    parts: list[bytes] = []
    for chunk in chunks:
        parts.append(chunk)
        if b"\n" not in chunk:
            continue  # a long line: joined once, when its end arrives
        lines = b"".join(parts).split(b"\n")
        parts = [lines.pop()]
        for line in lines:
            number += 1
            if line.strip():
                yield number, line
    tail = b"".join(parts)
    if tail.strip():
        yield number + 1, tail


_BYTE_OFFSET = re.compile(r"\s*\(byte (\d+)\)")
_JSON_PATH = re.compile(r" - at `(\$[^`]*)`")


def _syntax_error(exc: msgspec.DecodeError, text: bytes, where: str, line: int) -> BadExport:
    """msgspec says "(byte N)"; the manifest and the README say line and column."""
    message = str(exc)
    found = _BYTE_OFFSET.search(message)
    if found is None:
        location = f"line {line}"
    else:
        offset = int(found.group(1))
        number = line + text.count(b"\n", 0, offset)
        column = offset - (text.rfind(b"\n", 0, offset) + 1) + 1
        location = f"line {number}, column {column}"
        message = message[: found.start()] + message[found.end() :]
    return BadExport(
        f"{where}: invalid JSON at {location}: {message}",
        location=location,
        error_type="DecodeError",
    )


def _not_an_export(exc: Exception, where: str, line: int | None) -> BadExport:
    found = _JSON_PATH.search(str(exc))
    at = f"document at line {line} is" if line is not None else "document is"
    return BadExport(
        f"{where}: {at} not a trace export: {exc}",
        location=found.group(1) if found else (f"line {line}" if line is not None else None),
        error_type=type(exc).__name__,
    )


def cap_depth(text: bytes, limit: int = MAX_JSON_DEPTH) -> bytes:
    """The JSON text with every container nested deeper than ``limit`` replaced by an
    empty one of its kind (``{}`` or ``[]``), strings and escapes respected.

    Only for a document the decoder refused as too deep, never on the path of
    ordinary exports. The cut lies far below the AnyValue depth limit, so the
    span that held the value is still rejected by that limit, naming its
    attribute.
    """
    out = bytearray()
    depth = 0
    copied = 0  # text[:copied] is in out, or was cut
    cut_at = -1  # the depth of the container being cut, or -1
    for index, byte in _structure(text):
        if byte == 0x22:
            break  # a string open to the end: nothing more to cut
        if byte in (0x7B, 0x5B):
            depth += 1
            if cut_at < 0 and depth > limit:
                out += text[copied:index]
                out += b"{}" if byte == 0x7B else b"[]"
                cut_at = depth
        else:
            depth -= 1
            if cut_at >= 0 and depth < cut_at:
                cut_at = -1
                copied = index + 1
    if cut_at < 0:
        out += text[copied:]
    return bytes(out)


def decode_document(
    text: bytes, where: str, *, line: int | None = None, changes: Counter[str] | None = None
) -> ExportRequest:
    """One JSON document as an export request; BadExport names the line or the JSON path.

    What real exporters never write, but a hostile or broken one might, is
    decoded anyway where that keeps the object's spans: invalid UTF-8 is
    replaced by U+FFFD (counted in ``changes``), and containers nested past
    :data:`MAX_JSON_DEPTH` are cut (the span holding one is then rejected).
    """
    first_line = line if line is not None else 1
    try:
        try:
            return _DECODER.decode(text)
        except UnicodeDecodeError:
            repaired = text.decode("utf-8", "replace").encode()
            request = decode_document(repaired, where, line=line)
            if changes is not None:
                changes[INVALID_UTF8] += repaired.count(REPLACEMENT) - text.count(REPLACEMENT)
            return request
        except RecursionError:
            capped = cap_depth(text)
            if capped == text:
                raise
            return _DECODER.decode(capped)
    except msgspec.ValidationError as exc:
        raise _not_an_export(exc, where, line) from exc
    except msgspec.DecodeError as exc:
        raise _syntax_error(exc, text, where, first_line) from exc
    except RecursionError as exc:
        raise BadExport(
            f"{where}: document at line {first_line} is nested too deeply to decode",
            location=f"line {first_line}",
            error_type="RecursionError",
        ) from exc


def decode_line(
    line: bytes,
    number: int,
    where: str,
    *,
    first: bool = False,
    changes: Counter[str] | None = None,
) -> ExportRequest:
    """One JSON Lines document; BadExport names the line. ``first``: a line that is not a
    whole document raises NotJsonLines instead (pretty-printed JSON, decoded whole)."""
    try:
        return decode_document(line, where, line=number, changes=changes)
    except BadExport as exc:
        if first and exc.error_type == "DecodeError":
            raise NotJsonLines(where) from exc
        raise


def json_lines(
    chunks: Iterable[bytes], *, where: str, changes: Counter[str] | None = None
) -> Iterator[ExportRequest]:
    """Each request of a JSON Lines stream (one export per line), decoded line by line.

    Raises NotJsonLines when the first document is not complete on its line
    (pretty-printed JSON: the caller decodes the object whole instead), and
    BadExport naming the line for a later line that is not a trace export.
    """
    first = True
    for number, line in numbered_lines(chunks):
        yield decode_line(line, number, where, first=first, changes=changes)
        first = False


# --- values ----------------------------------------------------------------------------


class TooDeep(ValueError):
    """An AnyValue nested past the depth limit."""


NON_FINITE_TEXT = {math.inf: "Infinity", -math.inf: "-Infinity"}


def any_value(
    value: AnyValue | None,
    max_depth: int = DEFAULT_MAX_ATTRIBUTE_DEPTH,
    changes: Counter[str] | None = None,
    _depth: int = 0,
) -> Any:
    """Turn an OTLP AnyValue into a plain JSON value.

    A double JSON cannot hold (NaN, ±Infinity) is kept as the text OTLP/JSON
    writes for it ("NaN", "Infinity", "-Infinity") and counted in ``changes``.
    Arrays and kvlists nested more than ``max_depth`` levels raise TooDeep.
    """
    if value is None:
        return None
    if value.string_value is not None:
        return value.string_value
    if value.bool_value is not None:
        return value.bool_value
    if value.int_value is not None:
        return int(value.int_value)
    if value.double_value is not None:
        number = float(value.double_value)
        if math.isfinite(number):
            return number
        if changes is not None:
            changes[NON_FINITE_DOUBLE] += 1
        return NON_FINITE_TEXT.get(number, "NaN")
    if value.bytes_value is not None:
        return value.bytes_value  # kept as its base64 text
    if value.array_value is not None or value.kvlist_value is not None:
        if _depth >= max_depth:
            raise TooDeep(f"AnyValue nested deeper than {max_depth} levels")
        if value.array_value is not None:
            return [
                any_value(item, max_depth, changes, _depth + 1) for item in value.array_value.values
            ]
        assert value.kvlist_value is not None
        return {
            kv.key: any_value(kv.value, max_depth, changes, _depth + 1)
            for kv in value.kvlist_value.values
        }
    return None


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


def enum_value(value: int | str | None, names: dict[str, int], field: str) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    if value in names:
        return names[value]
    if value.isdigit():
        return int(value)
    raise ValueError(f"unknown {field} {value!r}")


def nanos(value: int | str | None) -> int | None:
    if value is None or value == "" or value == 0 or value == "0":
        return None
    return int(value)


def decode_json(
    text: bytes, *, where: str, changes: Counter[str] | None = None
) -> list[ExportRequest]:
    """Decode OTLP/JSON: one document, JSON Lines, or documents back to back."""
    if not text.strip():
        raise BadExport(f"{where}: empty object, no trace export in it", location="line 1")
    try:
        return [decode_document(text, where, changes=changes)]
    except BadExport as exc:
        if "trailing characters" not in str(exc):
            raise
    return [
        decode_document(document, where, line=line, changes=changes)
        for line, document in split_documents(text)
    ]


def decode_protobuf(
    data: bytes, *, where: str, changes: Counter[str] | None = None
) -> list[ExportRequest]:
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
        raise BadExport(f"{where}: invalid OTLP protobuf: {exc}", error_type="DecodeError") from exc
    as_json = json_format.MessageToJson(message, indent=None).encode()
    return decode_json(as_json, where=where, changes=changes)


def decode_yaml(data: bytes, *, where: str) -> list[ExportRequest]:
    """Decode the YAML form of a trace export (the collector's pdatatest golden files)."""
    import yaml  # type: ignore[import-untyped]

    try:
        document = yaml.safe_load(data)
        request = msgspec.convert(document, ExportRequest)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        location = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        raise BadExport(
            f"{where}: invalid YAML: {exc}", location=location, error_type=type(exc).__name__
        ) from exc
    except msgspec.ValidationError as exc:
        raise _not_an_export(exc, where, None) from exc
    except RecursionError as exc:
        raise BadExport(
            f"{where}: YAML nested too deeply to decode", error_type="RecursionError"
        ) from exc
    return [request]


def decode_object(
    key: str,
    data: bytes,
    *,
    limit: int = DEFAULT_MAX_DECOMPRESSED,
    changes: Counter[str] | None = None,
) -> list[ExportRequest]:
    """Decode one S3 object of trace exports; raises BadExport naming the object."""
    payload = decompress(data, where=key, limit=limit)
    head = payload.lstrip()[:1]
    base = key.removesuffix(".gz").removesuffix(".zst")
    if base.endswith((".yaml", ".yml")):
        return decode_yaml(payload, where=key)
    if base.endswith(".binpb") or (head not in (b"{", b"[") and not base.endswith(".json")):
        return decode_protobuf(payload, where=key, changes=changes)
    if head == b"[":
        raise BadExport(
            f"{key}: top-level JSON array; expected an ExportTraceServiceRequest object",
            location="line 1",
            error_type="ValidationError",
        )
    return decode_json(payload, where=key, changes=changes)
