"""The demo traffic generator and the awss3exporter-style encoding it writes."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from botocore.stub import Stubber
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spancost.demo.otlp_export import ExportEncodingError, encode_export_request, object_key
from spancost.demo.traffic import (
    DemoError,
    DemoObject,
    RetryLoop,
    build_objects,
    generate_spans,
    upload_objects,
)

pytestmark = pytest.mark.unit

START = datetime(2025, 3, 7, 6, 0, tzinfo=UTC)
END = datetime(2025, 3, 7, 18, 0, tzinfo=UTC)
START_NS = int(START.timestamp()) * 10**9
END_NS = int(END.timestamp()) * 10**9
DEMO_MODELS = {
    "gpt-5.4": "openai",
    "gpt-5.4-mini": "openai",
    "o4-mini": "openai",
    "claude-sonnet-4.6": "anthropic",
    "claude-haiku-4.5": "anthropic",
    "gemini-2.5-pro": "gcp.gemini",
    "us.anthropic.claude-haiku-4-5-20251001-v1:0": "aws.bedrock",
}
KEY_RE = re.compile(
    r"^demo/traces/year=(\d{4})/month=(\d{2})/day=(\d{2})/hour=(\d{2})/minute=(\d{2})/"
    r"traces_(\d{9})\.json\.gz$"
)
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
DIGITS = re.compile(r"^\d+$")


# --- helpers ---------------------------------------------------------------------------


def _value(any_value: dict[str, Any]) -> Any:
    if "stringValue" in any_value:
        return any_value["stringValue"]
    if "intValue" in any_value:
        return int(any_value["intValue"])
    if "doubleValue" in any_value:
        return float(any_value["doubleValue"])
    if "boolValue" in any_value:
        return any_value["boolValue"]
    if "arrayValue" in any_value:
        return [_value(item) for item in any_value["arrayValue"].get("values", [])]
    raise AssertionError(f"unexpected AnyValue {any_value}")


def _attrs(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: _value(item["value"]) for item in items}


def _documents(objects: list[DemoObject]) -> list[dict[str, Any]]:
    return [json.loads(gzip.decompress(obj.body)) for obj in objects]


def _flat(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every span with its resource and scope, from the wire JSON."""
    spans = []
    for document in documents:
        for resource_spans in document["resourceSpans"]:
            resource = _attrs(resource_spans["resource"]["attributes"])
            for scope_spans in resource_spans["scopeSpans"]:
                for span in scope_spans["spans"]:
                    spans.append(
                        {
                            **span,
                            "attrs": _attrs(span.get("attributes", [])),
                            "resource": resource,
                            "scope": scope_spans["scope"]["name"],
                        }
                    )
    return spans


@pytest.fixture(scope="module")
def spans() -> list[ReadableSpan]:
    return generate_spans(START, END, seed=7, traces_per_hour=40)


@pytest.fixture(scope="module")
def objects(spans: list[ReadableSpan]) -> list[DemoObject]:
    return build_objects(spans, prefix="demo/traces", seed=7)


@pytest.fixture(scope="module")
def documents(objects: list[DemoObject]) -> list[dict[str, Any]]:
    return _documents(objects)


