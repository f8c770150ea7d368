"""CloudWatch invocations: hour windows, batching, query ids, request prices, parsing."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from dateutil.tz import tzlocal

from spancost.billing import aws_requests
from spancost.billing.cloudwatch import (
    MAX_QUERIES,
    BadMetricResponse,
    CloudWatchError,
    HourlyInvocations,
    batches,
    ceil_hour,
    floor_hour,
    hour_window,
    query_id,
    request,
)
from spancost.billing.cloudwatch import parse_results as parse
from spancost.errors import ConfigError

pytestmark = pytest.mark.unit

H = datetime(2026, 11, 23, 6, tzinfo=UTC)
WINDOW = (H, H + timedelta(hours=3))
CLOUDWATCH_ID = re.compile(r"^[a-z][a-zA-Z0-9_]*$")


# --- hours -----------------------------------------------------------------------------------


def test_floor_and_ceil_to_whole_utc_hours() -> None:
    assert floor_hour(H + timedelta(minutes=59, seconds=59, microseconds=1)) == H
    assert floor_hour(H) == H
    assert ceil_hour(H) == H
    assert ceil_hour(H + timedelta(microseconds=1)) == H + timedelta(hours=1)
    # Other offsets are converted first: 11:45 at +05:30 is 06:15 UTC.
    india = timezone(timedelta(hours=5, minutes=30))
    assert floor_hour(datetime(2026, 11, 23, 11, 45, tzinfo=india)) == H
    assert floor_hour(datetime(2026, 11, 23, 11, 45, tzinfo=india)).tzinfo is UTC


def test_hour_window_floors_the_start_and_ceils_the_end() -> None:
    assert hour_window(H + timedelta(minutes=15), H + timedelta(hours=2, minutes=1)) == (
        H,
        H + timedelta(hours=3),
    )
    assert hour_window(H, H + timedelta(minutes=1)) == (H, H + timedelta(hours=1))


@pytest.mark.parametrize(
    "start, end",
    [
        (datetime(2026, 11, 23, 6), H + timedelta(hours=1)),
        (H, datetime(2026, 11, 23, 7)),
    ],
)
def test_naive_bounds_are_refused(start: datetime, end: datetime) -> None:
    with pytest.raises(ConfigError, match="timezone-aware"):
        hour_window(start, end)


def test_an_empty_window_is_refused() -> None:
    with pytest.raises(ConfigError, match="empty"):
        hour_window(H, H)
    with pytest.raises(ConfigError, match="empty"):
        hour_window(H + timedelta(hours=2), H)


# --- requests --------------------------------------------------------------------------------


def test_batches_of_at_most_500_queries_each_variant_once() -> None:
    endpoints = [(f"endpoint-{n}", "AllTraffic") for n in range(1001)]
    groups = batches([*endpoints, endpoints[0], endpoints[500]])
    assert [len(group) for group in groups] == [500, 500, 1]
    assert [pair for group in groups for pair in group] == endpoints
    assert batches([]) == []
    assert batches([("a", "v")] * 3) == [[("a", "v")]]
    assert [len(group) for group in batches(endpoints[:5], size=2)] == [2, 2, 1]


@pytest.mark.parametrize("size", [0, MAX_QUERIES + 1])
def test_batch_sizes_beyond_the_limit_are_refused(size: int) -> None:
    with pytest.raises(ConfigError, match="500"):
        batches([("a", "v")], size=size)


def test_query_ids_are_valid_cloudwatch_ids_unique_in_a_request() -> None:
    endpoints = [(f"llm-{n}-prod", f"variant-{n % 3}") for n in range(MAX_QUERIES)]
    params = request(endpoints, *WINDOW)
    ids = [query["Id"] for query in params["MetricDataQueries"]]
    assert all(CLOUDWATCH_ID.match(id_) for id_ in ids), ids
    assert len(set(ids)) == len(ids) == MAX_QUERIES
    assert all(CLOUDWATCH_ID.match(query_id(n)) for n in range(10_000))
    with pytest.raises(ValueError):
        query_id(-1)


def test_request_asks_for_the_hourly_sum_per_endpoint_and_variant() -> None:
    params = request([("support-llm", "AllTraffic")], *WINDOW)
    assert params == {
        "MetricDataQueries": [
            {
                "Id": "q0",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/SageMaker",
                        "MetricName": "Invocations",
                        "Dimensions": [
                            {"Name": "EndpointName", "Value": "support-llm"},
                            {"Name": "VariantName", "Value": "AllTraffic"},
                        ],
                    },
                    "Period": 3600,
                    "Stat": "Sum",
                },
                "ReturnData": True,
            }
        ],
        "StartTime": WINDOW[0],
        "EndTime": WINDOW[1],
        "ScanBy": "TimestampAscending",
    }


def test_get_metric_data_costs_a_hundredth_of_a_cent_per_query() -> None:
    full = request([(f"e{n}", "v") for n in range(MAX_QUERIES)], *WINDOW)
    assert aws_requests.request_price("cloudwatch", "GetMetricData", full) == Decimal("0.005")
    one = request([("e", "v")], *WINDOW)
    assert aws_requests.request_price("cloudwatch", "GetMetricData", one) == Decimal("0.00001")
    assert aws_requests.request_price("cloudwatch", "ListMetrics", {}) == Decimal(0)
    assert aws_requests.request_price("cloudwatch") == Decimal(0)
    assert aws_requests.request_price("ce", "GetCostAndUsage", {}) == Decimal("0.01")


# --- parsing ---------------------------------------------------------------------------------


def _result(id_: str, points: list[tuple[object, object]], status: str = "Complete") -> dict:
    return {
        "Id": id_,
        "Label": "Invocations Sum",
        "Timestamps": [stamp for stamp, _ in points],
        "Values": [value for _, value in points],
        "StatusCode": status,
    }


BATCH = [("support-llm", "AllTraffic"), ("rerank", "blue")]


def test_parse_keeps_hours_in_any_order_and_any_timezone() -> None:
    # botocore gives tzlocal() timestamps; the default ScanBy is newest first.
    local = (H + timedelta(hours=2)).astimezone(tzlocal())
    pages = [
        {
            "MetricDataResults": [
                _result("q0", [(local, 10.0), (H, 7.0)]),
                _result("q1", []),
            ]
        }
    ]
    rows, bad = parse(pages, BATCH, WINDOW)
    assert bad == []
    assert rows == [
        HourlyInvocations("support-llm", "AllTraffic", H + timedelta(hours=2), Decimal(10)),
        HourlyInvocations("support-llm", "AllTraffic", H, Decimal(7)),
    ]
    assert all(row.hour.tzinfo is UTC for row in rows)


def test_parse_follows_a_query_across_pages() -> None:
    pages = [
        {"MetricDataResults": [_result("q0", [(H, 1.0)], "PartialData"), _result("q1", [])]},
        {"MetricDataResults": [_result("q0", [(H + timedelta(hours=1), 2.0)])]},
    ]
    rows, bad = parse(pages, BATCH, WINDOW)
    assert [(row.hour, row.invocations) for row in rows] == [
        (H, Decimal(1)),
        (H + timedelta(hours=1), Decimal(2)),
    ]
    assert bad == []


def test_bad_datapoints_are_counted_with_their_endpoint_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    off_hour = H + timedelta(minutes=30)
    pages = [
        {
            "MetricDataResults": [
                _result(
                    "q0",
                    [
                        (H, "12"),
                        (H + timedelta(hours=1), float("nan")),
                        (off_hour, 3.0),
                        (H + timedelta(hours=3), 4.0),  # the window's end is exclusive
                        (H + timedelta(hours=2), 5.0),
                        (H + timedelta(hours=2), 6.0),
                        ("yesterday", 1.0),
                        (H + timedelta(hours=1), True),
                    ],
                ),
                _result("q1", [(H, 2.0)]),
            ]
        }
    ]
    with caplog.at_level("WARNING", logger="spancost.billing.cloudwatch"):
        rows, bad = parse(pages, BATCH, WINDOW)
    assert rows == [
        HourlyInvocations("support-llm", "AllTraffic", H + timedelta(hours=2), Decimal(5)),
        HourlyInvocations("rerank", "blue", H, Decimal(2)),
    ]
    assert [(point.endpoint_name, point.variant_name, point.reason) for point in bad] == [
        ("support-llm", "AllTraffic", "value is not a finite number"),
        ("support-llm", "AllTraffic", "value is not a finite number"),
        ("support-llm", "AllTraffic", "timestamp is not on a whole UTC hour"),
        ("support-llm", "AllTraffic", "timestamp is outside the window"),
        ("support-llm", "AllTraffic", "hour repeated (first value 5.0 kept)"),
        ("support-llm", "AllTraffic", "timestamp is not a timezone-aware time"),
        ("support-llm", "AllTraffic", "value is not a finite number"),
    ]
    assert bad[2].timestamp == off_hour
    assert len(caplog.records) == len(bad)
    assert "support-llm" in caplog.text and "AllTraffic" in caplog.text
    assert off_hour.isoformat(sep=" ") in caplog.text


def test_a_result_for_a_query_not_asked_is_a_bad_response() -> None:
    pages = [{"MetricDataResults": [_result("q0", []), _result("q1", []), _result("q2", [])]}]
    with pytest.raises(BadMetricResponse, match="'q2'"):
        parse(pages, BATCH, WINDOW)


def test_unequal_timestamps_and_values_are_a_bad_response() -> None:
    broken = {**_result("q1", [(H, 1.0)]), "Values": []}
    with pytest.raises(BadMetricResponse, match="rerank/blue: 1 timestamps but 0 values"):
        parse([{"MetricDataResults": [_result("q0", []), broken]}], BATCH, WINDOW)


def test_a_query_without_result_is_a_bad_response() -> None:
    with pytest.raises(BadMetricResponse, match=r"q1 \(rerank/blue\)"):
        parse([{"MetricDataResults": [_result("q0", [])]}], BATCH, WINDOW)


@pytest.mark.parametrize("status", ["InternalError", "Forbidden", "PartialData"])
def test_incomplete_data_on_the_last_page_fails_the_pull(status: str) -> None:
    failed = {
        **_result("q1", [(H, 1.0)], status),
        "Messages": [{"Code": "MaxQueryTimeRangeExceed", "Value": "too long"}],
    }
    pages = [{"MetricDataResults": [_result("q0", []), failed]}]
    with pytest.raises(CloudWatchError, match=f"rerank/blue: StatusCode {status}"):
        parse(pages, BATCH, WINDOW)
