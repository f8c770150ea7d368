"""The LLM cost marts: per call, per trace, per agent and per day (issue 10).

Spans go through the real loader and a real `dbt build`; every expected cost is
computed here from the price seed, independently of the SQL.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from spancost import pipeline
from spancost.settings import Settings, SpanSource
from spancost.transform import dbt_build, report
from tests.integration.transform.test_llm_call_counting import cost
from tests.otlp_factory import attr, key

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 12, 10, 0, tzinfo=UTC)
NS = int(T0.timestamp()) * 10**9
TRACE = "cd" * 16
MARTS = (
    "fct_llm_calls",
    "fct_trace_costs",
    "fct_agent_costs",
    "agg_pipeline_costs_daily",
    "agg_pipeline_costs_hourly",
    "rpt_duplicate_llm_calls",
)


def span(
    span_id: str,
    parent: str | None,
    offset_ms: int,
    length_ms: int,
    *,
    error: bool = False,
    **attributes,
) -> dict:
    return {
        "traceId": TRACE,
        "spanId": span_id,
        **({"parentSpanId": parent} if parent else {}),
        "name": attributes.pop("name", "chat"),
        "kind": 3,
        "startTimeUnixNano": str(NS + offset_ms * 10**6),
        "endTimeUnixNano": str(NS + (offset_ms + length_ms) * 10**6),
        "attributes": [
            attr(k, v)
            for k, v in {"pipeline.id": "p1", "team": "t1", "feature": "f1", **attributes}.items()
        ],
        **({"status": {"code": "STATUS_CODE_ERROR", "message": "boom"}} if error else {}),
    }


def agent(span_id: str, parent: str | None, offset_ms: int, length_ms: int, name: str) -> dict:
    return span(
        span_id,
        parent,
        offset_ms,
        length_ms,
        name=f"invoke_agent {name}",
        **{"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name},
    )


def call(span_id: str, parent: str, offset_ms: int, model: str, inp: int, out: int, **extra):
    usage = {"gen_ai.usage.input_tokens": inp, "gen_ai.usage.output_tokens": out}
    return span(
        span_id,
        parent,
        offset_ms,
        1000,
        **{"gen_ai.operation.name": "chat", "gen_ai.request.model": model, **usage, **extra},
    )


def put(s3, minute: int, scopes: list[dict], serial: int) -> None:
    request = {
        "resourceSpans": [
            {"resource": {"attributes": [attr("service.name", "svc")]}, "scopeSpans": scopes}
        ]
    }
    s3.put_object(
        Bucket="spans",
        Key=key("otel", T0 + timedelta(minutes=minute), serial),
        Body=gzip.compress(json.dumps(request).encode(), mtime=0),
    )


def ingest(s3, db_url: str, start: datetime, end: datetime, run_id: str) -> None:
    settings = Settings(
        spans=SpanSource(bucket="spans", prefix="otel"), user_id_salt="s", validate=False
    )
    pipeline.ingest_spans(settings, s3, start, end, url=db_url, run_id=run_id)


def checksums(db_url: str) -> dict[str, tuple[int, str]]:
    with psycopg.connect(db_url) as conn:
        return {
            mart: conn.execute(
                f"select count(*), md5(coalesce(string_agg(t::text, '|' order by t::text), ''))"
                f" from marts.{mart} as t"
            ).fetchone()
            for mart in MARTS
        }


def test_trace_and_agent_rollups_errors_retries_and_latency(s3, db_url: str) -> None:
    sup, worker_a, worker_b = "a" * 16, "b" * 16, "c" * 16
    spans = [
        agent(sup, None, 0, 60_000, "supervisor"),
        agent(worker_a, sup, 1_000, 20_000, "researcher"),
        agent(worker_b, sup, 30_000, 20_000, "writer"),
        call("1" * 16, sup, 500, "gpt-5.4", 1000, 100),
        # the researcher: a call that fails without usage, then its retry
        span(
            "2" * 16,
            worker_a,
            2_000,
            300,
            error=True,
            **{
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-5.4-mini",
                "error.type": "429",
            },
        ),
        call(
            "3" * 16,
            worker_a,
            3_000,
            "gpt-5.4-mini",
            4000,
            400,
            **{"gen_ai.response.time_to_first_chunk": 0.42},
        ),
        # a chat span naming an agent is no agent of its own; a first send is no retry
        call(
            "4" * 16,
            worker_b,
            31_000,
            "gpt-5.4",
            2000,
            300,
            **{"gen_ai.agent.name": "writer", "http.request.resend_count": 0},
        ),
        # the HTTP conventions' resend ordinal: the client sent this request again
        call(
            "5" * 16,
            worker_b,
            33_000,
            "claude-haiku-4.5",
            5000,
            500,
            **{"http.request.resend_count": 1},
        ),
    ]
    put(s3, 1, [{"scope": {"name": "app"}, "spans": spans}], 400000001)
    ingest(s3, db_url, T0, T0 + timedelta(minutes=15), "rollups")
    dbt_build.build(db_url)

    own_sup = cost("gpt-5.4", uncached=1000, output=100)
    retry = cost("gpt-5.4-mini", uncached=4000, output=400)
    resent = cost("claude-haiku-4.5", uncached=5000, output=500)
    own_b = cost("gpt-5.4", uncached=2000, output=300) + resent
    total = own_sup + retry + own_b
    with psycopg.connect(db_url) as conn:
        agents = {
            row[0]: row[1:]
            for row in conn.execute(
                "select agent_name, parent_agent_span_id, depth, llm_calls, subtree_llm_calls,"
                " own_cost_usd, subtree_cost_usd from marts.fct_agent_costs"
            )
        }
        trace = conn.execute(
            "select root_span_name, pipeline_id, team, feature, llm_calls, error_calls,"
            " retry_calls, unpriced_calls, estimated_cost_usd, error_cost_usd, retry_cost_usd,"
            " duration_ms from marts.fct_trace_costs where trace_id = %s",
            [TRACE],
        ).fetchone()
        calls = {
            row[0]: row[1:]
            for row in conn.execute(
                "select span_id, is_error, is_retry, estimated_cost_usd, ttft_ms, agent_name"
                " from marts.fct_llm_calls"
            )
        }
        split = conn.execute(
            "select input_cost_usd, output_cost_usd, estimated_cost_usd from marts.fct_llm_calls"
            " where span_id = %s",
            ["3" * 16],
        ).fetchone()
        unequal = conn.execute(
            "select count(*) from marts.fct_llm_calls"
            " where input_cost_usd + output_cost_usd is distinct from estimated_cost_usd"
        ).fetchone()[0]
        daily = conn.execute(
            "select sum(calls), sum(estimated_cost_usd), sum(error_calls), sum(retry_cost_usd)"
            " from marts.agg_pipeline_costs_daily where day = date '2026-01-12'"
        ).fetchone()
    assert agents == {
        "supervisor": (None, 0, 1, 5, own_sup, total),
        "researcher": (sup, 1, 2, 2, retry, retry),
        "writer": (sup, 1, 2, 2, own_b, own_b),
    }
    # A supervisor's subtree is its own cost plus its children's subtrees.
    sup_row, a_row, b_row = agents["supervisor"], agents["researcher"], agents["writer"]
    assert sup_row[5] == sup_row[4] + a_row[5] + b_row[5]
    assert trace == (
        "invoke_agent supervisor",
        "p1",
        "t1",
        "f1",
        5,
        1,
        2,
        0,
        total,
        Decimal(0),
        retry + resent,
        Decimal(60_000),
    )
    assert calls["2" * 16][:3] == (True, False, Decimal(0))
    assert calls["3" * 16] == (False, True, retry, Decimal("420.00"), "researcher")
    assert calls["4" * 16][4] == "writer" and calls["4" * 16][1] is False
    assert calls["5" * 16][:3] == (False, True, resent)
    assert calls["1" * 16][4] == "supervisor"
    assert daily == (5, total, 1, retry + resent)
    # The prompt's part and the answer's part of a call's cost add up to it.
    assert split == (
        cost("gpt-5.4-mini", uncached=4000, output=0),
        cost("gpt-5.4-mini", uncached=0, output=400),
        retry,
    )
    assert unequal == 0  # every call, the failed one without usage (0 + 0) included

    # `spancost report` prints each mart's cut of the same day, with its window.
    day = (T0.replace(hour=0), T0.replace(hour=0) + timedelta(days=1))
    agent_table = report.table("agent", db_url, *day, limit=2)
    assert "rows of marts.fct_agent_costs whose start_time is from 2026-01-12 00:00" in agent_table
    assert [line.split()[0] for line in agent_table.splitlines()[4:6]] == sorted(
        agents, key=lambda name: agents[name][4], reverse=True
    )[:2]
    trace_table = report.table("trace", db_url, *day)
    assert TRACE in trace_table and f"{total:,.4f}" in trace_table
    model_table = report.table("model", db_url, *day)
    assert f"total estimated cost: ${total:,.4f}" in model_table
    assert f"{cost('claude-haiku-4.5', uncached=5000, output=500):,.4f}" in model_table
    assert report.table("trace", db_url, day[1], day[1] + timedelta(days=1)).count(TRACE) == 0


def test_trace_across_windows_counts_once_and_full_refresh_equals_incremental(
    s3, db_url: str
) -> None:
    # One API call reported by two instrumentations, the reports landing in two
    # export intervals and starting on either side of an hour boundary.
    root = "e" * 16
    first = call("6" * 16, root, 3_599_950, "gpt-5.4", 3000, 200)  # 10:59:59.950
    second = call("7" * 16, root, 3_600_010, "gpt-5.4", 3000, 200)  # 11:00:00.010
    later = call("8" * 16, root, 4 * 3_600_000, "gpt-5.4-mini", 700, 70)  # 14:00
    put(
        s3,
        1,
        [{"scope": {"name": "app"}, "spans": [span(root, None, 0, 5 * 3_600_000, name="job")]}]
        + [{"scope": {"name": "opentelemetry.instrumentation.openai_v2"}, "spans": [first]}],
        500000001,
    )
    ingest(s3, db_url, T0, T0 + timedelta(minutes=15), "w1")
    dbt_build.build(db_url)
    put(
        s3,
        20,
        [{"scope": {"name": "opentelemetry.instrumentation.openai.v1"}, "spans": [second]}]
        + [{"scope": {"name": "app"}, "spans": [later]}],
        500000002,
    )
    ingest(s3, db_url, T0 + timedelta(minutes=15), T0 + timedelta(minutes=30), "w2")
    dbt_build.build(db_url)

    expected = cost("gpt-5.4", uncached=3000, output=200) + cost(
        "gpt-5.4-mini", uncached=700, output=70
    )
    with psycopg.connect(db_url) as conn:
        (total, calls) = conn.execute(
            "select sum(estimated_cost_usd), sum(llm_calls) from marts.fct_trace_costs"
        ).fetchone()
        hourly = conn.execute(
            "select sum(estimated_cost_usd), sum(calls) from marts.agg_pipeline_costs_hourly"
        ).fetchone()
    assert (total, calls) == (expected, 2)
    assert hourly == (expected, 2)
    incremental = checksums(db_url)

    # A backfill of only the second report's hour rebuilds the whole trace.
    dbt_build.build(
        db_url, dbt_vars={"start_time": "2026-01-12T11:00:00Z", "end_time": "2026-01-12T11:59:00Z"}
    )
    assert checksums(db_url) == incremental

    dbt_build.build(db_url, full_refresh=True)
    assert checksums(db_url) == incremental
    assert incremental["fct_llm_calls"][0] == 2
    assert incremental["rpt_duplicate_llm_calls"][0] == 1
