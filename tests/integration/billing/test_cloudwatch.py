"""CloudWatch invocations: boto3 → moto's CloudWatch → raw.sagemaker_invocations_hourly.

What moto 5.2.5's GetMetricData does (checked against its server before writing these):
it sums the datapoints of each Period starting at StartTime (so the hours are
clock hours only because the pull floors StartTime to the hour), EndTime
exclusive; the timestamps come back as the period starts, in botocore's
``tzlocal()``, newest first unless ScanBy says otherwise; a query without data
gets empty Timestamps and Values. It never pages (no NextToken, MaxDatapoints
ignored), accepts more than 500 queries and any query Id, and, when dimensions
are given, matches datapoints of every namespace with those dimensions: so
nothing here writes Invocations outside AWS/SageMaker. Throttling and errors
come from tests/fault_proxy.py between boto3 and moto.
"""

from __future__ import annotations

import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
import psycopg
import pytest
from psycopg.types.json import Jsonb

from spancost import db, pipeline
from spancost.billing import aws_requests
from spancost.billing import cloudwatch as cw
from spancost.billing.aws_requests import RetryPolicy
from spancost.errors import ConfigError, InfrastructureError
from tests.fault_proxy import FaultProxy, first_n

pytestmark = pytest.mark.integration

H = datetime(2026, 11, 23, 6, tzinfo=UTC)
# Bounds off the hour on purpose: the pull covers [06:00, 10:00).
WINDOW_START, WINDOW_END = H + timedelta(minutes=20), H + timedelta(hours=3, minutes=10)
PULLED = (H, H + timedelta(hours=4))
FAST = RetryPolicy(max_attempts=4, base_delay_s=0.001, max_delay_s=0.01)
PER_QUERY = Decimal("0.00001")

Point = tuple[str, str, datetime, float]  # endpoint, variant, timestamp, value

POINTS: list[Point] = [
    # three datapoints in one hour, none in the next, one, then two
    ("support-llm", "AllTraffic", H + timedelta(minutes=1), 3.0),
    ("support-llm", "AllTraffic", H + timedelta(minutes=30), 4.0),
    ("support-llm", "AllTraffic", H + timedelta(minutes=59, seconds=59), 5.5),
    ("support-llm", "AllTraffic", H + timedelta(hours=2, minutes=5), 10.0),
    ("support-llm", "AllTraffic", H + timedelta(hours=3), 1.0),
    ("support-llm", "AllTraffic", H + timedelta(hours=3, minutes=45), 2.0),
    ("rerank", "blue", H + timedelta(hours=1, minutes=10), 7.0),
    ("rerank", "blue", H + timedelta(hours=1, minutes=50), 8.0),
    # outside the pulled hours: before 06:00 and at 10:00 (the end is exclusive)
    ("support-llm", "AllTraffic", H - timedelta(seconds=1), 100.0),
    ("rerank", "blue", H + timedelta(hours=4), 100.0),
    # an endpoint last snapshotted three days before the window: not asked for
    ("retired", "AllTraffic", H + timedelta(minutes=10), 50.0),
]
# (endpoint, variant, snapshot time, region); rerank/green is there but gets no traffic.
SNAPSHOTS = [
    ("support-llm", "AllTraffic", H - timedelta(hours=2), "us-east-1"),
    ("support-llm", "AllTraffic", H + timedelta(hours=1), "us-east-1"),
    ("rerank", "blue", H + timedelta(hours=26), "us-east-1"),
    ("rerank", "green", H, "us-east-1"),
    ("retired", "AllTraffic", H - timedelta(days=3), "us-east-1"),
    ("eu-only", "AllTraffic", H, "eu-west-1"),
]


