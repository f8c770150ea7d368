"""The Great Expectations checkpoint on the marts, after a real dbt build.

Sixteen days of calls: p1 steady, p2 with a cost spike on the newest whole day, p3
with a 95% drop in calls that day. The checkpoint `pipeline_cost_profile` warns on
both, records them in ops.validation_results, and does not fail.
"""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from spancost import pipeline
from spancost.settings import Settings, SpanSource
from spancost.transform import dbt_build
from tests.otlp_factory import export, key, llm_span

pytestmark = pytest.mark.integration

D0 = datetime(2026, 3, 1, tzinfo=UTC)
NEWEST_WHOLE_DAY = D0 + timedelta(days=14)
SETTINGS = Settings(
    spans=SpanSource(bucket="spans", prefix="otel"), user_id_salt="s", validate=False
)


def day_spans(rng: random.Random, day: int) -> list[dict]:
    start = D0 + timedelta(days=day, hours=9)
    spans = []
    if day < 14:
        spans += [llm_span(rng, start, pipeline="p1", input_tokens=1000 + 100 * (day % 3))]
        spans += [llm_span(rng, start, pipeline="p2", input_tokens=2000 + 50 * (day % 4))]
        spans += [llm_span(rng, start, pipeline="p3") for _ in range(20)]
    elif day == 14:  # the newest whole day
        spans += [llm_span(rng, start, pipeline="p1", input_tokens=1100)]
        spans += [llm_span(rng, start, pipeline="p2", input_tokens=400_000)]  # a spike
        spans += [llm_span(rng, start, pipeline="p3")]  # 1 call instead of 20
    else:  # today, still filling
        spans += [llm_span(rng, start, pipeline="p1")]
    return spans


def test_the_marts_checkpoint_warns_on_a_cost_spike_and_a_volume_drop(s3, db_url: str) -> None:
    rng = random.Random(21)
    for day in range(16):
        upload = D0 + timedelta(days=day, hours=10)
        s3.put_object(
            Bucket="spans",
            Key=key("otel", upload, 600000000 + day),
            Body=export(day_spans(rng, day)),
            ContentEncoding="gzip",
        )
    pipeline.ingest_spans(SETTINGS, s3, D0, D0 + timedelta(days=16), url=db_url, run_id="history")
    dbt_build.build(db_url)

    with psycopg.connect(db_url) as conn:
        daily = conn.execute(
            "select pipeline_id, day, sum(estimated_cost_usd), sum(calls)"
            " from marts.agg_pipeline_costs_daily group by 1, 2"
        ).fetchall()
        profile = {
            row[0]: row[1:]
            for row in conn.execute(
                "select pipeline_id, day, cost_z_score, calls_ratio"
                " from marts.rpt_pipeline_cost_profile"
            ).fetchall()
        }
    costs = {(p, d): (c, n) for p, d, c, n in daily}
    newest = NEWEST_WHOLE_DAY.date()
    expected_z: dict[str, Decimal] = {}
    for name in ("p1", "p2"):  # p3's trailing cost never varies: no z-score
        trailing = [
            costs.get((name, newest - timedelta(days=n)), (Decimal(0), 0)) for n in range(1, 15)
        ]
        mean = statistics.fmean(float(c) for c, _ in trailing)
        spread = statistics.stdev(float(c) for c, _ in trailing)
        expected_z[name] = Decimal((float(costs[(name, newest)][0]) - mean) / spread)
    assert set(profile) == {"p1", "p2", "p3"}
    for name, (day, z, _) in profile.items():
        assert day == newest
        if name == "p3":
            assert z is None
        else:
            assert abs(float(z) - float(expected_z[name])) < 1e-9, name
    assert float(profile["p2"][1]) > 4 > float(profile["p1"][1])
    assert profile["p3"][2] == Decimal(1) / Decimal(20)

    (checked,) = pipeline.check_marts(db_url, "check-1")
    assert checked.status == "passed" and checked.flagged
    failed = {outcome.kwargs.get("column"): outcome for outcome in checked.failed}
    assert set(failed) == {"cost_z_score", "calls_ratio"}
    assert all(outcome.severity == "warning" for outcome in failed.values())
    assert failed["cost_z_score"].observed["unexpected_count"] == 1
    assert abs(float(failed["cost_z_score"].observed["sample"][0]) - float(expected_z["p2"])) < 1e-6
    assert float(failed["calls_ratio"].observed["sample"][0]) == 0.05
    with psycopg.connect(db_url) as conn:
        recorded = conn.execute(
            "select batch_id, expectation, kwargs->>'column', success from ops.validation_results"
            " where dataset = 'marts' and run_id = 'check-1' and not success order by 3"
        ).fetchall()
    batch = f"pipeline_cost_profile/{newest.isoformat()}"
    assert recorded == [
        (batch, "expect_column_values_to_be_between", "calls_ratio", False),
        (batch, "expect_column_values_to_be_between", "cost_z_score", False),
    ]
