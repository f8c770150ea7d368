"""Idle SageMaker endpoints, and endpoint hours as the estimate the SageMaker bill is split by.

Real components throughout: endpoint snapshots stored by spancost.billing.sagemaker,
CloudWatch invocations pulled from moto's CloudWatch on loopback, spans through the
loader, Cost Explorer through the real pull, and a real `dbt build`. Expected hours
and dollars are computed here.

The endpoint `chat-llm` (ml.g5.xlarge, 2 instances) is in service from 10:00 to
13:59 on 2026-01-13 (four hours):

* 10:00 nobody calls it: idle;
* 11:00 two instrumented pipelines call it, p1 for 2 s and p2 for 6 s;
* 12:00 only an uninstrumented client calls it (CloudWatch counts 5 invocations);
* 13:00 idle again.

Cost Explorer bills the day's Host line untagged: 8 instance-hours.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import boto3
import psycopg
import pytest

from spancost import db
from spancost.billing import aws_requests, cloudwatch
from spancost.billing.cost_explorer import CostExplorerSettings, default_queries, pull
from spancost.billing.sagemaker import EndpointVariant, store
from spancost.transform import dbt_build
from tests.integration.billing.test_allocation import line, preset
from tests.integration.transform.test_llm_marts import ingest
from tests.otlp_factory import attr, key

pytestmark = pytest.mark.integration

DAY = date(2026, 1, 13)
T10 = datetime(2026, 1, 13, 10, tzinfo=UTC)
ENDPOINT, VARIANT, INSTANCE = "chat-llm", "AllTraffic", "ml.g5.xlarge"
BILLED_HOURLY = Decimal("1.4080")  # ml.g5.xlarge hosting, us-east-1
USAGE_QUERY, TAG_QUERY = default_queries()[:2]


def snapshot(at: datetime) -> EndpointVariant:
    return EndpointVariant(
        snapshot_at=at,
        region="us-east-1",
        endpoint_name=ENDPOINT,
        endpoint_arn=f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{ENDPOINT}",
        endpoint_status="InService",
        endpoint_config_name=f"{ENDPOINT}-config",
        variant_name=VARIANT,
        model_name="llama",
        instance_type=INSTANCE,
        initial_instance_count=2,
        current_instance_count=2,
        desired_instance_count=2,
        serverless=False,
        creation_time=T10 + timedelta(minutes=5),
        last_modified_time=T10 + timedelta(minutes=5),
        raw={},
        tags={"team": "ml"},
    )


def land_snapshots(db_url: str) -> None:
    with db.connect(db_url) as conn:
        db.apply_schema(conn)
        for minutes in (15, 75, 135, 195, 235):  # 10:15 ... 13:55, as the DAG takes them
            at = T10 + timedelta(minutes=minutes)
            store(conn, [snapshot(at)], snapshot_at=at, region="us-east-1")


def land_invocations(aws_endpoint: str, db_url: str) -> None:
    client = boto3.client(
        "cloudwatch",
        region_name="us-east-1",
        endpoint_url=aws_endpoint,
        config=aws_requests.client_config(),
    )
    client.put_metric_data(
        Namespace="AWS/SageMaker",
        MetricData=[
            {
                "MetricName": "Invocations",
                "Dimensions": [
                    {"Name": "EndpointName", "Value": ENDPOINT},
                    {"Name": "VariantName", "Value": VARIANT},
                ],
                "Timestamp": T10 + timedelta(hours=2, minutes=m),
                "Value": value,
                "Unit": "Count",
            }
            for m, value in ((5, 2.0), (40, 3.0))
        ],
    )
    with db.connect(db_url) as conn:
        result = cloudwatch.pull_invocations(
            conn,
            client,
            endpoints=[(ENDPOINT, VARIANT)],
            window_start=T10,
            window_end=T10 + timedelta(hours=4),
        )
    assert result.status == "complete", result


def put_endpoint_span(s3, n: int, start: datetime, seconds: int, pipeline: str) -> None:
    """One span of a call to the endpoint, in an export object of its own."""
    ns = int(start.timestamp()) * 10**9
    span = {
        "traceId": f"{n + 1:032x}",
        "spanId": f"{n + 1:016x}",
        "name": "sagemaker.invoke_endpoint",
        "kind": 3,
        "startTimeUnixNano": str(ns),
        "endTimeUnixNano": str(ns + seconds * 10**9),
        "attributes": [
            attr("pipeline.id", pipeline),
            attr("aws.sagemaker.endpoint.name", ENDPOINT),
        ],
    }
    request = {
        "resourceSpans": [
            {
                "resource": {"attributes": [attr("service.name", "svc")]},
                "scopeSpans": [{"scope": {"name": "test"}, "spans": [span]}],
            }
        ]
    }
    s3.put_object(
        Bucket="spans",
        Key=key("otel", start, n),
        Body=gzip.compress(json.dumps(request).encode(), mtime=0),
    )


def land_spans(s3, db_url: str) -> None:
    s3.create_bucket(Bucket="spans")
    for n, (pipeline, seconds) in enumerate((("p1", 2), ("p2", 6))):
        put_endpoint_span(s3, n, T10 + timedelta(hours=1, minutes=10 + n), seconds, pipeline)
    ingest(s3, db_url, T10, T10 + timedelta(hours=4), "idle")


def land_bill(aws_endpoint: str, db_url: str) -> Decimal:
    amount = BILLED_HOURLY * 8
    host = f"USE1-Host:{INSTANCE}"
    groups = {
        USAGE_QUERY.name: [line("Amazon SageMaker", host, str(amount), "8", "Hrs")],
        TAG_QUERY.name: [line("Amazon SageMaker", "PipelineID$", str(amount))],
    }
    responses = [
        {
            "ResultsByTime": [
                {
                    "TimePeriod": {
                        "Start": DAY.isoformat(),
                        "End": (DAY + timedelta(days=1)).isoformat(),
                    },
                    "Total": {},
                    "Groups": groups[q.name],
                    "Estimated": False,
                }
            ],
            "GroupDefinitions": [{"Type": g.type, "Key": g.key} for g in q.group_by],
            "DimensionValueAttributes": [],
        }
        for q in (USAGE_QUERY, TAG_QUERY)
    ]
    preset(aws_endpoint, responses)
    client = boto3.client(
        "ce",
        region_name="us-east-1",
        endpoint_url=aws_endpoint,
        config=aws_requests.client_config(),
    )
    settings = CostExplorerSettings(queries=(USAGE_QUERY, TAG_QUERY))
    with db.connect(db_url) as conn:
        for query in (USAGE_QUERY, TAG_QUERY):
            assert pull(conn, client, query, (DAY, DAY + timedelta(days=1)), settings).status == (
                "complete"
            )
    return amount


def test_idle_hours_cost_and_the_endpoint_bill_split_by_busy_time(s3, aws_endpoint, db_url) -> None:
    land_snapshots(db_url)
    land_bill(aws_endpoint, db_url)  # resets moto: before the CloudWatch datapoints
    land_invocations(aws_endpoint, db_url)
    land_spans(s3, db_url)
    dbt_build.build(db_url)

    with psycopg.connect(db_url) as conn:
        (row,) = conn.execute(
            "select day, endpoint_name, instance_type, instance_count, hours_in_service,"
            " hours_with_invocations, idle_hours, hourly_price_usd, price_source,"
            " idle_cost_usd, last_invocation_at, pipeline_tag from marts.rpt_idle_endpoints"
        ).fetchall()
        allocated = conn.execute(
            "select pipeline_id, allocation_method, allocated_cost_usd"
            " from marts.fct_allocated_costs_daily where service = 'Amazon SageMaker'"
            " order by pipeline_id"
        ).fetchall()
        hours = conn.execute(
            "select hour, is_used, spans, cloudwatch_invocations"
            " from intermediate.int_sagemaker_endpoint_hours order by hour"
        ).fetchall()

    assert [(h, used, s, inv) for h, used, s, inv in hours] == [
        (T10, False, 0, 0),
        (T10 + timedelta(hours=1), True, 2, 0),
        (T10 + timedelta(hours=2), True, 0, 5),
        (T10 + timedelta(hours=3), False, 0, 0),
    ]
    # The billed Host line's price (cost / hours) wins over the Price List (none here).
    assert row == (
        DAY,
        ENDPOINT,
        INSTANCE,
        2,
        4,
        2,
        2,
        BILLED_HOURLY,
        "billed",
        BILLED_HOURLY * 2 * 2,  # two idle hours of two instances
        T10 + timedelta(hours=2),  # CloudWatch's hour comes after the last span
        None,  # tagged team=ml, no PipelineID
    )

    # The untagged bill goes to the pipelines whose spans used the endpoint, by busy
    # time (1:3): the used hours are the only SageMaker estimates that name a pipeline.
    bill = BILLED_HOURLY * 8
    assert [(p, m) for p, m, _ in allocated] == [("p1", "estimate_share"), ("p2", "estimate_share")]
    shares = {p: c for p, _, c in allocated}
    assert sum(shares.values()) == bill
    assert abs(shares["p1"] - bill / 4) < Decimal("1e-9")
    assert abs(shares["p2"] - bill * 3 / 4) < Decimal("1e-9")


def test_a_sagemaker_only_deployment_reads_only_its_window(s3, db_url) -> None:
    """Spans that call SageMaker endpoints and no LLM API: intermediate.int_llm_calls_priced
    stays empty, so the endpoint hours are anchored on their own newest span. A scheduled
    run (vars empty) reads its lookback window only; before, the empty anchor gave no
    bound and every 15-minute run read the whole span history."""
    land_spans(s3, db_url)
    dbt_build.build(db_url)
    scheduled = {"start_time": "", "end_time": ""}  # what a scheduled DAG run passes
    # Ten days later: the first run after the gap reads from its last span's lookback.
    later = T10 + timedelta(days=10, minutes=5)
    put_endpoint_span(s3, 2, later, 4, "p1")
    ingest(s3, db_url, later - timedelta(minutes=5), later + timedelta(minutes=10), "later")
    dbt_build.build(db_url, dbt_vars=scheduled)

    old_hour = T10 + timedelta(hours=1)
    with psycopg.connect(db_url, autocommit=True) as conn:
        priced = conn.execute("select count(*) from intermediate.int_llm_calls_priced")
        assert priced.fetchone() == (0,)
        # A mark that survives the next run only if that run never reads this hour again.
        conn.execute(
            "update intermediate.int_sagemaker_span_hours set spans = 99 where hour = %s",
            (old_hour,),
        )

    # The next 15 minutes: a run reads the lookback before the newest span, not the 13th.
    put_endpoint_span(s3, 3, later + timedelta(minutes=15), 3, "p2")
    ingest(s3, db_url, later + timedelta(minutes=10), later + timedelta(minutes=25), "next")
    dbt_build.build(db_url, dbt_vars=scheduled)

    with psycopg.connect(db_url) as conn:
        hours = conn.execute(
            "select hour, pipeline_id, spans, busy_ms"
            " from intermediate.int_sagemaker_span_hours order by hour, pipeline_id"
        ).fetchall()
    assert hours == [
        (old_hour, "p1", 99, 2000),
        (old_hour, "p2", 99, 6000),
        (later.replace(minute=0), "p1", 1, 4000),
        (later.replace(minute=0), "p2", 1, 3000),
    ]
