"""Encoding of SDK spans as the OTel Collector's awss3exporter writes them.

:func:`encode_export_request` gives one ExportTraceServiceRequest as compact
OTLP/JSON in the wire format of the OTLP spec (what the collector's
``otlp_json`` marshaler writes): lowerCamelCase field names, trace and span
ids as lowercase hex, enums as integers, 64-bit integers as strings and bytes
values as base64. :func:`object_key` names the S3 object the way the
exporter's ``PartitionKeyBuilder`` does.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan

from spancost.errors import SpancostError

DEFAULT_PARTITION_FORMAT = "year=%Y/month=%m/day=%d/hour=%H/minute=%M"
UNIQUE_MIN = 100_000_000
UNIQUE_MAX = 999_999_999  # exclusive, as in the exporter's random key

_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


class ExportEncodingError(SpancostError, ValueError):
    """Spans or key parts that cannot be written as an awss3exporter object."""


def _b64_to_hex(value: str, *, field: str) -> str:
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError) as exc:
        raise ExportEncodingError(
            f"{field}: {value!r} is not base64 (protobuf JSON bytes)"
        ) from exc


def _hex_ids(item: dict[str, Any]) -> None:
    for field in _ID_FIELDS:
        if field in item:
            item[field] = _b64_to_hex(item[field], field=field)


def to_wire_dict(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """The request as a JSON-ready dict in OTLP/JSON wire form (ids as hex)."""
    message = encode_spans(spans)
    request: dict[str, Any] = MessageToDict(message, use_integers_for_enums=True)
    for resource_spans in request.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                _hex_ids(span)
                for link in span.get("links", []):
                    _hex_ids(link)
    return request


def encode_export_request(spans: Sequence[ReadableSpan]) -> bytes:
    """One ExportTraceServiceRequest as compact OTLP/JSON bytes (UTF-8)."""
    if not spans:
        raise ExportEncodingError("no spans to encode: the exporter never writes an empty request")
    request = to_wire_dict(spans)
    return json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def object_key(
    prefix: str,
    upload_time: datetime,
    unique: int,
    *,
    partition_format: str = DEFAULT_PARTITION_FORMAT,
    compressed: bool = True,
) -> str:
    """``<prefix>/<strftime(partition_format, upload_time UTC)>/traces_<unique>.json[.gz]``.

    The parts are joined like the exporter's ``path.Join``: an empty prefix adds
    no leading slash and stray slashes are not doubled.
    """
    if upload_time.tzinfo is None:
        raise ExportEncodingError(f"upload_time {upload_time!r} must be timezone-aware (UTC)")
    if not UNIQUE_MIN <= unique < UNIQUE_MAX:
        raise ExportEncodingError(
            f"unique {unique} is outside the exporter's range [{UNIQUE_MIN}, {UNIQUE_MAX})"
        )
    partition = upload_time.astimezone(UTC).strftime(partition_format).strip("/")
    name = f"traces_{unique}.json" + (".gz" if compressed else "")
    parts = [part for part in (prefix.strip("/"), partition, name) if part]
    return "/".join(parts)
