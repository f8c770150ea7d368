"""Write-audit-publish of Cost Explorer pulls: each complete pull is a batch.

Real pulls from moto's Cost Explorer (results preset through its static API), landed
by the real refresh, audited by the `ce_cost_and_usage` checkpoint in SQL. A pull that
breaks a critical expectation stays in raw, quarantined, and the period keeps the
previous good pull, in staging and in the billing marts; the next good pull publishes.
"""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import boto3
import psycopg
import pytest

from spancost import db, pipeline
from spancost.billing import aws_requests
from spancost.billing.aws_requests import RetryPolicy
from spancost.billing.cost_explorer import CostExplorerSettings, default_queries, refresh
from spancost.transform import dbt_build
from spancost.validation import batches
from spancost.validation.audit import BatchQuarantined

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SETTINGS = CostExplorerSettings(
    queries=(default_queries()[0],),
    retry=RetryPolicy(max_attempts=2, base_delay_s=0.001, max_delay_s=0.01),
)
NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)  # one window: 2026-01-03 to 2026-01-11
DAY = date(2026, 1, 8)
SERVICE = "Amazon Bedrock"
BETWEEN = "expect_column_values_to_be_between"


def result(day: date, amount: str, unit: str = "USD", groups: int = 1) -> dict:
    group = {
        "Keys": [SERVICE, "USE1-Claude3.5Sonnet-input-tokens"],
        "Metrics": {
            "UnblendedCost": {"Amount": amount, "Unit": unit},
            "UsageQuantity": {"Amount": "1000", "Unit": "N/A"},
        },
    }
    return {
        "ResultsByTime": [
            {
                "TimePeriod": {
                    "Start": day.isoformat(),
                    "End": date.fromordinal(day.toordinal() + 1).isoformat(),
                },
                "Total": {},
                "Groups": [group] * groups,
                "Estimated": False,
            }
        ]
    }


def pull_once(endpoint: str, url: str, page: dict, run_id: str) -> None:
    """moto reset, one page preset, one forced refresh that lands a pending batch."""
    reset = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset).close()
    preset = urllib.request.Request(
        f"{endpoint}/moto-api/static/ce/cost-and-usage-results",
        data=json.dumps({"results": [page]}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(preset).close()
    client = boto3.client(
        "ce", region_name="us-east-1", endpoint_url=endpoint, config=aws_requests.client_config()
    )
    with db.connect(url) as conn:
        db.apply_schema(conn)
        conn.commit()
        report = refresh(conn, client, SETTINGS, NOW, force=True, batch_run_id=run_id)
    assert report.ok and len(report.pulls) == 1


def staged_amount(url: str) -> Decimal | None:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select sum(amount) from staging.stg_aws__cost_and_usage where metric = 'UnblendedCost'"
        ).fetchone()
    return row[0] if row else None


def critical_expectations() -> set[tuple[str, str]]:
    suite = json.loads((REPO / "expectations/expectations/ce_cost_and_usage.json").read_text())
    return {
        (e["type"], e["kwargs"].get("column"))
        for e in suite["expectations"]
        if e["severity"] == "critical"
    }


BREAKERS: dict[tuple[str, str | None], dict] = {
    ("expect_column_values_to_be_in_set", "unit"): result(DAY, "10.5", unit="EUR"),
    (BETWEEN, "amount"): result(DAY, "25000000"),
    (BETWEEN, "period_start"): result(date(2025, 6, 1), "3.0"),
    (BETWEEN, "period_end"): result(date(2025, 6, 1), "3.0"),
    ("unexpected_rows_expectation", None): result(DAY, "4.0", groups=2),  # duplicate keys
}


def test_each_critical_expectation_quarantines_its_pull_and_the_good_pull_stays(
    aws_endpoint: str, db_url: str
) -> None:
    pull_once(aws_endpoint, db_url, result(DAY, "10.0"), "good-1")
    assert [a.status for a in pipeline.audit_batches(db_url, batches.COST_EXPLORER, "good-1")] == [
        "published"
    ]
    dbt_build.run_dbt(db_url, ["run", "--select", "stg_aws__cost_and_usage", "stg_aws__ce_pulls"])
    assert staged_amount(db_url) == Decimal("10.0")

    # One pull per breakable critical expectation (start and end share one page).
    pages = {json.dumps(page, sort_keys=True): page for page in BREAKERS.values()}
    for number, page in enumerate(pages.values()):
        run_id = f"bad-{number}"
        pull_once(aws_endpoint, db_url, page, run_id)
        with pytest.raises(BatchQuarantined, match="suite ce_cost_and_usage: critical"):
            pipeline.audit_batches(db_url, batches.COST_EXPLORER, run_id)
        # Newer than the good pull, yet not read: the period keeps the good pull.
        assert staged_amount(db_url) == Decimal("10.0"), run_id

    with psycopg.connect(db_url) as conn:
        failed = conn.execute(
            "select distinct expectation, kwargs->>'column'"
            " from ops.validation_results where not success and severity = 'critical'"
        ).fetchall()
        statuses = conn.execute(
            "select status, count(*) from ops.load_batches group by 1 order by 1"
        ).fetchall()
    assert set(failed) == set(BREAKERS)
    assert statuses == [("published", 1), ("quarantined", len(pages))]
    # The rest are guaranteed before the audit: NOT NULL columns, the pull's own
    # granularity, the table's columns.
    assert {kind for kind, _ in critical_expectations() - set(BREAKERS)} == {
        "expect_table_columns_to_match_set",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_in_set",
    }

    pull_once(aws_endpoint, db_url, result(DAY, "12.0"), "good-2")
    pipeline.audit_batches(db_url, batches.COST_EXPLORER, "good-2")
    assert staged_amount(db_url) == Decimal("12.0")
    dbt_build.build(db_url)
    with psycopg.connect(db_url) as conn:
        billed = conn.execute(
            "select sum(billed_cost_usd) from marts.fct_billed_costs_daily where day = %s",
            [DAY],
        ).fetchone()[0]
    assert billed == Decimal("12.0")
