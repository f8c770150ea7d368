"""Normalisation: aliases, typed columns, privacy and row-level rules."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from spancost.normalize import NormalizeSettings, Rejection, hash_user_id, to_row
from spancost.otlp import DecodedSpan, decode_object
from tests.conftest import realworld

pytestmark = pytest.mark.unit

SETTINGS = NormalizeSettings(user_id_salt="pepper", now=datetime(2026, 1, 2, tzinfo=UTC))
T0 = 1767225600000000000  # 2026-01-01T00:00:00Z


def span(attributes: dict[str, Any] | None = None, **fields: Any) -> DecodedSpan:
    base: dict[str, Any] = {
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "parent_span_id": None,
        "name": "chat gpt-5.4",
        "kind": 3,
        "start_time_unix_nano": T0,
        "end_time_unix_nano": T0 + 2_500_000_000,
        "status_code": 0,
        "status_message": None,
        "attributes": attributes or {},
        "resource_attributes": {"service.name": "svc", "deployment.environment": "prod"},
        "scope_name": "openai",
        "scope_version": "1.0",
        "scope_attributes": {},
        "events": [],
        "links": [],
        "problems": (),
    }
    base.update(fields)
    return DecodedSpan(**base)


def row(attributes: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    result = to_row(span(attributes, **fields), SETTINGS)
    assert isinstance(result, dict), result
    return result


def rejection(attributes: dict[str, Any] | None = None, **fields: Any) -> Rejection:
    result = to_row(span(attributes, **fields), SETTINGS)
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
    assert out["start_time"] == datetime(2026, 1, 1, tzinfo=UTC)
    assert out["end_time"] == datetime(2026, 1, 1, 0, 0, 2, 500000, tzinfo=UTC)


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
    results = [to_row(decoded, SETTINGS) for decoded in decode_object("dt.json", data)]
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
        ({}, {"trace_id": None}, "no valid trace id", "traceId"),
        ({}, {"span_id": None}, "no valid span id", "spanId"),
        ({}, {"start_time_unix_nano": None}, "no timestamp", "startTimeUnixNano"),
        ({}, {"start_time_unix_nano": 946684799 * 10**9}, "before 2000", "startTimeUnixNano"),
        (
            {},
            {"end_time_unix_nano": 1767484800 * 10**9},  # 2026-01-04, two days after "now"
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
        ({"cost.usd": "-1"}, {}, "negative", "gen_ai.usage.cost"),
        ({"big": "x" * 70_000}, {}, "over 65536 bytes", "big"),
        ({}, {"problems": (("kind", "unknown kind 'X'"),)}, "unknown kind", "kind"),
    ],
)
def test_rule_breaking_rows_are_rejected_with_a_reason(
    attributes: dict[str, Any], fields: dict[str, Any], reason: str, field: str
) -> None:
    rejected = rejection(attributes, **fields)
    assert reason in rejected.reason
    assert rejected.field == field


def test_row_keys_are_in_copy_column_order() -> None:
    from spancost.normalize import ROW_COLUMNS

    assert tuple(row({"gen_ai.request.model": "m"})) == ROW_COLUMNS
