"""Cost Explorer refresh against moto's server, through a fault-injecting loopback proxy.

moto answers GetCostAndUsage with results preset through its
``/moto-api/static/ce/cost-and-usage-results`` API: each distinct request body
takes the next queued result and keeps it, so page 1 (no token) and each
NextPageToken get their own page, and an identical request gets the same page
again. The proxy (tests/fault_proxy.py) sits between boto3 and moto; it answers
chosen requests with real AWS JSON 1.1 errors and counts what reached moto.
"""

from __future__ import annotations

import json
import random
import urllib.request
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import boto3
import psycopg
import pytest

from spancost import db
from spancost.billing import aws_requests
from spancost.billing.aws_requests import RetryPolicy
from spancost.billing.cost_explorer import (
    BEDROCK_EDITION_SUFFIX,
    DEFAULT_AI_SERVICES,
    CostExplorerSettings,
    RefreshFailed,
    default_queries,
    last_complete,
    refresh,
    refresh_due,
)
from tests.fault_proxy import FaultProxy, first_n, on_page_token

pytestmark = pytest.mark.integration

FAST = RetryPolicy(max_attempts=5, base_delay_s=0.001, max_delay_s=0.01)
AI_QUERY = default_queries()[0]
SETTINGS = CostExplorerSettings(queries=(AI_QUERY,), retry=FAST)
NOW = datetime.now(UTC)
CLAUDE = f"Claude 3.5 Sonnet {BEDROCK_EDITION_SUFFIX}"
FIREWALL = "Acme Next-Gen Firewall"  # a Marketplace product that is not a Bedrock model
SERVICES = [*DEFAULT_AI_SERVICES, CLAUDE, FIREWALL]
DAYS = [date(2026, 1, 5) + timedelta(days=n) for n in range(3)]


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
def moto(aws_endpoint: str) -> str:
    """moto's endpoint, reset: no preset CE results, nothing cached."""
    request = urllib.request.Request(f"{aws_endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(request).close()
    return aws_endpoint


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with db.connect(db_url) as connection:
        db.apply_schema(connection)
        yield connection


def preset(endpoint: str, results: list[dict]) -> None:
    request = urllib.request.Request(
        f"{endpoint}/moto-api/static/ce/cost-and-usage-results",
        data=json.dumps({"results": results}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request) as response:
        assert response.status == 201


def ce_client(url: str):
    return boto3.client(
        "ce", region_name="us-east-1", endpoint_url=url, config=aws_requests.client_config()
    )


def day_result(day: date, groups: list[dict]) -> dict:
    return {
        "TimePeriod": {"Start": day.isoformat(), "End": (day + timedelta(days=1)).isoformat()},
        "Total": {},
        "Groups": groups,
        "Estimated": day == DAYS[-1],
    }


def groups(rng: random.Random, services: list[str]) -> list[dict]:
    return [
        {
            "Keys": [service, f"USE1-{service[:6]}-usage"],
            "Metrics": {
                "UnblendedCost": {"Amount": f"{rng.uniform(0, 50):.10f}", "Unit": "USD"},
                "UsageQuantity": {"Amount": f"{rng.uniform(0, 9999):.6f}", "Unit": "N/A"},
            },
        }
        for service in services
    ]


def three_pages(seed: int = 1) -> list[dict]:
    """Three pages of 3 days; day 2's groups are split across pages 2 and 3, as CE does."""
    rng = random.Random(seed)
    return [
        {"ResultsByTime": [day_result(DAYS[0], groups(rng, SERVICES))], "NextPageToken": "tok-2"},
        {
            "ResultsByTime": [day_result(DAYS[1], groups(rng, SERVICES[:3]))],
            "NextPageToken": "tok-3",
        },
        {
            "ResultsByTime": [
                day_result(DAYS[1], groups(rng, SERVICES[3:])),
                day_result(DAYS[2], groups(rng, SERVICES)),
            ]
        },
    ]


def kept(service: str) -> bool:
    return service in DEFAULT_AI_SERVICES or service.endswith("(Amazon Bedrock Edition)")


def expected_totals(pages: list[dict], metric: str = "UnblendedCost") -> tuple[Decimal, int]:
    """Sum of the metric over the groups the AI query keeps, and how many rows land."""
    total, rows = Decimal(0), 0
    for page in pages:
        for result in page["ResultsByTime"]:
            for group in result["Groups"]:
                if kept(group["Keys"][0]):
                    total += Decimal(group["Metrics"][metric]["Amount"])
                    rows += len(group["Metrics"])
    return total, rows


def fetch(url: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(url) as connection:
        return connection.execute(sql, params).fetchall()


def scalar(url: str, sql: str, *params: object):
    return fetch(url, sql, *params)[0][0]


def requests_of(url: str, pull_id) -> list[tuple]:
    return fetch(
        url,
        "select page, attempt, status, http_status, error_code, cost_usd from ops.api_requests"
        " where pull_id = %s order by id",
        pull_id,
    )


# --- tests -----------------------------------------------------------------------------------


def test_all_pages_land_and_fresh_data_makes_no_request(moto, conn, db_url) -> None:
    pages = three_pages()
    preset(moto, pages)
    total, row_count = expected_totals(pages)

    with FaultProxy(moto) as proxy:
        client = ce_client(proxy.url)
        report = refresh(conn, client, SETTINGS, NOW)

        assert report.due and report.ok
        [result] = report.pulls
        assert (result.status, result.pages, result.rows) == ("complete", 3, row_count)
        assert result.dropped_groups == 3  # the firewall, on each of the 3 days
        assert proxy.forwarded == 3
        assert [seen.body.get("NextPageToken") for seen in proxy.seen] == [None, "tok-2", "tok-3"]

        landed = scalar(
            db_url,
            "select sum(amount) from raw.ce_cost_and_usage"
            " where metric = 'UnblendedCost' and pull_id = %s",
            result.pull_id,
        )
        assert landed == total
        assert scalar(db_url, "select count(*) from raw.ce_cost_and_usage") == row_count
        assert (
            scalar(
                db_url,
                "select count(*) from raw.ce_cost_and_usage where group_key_1 = %s",
                FIREWALL,
            )
            == 0
        )
        assert (
            scalar(
                db_url,
                "select count(distinct period_start) from raw.ce_cost_and_usage where estimated",
            )
            == 1
        )
        # Each page is one request, logged with its price and the pull it belongs to.
        assert requests_of(db_url, result.pull_id) == [
            (page, 1, "ok", 200, None, Decimal("0.01")) for page in (1, 2, 3)
        ]
        assert (report.requests, report.cost_usd) == (3, Decimal("0.03"))
        summaries = [
            row[0] for row in fetch(db_url, "select request_summary from ops.api_requests")
        ]
        assert all("NextPageToken" not in s and s["query"] == AI_QUERY.name for s in summaries)
        assert summaries[0]["Filter"] == AI_QUERY.filter()

        # Fresh: no request at all, not even one that moto would see.
        later = NOW + timedelta(hours=1)
        assert not refresh_due(conn, later, SETTINGS.min_interval)
        again = refresh(conn, client, SETTINGS, later)
        assert not again.due and again.pulls == () and again.fresh_queries == (AI_QUERY.name,)
        assert len(proxy.seen) == 3
        assert scalar(db_url, "select count(*) from ops.api_requests") == 3

        # Due again after the interval, or when forced: a new pull, the old one kept.
        # (The interval counts from when the pull really finished, not from NOW.)
        finished = last_complete(conn)
        assert finished is not None
        assert refresh_due(conn, finished + timedelta(hours=4, minutes=1), SETTINGS.min_interval)
        assert not refresh_due(
            conn, finished + timedelta(hours=3, minutes=59), SETTINGS.min_interval
        )
        assert refresh_due(conn, later, SETTINGS.min_interval, force=True)
        # Forced at NOW: moto's preset answers the request for NOW's days, and an hour
        # later can already be tomorrow (this failed when run after 23:00 UTC).
        forced = refresh(conn, client, SETTINGS, NOW, force=True)
        assert forced.pulls[0].status == "complete" and proxy.forwarded == 6
    assert fetch(db_url, "select status, count(*) from raw.ce_pulls group by status") == [
        ("complete", 2)
    ]
    assert scalar(db_url, "select count(*) from raw.ce_cost_and_usage") == 2 * row_count
    assert scalar(db_url, "select sum(cost_usd) from ops.api_requests") == Decimal("0.06")


def test_a_pull_failing_on_page_2_commits_nothing_and_keeps_the_previous_pull(
    moto, conn, db_url
) -> None:
    pages = three_pages()
    preset(moto, pages)
    _, row_count = expected_totals(pages)
    with FaultProxy(moto) as proxy:
        first = refresh(conn, ce_client(proxy.url), SETTINGS, NOW).pulls[0]

    # Page 2 answers 500 every time: retried up to max_attempts, then the pull fails.
    settings = CostExplorerSettings(queries=(AI_QUERY,), retry=RetryPolicy(3, 0.001, 0.01))
    broken = on_page_token(99, 500, "InternalFailure", "We encountered an internal error")
    with FaultProxy(moto, broken) as proxy:
        with pytest.raises(RefreshFailed, match="previous data kept") as caught:
            refresh(conn, ce_client(proxy.url), settings, NOW, force=True)
        assert proxy.forwarded == 1 and proxy.faulted == 3
    [failed] = caught.value.report.failed
    assert failed.pages == 1 and failed.rows == 0  # page 1 arrived; nothing landed
    assert "page 2" in failed.error and "InternalFailure" in failed.error

    assert fetch(
        db_url,
        "select status, pages, row_count, error is null from raw.ce_pulls order by started_at",
    ) == [("complete", 3, row_count, True), ("failed", 1, 0, False)]
    assert (
        scalar(
            db_url, "select count(*) from raw.ce_cost_and_usage where pull_id = %s", failed.pull_id
        )
        == 0
    )
    assert (
        scalar(
            db_url, "select count(*) from raw.ce_cost_and_usage where pull_id = %s", first.pull_id
        )
        == row_count
    )
    # The failed pull's requests were made, so they are logged and counted.
    assert requests_of(db_url, failed.pull_id) == [
        (1, 1, "ok", 200, None, Decimal("0.01")),
        *[(2, n, "error", 500, "InternalFailure", Decimal("0.01")) for n in (1, 2, 3)],
    ]
    # A failed pull does not make the data look fresh, nor stale: the complete one counts.
    assert not refresh_due(conn, NOW + timedelta(hours=1), SETTINGS.min_interval)


@pytest.mark.parametrize(
    ("http_status", "error_type"),
    [
        (400, "ThrottlingException"),
        (400, "LimitExceededException"),
        (429, "TooManyRequestsException"),
    ],
)
def test_throttled_requests_are_retried_and_logged(
    moto, conn, db_url, http_status, error_type
) -> None:
    pages = three_pages()
    preset(moto, pages)
    total, row_count = expected_totals(pages)
    with FaultProxy(moto, first_n(3, http_status, error_type, "Rate exceeded")) as proxy:
        report = refresh(conn, ce_client(proxy.url), SETTINGS, NOW)
        assert (proxy.faulted, proxy.forwarded) == (3, 3)
    [result] = report.pulls
    assert result.status == "complete" and result.rows == row_count
    cent = Decimal("0.01")
    assert requests_of(db_url, result.pull_id) == [
        (1, 1, "throttled", http_status, error_type, cent),
        (1, 2, "throttled", http_status, error_type, cent),
        (1, 3, "throttled", http_status, error_type, cent),
        (1, 4, "ok", 200, None, cent),
        (2, 1, "ok", 200, None, cent),
        (3, 1, "ok", 200, None, cent),
    ]
    assert (report.requests, report.cost_usd) == (6, Decimal("0.06"))
    assert (
        scalar(
            db_url, "select sum(amount) from raw.ce_cost_and_usage where metric = 'UnblendedCost'"
        )
        == total
    )


def test_throttling_that_outlasts_the_attempts_fails_the_pull(moto, conn, db_url) -> None:
    preset(moto, three_pages())
    settings = CostExplorerSettings(queries=(AI_QUERY,), retry=RetryPolicy(3, 0.001, 0.01))
    rule = first_n(99, 400, "ThrottlingException", "Rate exceeded")
    with FaultProxy(moto, rule) as proxy:
        report = refresh(conn, ce_client(proxy.url), settings, NOW, raise_on_failure=False)
        assert proxy.forwarded == 0
    [failed] = report.failed
    assert "ThrottlingException" in failed.error and "out of attempts" in failed.error
    assert [row[2] for row in requests_of(db_url, failed.pull_id)] == ["throttled"] * 3
    assert scalar(db_url, "select count(*) from raw.ce_cost_and_usage") == 0
    assert scalar(db_url, "select status from raw.ce_pulls") == "failed"


def test_request_changed_restarts_the_pull_and_lands_it_once(moto, conn, db_url) -> None:
    pages = three_pages()
    preset(moto, pages)
    total, row_count = expected_totals(pages)
    changed = on_page_token(1, 400, "RequestChangedException", "Your request parameters changed")
    with FaultProxy(moto, changed) as proxy:
        report = refresh(conn, ce_client(proxy.url), SETTINGS, NOW)
        assert [seen.body.get("NextPageToken") for seen in proxy.seen] == [
            None,
            "tok-2",
            None,
            "tok-2",
            "tok-3",
        ]
    [result] = report.pulls
    assert (result.status, result.restarts, result.pages, result.rows) == (
        "complete",
        1,
        3,
        row_count,
    )
    assert [row[:3] + row[4:5] for row in requests_of(db_url, result.pull_id)] == [
        (1, 1, "ok", None),
        (2, 1, "error", "RequestChangedException"),
        (1, 1, "ok", None),
        (2, 1, "ok", None),
        (3, 1, "ok", None),
    ]
    assert scalar(db_url, "select count(*) from raw.ce_cost_and_usage") == row_count
    assert (
        scalar(
            db_url, "select sum(amount) from raw.ce_cost_and_usage where metric = 'UnblendedCost'"
        )
        == total
    )
    restarts = fetch(db_url, "select request_summary->>'restart' from ops.api_requests order by id")
    assert [r[0] for r in restarts] == ["0", "0", "1", "1", "1"]


def test_request_changed_every_time_gives_up_after_max_restarts(moto, conn, db_url) -> None:
    preset(moto, three_pages())
    settings = CostExplorerSettings(queries=(AI_QUERY,), retry=FAST, max_restarts=2)
    changed = on_page_token(99, 400, "RequestChangedException", "changed")
    with FaultProxy(moto, changed) as proxy:
        with pytest.raises(RefreshFailed, match="RequestChangedException"):
            refresh(conn, ce_client(proxy.url), settings, NOW)
        assert len(proxy.seen) == 6  # (page 1, page 2) x (1 + 2 restarts)
    assert scalar(db_url, "select count(*) from raw.ce_cost_and_usage") == 0


def test_default_queries_hourly_and_the_opt_in_resource_query(moto, conn, db_url) -> None:
    today = NOW.date()
    hour = datetime.combine(today, datetime.min.time(), tzinfo=UTC)

    def hourly_page(service: str, tag: str) -> dict:
        return {
            "ResultsByTime": [
                {
                    "TimePeriod": {
                        "Start": (hour + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "End": (hour + timedelta(hours=h + 1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    },
                    "Total": {},
                    "Groups": [
                        {
                            "Keys": [service, tag],
                            "Metrics": {"UnblendedCost": {"Amount": "0.5", "Unit": "USD"}},
                        }
                    ],
                    "Estimated": True,
                }
                for h in range(2)
            ]
        }

    preset(
        moto,
        [
            hourly_page("Amazon Bedrock", "USE1-input-tokens"),
            hourly_page("Amazon Bedrock", "PipelineID$"),
            hourly_page("Amazon SageMaker", "arn:aws:sagemaker:us-east-1:1:endpoint/chat"),
        ],
    )
    settings = CostExplorerSettings(
        queries=default_queries(resources=True), hourly=True, retry=FAST
    )
    # moto has no GetCostAndUsageWithResources; it answers the same shape as GetCostAndUsage.
    rewrite = {
        "AWSInsightsIndexService.GetCostAndUsageWithResources": (
            "AWSInsightsIndexService.GetCostAndUsage"
        )
    }
    with FaultProxy(moto, rewrite_targets=rewrite) as proxy:
        report = refresh(conn, ce_client(proxy.url), settings, NOW)
        bodies = [seen.body for seen in proxy.seen]
    assert [p.status for p in report.pulls] == ["complete"] * 3
    assert [b["Granularity"] for b in bodies] == ["HOURLY", "HOURLY", "DAILY"]
    assert bodies[0]["TimePeriod"]["Start"].endswith("T00:00:00Z")
    for body in bodies:
        start = date.fromisoformat(body["TimePeriod"]["Start"][:10])
        assert today - start <= timedelta(days=13)  # clamped to what AWS keeps
    assert bodies[2]["Filter"] == {"Dimensions": {"Key": "SERVICE", "Values": ["Amazon SageMaker"]}}
    assert [
        row[0] for row in fetch(db_url, "select operation from ops.api_requests order by id")
    ] == ["GetCostAndUsage", "GetCostAndUsage", "GetCostAndUsageWithResources"]
    assert fetch(
        db_url,
        "select distinct query_name, group_dim_2, tag_key, tag_value, period_end - period_start"
        " from raw.ce_cost_and_usage order by 1",
    ) == [
        ("ai_resources_by_service", "RESOURCE_ID", None, None, timedelta(hours=1)),
        ("ai_services_by_usage_type", "USAGE_TYPE", None, None, timedelta(hours=1)),
        ("pipeline_tag_by_service", "TAG:PipelineID", "PipelineID", "", timedelta(hours=1)),
    ]


def test_a_refresh_running_elsewhere_makes_this_one_skip(moto, conn, db_url) -> None:
    with psycopg.connect(db_url, autocommit=True) as other:
        other.execute("select pg_advisory_lock(hashtext('spancost.cost_explorer'))")
        with FaultProxy(moto) as proxy:
            report = refresh(conn, ce_client(proxy.url), SETTINGS, NOW)
            assert report.busy and report.pulls == () and proxy.seen == []
    assert scalar(db_url, "select count(*) from ops.api_requests") == 0


def test_a_client_that_retries_inside_botocore_is_refused(moto, conn) -> None:
    from spancost.errors import ConfigError

    retrying = boto3.client("ce", region_name="us-east-1", endpoint_url=moto)
    with pytest.raises(ConfigError, match="client_config"):
        refresh(conn, retrying, SETTINGS, NOW)


def test_connection_failures_are_retried_logged_and_fail_the_pull(
    aws_endpoint, conn, db_url
) -> None:
    import socket

    with socket.socket() as sock:  # a loopback port with nothing listening
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    db.apply_schema(conn)  # idempotent: a second apply changes nothing
    settings = CostExplorerSettings(queries=(AI_QUERY,), retry=RetryPolicy(2, 0.001, 0.01))
    report = refresh(conn, ce_client(closed), settings, NOW, raise_on_failure=False)
    [failed] = report.failed
    assert "EndpointConnectionError" in failed.error
    assert [row[:5] for row in requests_of(db_url, failed.pull_id)] == [
        (1, 1, "error", None, "EndpointConnectionError"),
        (1, 2, "error", None, "EndpointConnectionError"),
    ]