def expected(points: list[Point], window: tuple[datetime, datetime] = PULLED) -> dict:
    """The hourly sums of the datapoints, computed here: {(endpoint, variant, hour): sum}."""
    sums: dict[tuple[str, str, datetime], Decimal] = defaultdict(Decimal)
    for endpoint, variant, stamp, value in points:
        if endpoint == "retired" or not window[0] <= stamp < window[1]:
            continue
        hour = stamp.replace(minute=0, second=0, microsecond=0)
        sums[(endpoint, variant, hour)] += Decimal(str(value))
    return dict(sums)


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
def moto(aws_endpoint: str) -> str:
    request = urllib.request.Request(f"{aws_endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(request).close()
    return aws_endpoint


def client(url: str, region: str = "us-east-1") -> Any:
    return boto3.client(
        "cloudwatch", region_name=region, endpoint_url=url, config=aws_requests.client_config()
    )


@pytest.fixture
def cloudwatch(moto: str) -> Any:
    return client(moto)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with db.connect(db_url) as connection:
        db.apply_schema(connection)
        connection.commit()
        yield connection


def put(client: Any, points: list[Point]) -> None:
    client.put_metric_data(
        Namespace="AWS/SageMaker",
        MetricData=[
            {
                "MetricName": "Invocations",
                "Dimensions": [
                    {"Name": "EndpointName", "Value": endpoint},
                    {"Name": "VariantName", "Value": variant},
                ],
                "Timestamp": stamp,
                "Value": value,
                "Unit": "Count",
            }
            for endpoint, variant, stamp, value in points
        ],
    )


def snapshot(conn: psycopg.Connection[Any], rows=SNAPSHOTS) -> None:
    with conn.transaction():
        for endpoint, variant, snapshot_at, region in rows:
            conn.execute(
                """
                insert into raw.sagemaker_endpoint_snapshots (
                    snapshot_at, region, endpoint_name, endpoint_arn, endpoint_status,
                    variant_name, raw
                ) values (%s, %s, %s, %s, 'InService', %s, %s)
                """,
                (
                    snapshot_at,
                    region,
                    endpoint,
                    f"arn:aws:sagemaker:{region}:123456789012:endpoint/{endpoint}",
                    variant,
                    Jsonb({}),
                ),
            )


def hours(conn: psycopg.Connection[Any]) -> dict:
    with conn.transaction():
        found = conn.execute(
            "select endpoint_name, variant_name, hour, invocations"
            " from raw.sagemaker_invocations_hourly where region = 'us-east-1'"
        ).fetchall()
    return {(endpoint, variant, hour): value for endpoint, variant, hour, value in found}


def requests(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    with conn.transaction():
        return conn.execute(
            "select service, operation, status, page, attempt, cost_usd, pull_id"
            " from ops.api_requests order by id"
        ).fetchall()


def pulls(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    with conn.transaction():
        return conn.execute(
            "select pull_id, region, namespace, metric_name, window_start, window_end,"
            " period_seconds, status, endpoints, rows, requests, bad_datapoints, error"
            " from raw.cloudwatch_pulls order by started_at"
        ).fetchall()


def pull(conn: psycopg.Connection[Any], client: Any, **kwargs: Any) -> cw.PullResult:
    endpoints = cw.endpoints_from_snapshots(conn, "us-east-1", WINDOW_START, WINDOW_END)
    arguments = {
        "endpoints": endpoints,
        "window_start": WINDOW_START,
        "window_end": WINDOW_END,
        "retry": FAST,
        **kwargs,
    }
    return cw.pull_invocations(conn, client, **arguments)


# --- tests -----------------------------------------------------------------------------------


def test_endpoints_come_from_the_regions_snapshots_within_a_day_of_the_window(
    conn: psycopg.Connection[Any],
) -> None:
    snapshot(conn)
    found = cw.endpoints_from_snapshots(conn, "us-east-1", WINDOW_START, WINDOW_END)
    assert found == [("rerank", "blue"), ("rerank", "green"), ("support-llm", "AllTraffic")]
    assert cw.endpoints_from_snapshots(conn, "eu-west-1", WINDOW_START, WINDOW_END) == [
        ("eu-only", "AllTraffic")
    ]
    assert cw.endpoints_from_snapshots(conn, "ap-south-1", WINDOW_START, WINDOW_END) == []


def test_a_pull_lands_the_hourly_sums_and_logs_its_request_with_its_cost(
    cloudwatch: Any, conn: psycopg.Connection[Any]
) -> None:
    snapshot(conn)
    put(cloudwatch, POINTS)

    result = pull(conn, cloudwatch)

    want = expected(POINTS)
    assert hours(conn) == want
    assert want == {
        ("support-llm", "AllTraffic", H): Decimal("12.5"),
        ("support-llm", "AllTraffic", H + timedelta(hours=2)): Decimal(10),
        ("support-llm", "AllTraffic", H + timedelta(hours=3)): Decimal(3),
        ("rerank", "blue", H + timedelta(hours=1)): Decimal(15),
    }
    # No datapoint, no row: support-llm at 07:00, rerank/green at any hour.
    assert ("support-llm", "AllTraffic", H + timedelta(hours=1)) not in hours(conn)
    assert not [key for key in hours(conn) if key[1] == "green"]
    # One request of three queries: 3 x USD 0.00001.
    assert requests(conn) == [
        ("cloudwatch", "GetMetricData", "ok", 1, 1, PER_QUERY * 3, result.pull_id)
    ]
    assert pulls(conn) == [
        (result.pull_id, "us-east-1", "AWS/SageMaker", "Invocations", *PULLED, 3600,
         "complete", 3, 4, 1, 0, None),
    ]  # fmt: skip
    assert (result.status, result.endpoints, result.rows, result.requests) == ("complete", 3, 4, 1)
    assert (result.cost_usd, result.bad_datapoints, result.superseded) == (PER_QUERY * 3, 0, 0)
    with conn.transaction():
        summary = conn.execute(
            "select request_summary from ops.api_requests where pull_id = %s", (result.pull_id,)
        ).fetchone()[0]
    assert summary["MetricDataQueries"] == 3 and summary["batch"] == 1


def test_a_repull_overwrites_the_same_rows_and_late_data_wins(
    cloudwatch: Any, conn: psycopg.Connection[Any]
) -> None:
    snapshot(conn)
    put(cloudwatch, POINTS)
    first = pull(conn, cloudwatch)
    again = pull(conn, cloudwatch)

    assert hours(conn) == expected(POINTS)
    with conn.transaction():
        count, holders = conn.execute(
            "select count(*), array_agg(distinct pull_id) from raw.sagemaker_invocations_hourly"
        ).fetchone()
    assert (count, holders) == (4, [again.pull_id])
    assert [(row[0], row[7], row[9]) for row in pulls(conn)] == [
        (first.pull_id, "complete", 4),
        (again.pull_id, "complete", 4),
    ]

    # Late datapoints: one more in an hour already landed, one in an hour that had none.
    late: list[Point] = [
        ("support-llm", "AllTraffic", H + timedelta(minutes=45), 2.5),
        ("support-llm", "AllTraffic", H + timedelta(hours=1, minutes=1), 9.0),
    ]
    put(cloudwatch, late)
    pull(conn, cloudwatch)
    landed = hours(conn)
    assert landed == expected(POINTS + late)
    assert landed[("support-llm", "AllTraffic", H)] == Decimal(15)
    assert landed[("support-llm", "AllTraffic", H + timedelta(hours=1))] == Decimal(9)

    # An overlapping window re-pulls its hours in place: still one row per hour.
    later = cw.pull_invocations(
        conn,
        cloudwatch,
        endpoints=[("support-llm", "AllTraffic"), ("rerank", "blue")],
        window_start=H + timedelta(hours=2),
        window_end=H + timedelta(hours=6),
        retry=FAST,
    )
    assert later.rows == 3  # 08:00, 09:00 and rerank/blue's 10:00 datapoint
    assert hours(conn) == expected(POINTS + late, (H, H + timedelta(hours=6)))
    assert len(requests(conn)) == 4 and len(pulls(conn)) == 4


def test_an_older_pull_does_not_overwrite_a_newer_one(
    cloudwatch: Any, conn: psycopg.Connection[Any]
) -> None:
    """A pull that started after this one (a concurrent run) already holds an hour."""
    snapshot(conn)
    put(cloudwatch, POINTS)
    newer = "00000000-0000-4000-8000-000000000001"
    future = datetime.now(UTC) + timedelta(minutes=5)
    with conn.transaction():
        conn.execute(
            "insert into raw.cloudwatch_pulls (pull_id, region, namespace, metric_name,"
            " window_start, window_end, period_seconds, status, started_at, finished_at)"
            " values (%s, 'us-east-1', 'AWS/SageMaker', 'Invocations', %s, %s, 3600,"
            " 'complete', %s, %s)",
            (newer, *PULLED, future, future),
        )
        conn.execute(
            "insert into raw.sagemaker_invocations_hourly"
            " (region, endpoint_name, variant_name, hour, invocations, pull_id)"
            " values ('us-east-1', 'support-llm', 'AllTraffic', %s, 99, %s)",
            (H, newer),
        )

    result = pull(conn, cloudwatch)

    assert (result.rows, result.superseded) == (3, 1)
    assert hours(conn) == {**expected(POINTS), ("support-llm", "AllTraffic", H): Decimal(99)}


def test_requests_carry_at_most_500_queries_each_priced_by_its_queries(
    cloudwatch: Any, conn: psycopg.Connection[Any]
) -> None:
    endpoints = [(f"endpoint-{n:03d}", "AllTraffic") for n in range(501)]
    points: list[Point] = [
        ("endpoint-000", "AllTraffic", H + timedelta(minutes=5), 1.0),
        ("endpoint-499", "AllTraffic", H + timedelta(hours=1), 2.0),
        ("endpoint-500", "AllTraffic", H + timedelta(hours=3, minutes=59), 3.0),
    ]
    put(cloudwatch, points)

    result = cw.pull_invocations(
        conn,
        cloudwatch,
        endpoints=endpoints,
        window_start=WINDOW_START,
        window_end=WINDOW_END,
        retry=FAST,
    )

    assert hours(conn) == expected(points)
    assert [(row[2], row[3], row[5]) for row in requests(conn)] == [
        ("ok", 1, PER_QUERY * 500),
        ("ok", 1, PER_QUERY),
    ]
    assert (result.endpoints, result.requests, result.cost_usd) == (501, 2, Decimal("0.00501"))


def test_throttled_requests_are_retried_and_every_attempt_is_logged(
    moto: str, conn: psycopg.Connection[Any]
) -> None:
    snapshot(conn)
    put(client(moto), POINTS)
    with FaultProxy(moto, first_n(2, 429, "ThrottlingException", "Rate exceeded")) as proxy:
        result = pull(conn, client(proxy.url))
    assert (result.status, result.rows, result.requests) == ("complete", 4, 3)
    assert hours(conn) == expected(POINTS)
    # Every attempt is logged and priced (the log is an upper bound of the bill).
    assert [(row[2], row[4], row[5]) for row in requests(conn)] == [
        ("throttled", 1, PER_QUERY * 3),
        ("throttled", 2, PER_QUERY * 3),
        ("ok", 3, PER_QUERY * 3),
    ]
    assert result.cost_usd == PER_QUERY * 9


def test_throttled_to_the_end_records_a_failed_pull_and_keeps_the_values(
    moto: str, conn: psycopg.Connection[Any]
) -> None:
    snapshot(conn)
    put(client(moto), POINTS)
    good = pull(conn, client(moto))
    put(client(moto), [("support-llm", "AllTraffic", H + timedelta(minutes=2), 1000.0)])

    with FaultProxy(moto, first_n(99, 400, "Throttling", "Rate exceeded")) as proxy:
        failed = pull(conn, client(proxy.url), retry=RetryPolicy(3, 0.001, 0.01))
        assert proxy.forwarded == 0

    assert (failed.status, failed.rows, failed.requests) == ("failed", 0, 3)
    assert "Throttling" in (failed.error or "")
    assert hours(conn) == expected(POINTS)  # the previous values, all from the good pull
    with conn.transaction():
        holders = conn.execute(
            "select distinct pull_id from raw.sagemaker_invocations_hourly"
        ).fetchall()
    assert holders == [(good.pull_id,)]
    last = pulls(conn)[-1]
    assert (last[0], last[7], last[9], last[10]) == (failed.pull_id, "failed", 0, 3)
    assert "Throttling" in last[12]


def test_other_aws_errors_record_a_failed_pull_and_raise(
    moto: str, conn: psycopg.Connection[Any]
) -> None:
    snapshot(conn)
    put(client(moto), POINTS)
    rule = first_n(1, 400, "InvalidParameterValue", "The parameter StartTime is invalid")
    with FaultProxy(moto, rule) as proxy:
        with pytest.raises(InfrastructureError, match="InvalidParameterValue") as raised:
            pull(conn, client(proxy.url))
        assert proxy.faulted == 1 and proxy.forwarded == 0  # not retried
    assert "us-east-1" in str(raised.value)
    assert hours(conn) == {}
    [(pull_id, *_, status, endpoints, rows, count, _, error)] = pulls(conn)
    assert (status, endpoints, rows, count) == ("failed", 3, 0, 1)
    assert "InvalidParameterValue" in error
    assert [(row[2], row[6]) for row in requests(conn)] == [("error", pull_id)]


def test_no_endpoints_is_an_empty_complete_pull_without_requests(
    cloudwatch: Any, conn: psycopg.Connection[Any]
) -> None:
    result = pull(conn, cloudwatch)
    assert (result.status, result.endpoints, result.rows, result.requests) == ("complete", 0, 0, 0)
    assert requests(conn) == []
    assert [(row[7], row[8]) for row in pulls(conn)] == [("complete", 0)]


def test_naive_windows_are_refused_before_any_request(
    cloudwatch: Any, conn: psycopg.Connection[Any]
) -> None:
    with pytest.raises(ConfigError, match="timezone-aware"):
        cw.pull_invocations(
            conn,
            cloudwatch,
            endpoints=[("support-llm", "AllTraffic")],
            window_start=datetime(2026, 11, 23, 6),
            window_end=WINDOW_END,
        )
    assert requests(conn) == [] and pulls(conn) == []


def test_pipeline_pulls_each_regions_snapshotted_endpoints(
    moto: str, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    snapshot(conn)
    put(client(moto), POINTS)

    results = pipeline.pull_endpoint_invocations(
        db_url, {"us-east-1": client(moto)}, WINDOW_START, WINDOW_END
    )

    assert [(r.region, r.status, r.endpoints, r.rows) for r in results] == [
        ("us-east-1", "complete", 3, 4)
    ]
    assert hours(conn) == expected(POINTS)
    with pytest.raises(ConfigError, match="eu-west-1"):
        pipeline.pull_endpoint_invocations(
            db_url, {"eu-west-1": client(moto)}, WINDOW_START, WINDOW_END
        )
