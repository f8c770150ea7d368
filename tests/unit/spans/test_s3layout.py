"""The awss3exporter key layout: which prefixes a run lists."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spancost.errors import ConfigError
from spancost.settings import SpanSource
from spancost.spans.s3layout import is_trace_export, partitions

pytestmark = pytest.mark.unit


def test_minute_partitions_of_a_15_minute_run_with_lateness() -> None:
    source = SpanSource(bucket="b", prefix="otel", lateness=timedelta(minutes=5))
    start = datetime(2026, 3, 7, 14, 0, tzinfo=UTC)
    found = list(partitions(source, start, start + timedelta(minutes=15)))
    assert len(found) == 20
    assert found[0] == (
        datetime(2026, 3, 7, 13, 55, tzinfo=UTC),
        "otel/year=2026/month=03/day=07/hour=13/minute=55/",
    )
    assert found[-1][1] == "otel/year=2026/month=03/day=07/hour=14/minute=14/"


def test_base_prefix_hour_format_and_timezone() -> None:
    source = SpanSource(
        bucket="b",
        base_prefix="base/prefix",
        prefix="bar",
        partition_format="year=%Y/month=%m/day=%d/hour=%H",
        partition_timezone="Asia/Tokyo",
        lateness=timedelta(0),
    )
    start = datetime(2026, 3, 7, 14, 0, tzinfo=UTC)
    found = list(partitions(source, start, start + timedelta(hours=2)))
    assert [prefix for _, prefix in found] == [
        "base/prefix/bar/year=2026/month=03/day=07/hour=23/",
        "base/prefix/bar/year=2026/month=03/day=08/hour=00/",
    ]
    assert found[1][0] == datetime(2026, 3, 7, 15, 0, tzinfo=UTC)


def test_a_format_without_time_units_is_refused() -> None:
    source = SpanSource(bucket="b", partition_format="static")
    with pytest.raises(ConfigError, match="no day, hour or minute"):
        list(partitions(source, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)))


def test_only_trace_exports_are_picked() -> None:
    source = SpanSource(bucket="b", file_prefix="prod-")
    assert is_trace_export("x/minute=01/prod-traces_123456789.json.gz", source)
    assert not is_trace_export("x/minute=01/prod-logs_123456789.json.gz", source)
    assert not is_trace_export("x/minute=01/traces_123456789.json.gz", source)


def test_a_day_of_minute_partitions_is_listed_hour_by_hour() -> None:
    from spancost.spans.s3layout import listing_plan

    source = SpanSource(bucket="b", prefix="otel", lateness=timedelta(0))
    start = datetime(2026, 3, 7, tzinfo=UTC)
    plan = listing_plan(source, start, start + timedelta(days=1))
    assert len(plan) == 24
    listed, members = plan[5]
    assert listed == "otel/year=2026/month=03/day=07/hour=05/minute="
    assert len(members) == 60
    assert members["otel/year=2026/month=03/day=07/hour=05/minute=07/"] == datetime(
        2026, 3, 7, 5, 7, tzinfo=UTC
    )


def test_a_short_interval_lists_its_partitions_exactly() -> None:
    from spancost.spans.s3layout import listing_plan

    source = SpanSource(bucket="b", prefix="otel", lateness=timedelta(0))
    start = datetime(2026, 3, 7, 5, 59, tzinfo=UTC)
    plan = listing_plan(source, start, start + timedelta(minutes=2))
    assert [listed for listed, _ in plan] == [
        "otel/year=2026/month=03/day=07/hour=05/minute=59/",
        "otel/year=2026/month=03/day=07/hour=06/minute=00/",
    ]


def test_an_unknown_partition_timezone_is_a_config_error() -> None:
    source = SpanSource(bucket="b", partition_timezone="Mars/Olympus")
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        list(partitions(source, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)))
