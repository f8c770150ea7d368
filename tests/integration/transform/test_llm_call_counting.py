"""One API call costs once, priced by what its emitter meant (issue 10, first slice).

Spans shaped as the real instrumentations write them (scope names, attribute
names and token counts from their source; see dbt/seeds/emitter_token_semantics.csv)
go through the real loader and a real `dbt build`. The mart's cost must equal
the provider's usage times the list price, computed here from the price seed.
"""

from __future__ import annotations

import csv
import gzip
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from spancost import pipeline
from spancost.settings import Settings, SpanSource
from spancost.transform import dbt_build
from tests.otlp_factory import attr, key

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 1, 12, 10, 0, tzinfo=UTC)
NS = int(T0.timestamp()) * 10**9
TRACE = "ab" * 16


def price(model: str) -> dict[str, Decimal]:
    with open(REPO / "dbt" / "seeds" / "llm_prices.csv", newline="") as seed:
        (row,) = [r for r in csv.DictReader(seed) if r["model"] == model and not r["effective_to"]]
    return {
        name: Decimal(row[f"{name}_usd_per_mtok"])
        for name in ("input", "output", "cache_read", "cache_write")
    }


def cost(
    model: str, *, uncached: int, cache_read: int = 0, cache_write: int = 0, output: int
) -> Decimal:
    p = price(model)
    return (
        uncached * p["input"]
        + cache_read * p["cache_read"]
        + cache_write * p["cache_write"]
        + output * p["output"]
    ) / Decimal(1_000_000)


def span(span_id: str, parent: str | None, offset_ms: int, length_ms: int, **attributes) -> dict:
    return {
        "traceId": TRACE,
        "spanId": span_id,
        **({"parentSpanId": parent} if parent else {}),
        "name": attributes.pop("name", "chat"),
        "kind": 3,
        "startTimeUnixNano": str(NS + offset_ms * 10**6),
        "endTimeUnixNano": str(NS + (offset_ms + length_ms) * 10**6),
        "attributes": [attr(k, v) for k, v in {"pipeline.id": "p1", **attributes}.items()],
    }


def scope(name: str, spans: list[dict]) -> dict:
    return {"scope": {"name": name}, "spans": spans}


def test_double_reported_and_nested_calls_cost_once_as_their_emitters_meant(
    s3, db_url: str
) -> None:
    agent = "a" * 16
    scopes = [
        scope(
            "demo.agents",
            [
                span(
                    agent,
                    None,
                    0,
                    10_000,
                    name="invoke_agent triage",
                    **{"gen_ai.operation.name": "invoke_agent"},
                )
            ],
        ),
        # OpenLLMetry's Anthropic instrumentation: input includes the cache.
        scope(
            "opentelemetry.instrumentation.anthropic",
            [
                span(
                    "1" * 16,
                    agent,
                    100,
                    2000,
                    **{
                        "gen_ai.provider.name": "anthropic",
                        "gen_ai.request.model": "claude-sonnet-4-5-20250929",
                        "gen_ai.usage.input_tokens": 12345,
                        "gen_ai.usage.cache_read.input_tokens": 2000,
                        "gen_ai.usage.cache_creation.input_tokens": 345,
                        "gen_ai.usage.output_tokens": 678,
                    },
                )
            ],
        ),
        # A second tracer reporting the same call with Anthropic's own count (no cache).
        scope(
            "anthropic.sdk.tracing",
            [
                span(
                    "2" * 16,
                    agent,
                    101,
                    1990,
                    **{
                        "gen_ai.provider.name": "anthropic",
                        "gen_ai.request.model": "claude-sonnet-4-5-20250929",
                        "gen_ai.usage.input_tokens": 10000,
                        "gen_ai.usage.output_tokens": 678,
                    },
                )
            ],
        ),
        # A framework span carrying the usage of the client call below it.
        scope(
            "langchain",
            [
                span(
                    "3" * 16,
                    agent,
                    3000,
                    3000,
                    **{
                        "gen_ai.request.model": "gpt-5.4",
                        "gen_ai.usage.input_tokens": 500,
                        "gen_ai.usage.output_tokens": 50,
                    },
                )
            ],
        ),
        scope(
            "opentelemetry.instrumentation.openai_v2",
            [
                span(
                    "4" * 16,
                    "3" * 16,
                    3100,
                    2800,
                    **{
                        "gen_ai.system": "openai",
                        "gen_ai.request.model": "gpt-5.4",
                        "gen_ai.usage.input_tokens": 500,
                        "gen_ai.usage.output_tokens": 50,
                    },
                )
            ],
        ),
        # The botocore Bedrock extension copies Bedrock's input count, without cache.
        scope(
            "opentelemetry.instrumentation.botocore.bedrock-runtime",
            [
                span(
                    "5" * 16,
                    agent,
                    7000,
                    1000,
                    **{
                        "gen_ai.system": "aws.bedrock",
                        "gen_ai.request.model": "us.anthropic.claude-haiku-4-5-20251001-v1:0",
                        "gen_ai.usage.input_tokens": 1000,
                        "gen_ai.usage.cache_read.input_tokens": 300,
                        "gen_ai.usage.output_tokens": 40,
                    },
                )
            ],
        ),
    ]
    request = {
        "resourceSpans": [
            {"resource": {"attributes": [attr("service.name", "svc")]}, "scopeSpans": scopes}
        ]
    }
    s3.put_object(
        Bucket="spans",
        Key=key("otel", T0, 300000001),
        Body=gzip.compress(json.dumps(request).encode(), mtime=0),
    )
    settings = Settings(
        spans=SpanSource(bucket="spans", prefix="otel"), user_id_salt="s", validate=False
    )
    report = pipeline.ingest_spans(
        settings, s3, T0, T0 + timedelta(minutes=15), url=db_url, run_id="counting"
    )
    assert report.spans == 6

    dbt_build.build(db_url)

    expected = (
        cost("claude-sonnet-4.5", uncached=10000, cache_read=2000, cache_write=345, output=678)
        + cost("gpt-5.4", uncached=500, output=50)
        + cost("claude-haiku-4.5", uncached=1000, cache_read=300, output=40)
    )
    with psycopg.connect(db_url) as conn:
        total, calls = conn.execute(
            "select sum(estimated_cost_usd), sum(calls) from marts.agg_pipeline_costs_hourly"
        ).fetchone()
        dropped = conn.execute(
            "select dropped_span_id, kept_span_id, dedupe_rule from marts.rpt_duplicate_llm_calls"
            " order by dropped_span_id"
        ).fetchall()
        bedrock_input = conn.execute(
            "select input_tokens, reported_input_tokens from intermediate.int_llm_calls_counted"
            " where span_id = %s",
            ["5" * 16],
        ).fetchone()
    assert (total, calls) == (expected, 3)
    assert dropped == [
        ("2" * 16, "1" * 16, "same_usage_but_cache"),
        ("3" * 16, "4" * 16, "nested_rollup"),
    ]
    assert bedrock_input == (1300, 1000)

    from spancost.transform import report

    day = T0.replace(hour=0)
    ((_, _, _, _, _, that_day),) = report.pipeline_costs(db_url, day, day + timedelta(days=1))
    assert that_day == expected
    assert report.pipeline_costs(db_url, day + timedelta(days=1), day + timedelta(days=2)) == []
    assert "hours from 2026-01-12 00:00" in report.pipeline_costs_table(
        db_url, day, day + timedelta(days=1)
    )
