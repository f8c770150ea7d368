"""Mapped span loading: the plan's chunks, loaded at once by racing tasks, land each span once.

Two plans of the same interval (two overlapping runs) hold the same exports; all
their chunks load concurrently, as mapped tasks on several workers would.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from spancost import pipeline
from spancost.demo import traffic
from spancost.settings import Settings, SpanSource

pytestmark = pytest.mark.integration

T = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PREFIX = "otel/traces"


def test_racing_chunks_load_every_span_once_and_a_replan_finds_nothing_new(s3, db_url: str) -> None:
    spans = traffic.generate_spans(T, T + timedelta(minutes=15), seed=5, traces_per_hour=80)
    objects = traffic.build_objects(spans, prefix=PREFIX, seed=5)
    s3.create_bucket(Bucket="spans")
    traffic.upload_objects(s3, "spans", objects)
    in_window = [obj for obj in objects if obj.upload_time < T + timedelta(minutes=15)]
    settings = Settings(
        spans=SpanSource(bucket="spans", prefix=PREFIX),
        user_id_salt="m",
        validate=True,  # each run's chunks share one pending batch
        load_chunk_objects=3,
    )
    end = T + timedelta(minutes=15)
    plans = [pipeline.plan_span_chunks(settings, s3, T, end, url=db_url) for _ in range(2)]
    assert plans[0] == plans[1] and len(plans[0]) > 2
    assert sum(len(chunk) for chunk in plans[0]) == len(in_window)

    def load(job: tuple[int, list[dict]]) -> dict[str, int]:
        number, chunk = job
        return pipeline.load_span_objects(
            settings,
            s3,
            [pipeline.object_from_json(obj) for obj in chunk],
            url=db_url,
            run_id="race-a" if number < len(plans[0]) else "race-b",  # two runs' plans
        ).summary()

    jobs = list(enumerate(plans[0] + plans[1]))
    with ThreadPoolExecutor(4) as pool:
        summaries = list(pool.map(load, jobs))

    expected = sum(obj.span_count for obj in in_window)
    assert sum(s["spans_loaded"] for s in summaries) == expected
    assert sum(s["objects_loaded"] for s in summaries) == len(in_window)
    with psycopg.connect(db_url) as conn:
        rows, distinct = conn.execute(
            "select count(*), count(distinct (trace_id, span_id)) from raw.otel_spans"
        ).fetchone()
        manifest = conn.execute(
            "select count(*) from raw.s3_objects where status = 'loaded'"
        ).fetchone()[0]
    assert rows == distinct == expected
    assert manifest == len(in_window)
    # Each run's mapped chunks joined its one batch; both audits publish every span once.
    for run in ("race-a", "race-b"):
        pipeline.audit_batches(db_url, "otel_spans", run)
    with psycopg.connect(db_url) as conn:
        published = conn.execute(
            "select b.run_id, b.status, count(o.key), sum(o.span_count)"
            " from ops.load_batches b join raw.s3_objects o using (batch_id) group by 1, 2"
        ).fetchall()
        unbatched = conn.execute("select count(*) from raw.s3_objects where batch_id is null")
    assert {status for _, status, _, _ in published} == {"published"}
    assert {run for run, _, _, _ in published} <= {"race-a", "race-b"}
    assert sum(objects for _, _, objects, _ in published) == len(in_window)
    assert sum(spans for _, _, _, spans in published) == expected
    assert unbatched.fetchone()[0] == 0
    # The next plan of the same interval has nothing left to load.
    assert pipeline.plan_span_chunks(settings, s3, T, end, url=db_url) == []
