"""One API call costs once, with real instrumentation packages (issue 10).

The real SDKs (anthropic, openai, boto3) call a fake provider on loopback
(tests/fake_llm_provider.py) that answers with usage chosen here. The real
instrumentations trace them: OpenLLMetry's anthropic and openai, the Anthropic
SDK's own tracing, the official openai-v2 and botocore's Bedrock extension. The
OpenAI calls are traced by OpenLLMetry and openai-v2 at once, in both wrapping
orders, and the Anthropic call by OpenLLMetry and the SDK: each of those calls
gives two spans. The spans go to OTLP/protobuf, a gzip object in S3, the real
loader and a real `dbt build`. Each call must count once, and cost the
provider's usage times the list price in dbt/seeds/llm_prices.csv.

The instrumentations run in child processes (emit_spans.py): they patch the SDKs
for a whole process and cannot all be undone. The Anthropic SDK's own spans,
alone, must price the cache write it names `gen_ai.usage.cache_write.input_tokens`.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from spancost import pipeline
from spancost.settings import Settings, SpanSource
from spancost.transform import dbt_build
from tests.fake_llm_provider import AnthropicUsage, BedrockUsage, FakeProvider, OpenAIUsage, serve
from tests.integration.instrumentation.emit_spans import HAIKU_BEDROCK, PIPELINE, SONNET
from tests.integration.transform.test_llm_call_counting import cost

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
# Usage per model; each model is called once. OpenAI's prompt_tokens include the
# cached tokens; Anthropic's and Bedrock's input tokens do not.
OPENAI = {
    "gpt-5.4": OpenAIUsage(1200, 300, cached_tokens=200, reasoning_tokens=100),
    "gpt-4.1-mini": OpenAIUsage(700, 70, cached_tokens=100),  # streamed
    "gpt-5.4-mini": OpenAIUsage(900, 120, cached_tokens=300),  # other wrapping order
}
ANTHROPIC = {SONNET: AnthropicUsage(1000, 200, 3000, 400)}
BEDROCK = {HAIKU_BEDROCK: BedrockUsage(800, 90, 500, 60)}
# The price-seed model each provider model is priced as.
PRICED_AS = {
    "gpt-5.4": "gpt-5.4",
    "gpt-4.1-mini": "gpt-4.1-mini",
    "gpt-5.4-mini": "gpt-5.4-mini",
    SONNET: "claude-sonnet-4.5",
    HAIKU_BEDROCK: "claude-haiku-4.5",
}

OPENLLMETRY_OPENAI = "opentelemetry.instrumentation.openai.v1"
OPENAI_V2 = "opentelemetry.util.genai.handler"  # openai-v2 emits through util-genai
OPENLLMETRY_ANTHROPIC = "opentelemetry.instrumentation.anthropic"
ANTHROPIC_SDK = "com.anthropic.sdk.python"
BOTOCORE = "opentelemetry.instrumentation.botocore.bedrock-runtime"


def expected_costs() -> dict[str, Decimal]:
    """The cost of each call, by price-seed model, from the usage the provider answers."""
    costs = {}
    for model, usage in OPENAI.items():
        costs[PRICED_AS[model]] = cost(
            PRICED_AS[model],
            uncached=usage.prompt_tokens - usage.cached_tokens,
            cache_read=usage.cached_tokens,
            output=usage.completion_tokens,
        )
    for model, usage in ANTHROPIC.items():
        costs[PRICED_AS[model]] = cost(
            PRICED_AS[model],
            uncached=usage.input_tokens,
            cache_read=usage.cache_read_input_tokens,
            cache_write=usage.cache_creation_input_tokens,
            output=usage.output_tokens,
        )
    for model, usage in BEDROCK.items():
        costs[PRICED_AS[model]] = cost(
            PRICED_AS[model],
            uncached=usage.input_tokens,
            cache_read=usage.cache_read_input_tokens,
            cache_write=usage.cache_write_input_tokens,
            output=usage.output_tokens,
        )
    return costs


def emit(url: str, order: str, out: Path) -> ExportTraceServiceRequest:
    """Runs emit_spans in a child process; its OTLP request, also left in ``out``."""
    child = subprocess.run(
        [sys.executable, "-m", "tests.integration.instrumentation.emit_spans", url, order, out],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, f"emit_spans {order} failed:\n{child.stderr}"
    return ExportTraceServiceRequest.FromString(out.read_bytes())


def scope_counts(request: ExportTraceServiceRequest) -> Counter[str]:
    return Counter(
        scope_spans.scope.name
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for _ in scope_spans.spans
    )


def load_and_build(s3, db_url: str, tmp_path: Path, requests) -> None:
    """Each OTLP request as a gzip object in S3, through the real loader and `dbt build`."""
    now = datetime.now(UTC)
    upload = now.replace(second=0, microsecond=0)
    window = upload.replace(minute=upload.minute - upload.minute % 15)
    for unique, order in enumerate(requests, start=1):
        s3.put_object(
            Bucket="spans",
            Key=f"otel/{upload:year=%Y/month=%m/day=%d/hour=%H/minute=%M}/traces_{unique}.binpb.gz",
            Body=gzip.compress((tmp_path / f"{order}.binpb").read_bytes(), mtime=0),
        )
    settings = Settings(
        spans=SpanSource(bucket="spans", prefix="otel"), user_id_salt="s", validate=False
    )
    report = pipeline.ingest_spans(
        settings, s3, window, window + timedelta(minutes=15), url=db_url, run_id="instrumented"
    )
    assert report.spans == sum(sum(scope_counts(r).values()) for r in requests.values())

    dbt_build.build(db_url)


def test_each_real_api_call_counts_once_at_the_providers_usage_times_list_price(
    s3, db_url: str, tmp_path: Path
) -> None:
    provider = FakeProvider(openai=OPENAI, anthropic=ANTHROPIC, bedrock=BEDROCK)
    with serve(provider):
        requests = {
            order: emit(provider.url, order, tmp_path / f"{order}.binpb")
            for order in ("v2-outer", "openllmetry-outer")
        }

    # What the provider saw: five API calls, one per model.
    assert Counter(request.model for request in provider.requests) == Counter(PRICED_AS.keys())
    # What the instrumentations emitted: two spans for each double-traced call.
    assert scope_counts(requests["v2-outer"]) == {
        "tests.pipeline": 1,
        OPENLLMETRY_ANTHROPIC: 1,
        ANTHROPIC_SDK: 1,
        OPENLLMETRY_OPENAI: 2,
        OPENAI_V2: 2,
        BOTOCORE: 1,
    }
    assert scope_counts(requests["openllmetry-outer"]) == {
        "tests.pipeline": 1,
        OPENLLMETRY_OPENAI: 1,
        OPENAI_V2: 1,
    }

    load_and_build(s3, db_url, tmp_path, requests)

    expected = expected_costs()
    with psycopg.connect(db_url) as conn:
        calls = conn.execute(
            "select priced_model, count(*), sum(estimated_cost_usd), min(pipeline_id),"
            " max(pipeline_id) from marts.fct_llm_calls group by priced_model"
        ).fetchall()
        dropped = conn.execute(
            "select model, dropped_scope_name, kept_scope_name, dedupe_rule"
            " from marts.rpt_duplicate_llm_calls"
        ).fetchall()
        daily = conn.execute(
            "select pipeline_id, sum(calls), sum(estimated_cost_usd)"
            " from marts.agg_pipeline_costs_daily group by pipeline_id"
        ).fetchall()

    by_model = {model: (count, total) for model, count, total, _, _ in calls}
    assert by_model == {model: (1, total) for model, total in expected.items()}
    assert {(low, high) for _, _, _, low, high in calls} == {(PIPELINE, PIPELINE)}
    # The second span of each double-traced call is listed as the duplicate, and the
    # one kept is the one whose cache detail prices the call right.
    assert sorted(dropped) == sorted(
        [
            (SONNET, ANTHROPIC_SDK, OPENLLMETRY_ANTHROPIC, "same_usage"),
            ("gpt-5.4", OPENAI_V2, OPENLLMETRY_OPENAI, "nested_rollup"),
            ("gpt-4.1-mini", OPENAI_V2, OPENLLMETRY_OPENAI, "nested_rollup"),
            ("gpt-5.4-mini", OPENAI_V2, OPENLLMETRY_OPENAI, "same_usage"),
        ]
    ), dropped
    assert daily == [(PIPELINE, len(expected), sum(expected.values()))]


def test_the_anthropic_sdks_own_spans_alone_price_cache_writes(
    s3, db_url: str, tmp_path: Path
) -> None:
    provider = FakeProvider(anthropic=ANTHROPIC)
    with serve(provider):
        requests = {"sdk-only": emit(provider.url, "sdk-only", tmp_path / "sdk-only.binpb")}
    assert scope_counts(requests["sdk-only"]) == {"tests.pipeline": 1, ANTHROPIC_SDK: 1}
    load_and_build(s3, db_url, tmp_path, requests)

    with psycopg.connect(db_url) as conn:
        calls = conn.execute(
            "select priced_model, count(*), sum(estimated_cost_usd) from marts.fct_llm_calls"
            " group by priced_model"
        ).fetchall()
    assert calls == [("claude-sonnet-4.5", 1, expected_costs()["claude-sonnet-4.5"])]
