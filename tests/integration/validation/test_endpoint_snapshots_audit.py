"""Write-audit-publish of SageMaker endpoint snapshots (raw.sagemaker_endpoint_snapshots).

Real snapshots of moto's SageMaker over HTTP, landed by the real snapshot, audited
by the `sagemaker_endpoint_snapshots` checkpoint in SQL: a snapshot with a variant of
50,000 instances is quarantined (staging, and so the idle-endpoint marts, never see
it), the next good snapshot publishes, and a region whose endpoints all went warns.
"""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from spancost import pipeline
from spancost.billing import sagemaker as sm
from spancost.transform import dbt_build
from spancost.validation import batches
from spancost.validation.audit import BatchQuarantined
from tests.integration.billing.test_sagemaker import _endpoint

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def sagemaker(aws_endpoint: str) -> Any:
    request = urllib.request.Request(f"{aws_endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(request).close()
    return boto3.client("sagemaker", region_name="us-east-1")


def _snapshot(conn: psycopg.Connection[Any], client: Any, at: datetime, run: str) -> Any:
    return sm.snapshot_endpoints(conn, client, snapshot_at=at, batch_run_id=run)


def test_a_runaway_instance_count_quarantines_the_snapshot_and_the_next_one_publishes(
    sagemaker: Any, conn: psycopg.Connection[Any], db_url: str
) -> None:
    # moto stamps endpoints with the wall clock: snapshots are taken "now" so no
    # endpoint looks created after its snapshot (that is a warning of its own).
    t0 = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
    _endpoint(sagemaker, "llm", [("AllTraffic", "llama", "ml.g4dn.2xlarge", 2)])
    first = _snapshot(conn, sagemaker, t0, "good-0")
    (audited,) = pipeline.audit_batches(db_url, batches.ENDPOINTS, "good-0")
    assert (audited.batch_id, audited.status, audited.rows) == (first.batch_id, "published", 1)
    assert not audited.flagged, audited.reason

    # 50,000 instances behind one variant: an API or parse error that would bill
    # thousands of instance-hours.
    _endpoint(sagemaker, "runaway", [("AllTraffic", "embed", "ml.g4dn.xlarge", 50_000)])
    bad = _snapshot(conn, sagemaker, t0 + timedelta(minutes=15), "bad")
    with pytest.raises(BatchQuarantined) as raised:
        pipeline.audit_batches(db_url, batches.ENDPOINTS, "bad")
    message = str(raised.value)
    assert f"batch {bad.batch_id}: suite sagemaker_endpoint_snapshots: " in message
    for column in ("current_instance_count", "desired_instance_count", "initial_instance_count"):
        assert f"critical expect_column_values_to_be_between({column})" in message
    assert "50000" in message  # the observed sample

    sagemaker.delete_endpoint(EndpointName="runaway")
    good = _snapshot(conn, sagemaker, t0 + timedelta(minutes=30), "good-1")
    (audited,) = pipeline.audit_batches(db_url, batches.ENDPOINTS, "good-1")
    assert audited.status == "published"

    dbt_build.run_dbt(db_url, ["run", "--select", "stg_aws__sagemaker_endpoint_snapshots"])
    staged = conn.execute(
        "select snapshot_at, endpoint_name, instance_count"
        " from staging.stg_aws__sagemaker_endpoint_snapshots order by snapshot_at, endpoint_name"
    ).fetchall()
    # The quarantined snapshot stays in raw and out of staging (and every mart after it).
    assert staged == [(t0, "llm", 2), (t0 + timedelta(minutes=30), "llm", 2)]
    in_raw = conn.execute(
        "select count(*) from raw.sagemaker_endpoint_snapshots where batch_id = %s",
        [bad.batch_id],
    ).fetchone()
    assert in_raw == (2,)
    statuses = conn.execute(
        "select batch_id, run_id, status from ops.load_batches order by created_at"
    ).fetchall()
    assert statuses == [
        (first.batch_id, "good-0", "published"),
        (bad.batch_id, "bad", "quarantined"),
        (good.batch_id, "good-1", "published"),
    ]
    failed = conn.execute(
        "select kwargs ->> 'column', observed_value from ops.validation_results"
        " where batch_id = %s and not success order by 1",
        [bad.batch_id],
    ).fetchall()
    assert [column for column, _ in failed] == [
        "current_instance_count",
        "desired_instance_count",
        "initial_instance_count",
    ]
    assert all(observed["unexpected_count"] == 1 for _, observed in failed)


def test_every_endpoint_gone_warns_and_a_region_without_any_lands_no_batch(
    sagemaker: Any, conn: psycopg.Connection[Any], db_url: str
) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
    # Never any endpoint: no batch, so nothing to audit (no Great Expectations import).
    assert _snapshot(conn, sagemaker, t0, "empty").batch_id is None
    assert pipeline.audit_batches(db_url, batches.ENDPOINTS, "empty") == []

    _endpoint(sagemaker, "llm", [("AllTraffic", "llama", "ml.g4dn.2xlarge", 2)])
    _endpoint(sagemaker, "rerank", [("AllTraffic", "rerank", "ml.g4dn.xlarge", 1)])
    _snapshot(conn, sagemaker, t0 + timedelta(minutes=15), "two")
    pipeline.audit_batches(db_url, batches.ENDPOINTS, "two")
    for name in ("llm", "rerank"):
        sagemaker.delete_endpoint(EndpointName=name)
    gone = _snapshot(conn, sagemaker, t0 + timedelta(minutes=30), "gone")
    assert gone.rows == 0 and gone.batch_id is not None
    (audited,) = pipeline.audit_batches(db_url, batches.ENDPOINTS, "gone")
    # Published (deleting endpoints is allowed), flagged: the volume dropped to nothing.
    assert (audited.status, audited.flagged) == ("published", True)
    assert audited.reason is not None
    assert "warning expect_table_row_count_to_be_between(table)" in audited.reason


def test_validation_off_lands_readable_rows_without_a_batch(
    sagemaker: Any, conn: psycopg.Connection[Any]
) -> None:
    _endpoint(sagemaker, "llm", [("AllTraffic", "llama", "ml.g4dn.2xlarge", 2)])
    result = sm.snapshot_endpoints(conn, sagemaker, snapshot_at=datetime.now(UTC))
    assert result.batch_id is None
    assert conn.execute(
        "select count(*), count(batch_id) from raw.sagemaker_endpoint_snapshots"
    ).fetchone() == (1, 0)
    assert conn.execute("select count(*) from ops.load_batches").fetchone() == (0,)


def test_every_critical_expectation_has_a_case() -> None:
    suite = json.loads(
        (REPO / "expectations/expectations/sagemaker_endpoint_snapshots.json").read_text()
    )
    critical = {
        (e["type"], e["kwargs"].get("column"))
        for e in suite["expectations"]
        if e["severity"] == "critical"
    }
    broken = {
        ("expect_column_values_to_be_between", column)
        for column in ("current_instance_count", "desired_instance_count", "initial_instance_count")
    }
    assert broken <= critical
    # The rest cannot fail on a snapshot the loader wrote: the table's NOT NULL columns,
    # its primary key (one row per endpoint variant of a snapshot) and its own columns.
    assert {kind for kind, _ in critical - broken} == {
        "expect_table_columns_to_match_set",
        "expect_column_values_to_not_be_null",
        "unexpected_rows_expectation",
    }
