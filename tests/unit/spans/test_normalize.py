"""Normalisation: aliases, typed columns, privacy and row-level rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from spancost.spans.normalize import (
    NormalizeSettings,
    Rejection,
    hash_user_id,
    normalize_object,
)
from tests.conftest import realworld

pytestmark = pytest.mark.unit

SETTINGS = NormalizeSettings(user_id_salt="pepper", now=datetime(2026, 1, 2, tzinfo=UTC))
T0 = 1767225600000000000  # 2026-01-01T00:00:00Z


def any_value(value: Any) -> dict[str, Any]:
    """A plain value as an OTLP/JSON AnyValue, the way exporters write it."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [any_value(item) for item in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": key_values(value)}}
    return {"stringValue": value}


def key_values(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "value": any_value(value)} for key, value in attributes.items()]


def export(
    attributes: dict[str, Any] | None = None,
    /,
    resource_attributes: dict[str, Any] | None = None,
    **fields: Any,
) -> bytes:
    """One OTLP/JSON export holding one span; ``fields`` override its OTLP fields."""
    span: dict[str, Any] = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "name": "chat gpt-5.4",
        "kind": 3,
        "startTimeUnixNano": str(T0),
        "endTimeUnixNano": str(T0 + 2_500_000_000),
        "attributes": key_values(attributes or {}),
    }
    for key, value in fields.items():
        if value is None:
            span.pop(key, None)
        else:
            span[key] = value
    if resource_attributes is None:
        resource_attributes = {"service.name": "svc", "deployment.environment": "prod"}
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": key_values(resource_attributes)},
                    "scopeSpans": [
                        {"scope": {"name": "openai", "version": "1.0"}, "spans": [span]}
                    ],
                }
            ]
        }
    ).encode()


def to_row(data: bytes) -> dict[str, Any] | Rejection:
    result = normalize_object("traces_1.json", data, SETTINGS)
    (only,) = result.rows or result.rejections
    return only


def row(attributes: dict[str, Any] | None = None, /, **fields: Any) -> dict[str, Any]:
    result = to_row(export(attributes, **fields))
    assert isinstance(result, dict), result
    return result


def rejection(attributes: dict[str, Any] | None = None, /, **fields: Any) -> Rejection:
    result = to_row(export(attributes, **fields))
    assert isinstance(result, Rejection), result
    return result


def test_current_names_become_typed_columns() -> None:
    out = row(
        {
            "gen_ai.provider.name": "openai",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-5.4",
            "gen_ai.response.model": "gpt-5.4-2026-03-05",
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 300,
            "gen_ai.usage.cache_read.input_tokens": 1000,
            "gen_ai.usage.cache_creation.input_tokens": 0,
            "gen_ai.usage.reasoning.output_tokens": 120,
            "pipeline.id": "support-triage",
            "team": "support",
            "feature": "triage",
            "gen_ai.agent.name": "researcher",
            "gen_ai.conversation.id": "c-1",
            "cost.usd": 0.0125,
        }
    )
    assert out["provider"] == "openai" and out["operation"] == "chat"
    assert out["request_model"] == "gpt-5.4" and out["response_model"] == "gpt-5.4-2026-03-05"
    assert (out["input_tokens"], out["output_tokens"]) == (1200, 300)
    assert (out["cache_read_tokens"], out["reasoning_tokens"]) == (1000, 120)
    assert out["cache_creation_tokens"] == 0
    assert (out["pipeline_id"], out["team"], out["feature"]) == (
        "support-triage",
        "support",
        "triage",
    )
    assert out["environment"] == "prod"  # from the resource, older attribute name
    assert out["agent_name"] == "researcher" and out["conversation_id"] == "c-1"
    assert out["reported_cost_usd"] == Decimal("0.0125")
    assert datetime.fromisoformat(out["start_time"]) == datetime(2026, 1, 1, tzinfo=UTC)
    assert datetime.fromisoformat(out["end_time"]) == datetime(
        2026, 1, 1, 0, 0, 2, 500000, tzinfo=UTC
    )


def test_older_aliases_map_onto_current_names() -> None:
    out = row(
        {
            "gen_ai.system": "anthropic",
            "gen_ai.usage.prompt_tokens": "900",
            "gen_ai.usage.completion_tokens": "80",
            "gen_ai.usage.cache_read_input_tokens": 500,
            "gen_ai.usage.cache_creation_input_tokens": 100,
            "gen_ai.usage.reasoning_tokens": 20,
            "gen_ai.usage.cost": "0.002",
        },
        resource_attributes={"deployment.environment.name": "staging"},
    )
    assert out["provider"] == "anthropic"
    assert (out["input_tokens"], out["output_tokens"]) == (900, 80)
    assert (out["cache_read_tokens"], out["cache_creation_tokens"]) == (500, 100)
    assert out["reasoning_tokens"] == 20
    assert out["reported_cost_usd"] == Decimal("0.002")
    assert out["environment"] == "staging"


