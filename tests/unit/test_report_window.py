"""`spancost report` sums the window it is asked for, and says which."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from spancost.cli import report_window
from spancost.errors import ConfigError
from spancost.transform.report import window_text

pytestmark = pytest.mark.unit


def test_a_date_is_that_utc_day() -> None:
    start, end = report_window("2026-11-20", None, None)
    assert (start, end) == (datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC))
    assert window_text(start, end) == (
        "hours from 2026-11-20 00:00 to 2026-11-21 00:00 (UTC, end excluded)"
    )


def test_a_range_and_no_window() -> None:
    start, end = report_window(None, "2026-11-20T06:00:00+02:00", None)
    assert start == datetime(2026, 11, 20, 4, tzinfo=UTC) and end is None
    assert window_text(None, None) == "every hour in marts.agg_pipeline_costs_hourly"


def test_bad_windows_are_refused_naming_the_option() -> None:
    with pytest.raises(ConfigError, match="--date cannot be combined"):
        report_window("2026-11-20", "2026-11-20", None)
    with pytest.raises(ConfigError, match="--end"):
        report_window(None, "2026-11-21", "2026-11-20")
