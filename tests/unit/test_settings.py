"""Configuration: times given on the command line or as DAG params, and from the environment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from spancost.errors import ConfigError
from spancost.settings import MAX_DEFAULT_LOAD_WORKERS, default_load_workers, from_env, utc_time

pytestmark = pytest.mark.unit


def test_times_become_plain_utc_datetimes() -> None:
    assert utc_time("2026-11-22T10:00") == datetime(2026, 11, 22, 10, tzinfo=UTC)  # naive: UTC
    assert utc_time("2026-11-22T12:00+02:00") == datetime(2026, 11, 22, 10, tzinfo=UTC)
    paris = datetime(2026, 11, 22, 11, tzinfo=timezone(timedelta(hours=1)))
    moment = utc_time(paris)
    assert moment == datetime(2026, 11, 22, 10, tzinfo=UTC) and moment.tzinfo is UTC


def test_pendulum_values_from_airflow_lose_nothing() -> None:
    import pendulum

    value = pendulum.datetime(2026, 11, 22, 10, 15, tz="Europe/Paris")
    moment = utc_time(value)
    assert type(moment) is datetime and moment == datetime(2026, 11, 22, 9, 15, tzinfo=UTC)


def test_a_bad_time_names_what_it_was() -> None:
    with pytest.raises(ConfigError, match="--start: not an ISO 8601 time: 'yesterday'"):
        utc_time("yesterday", "--start")


def test_load_workers_and_streaming_come_from_the_environment() -> None:
    env = {
        "SPANCOST_SPANS_BUCKET": "b",
        "SPANCOST_USER_ID_SALT": "s",
        "SPANCOST_LOAD_WORKERS": "0",
        "SPANCOST_STREAM_OBJECT_BYTES": "1024",
    }
    settings = from_env(env)
    assert (settings.load_workers, settings.stream_object_bytes) == (0, 1024)
    with pytest.raises(ConfigError, match="SPANCOST_LOAD_WORKERS must be a whole number"):
        from_env({**env, "SPANCOST_LOAD_WORKERS": "many"})


def test_the_default_worker_count_follows_the_cpus_but_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert default_load_workers() == MAX_DEFAULT_LOAD_WORKERS == 4
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert default_load_workers() == 2
    assert from_env({"SPANCOST_SPANS_BUCKET": "b", "SPANCOST_USER_ID_SALT": "s"}).load_workers == 2


def test_input_limits_come_from_the_environment() -> None:
    from spancost.errors import ConfigError
    from spancost.settings import from_env

    base = {"SPANCOST_SPANS_BUCKET": "b", "SPANCOST_USER_ID_SALT": "s"}
    defaults = from_env(base)
    assert (defaults.max_attribute_depth, defaults.max_attributes) == (32, 1024)
    assert (defaults.max_spans_per_object, defaults.max_compression_ratio) == (1_000_000, 100)
    custom = from_env(
        {
            **base,
            "SPANCOST_MAX_ATTRIBUTE_DEPTH": "8",
            "SPANCOST_MAX_ATTRIBUTES": "64",
            "SPANCOST_MAX_SPANS_PER_OBJECT": "10",
            "SPANCOST_MAX_COMPRESSION_RATIO": "0",
        }
    )
    assert (custom.max_attribute_depth, custom.max_attributes) == (8, 64)
    assert (custom.max_spans_per_object, custom.max_compression_ratio) == (10, 0)
    with pytest.raises(ConfigError, match="SPANCOST_MAX_ATTRIBUTE_DEPTH"):
        from_env({**base, "SPANCOST_MAX_ATTRIBUTE_DEPTH": "500"})
