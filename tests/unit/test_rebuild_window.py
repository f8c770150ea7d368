"""Which window an asset-triggered transform rebuilds (spancost.transform.window)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from spancost.transform.window import dbt_var, rebuild_window

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 7, 9, 15, tzinfo=UTC)
SPANS = "spancost://raw/otel_spans"
COSTS = "spancost://raw/ce_cost_and_usage"


@dataclass(frozen=True)
class Asset:  # what Airflow's triggering_asset_events is keyed by: something with a uri
    uri: str


@dataclass
class Event:
    timestamp: datetime
    extra: dict[str, Any] = field(default_factory=dict)


def spans_event(first: datetime, last: datetime, emitted: datetime = NOW) -> Event:
    return Event(emitted, {"spans_from": first.isoformat(), "spans_to": last.isoformat()})


def test_recent_spans_leave_the_lookback_alone() -> None:
    recent = spans_event(NOW - timedelta(hours=3), NOW - timedelta(minutes=1))
    assert rebuild_window({Asset(SPANS): [recent]}) is None
    assert dbt_var({Asset(SPANS): [recent]}, "start") == ""


def test_a_backfill_of_an_old_day_rebuilds_its_whole_days_to_the_newest_span() -> None:
    tuesday = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    backfill = spans_event(tuesday, tuesday + timedelta(hours=1))
    recent = spans_event(NOW - timedelta(minutes=20), NOW - timedelta(minutes=5))
    window = rebuild_window({Asset(SPANS): [recent, backfill], Asset(COSTS): [Event(NOW)]})
    assert window == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 8, tzinfo=UTC))
    events = {Asset(SPANS): [backfill]}
    assert dbt_var(events, "start") == "2026-12-01T00:00:00+00:00"
    assert dbt_var(events, "end") == "2026-12-02T00:00:00+00:00"


def test_old_is_judged_against_the_event_not_the_clock() -> None:
    """A transform that runs late rebuilds what it would have on time."""
    late_run = spans_event(NOW - timedelta(hours=3), NOW, emitted=NOW)
    assert rebuild_window({Asset(SPANS): [late_run]}, lookback=timedelta(hours=48)) is None


def test_params_win_and_events_without_a_range_change_nothing() -> None:
    backfill = spans_event(NOW - timedelta(days=6), NOW - timedelta(days=6))
    assert dbt_var({Asset(SPANS): [backfill]}, "start", "2026-11-01T00:00Z") == "2026-11-01T00:00Z"
    assert rebuild_window({Asset(SPANS): [Event(NOW)], Asset(COSTS): [backfill]}) is None
    assert rebuild_window({}) is None and rebuild_window(None) is None