@pytest.fixture(scope="module")
def wire(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return _flat(documents)


@pytest.fixture(scope="module")
def traces(wire: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in wire:
        grouped[span["traceId"]].append(span)
    return grouped


def _chat_spans(wire: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [span for span in wire if span["attrs"].get("gen_ai.operation.name") == "chat"]


# --- wire format -------------------------------------------------------------------------


def test_wire_format_is_otlp_json(
    objects: list[DemoObject], documents: list[dict[str, Any]], wire: list[dict[str, Any]]
) -> None:
    assert objects and all(obj.body[:2] == b"\x1f\x8b" for obj in objects)
    for document in documents:
        assert set(document) == {"resourceSpans"}
    raw = b"".join(gzip.decompress(obj.body) for obj in objects)
    assert b'"trace_id"' not in raw and b'"resource_spans"' not in raw  # camelCase only
    for obj in objects[:20]:
        text = gzip.decompress(obj.body).decode("utf-8")
        compact = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
        assert text == compact  # one compact document, as the exporter writes
    assert b"SPAN_KIND_" not in raw and b"STATUS_CODE_" not in raw  # enums as integers
    for span in wire:
        assert HEX32.match(span["traceId"]), span["traceId"]
        assert HEX16.match(span["spanId"]), span["spanId"]
        if "parentSpanId" in span:
            assert HEX16.match(span["parentSpanId"]), span["parentSpanId"]
        assert isinstance(span["kind"], int) and span["kind"] in (1, 2, 3)
        assert isinstance(span["status"].get("code", 0), int)
        for field in ("startTimeUnixNano", "endTimeUnixNano"):
            assert isinstance(span[field], str) and DIGITS.match(span[field])
        for item in span.get("attributes", []):
            if "intValue" in item["value"]:
                assert isinstance(item["value"]["intValue"], str)
        for event in span.get("events", []):
            assert isinstance(event["timeUnixNano"], str)
    assert len({span["spanId"] for span in wire}) == len(wire)


def test_int64_and_double_values_keep_their_types(wire: list[dict[str, Any]]) -> None:
    chat = next(
        span for span in wire if "gen_ai.usage.input_tokens" in span["attrs"] and span["attributes"]
    )
    by_key = {item["key"]: item["value"] for item in chat["attributes"]}
    assert set(by_key["gen_ai.usage.input_tokens"]) == {"intValue"}
    assert isinstance(by_key["gen_ai.usage.input_tokens"]["intValue"], str)
    assert set(by_key["gen_ai.request.temperature"]) == {"doubleValue"}
    assert set(by_key["gen_ai.response.finish_reasons"]) == {"arrayValue"}


def test_encoder_handles_links_bytes_and_empty_input() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "t"}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test.scope", "1.2.3")
    first = tracer.start_span("first", start_time=10)
    first.end(end_time=20)
    second = tracer.start_span(
        "second",
        links=[trace.Link(first.get_span_context(), {"why": "follows"})],
        attributes={"blob": b"foo", "big": 2**62},
        start_time=30,
    )
    second.end(end_time=40)
    document = json.loads(encode_export_request(exporter.get_finished_spans()))
    [resource_spans] = document["resourceSpans"]
    [scope_spans] = resource_spans["scopeSpans"]
    assert scope_spans["scope"] == {"name": "test.scope", "version": "1.2.3"}
    one, two = scope_spans["spans"]
    link = two["links"][0]
    assert link["traceId"] == one["traceId"] == f"{first.get_span_context().trace_id:032x}"
    assert link["spanId"] == one["spanId"] == f"{first.get_span_context().span_id:016x}"
    attrs = {item["key"]: item["value"] for item in two["attributes"]}
    assert attrs["blob"] == {"bytesValue": "Zm9v"}
    assert attrs["big"] == {"intValue": str(2**62)}
    assert one["startTimeUnixNano"] == "10"
    with pytest.raises(ExportEncodingError):
        encode_export_request([])


def test_batches_group_by_resource_and_scope(documents: list[dict[str, Any]]) -> None:
    for document in documents:
        resources = [json.dumps(rs["resource"], sort_keys=True) for rs in document["resourceSpans"]]
        assert len(resources) == len(set(resources))
        for resource_spans in document["resourceSpans"]:
            scopes = [scope_spans["scope"]["name"] for scope_spans in resource_spans["scopeSpans"]]
            assert len(scopes) == len(set(scopes))
            assert resource_spans["schemaUrl"].startswith("https://opentelemetry.io/schemas/")


# --- object keys ---------------------------------------------------------------------------


def test_object_key_layout() -> None:
    moment = datetime(2025, 3, 7, 14, 5, 30, tzinfo=UTC)
    assert (
        object_key("otel", moment, 482913377)
        == "otel/year=2025/month=03/day=07/hour=14/minute=05/traces_482913377.json.gz"
    )
    assert (
        object_key("", moment, 482913377, compressed=False)
        == "year=2025/month=03/day=07/hour=14/minute=05/traces_482913377.json"
    )
    assert (
        object_key("a/b/", moment, 100000000, partition_format="%Y/%m/%d/%H")
        == "a/b/2025/03/07/14/traces_100000000.json.gz"
    )
    tokyo = moment.astimezone(timezone(timedelta(hours=9)))
    assert object_key("p", tokyo, 123456789).startswith("p/year=2025/month=03/day=07/hour=14/")
    with pytest.raises(ExportEncodingError):
        object_key("p", moment, 999999999)
    with pytest.raises(ExportEncodingError):
        object_key("p", moment, 99999999)
    with pytest.raises(ExportEncodingError):
        object_key("p", moment.replace(tzinfo=None), 123456789)


def test_keys_match_layout_and_upload_time(
    spans: list[ReadableSpan], objects: list[DemoObject], documents: list[dict[str, Any]]
) -> None:
    assert sum(obj.span_count for obj in objects) == len(spans)
    assert len({obj.key for obj in objects}) == len(objects)
    for obj in objects:
        match = KEY_RE.match(obj.key)
        assert match, obj.key
        year, month, day, hour, minute, _unique = (int(part) for part in match.groups())
        upload = obj.upload_time
        assert upload.tzinfo is not None
        assert (upload.year, upload.month, upload.day, upload.hour, upload.minute) == (
            year,
            month,
            day,
            hour,
            minute,
        )
    for obj, document in zip(objects, documents, strict=True):
        ends = [
            int(span["endTimeUnixNano"])
            for rs in document["resourceSpans"]
            for ss in rs["scopeSpans"]
            for span in ss["spans"]
        ]
        assert len(ends) == obj.span_count
        minute_start = int(obj.upload_time.replace(second=0, microsecond=0).timestamp()) * 10**9
        assert all(minute_start <= end < minute_start + 60 * 10**9 for end in ends)


# --- determinism -------------------------------------------------------------------------------


def test_same_seed_gives_identical_objects() -> None:
    start, end = datetime(2025, 3, 7, 9, tzinfo=UTC), datetime(2025, 3, 7, 10, 30, tzinfo=UTC)
    first = build_objects(generate_spans(start, end, seed=11), prefix="demo/traces", seed=11)
    second = build_objects(generate_spans(start, end, seed=11), prefix="demo/traces", seed=11)
    assert first and first == second
    other = build_objects(generate_spans(start, end, seed=12), prefix="demo/traces", seed=12)
    assert [obj.body for obj in other] != [obj.body for obj in first]
    assert {obj.key for obj in other} != {obj.key for obj in first}


def test_a_window_holds_the_same_traces_as_a_longer_window(spans: list[ReadableSpan]) -> None:
    start, end = datetime(2025, 3, 7, 9, 15, tzinfo=UTC), datetime(2025, 3, 7, 9, 30, tzinfo=UTC)
    short = generate_spans(start, end, seed=7)
    lo, hi = int(start.timestamp()) * 10**9, int(end.timestamp()) * 10**9
    expected = {
        (span.context.trace_id, span.context.span_id, span.start_time, span.end_time)
        for span in spans
        if span.parent is None and span.start_time is not None and lo <= span.start_time < hi
    }
    got = {
        (span.context.trace_id, span.context.span_id, span.start_time, span.end_time)
        for span in short
        if span.parent is None
    }
    assert expected and got == expected


def test_a_retry_loop_multiplies_one_features_cost_for_one_hour_and_changes_nothing_else() -> None:
    start = datetime(2025, 3, 7, 14, 0, tzinfo=UTC)
    end = start + timedelta(hours=2)
    loop = RetryLoop("sql-copilot", "nl-to-sql", start, turns=4)
    steady = generate_spans(start, end, seed=3, traces_per_hour=40)
    looping = generate_spans(start, end, seed=3, traces_per_hour=40, retry_loops=[loop])

    def by_trace(spans: list[ReadableSpan]) -> dict[int, list[ReadableSpan]]:
        traces: dict[int, list[ReadableSpan]] = defaultdict(list)
        for span in spans:
            traces[span.context.trace_id].append(span)
        return traces

    def covered(spans: list[ReadableSpan]) -> bool:
        [root] = [span for span in spans if span.parent is None]
        attributes = root.attributes or {}
        return (
            attributes.get("pipeline.id") == "sql-copilot"
            and attributes.get("feature") == "nl-to-sql"
            and root.start_time is not None
            and root.start_time < int((start + timedelta(hours=1)).timestamp()) * 10**9
        )

    before, after = by_trace(steady), by_trace(looping)
    assert before.keys() == after.keys()
    looped = [trace_id for trace_id, spans in after.items() if covered(spans)]
    assert looped
    for trace_id, spans in after.items():
        if trace_id not in looped:
            assert [s.to_json() for s in spans] == [s.to_json() for s in before[trace_id]]
            continue
        failed_tools = [
            s
            for s in spans
            if (s.attributes or {}).get("gen_ai.operation.name") == "execute_tool"
            and (s.attributes or {}).get("error.type") == "ToolExecutionError"
        ]
        calls = [s for s in spans if "gen_ai.usage.input_tokens" in (s.attributes or {})]
        steady_calls = [
            s for s in before[trace_id] if "gen_ai.usage.input_tokens" in (s.attributes or {})
        ]
        assert len(failed_tools) >= 4  # one failed tool per loop turn
        assert len(calls) == len(steady_calls) + 4
    # The looping traces ask the model for at least twice the input tokens.
    tokens = [
        sum(
            int((s.attributes or {}).get("gen_ai.usage.input_tokens", 0))
            for trace_id in looped
            for s in traces[trace_id]
        )
        for traces in (before, after)
    ]
    assert tokens[1] >= 2 * tokens[0]


def test_bad_windows_are_refused() -> None:
    with pytest.raises(DemoError):
        generate_spans(END, START)
    with pytest.raises(DemoError):
        generate_spans(START.replace(tzinfo=None), END)


def test_traffic_volume_follows_traces_per_hour() -> None:
    start, end = datetime(2025, 3, 7, 0, tzinfo=UTC), datetime(2025, 3, 7, 6, tzinfo=UTC)
    light = generate_spans(start, end, traces_per_hour=5)
    heavy = generate_spans(start, end, traces_per_hour=20)
    roots_light = sum(1 for span in light if span.parent is None)
    roots_heavy = sum(1 for span in heavy if span.parent is None)
    assert 0 < roots_light < roots_heavy


# --- trace content -------------------------------------------------------------------------


def test_roots_start_in_window_and_children_nest(
    traces: dict[str, list[dict[str, Any]]],
) -> None:
    assert len(traces) > 300
    for trace_id, members in traces.items():
        roots = [span for span in members if "parentSpanId" not in span]
        assert len(roots) == 1, trace_id
        root = roots[0]
        assert START_NS <= int(root["startTimeUnixNano"]) < END_NS
        by_id = {span["spanId"]: span for span in members}
        for span in members:
            assert int(span["startTimeUnixNano"]) <= int(span["endTimeUnixNano"])
            if span is root:
                continue
            parent = by_id[span["parentSpanId"]]  # every parent is in the trace
            assert int(parent["startTimeUnixNano"]) <= int(span["startTimeUnixNano"])
            assert int(span["endTimeUnixNano"]) <= int(parent["endTimeUnixNano"])


def test_multi_agent_traces_have_supervisor_and_agents(
    traces: dict[str, list[dict[str, Any]]],
) -> None:
    shapes: Counter[str] = Counter()
    for members in traces.values():
        root = next(span for span in members if "parentSpanId" not in span)
        shapes[root["name"]] += 1
        if root["name"] != "invoke_agent supervisor":
            continue
        assert root["attrs"]["gen_ai.operation.name"] == "invoke_agent"
        assert root["attrs"]["gen_ai.agent.name"] == "supervisor"
        assert root["attrs"]["gen_ai.agent.id"]
        assert root["attrs"]["gen_ai.conversation.id"]
        agents = [
            span
            for span in members
            if span.get("parentSpanId") == root["spanId"]
            and span["attrs"].get("gen_ai.operation.name") == "invoke_agent"
        ]
        assert agents
        for agent in agents:
            assert agent["name"] == f"invoke_agent {agent['attrs']['gen_ai.agent.name']}"
            calls = [
                span
                for span in members
                if span.get("parentSpanId") == agent["spanId"] and span["kind"] == 3
            ]
            assert all(call["name"].startswith("chat ") for call in calls)
            if root["status"].get("code") != 2:  # a failed trace may stop before an agent's call
                assert calls
    assert shapes["invoke_agent supervisor"] > 0
    assert shapes["invoke_agent sql_agent"] > 0  # single agent
    assert shapes["POST /v1/claims/extract"] > 0  # plain chat


def test_tool_spans_carry_no_usage(wire: list[dict[str, Any]]) -> None:
    tools = [span for span in wire if span["attrs"].get("gen_ai.operation.name") == "execute_tool"]
    assert tools
    for span in tools:
        assert span["name"] == f"execute_tool {span['attrs']['gen_ai.tool.name']}"
        assert not any(key.startswith("gen_ai.usage.") for key in span["attrs"])


def test_attribution_on_every_span(wire: list[dict[str, Any]]) -> None:
    for span in wire:
        for key in ("pipeline.id", "team", "feature", "user.id"):
            assert span["attrs"].get(key), (span["name"], key)
        assert re.match(r"^user-\d{4}$", span["attrs"]["user.id"])
        for key in ("service.name", "deployment.environment.name", "cloud.region"):
            assert span["resource"].get(key), key
    pipelines = {span["attrs"]["pipeline.id"] for span in wire}
    assert pipelines == {"support-triage", "doc-summarizer", "sql-copilot", "claims-extraction"}
    environments = Counter(span["resource"]["deployment.environment.name"] for span in wire)
    assert (
        set(environments) == {"prod", "staging"} and environments["prod"] > environments["staging"]
    )
    services = defaultdict(set)
    for span in wire:
        services[span["attrs"]["pipeline.id"]].add(span["resource"]["service.name"])
    assert all(len(names) == 1 for names in services.values())


def test_llm_calls_follow_genai_conventions(wire: list[dict[str, Any]]) -> None:
    chat = _chat_spans(wire)
    assert chat
    for span in chat:
        attrs = span["attrs"]
        model = attrs["gen_ai.request.model"]
        assert model in DEMO_MODELS
        assert attrs["gen_ai.provider.name"] == DEMO_MODELS[model]
        assert span["name"] == f"chat {model}" and span["kind"] == 3
        assert isinstance(attrs["gen_ai.request.temperature"], float)
        assert attrs["server.address"]
        if span["status"].get("code") != 2:
            assert attrs["gen_ai.response.model"] == model
            reasons = attrs["gen_ai.response.finish_reasons"]
            assert reasons and all(isinstance(reason, str) for reason in reasons)
    models = {span["attrs"].get("gen_ai.request.model") for span in wire} - {None}
    assert models == set(DEMO_MODELS)


def test_usage_invariants(wire: list[dict[str, Any]]) -> None:
    used = [span for span in _chat_spans(wire) if "gen_ai.usage.input_tokens" in span["attrs"]]
    assert len(used) > 500
    for span in used:
        attrs = span["attrs"]
        provider = attrs["gen_ai.provider.name"]
        inp = attrs["gen_ai.usage.input_tokens"]
        out = attrs["gen_ai.usage.output_tokens"]
        cache_read = attrs.get("gen_ai.usage.cache_read.input_tokens", 0)
        cache_creation = attrs.get("gen_ai.usage.cache_creation.input_tokens", 0)
        reasoning = attrs.get("gen_ai.usage.reasoning.output_tokens", 0)
        assert inp >= cache_read + cache_creation >= 0
        assert out >= reasoning >= 0
        assert 100 <= inp <= 200_000 and 10 <= out <= 10_000
        if cache_creation:
            assert provider in ("anthropic", "aws.bedrock")
        if reasoning:
            assert attrs["gen_ai.request.model"] in {"o4-mini", "gpt-5.4", "gemini-2.5-pro"}
    assert sum(1 for s in used if s["attrs"].get("gen_ai.usage.cache_read.input_tokens")) > 100
    assert any(s["attrs"].get("gen_ai.usage.cache_creation.input_tokens") for s in used)
    assert any(s["attrs"].get("gen_ai.usage.reasoning.output_tokens") for s in used)
    assert max(s["attrs"]["gen_ai.usage.input_tokens"] for s in used) > 10_000


def test_some_spans_carry_message_content(wire: list[dict[str, Any]]) -> None:
    with_content = [span for span in wire if "gen_ai.input.messages" in span["attrs"]]
    assert 0 < len(with_content) < len(_chat_spans(wire))
    for span in with_content:
        messages = json.loads(span["attrs"]["gen_ai.input.messages"])
        assert messages[0]["role"] == "user" and messages[0]["parts"][0]["content"]
        output = json.loads(span["attrs"]["gen_ai.output.messages"])
        assert output[0]["role"] == "assistant"


def test_failed_calls_are_retried_as_siblings(wire: list[dict[str, Any]]) -> None:
    chat = _chat_spans(wire)
    failed = [span for span in chat if span["status"].get("code") == 2]
    assert failed
    assert 0.01 < len(failed) / len(chat) < 0.06
    for span in failed:
        attrs = span["attrs"]
        assert attrs["error.type"] in {"429", "timeout"}
        assert not any(key.startswith("gen_ai.usage.") for key in attrs)
        retries = [
            other
            for other in chat
            if other.get("parentSpanId") == span["parentSpanId"]
            and other["traceId"] == span["traceId"]
            and other["attrs"]["gen_ai.request.model"] == attrs["gen_ai.request.model"]
            and int(other["startTimeUnixNano"]) >= int(span["endTimeUnixNano"])
            and other["status"].get("code") != 2
            and "gen_ai.usage.input_tokens" in other["attrs"]
        ]
        assert retries, span["spanId"]


def test_a_few_traces_end_in_a_root_error(traces: dict[str, list[dict[str, Any]]]) -> None:
    roots = [next(s for s in members if "parentSpanId" not in s) for members in traces.values()]
    failed = [root for root in roots if root["status"].get("code") == 2]
    assert failed and len(failed) < 0.05 * len(roots)
    for root in failed:
        assert root["attrs"]["error.type"]
        assert root["status"]["message"]
        assert [event["name"] for event in root.get("events", [])] == ["exception"]


# --- upload ---------------------------------------------------------------------------------


def test_upload_puts_each_object_like_the_exporter(objects: list[DemoObject]) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    some = objects[:3]
    with Stubber(s3) as stub:
        for obj in some:
            stub.add_response(
                "put_object",
                {"ETag": '"etag"'},
                {
                    "Bucket": "spans",
                    "Key": obj.key,
                    "Body": obj.body,
                    "ContentType": "application/json",
                    "ContentEncoding": "gzip",
                },
            )
        upload_objects(s3, "spans", some)
        stub.assert_no_pending_responses()
