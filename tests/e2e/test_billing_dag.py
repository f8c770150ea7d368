"""End to end, the AWS side: dag.test() of spancost_ingest pulls Cost Explorer, the
Price List and SageMaker from real loopback endpoints, and a second run a quarter
of an hour later makes no Cost Explorer request at all.

The expected Bedrock bill is computed here from the demo spans, independently of
spancost's demo billing code: tokens by kind times the published per-million
prices, times the demo's 3% drift.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import boto3
import psycopg
import pytest

from spancost.demo import bill, traffic

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DAY = datetime(2026, 2, 2, tzinfo=UTC)
RUN_END = datetime(2026, 2, 3, 9, 15, tzinfo=UTC)
HAIKU_PER_MTOK = {
    "input": Decimal(1),
    "output": Decimal(5),
    "read": Decimal("0.1"),
    "write": Decimal("1.25"),
}


def expected_bedrock_bill(spans) -> Decimal:
    total = Decimal(0)
    for span in spans:
        attrs = span.attributes or {}
        if (
            attrs.get("gen_ai.provider.name") != "aws.bedrock"
            or "gen_ai.usage.input_tokens" not in attrs
        ):
            continue
        read = attrs.get("gen_ai.usage.cache_read.input_tokens", 0)
        write = attrs.get("gen_ai.usage.cache_creation.input_tokens", 0)
        total += (
            (attrs["gen_ai.usage.input_tokens"] - read - write) * HAIKU_PER_MTOK["input"]
            + read * HAIKU_PER_MTOK["read"]
            + write * HAIKU_PER_MTOK["write"]
            + attrs["gen_ai.usage.output_tokens"] * HAIKU_PER_MTOK["output"]
        ) / Decimal(1_000_000)
    return total * Decimal("1.03")


def test_billing_tasks_land_raw_data_and_respect_the_refresh_interval(
    s3,
    db_url: str,
    airflow_db: None,
    aws_endpoint: str,
    pricing_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spans = traffic.generate_spans(DAY + timedelta(hours=9), DAY + timedelta(hours=12), seed=5)
    expected = expected_bedrock_bill(spans)
    assert expected > 0, "the demo makes Bedrock calls"
    bill.preset_cost_explorer(
        aws_endpoint, bill.cost_explorer_results(spans, [DAY.date()], RUN_END.date())
    )
    bill.create_idle_endpoint(boto3.client("sagemaker", region_name="us-east-1"))

    monkeypatch.setenv("SPANCOST_SPANS_BUCKET", "spans")
    monkeypatch.setenv("SPANCOST_USER_ID_SALT", "e2e")
    monkeypatch.setenv("SPANCOST_SAGEMAKER_REGIONS", "us-east-1")
    monkeypatch.setenv("AIRFLOW_CONN_SPANCOST_POSTGRES", db_url)

    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags" / "spancost_ingest.py")).get_dag("spancost_ingest")
    run = dag.test(logical_date=RUN_END)
    assert str(run.state) in ("success", "DagRunState.SUCCESS")

    with psycopg.connect(db_url) as conn:
        pulls = conn.execute("select query_name, status from raw.ce_pulls order by 1").fetchall()
        requests, cost = conn.execute(
            "select count(*), sum(cost_usd) from ops.api_requests where service = 'ce'"
        ).fetchone()
        bedrock = conn.execute(
            "select sum(amount) from raw.ce_cost_and_usage"
            " where query_name = 'ai_services_by_usage_type' and metric = 'UnblendedCost'"
            " and group_key_1 like '%%(Amazon Bedrock Edition)'"
        ).fetchone()[0]
        untagged = conn.execute(
            "select sum(amount) from raw.ce_cost_and_usage"
            " where query_name = 'pipeline_tag_by_service' and metric = 'UnblendedCost'"
            " and tag_key = 'PipelineID' and tag_value = ''"
        ).fetchone()[0]
        prices = dict(
            conn.execute(
                "select service_code, count(*) from raw.aws_price_list where not stale group by 1"
            ).fetchall()
        )
        idle = conn.execute(
            "select instance_type, current_instance_count from raw.sagemaker_endpoint_snapshots"
            " where endpoint_name = %s",
            [bill.IDLE_ENDPOINT],
        ).fetchall()
    assert pulls == [
        ("ai_services_by_usage_type", "complete"),
        ("pipeline_tag_by_service", "complete"),
    ]
    assert (requests, cost) == (2, Decimal("0.02"))
    assert abs(bedrock - expected) < Decimal("0.000001") * 8  # amounts are sent rounded to 1e-10
    assert untagged == bill.IDLE_HOURLY_USD * 24
    assert set(prices) == {
        "AmazonSageMaker",
        "AmazonEC2",
        "AmazonBedrock",
        "AmazonBedrockFoundationModels",
    }
    assert idle == [(bill.IDLE_INSTANCE, 1)]

    # Fifteen minutes later: Cost Explorer is fresh, so not one request is made.
    run = dag.test(logical_date=RUN_END + timedelta(minutes=15))
    assert str(run.state) in ("success", "DagRunState.SUCCESS")
    with psycopg.connect(db_url) as conn:
        after = conn.execute(
            "select count(*) from ops.api_requests where service = 'ce'"
        ).fetchone()[0]
        pulls_after = conn.execute("select count(*) from raw.aws_price_list_pulls").fetchone()[0]
    assert after == 2
    assert pulls_after == 4  # the price list is refreshed daily, not every run
