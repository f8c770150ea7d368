"""Write-audit-publish of spans: Great Expectations audits each landed batch in Postgres.

Every critical expectation of the `otel_spans` suite that a real export can break is
broken by one batch, through the real path (S3 → loader → audit in SQL → staging →
dbt build): the batch stays in raw, quarantined with the suite and expectation named,
out of the marts, and the next run's good batch still publishes.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from spancost import pipeline
from spancost.settings import Settings, SpanSource
from spancost.transform import dbt_build
from spancost.validation.audit import BatchQuarantined
from tests.otlp_factory import export, key, llm_span

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
SETTINGS = Settings(spans=SpanSource(bucket="spans", prefix="otel"), user_id_salt="s")

BETWEEN = "expect_column_values_to_be_between"
# (expectation, column) -> what makes one span of a batch break it.
BREAKERS: dict[tuple[str, str], dict[str, Any]] = {
    (BETWEEN, "input_tokens"): {"input_tokens": 20_000_000},
    (BETWEEN, "output_tokens"): {"output_tokens": 20_000_000},
    (BETWEEN, "cache_read_tokens"): {"cache_read": 20_000_000},
    (BETWEEN, "cache_creation_tokens"): {
        "extra": {"gen_ai.usage.cache_creation.input_tokens": 20_000_000}
    },
    (BETWEEN, "reasoning_tokens"): {"extra": {"gen_ai.usage.reasoning.output_tokens": 20_000_000}},
    (BETWEEN, "reported_cost_usd"): {"extra": {"gen_ai.usage.cost": 5000.0}},
    # A span that starts five days before its export was uploaded: a clock error.
    (BETWEEN, "start_time"): {"days_early": 5},
}


def critical_expectations() -> set[tuple[str, str]]:
    """The suite's critical expectations, as (type, column or 'table')."""
    suite = json.loads((REPO / "expectations/expectations/otel_spans.json").read_text())
    return {
        (e["type"], e["kwargs"].get("column", "table"))
        for e in suite["expectations"]
        if e["severity"] == "critical"
    }


def put_run(s3, slot: int, spans: list[dict]) -> tuple[datetime, datetime]:
    """One export uploaded a minute into the slot's 15-minute interval."""
    start = T0 + timedelta(minutes=15 * slot)
    s3.put_object(
        Bucket="spans",
        Key=key("otel", start + timedelta(minutes=1), 500000000 + slot),
        Body=export(spans),
        ContentEncoding="gzip",
    )
    return start, start + timedelta(minutes=15)


def good_spans(rng: random.Random, start: datetime, n: int = 3) -> list[dict]:
    return [llm_span(rng, start + timedelta(seconds=10 * i)) for i in range(n)]


