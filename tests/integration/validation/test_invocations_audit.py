"""Write-audit-publish of CloudWatch pulls (raw.sagemaker_invocations_hourly).

Real pulls from moto's CloudWatch, landed by the real pull, audited by the
`sagemaker_invocations_hourly` checkpoint in SQL: an hour with an absurd count
quarantines its pull, whose hours staging then does not read; the next good pull
publishes.
"""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import psycopg
import pytest
from psycopg.types.json import Jsonb

from spancost import db, pipeline
from spancost.billing import aws_requests
from spancost.billing import cloudwatch as cw
from spancost.billing.aws_requests import RetryPolicy
from spancost.transform import dbt_build
from spancost.validation import batches
from spancost.validation.audit import BatchQuarantined
from tests.integration.billing.test_cloudwatch import put

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
H = datetime(2026, 11, 23, 6, tzinfo=UTC)
FAST = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.01)


def pull_and_audit(conn, client, db_url: str, start: datetime, run_id: str) -> None:
    endpoints = cw.endpoints_from_snapshots(conn, "us-east-1", start, start + timedelta(hours=2))
    cw.pull_invocations(
        conn,
        client,
        endpoints=endpoints,
        window_start=start,
        window_end=start + timedelta(hours=2),
        retry=FAST,
        batch_run_id=run_id,
    )
    pipeline.audit_batches(db_url, batches.INVOCATIONS, run_id)


def staged(db_url: str) -> dict:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "select endpoint_name, hour, invocations from staging.stg_aws__sagemaker_invocations"
        ).fetchall()
    return {(endpoint, hour): float(value) for endpoint, hour, value in rows}


def test_an_absurd_hour_quarantines_its_pull_and_the_next_good_pull_publishes(
    aws_endpoint: str, db_url: str
) -> None:
    urllib.request.urlopen(
        urllib.request.Request(f"{aws_endpoint}/moto-api/reset", method="POST")
    ).close()
    client = boto3.client(
        "cloudwatch",
        region_name="us-east-1",
        endpoint_url=aws_endpoint,
        config=aws_requests.client_config(),
    )
    put(
        client,
        [
            ("llm", "AllTraffic", H + timedelta(minutes=5), 40.0),
            ("llm", "AllTraffic", H + timedelta(hours=1, minutes=5), 5e9),  # a unit error
            ("llm", "AllTraffic", H + timedelta(hours=2, minutes=5), 30.0),
            ("llm", "AllTraffic", H + timedelta(hours=3, minutes=5), 20.0),
        ],
    )
    with db.connect(db_url) as conn:
        db.apply_schema(conn)
        conn.execute(
            "insert into raw.sagemaker_endpoint_snapshots (snapshot_at, region, endpoint_name,"
            " endpoint_arn, endpoint_status, variant_name, raw)"
            " values (%s, 'us-east-1', 'llm', 'arn:aws:sagemaker:us-east-1:1:endpoint/llm',"
            " 'InService', 'AllTraffic', %s)",
            [H, Jsonb({})],
        )
        conn.commit()
        with pytest.raises(BatchQuarantined) as raised:
            pull_and_audit(conn, client, db_url, H, "bad")
        assert "critical expect_column_values_to_be_between(invocations)" in str(raised.value)
        pull_and_audit(conn, client, db_url, H + timedelta(hours=2), "good")

    dbt_build.run_dbt(db_url, ["run", "--select", "stg_aws__sagemaker_invocations"])
    # The quarantined pull's hours stay in raw and out of staging.
    assert staged(db_url) == {
        ("llm", H + timedelta(hours=2)): 30.0,
        ("llm", H + timedelta(hours=3)): 20.0,
    }
    with psycopg.connect(db_url) as conn:
        in_raw = conn.execute("select count(*) from raw.sagemaker_invocations_hourly").fetchone()
        statuses = conn.execute(
            "select run_id, status from ops.load_batches order by run_id"
        ).fetchall()
        observed = conn.execute(
            "select observed_value from ops.validation_results"
            " where not success and kwargs->>'column' = 'invocations'"
        ).fetchone()
    assert in_raw == (4,)
    assert statuses == [("bad", "quarantined"), ("good", "published")]
    assert observed[0]["unexpected_count"] == 1
    assert [float(value) for value in observed[0]["sample"]] == [5e9]  # numeric, as text

    suite = json.loads(
        (REPO / "expectations/expectations/sagemaker_invocations_hourly.json").read_text()
    )
    critical = {
        (e["type"], e["kwargs"].get("column"))
        for e in suite["expectations"]
        if e["severity"] == "critical"
    }
    # The rest are guaranteed before the audit: the table's NOT NULL columns and its own
    # columns; hours outside the window are dropped by the pull as bad datapoints.
    assert {
        kind
        for kind, column in critical
        if (kind, column) != ("expect_column_values_to_be_between", "invocations")
    } == {
        "expect_table_columns_to_match_set",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_between",  # hour: the pull drops points outside
    }