def test_message_content_never_reaches_the_row() -> None:
    content = {
        "gen_ai.input.messages": '[{"role":"user","parts":[{"content":"secret"}]}]',
        "gen_ai.output.messages": "[]",
        "gen_ai.system_instructions": "be nice",
        "gen_ai.prompt.0.content": "secret",
        "gen_ai.completion.0.content": "secret",
        "llm.prompts": "secret",
        "traceloop.entity.input": "secret",
        "traceloop.entity.output": "secret",
    }
    out = row({**content, "gen_ai.request.model": "gpt-5.4"})
    assert set(out["attributes"]) == {"gen_ai.request.model"}
    assert "secret" not in repr(out)


def test_user_ids_of_any_type_are_hashed() -> None:
    assert row({"user.id": 42})["user_id_hash"] == hash_user_id("42", "pepper")
    out = row({"enduser.id": ["a", "b"]})
    assert out["user_id_hash"] == hash_user_id("['a', 'b']", "pepper")
    assert out["attributes"]["enduser.id"] == out["user_id_hash"]


def test_user_ids_are_hashed_with_the_salt() -> None:
    out = row({"user.id": "user-0042"})
    expected = hash_user_id("user-0042", "pepper")
    assert out["user_id_hash"] == expected != hash_user_id("user-0042", "other")
    assert out["attributes"]["user.id"] == expected
    assert "user-0042" not in repr(out)


def test_dynatrace_genai_sample_is_kept_aside_without_content() -> None:
    """The sample's spans have no timestamps: rejected with a reason, content stripped."""
    data = realworld(
        "otlp-traces", "dynatrace-otel-collector_genainormalizer_expected-traces.converted.json"
    ).read_bytes()
    result = normalize_object("dt.json", data, SETTINGS)
    results = result.rows + result.rejections
    assert len(results) == 2
    for result in results:
        assert isinstance(result, Rejection)
        assert result.reason == "span has no timestamp"
        assert result.span["attributes"]["gen_ai.usage.input_tokens"] == 10
        assert not [key for key in result.span["attributes"] if "messages" in key]
        assert "traceloop.entity.input" not in result.span["attributes"]


def test_openinference_and_openllmetry_names_are_fallbacks() -> None:
    out = row(
        {"llm.token_count.prompt": 10, "llm.usage.completion_tokens": 5, "llm.model_name": "gpt-4o"}
    )
    assert (out["input_tokens"], out["output_tokens"], out["request_model"]) == (10, 5, "gpt-4o")


@pytest.mark.parametrize(
    ("attributes", "fields", "reason", "field"),
    [
        ({}, {"traceId": None}, "no valid trace id", "traceId"),
        ({}, {"spanId": None}, "no valid span id", "spanId"),
        ({}, {"spanId": "xyz"}, "not a 8-byte id", "spanId"),
        ({}, {"startTimeUnixNano": None}, "no timestamp", "startTimeUnixNano"),
        ({}, {"startTimeUnixNano": "soon"}, "not an integer", "startTimeUnixNano"),
        ({}, {"startTimeUnixNano": 946684799 * 10**9}, "before 2000", "startTimeUnixNano"),
        ({}, {"endTimeUnixNano": str(T0 - 1)}, "ends before it starts", "endTimeUnixNano"),
        (
            {},
            {"endTimeUnixNano": 1767484800 * 10**9},  # 2026-01-04, two days after "now"
            "in the future",
            "endTimeUnixNano",
        ),
        ({"gen_ai.usage.input_tokens": -5}, {}, "negative", "gen_ai.usage.input_tokens"),
        (
            {"gen_ai.usage.output_tokens": "lots"},
            {},
            "not a whole number",
            "gen_ai.usage.output_tokens",
        ),
        ({"gen_ai.usage.output_tokens": True}, {}, "not a number", "gen_ai.usage.output_tokens"),
        ({"cost.usd": "-1"}, {}, "negative", "cost.usd"),
        ({"gen_ai.usage.cost": "a lot"}, {}, "not a number", "gen_ai.usage.cost"),
        ({"big": "x" * 70_000}, {}, "over 65536 bytes", "big"),
        ({}, {"kind": "X"}, "unknown kind", "kind"),
        ({}, {"status": {"code": "STATUS_CODE_MAYBE"}}, "unknown status.code", "status.code"),
        (
            {},
            {"attributes": [{"key": "n", "value": {"intValue": "many"}}]},
            "bad attribute value",
            "n",
        ),
    ],
)
def test_rule_breaking_rows_are_rejected_with_a_reason(
    attributes: dict[str, Any], fields: dict[str, Any], reason: str, field: str
) -> None:
    rejected = rejection(attributes, **fields)
    assert reason in rejected.reason
    assert rejected.field == field


def test_row_keys_are_in_copy_column_order() -> None:
    from spancost.spans.normalize import ROW_COLUMNS

    assert tuple(row({"gen_ai.request.model": "m"})) == ROW_COLUMNS
