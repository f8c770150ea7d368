"""OTLP decoding: every real sample, every id/enum/int64 form, compression and bad input."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime

import pytest
import zstandard

from spancost.errors import BadExport
from spancost.spans.normalize import Normalized, NormalizeSettings, normalize_object
from spancost.spans.otlp import decode_object, normalize_id
from tests.conftest import SHARED_REALWORLD, realworld

pytestmark = pytest.mark.unit

SETTINGS = NormalizeSettings(user_id_salt="t", now=datetime(2026, 12, 1, tzinfo=UTC))


def load(key: str, data: bytes, **options: int) -> Normalized:
    """Decode and normalise one object, as the loader does."""
    return normalize_object(key, data, SETTINGS, **options)


def span_count(key: str, data: bytes) -> int:
    """Spans decoded: loaded rows plus rows kept aside with a reason."""
    result = load(key, data)
    return len(result.rows) + len(result.rejections)


def _independent_span_count(data: bytes, name: str = "") -> int:
    """Count spans with the standard library (PyYAML for YAML), document by document."""
    if name.endswith(".yaml"):
        import yaml

        document = yaml.safe_load(data)
        return sum(
            len(scope_spans.get("spans", []))
            for resource_spans in document.get("resourceSpans", [])
            for scope_spans in resource_spans.get("scopeSpans", [])
        )
    text = data.decode()
    decoder = json.JSONDecoder()
    index, count = 0, 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            return count
        document, index = decoder.raw_decode(text, index)
        for resource_spans in document.get("resourceSpans", []):
            for scope_spans in resource_spans.get("scopeSpans", []):
                count += len(scope_spans.get("spans", []))


SAMPLES = sorted(
    path.name
    for path in (SHARED_REALWORLD / "otlp-traces").glob("*")
    if path.suffix in (".json", ".jsonl", ".yaml")
) or ["(none)"]


@pytest.mark.parametrize("name", SAMPLES)
def test_every_real_sample_decodes_with_the_right_span_count(name: str) -> None:
    path = realworld("otlp-traces", name)
    data = path.read_bytes()
    assert span_count(f"traces/{name}", data) == _independent_span_count(data, name) > 0


def test_real_samples_cover_the_documented_counts() -> None:
    counts = {
        name: span_count(name, realworld("otlp-traces", name).read_bytes())
        for name in (
            "gcp-opentelemetry-operations-go_traces_basic.json",  # 3 concatenated documents
            "dynatrace-otel-collector_otlpjson_traces.jsonl",  # JSON Lines, 2 requests
            "jaeger_memory_fixtures_otel_traces_01.json",
        )
    }
    assert counts == {
        "gcp-opentelemetry-operations-go_traces_basic.json": 45,
        "dynatrace-otel-collector_otlpjson_traces.jsonl": 4,
        "jaeger_memory_fixtures_otel_traces_01.json": 4,
    }


def test_upper_case_hex_ids_are_lowered() -> None:
    data = realworld("otlp-traces", "opentelemetry-proto_examples_trace.json").read_bytes()
    (span,) = load("trace.json", data).rows
    assert span["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert span["span_id"] == "eee19b7ec3c1b174"
    assert span["parent_span_id"] == "eee19b7ec3c1b173"
    assert span["kind"] == 2
    assert span["scope_name"] == "my.library"
    assert span["resource_attributes"] == {"service.name": "my.service"}
    assert span["start_time"] == "2018-12-13 14:51:00.000000+00:00"  # 1544712660000000000 ns


def test_every_anyvalue_type() -> None:
    data = realworld("otlp-traces", "otel-collector_pdata_ptrace_tracesJSON.json").read_bytes()
    result = load("t.json", data)
    (first,) = result.rows
    (second,) = result.rejections
    assert first["attributes"] == {
        "string": "value",
        "bool": True,
        "int": 1,
        "double": 1.1,
        "bytes": "Zm9v",
        "array": [1, "str"],
        "kvList": {"int": 1, "string": "string"},
    }
    assert first["status_code"] == 1 and first["status_message"] == "message"
    assert first["events"][0]["name"] == "eventName"
    assert first["links"][0]["span_id"] == "1112131415161718"
    assert second.span["name"] == "testSpan2" and second.trace_id is None
    assert second.reason == "span has no valid trace id"


def test_enum_names_are_mapped() -> None:
    data = realworld(
        "otlp-traces", "gcp-opentelemetry-operations-go_traces_basic.json"
    ).read_bytes()
    kinds = {span["kind"] for span in load("gcp.json", data).rows}
    assert kinds <= {0, 1, 2, 3, 4, 5} and 2 in kinds


def test_empty_resource_and_scope() -> None:
    data = realworld("otlp-traces", "otel-collector_pdata_ptraceotlp_minimal_request.json")
    (rejected,) = load("min.json", data.read_bytes()).rejections  # it has no ids or times
    assert rejected.span["name"] == "test_span"
    assert rejected.span["resource_attributes"] == {}


def _request(**span: object) -> bytes:
    base = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "name": "chat",
        "kind": 3,
        "startTimeUnixNano": "1767225600000000000",
        "endTimeUnixNano": "1767225601000000000",
    }
    base.update(span)
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [base]}]}]}).encode()


def test_base64_ids_and_numeric_int64_and_enum_names() -> None:
    trace = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
    span_id = bytes.fromhex("b7ad6b7169203331")
    data = _request(
        traceId=base64.b64encode(trace).decode(),
        spanId=base64.b64encode(span_id).decode(),
        kind="SPAN_KIND_CLIENT",
        startTimeUnixNano=1767225600000000000,
        status={"code": "STATUS_CODE_ERROR"},
        attributes=[{"key": "n", "value": {"intValue": 42}}],
    )
    (span,) = load("x.json", data).rows
    assert span["trace_id"] == trace.hex() and span["span_id"] == span_id.hex()
    assert span["kind"] == 3 and span["status_code"] == 2
    assert span["start_time"] == "2026-01-01 00:00:00.000000+00:00"
    assert span["attributes"] == {"n": 42}


def test_normalize_id_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a 8-byte id"):
        normalize_id("xyz", 8)
    assert normalize_id("", 8) is None


@pytest.mark.parametrize("compress", ["gzip", "zstd", "none"])
def test_compression_is_sniffed_not_read_from_the_suffix(compress: str) -> None:
    raw = _request()
    data = {
        "gzip": gzip.compress(raw),
        "zstd": zstandard.ZstdCompressor().compress(raw),
        "none": raw,
    }[compress]
    # A .gz key holding plain JSON happens when a client honoured Content-Encoding: gzip.
    assert len(load("traces_1.json.gz", data).rows) == 1


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_appended_gzip_members_and_zstd_frames_all_decode(compress: str) -> None:
    """`cat a.gz b.gz` and appended zstd frames are valid files: every part is read."""
    first, second = _request(), _request(spanId="c7ad6b7169203331")
    pack = gzip.compress if compress == "gzip" else zstandard.ZstdCompressor().compress
    data = pack(first + b"\n") + pack(second + b"\n")
    assert len(load("traces_1.jsonl.gz", data).rows) == 2


def test_protobuf_export_decodes() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    message = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                scope_spans=[
                    ScopeSpans(
                        spans=[
                            Span(
                                trace_id=bytes.fromhex("0af7651916cd43dd8448eb211c80319c"),
                                span_id=bytes.fromhex("b7ad6b7169203331"),
                                name="chat",
                                kind=Span.SPAN_KIND_CLIENT,
                                start_time_unix_nano=1767225600000000000,
                                end_time_unix_nano=1767225601000000000,
                            )
                        ]
                    )
                ]
            )
        ]
    )
    (span,) = load("traces_1.binpb", message.SerializeToString()).rows
    assert span["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert span["kind"] == 3 and span["end_time"] == "2026-01-01 00:00:01.000000+00:00"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"resourceSpans": [', "invalid JSON"),
        (gzip.compress(b"{}")[:-6], "corrupt gzip"),
        (b"[1, 2]", "top-level JSON array"),
        (b'{"resourceSpans": 5}', "not a trace export"),
        (b"   ", "empty object"),
    ],
)
def test_bad_objects_raise_bad_export_naming_the_key(data: bytes, message: str) -> None:
    with pytest.raises(BadExport, match=message) as info:
        decode_object("otel/traces_9.json.gz", data)
    assert "otel/traces_9.json.gz" in str(info.value)


def test_gzip_bomb_is_refused() -> None:
    bomb = gzip.compress(b"0" * (5 << 20))
    with pytest.raises(BadExport, match="gzip bomb"):
        decode_object("bomb.json.gz", bomb, limit=1 << 20)


def test_yaml_golden_file_decodes_like_its_json_conversion() -> None:
    yaml_path = realworld(
        "otlp-traces", "dynatrace-otel-collector_genainormalizer_expected-traces.yaml"
    )
    json_path = realworld(
        "otlp-traces", "dynatrace-otel-collector_genainormalizer_expected-traces.converted.json"
    )
    assert decode_object(yaml_path.name, yaml_path.read_bytes()) == decode_object(
        json_path.name, json_path.read_bytes()
    )
    from_yaml = load(yaml_path.name, yaml_path.read_bytes())
    assert from_yaml == load(json_path.name, json_path.read_bytes())
    assert from_yaml.rejections[0].span["attributes"]["gen_ai.usage.input_tokens"] == 10


def test_bad_yaml_is_a_bad_export() -> None:
    with pytest.raises(BadExport, match="k.yaml: invalid YAML"):
        decode_object("k.yaml", b"resourceSpans: [")


def test_the_bomb_limit_holds_memory_while_inflating() -> None:
    import tracemalloc
    import zlib

    from spancost.spans.otlp import expansion_limit

    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    bomb = b"".join([*(compressor.compress(block) for _ in range(1024)), compressor.flush()])
    limit = expansion_limit(len(bomb))  # 1 GiB of zeros in ~1 MB: 100x its size, not 1 GiB
    assert limit < 128 << 20
    tracemalloc.start()
    try:
        with pytest.raises(BadExport, match="gzip bomb") as info:
            decode_object("bomb.json.gz", bomb, limit=limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.error_type == "DecompressionBomb"
    assert peak < 3 * limit  # the chunks so far and their join, never the whole gigabyte


def test_the_ratio_limit_lets_real_exports_through() -> None:
    from spancost.spans.otlp import RATIO_FLOOR, expansion_limit

    assert expansion_limit(1_000) == RATIO_FLOOR  # small objects may always expand
    assert expansion_limit(50 << 20) == 1 << 30  # never past the absolute limit
    assert expansion_limit(1 << 20, max_ratio=0) == 1 << 30  # 0 turns the ratio off


def test_json_syntax_errors_name_line_and_column_not_byte() -> None:
    text = b'{\n  "resourceSpans": [\n    {"scopeSpans" []}\n  ]\n}'
    with pytest.raises(BadExport) as info:
        decode_object("otel/x.json", text)
    assert info.value.location == "line 3, column 19"
    assert info.value.error_type == "DecodeError"
    assert "line 3, column 19" in str(info.value) and "byte" not in str(info.value)


def test_json_lines_errors_count_lines_from_the_document() -> None:
    good = json.dumps({"resourceSpans": []}).encode()
    with pytest.raises(BadExport) as info:
        decode_object("otel/x.json", b"\n".join([good, good, b'{"resourceSpans": [}']))
    assert info.value.location == "line 3, column 20"


def test_cap_depth_cuts_only_what_is_too_deep() -> None:
    from spancost.spans.otlp import cap_depth

    assert cap_depth(b'{"a":[1,{"b":"[{]"}]}', limit=2) == b'{"a":[1,{}]}'
    assert cap_depth(b'{"a":"\\"[[["}', limit=1) == b'{"a":"\\"[[["}'
    assert cap_depth(b"[[[[]]],[]]", limit=2) == b"[[[]],[]]"