def rows(url: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def test_each_critical_expectation_quarantines_its_batch_and_the_next_batch_publishes(
    s3, db_url: str
) -> None:
    rng = random.Random(13)
    published_traces: set[str] = set()
    quarantined_traces: set[str] = set()
    slot = 0
    for (kind, column), breaker in BREAKERS.items():
        start = T0 + timedelta(minutes=15 * slot)
        spans = good_spans(rng, start)
        options = {k: v for k, v in breaker.items() if k != "days_early"}
        span_start = start - timedelta(days=breaker.get("days_early", 0))
        spans.append(llm_span(rng, span_start, **options))
        interval = put_run(s3, slot, spans)
        with pytest.raises(BatchQuarantined) as raised:
            pipeline.ingest_spans(SETTINGS, s3, *interval, url=db_url, run_id=f"bad-{slot}")
        message = str(raised.value)
        assert "suite otel_spans" in message and f"critical {kind}({column})" in message, message
        quarantined_traces |= {span["traceId"] for span in spans}

        slot += 1  # the next run's good batch publishes
        start = T0 + timedelta(minutes=15 * slot)
        spans = good_spans(rng, start)
        interval = put_run(s3, slot, spans)
        report = pipeline.ingest_spans(SETTINGS, s3, *interval, url=db_url, run_id=f"good-{slot}")
        assert report.spans == 3
        published_traces |= {span["traceId"] for span in spans}
        slot += 1

    tested = {(kind, column) for kind, column in BREAKERS}
    untestable = critical_expectations() - tested
    # The rest are guaranteed before the audit: NOT NULL columns, the loader's id rules
    # and the table's own columns. A batch cannot break them; the suite keeps them as a
    # guard against a schema change.
    assert untestable == {
        ("expect_table_columns_to_match_set", "table"),
        ("expect_column_values_to_not_be_null", "trace_id"),
        ("expect_column_values_to_not_be_null", "span_id"),
        ("expect_column_values_to_not_be_null", "start_time"),
        ("expect_column_values_to_not_be_null", "end_time"),
        ("expect_column_values_to_match_regex", "trace_id"),
        ("expect_column_values_to_match_regex", "span_id"),
    }

    # Kept in raw, quarantined, referenced by its run, with the reason.
    batches = rows(db_url, "select run_id, status, reason from ops.load_batches order by run_id")
    bad = [(run, status, reason) for run, status, reason in batches if run.startswith("bad-")]
    assert [status for _, status, _ in bad] == ["quarantined"] * len(BREAKERS)
    assert all(status == "published" for run, status, _ in batches if run.startswith("good-"))
    raw_traces = {r[0] for r in rows(db_url, "select trace_id from raw.otel_spans")}
    assert raw_traces == published_traces | quarantined_traces
    failed = rows(
        db_url,
        "select r.run_id, r.expectation, r.kwargs->>'column', r.observed_value"
        " from ops.validation_results r where not r.success and r.severity = 'critical'",
    )
    assert {(run, (kind, column)) for run, kind, column, _ in failed} == {
        (f"bad-{2 * i}", breaker) for i, breaker in enumerate(BREAKERS)
    }
    for _, _, column, observed in failed:
        assert observed["unexpected_count"] == 1 and observed["element_count"] == 4, column

    # Out of what dbt reads: staging and the marts.
    dbt_build.build(db_url)
    staged = {r[0] for r in rows(db_url, "select trace_id from staging.stg_otel__spans")}
    assert staged == published_traces
    in_marts = {r[0] for r in rows(db_url, "select distinct trace_id from marts.fct_llm_calls")}
    assert in_marts == published_traces


def test_pending_batch_is_unread_until_audited_and_warnings_publish_flagged(
    s3, db_url: str
) -> None:
    rng = random.Random(14)
    spans = good_spans(rng, T0)
    spans.append(dict(spans[0]))  # a collector retry repeats a span: a warning only
    interval = put_run(s3, 0, spans)
    objects = pipeline.list_objects(s3, SETTINGS.spans, *interval)
    pipeline.load_span_objects(SETTINGS, s3, objects, url=db_url, run_id="run-1")
    dbt_build.run_dbt(db_url, ["run", "--select", "stg_otel__spans"])
    assert rows(db_url, "select status from ops.load_batches") == [("pending",)]
    assert rows(db_url, "select count(*) from raw.otel_spans") == [(4,)]
    assert rows(db_url, "select count(*) from staging.stg_otel__spans") == [(0,)]

    (audited,) = pipeline.audit_batches(db_url, "otel_spans", "run-1")
    assert (audited.status, audited.flagged, audited.rows) == ("published", True, 4)
    assert "warning unexpected_rows_expectation(table) [(trace_id, span_id, start_time) unique" in (
        audited.reason or ""
    )
    assert rows(db_url, "select status, flagged from ops.load_batches") == [("published", True)]
    # Staging keeps one copy of the repeated span.
    assert rows(db_url, "select count(*) from staging.stg_otel__spans") == [(3,)]
    # A rerun finds nothing pending and changes nothing.
    assert pipeline.audit_batches(db_url, "otel_spans", "run-1") == []

    # `make docs` builds the GX Data Docs: the suites and this audit's results.
    from spancost.validation.audit import build_data_docs

    index = build_data_docs(db_url)
    assert index.name == "index.html" and index.is_file()
    site = index.read_text()
    assert "otel_spans" in site and "ce_cost_and_usage" in site


def test_validation_off_publishes_at_once_and_writes_no_batch(s3, db_url: str) -> None:
    rng = random.Random(15)
    interval = put_run(s3, 0, good_spans(rng, T0))
    off = Settings(spans=SETTINGS.spans, user_id_salt="s", validate=False)
    pipeline.ingest_spans(off, s3, *interval, url=db_url, run_id="off")
    dbt_build.run_dbt(db_url, ["run", "--select", "stg_otel__spans"])
    assert rows(db_url, "select count(*) from ops.load_batches") == [(0,)]
    assert rows(db_url, "select count(*) from staging.stg_otel__spans") == [(3,)]


def test_stored_gx_results_older_than_the_keep_days_are_pruned(tmp_path: Path) -> None:
    import os

    from spancost.validation.audit import prune_results

    now = datetime(2026, 3, 1, tzinfo=UTC)
    old = tmp_path / "uncommitted/validations/otel_spans/run-1/20260101T000000Z"
    new = tmp_path / "uncommitted/validations/otel_spans/run-2/20260228T000000Z"
    for folder, when in ((old, now - timedelta(days=15)), (new, now - timedelta(days=1))):
        folder.mkdir(parents=True)
        (folder / "batch.json").write_text("{}")
        os.utime(folder, (when.timestamp(), when.timestamp()))
    assert prune_results(tmp_path, now) == 1
    assert not old.exists() and (new / "batch.json").exists()
