"""Cost anomalies: a retry loop that triples one feature's hourly cost is caught (issue 12).

Fifteen days of steady traffic (pipeline p1, realtime: one call an hour in each of
features f1 and f2) go through the real loader and a full `dbt build`; then the
spans of one hour in which f1 retries in a loop (three calls) land, and the next
ordinary incremental build reports it: f1 in that hour and p1 in that hour, and
nothing for the steady feature, the days or any other hour. Costs come from the
price seed, computed here.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from spancost.transform import dbt_build
from tests.integration.transform.test_llm_call_counting import cost
from tests.integration.transform.test_llm_marts import ingest
from tests.otlp_factory import attr, key

pytestmark = pytest.mark.integration

START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 15
LOOP_HOUR = START + timedelta(days=DAYS - 1, hours=14)  # 14:00 on the last day
MODEL, INPUT = "claude-opus-4", 100_000
CALL = cost(MODEL, uncached=INPUT, output=0)  # 1.50 USD: over anomaly_min_cost_usd


def span(n: int, start: datetime, feature: str, pipeline: str = "p1") -> dict:
    ns = int(start.timestamp()) * 10**9
    attributes = {
        "pipeline.id": pipeline,
        "team": "support" if pipeline == "support-triage" else "t1",
        "feature": feature,
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": MODEL,
        "gen_ai.usage.input_tokens": INPUT,
        "gen_ai.usage.output_tokens": 0,
    }
    return {
        "traceId": f"{n + 1:032x}",
        "spanId": f"{n + 1:016x}",
        "name": f"chat {MODEL}",
        "kind": 3,
        "startTimeUnixNano": str(ns),
        "endTimeUnixNano": str(ns + 10**9),
        "attributes": [attr(k, v) for k, v in attributes.items()],
    }


def put(s3, spans: list[dict], at: datetime, serial: int) -> None:
    request = {
        "resourceSpans": [
            {
                "resource": {"attributes": [attr("service.name", "svc")]},
                "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}],
            }
        ]
    }
    s3.put_object(
        Bucket="spans",
        Key=key("otel", at, serial),
        Body=gzip.compress(json.dumps(request).encode(), mtime=0),
    )


def anomalies(db_url: str) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "select period_start, grain, scope_type, scope_value, observed_cost_usd,"
            " baseline_cost_usd, ratio, threshold, severity from marts.fct_cost_anomalies"
            " order by scope_type, period_start"
        ).fetchall()


def test_a_retry_loop_is_an_anomaly_in_the_next_transform_and_steady_traffic_is_not(
    s3, db_url: str
) -> None:
    s3.create_bucket(Bucket="spans")
    n = 0
    for day in range(DAYS):
        spans = []
        for hour in range(24):
            at = START + timedelta(days=day, hours=hour, minutes=5)
            for feature in ("f1", "f2"):
                spans.append(span(n, at, feature))
                n += 1
        put(s3, spans, START + timedelta(days=day), day)
    ingest(s3, db_url, START, START + timedelta(days=DAYS), "steady")
    dbt_build.build(db_url)
    assert anomalies(db_url) == []  # steady: no false positives

    # The loop: f1 calls twice more in 14:00 of the last day (its own hour was already
    # there), tripling f1's cost in that hour and doubling p1's.
    loop = [span(n + k, LOOP_HOUR + timedelta(minutes=20 + k), "f1") for k in range(2)]
    put(s3, loop, LOOP_HOUR + timedelta(minutes=30), 999)
    ingest(s3, db_url, LOOP_HOUR, LOOP_HOUR + timedelta(hours=1), "loop")
    dbt_build.build(db_url, dbt_vars={"start_time": "", "end_time": ""})

    assert anomalies(db_url) == [
        # p1 = f1 + f2: 4.50 + 1.50 against 3.00, twice the realtime threshold of 2 -> warn
        (LOOP_HOUR, "hour", "feature", "f1", 3 * CALL, CALL, Decimal("3.0000"), 2, "warn"),
        (LOOP_HOUR, "hour", "pipeline", "p1", 4 * CALL, 2 * CALL, Decimal("2.0000"), 2, "warn"),
    ]
