"""Which window an asset-triggered transform rebuilds.

``spancost_ingest`` publishes the spans asset with the UTC time range of the spans
it published (event extra ``spans_from``/``spans_to``). A transform triggered by
events whose spans all lie within dbt's ``lookback_hours`` of the event rebuilds
the lookback as usual (the dbt vars stay empty). When any event brought older
spans (a backfill of last Tuesday), the transform rebuilds whole UTC days from the
oldest such span to the newest span of the events, so the backfilled days' marts
are rebuilt too. Pure functions, no Airflow import: the DAG file calls them from
its templates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from spancost.settings import utc_time

SPANS_URI = "spancost://raw/otel_spans"
# dbt_project.yml's lookback_hours: what an ordinary transform rebuilds anyway.
LOOKBACK = timedelta(hours=48)


def _events(triggering: Any) -> Iterable[Any]:
    """The spans asset's events from Airflow's ``triggering_asset_events`` mapping."""
    if not isinstance(triggering, Mapping):
        return ()
    found: list[Any] = []
    for asset, events in triggering.items():
        if getattr(asset, "uri", asset) == SPANS_URI or str(asset) == SPANS_URI:
            found.extend(events or ())
    return found


def rebuild_window(
    triggering: Any, lookback: timedelta = LOOKBACK
) -> tuple[datetime, datetime] | None:
    """[start of the oldest day, end of the newest day) to rebuild, or None (the lookback)."""
    oldest_needed: datetime | None = None
    newest: datetime | None = None
    for event in _events(triggering):
        extra = getattr(event, "extra", None) or {}
        if not extra.get("spans_from") or not extra.get("spans_to"):
            continue
        first = utc_time(extra["spans_from"], "spans_from")
        last = utc_time(extra["spans_to"], "spans_to")
        emitted = getattr(event, "timestamp", None)
        if emitted is None or first < utc_time(emitted, "event timestamp") - lookback:
            oldest_needed = first if oldest_needed is None else min(oldest_needed, first)
        newest = last if newest is None else max(newest, last)
    if oldest_needed is None or newest is None:
        return None
    start = oldest_needed.replace(hour=0, minute=0, second=0, microsecond=0)
    end = newest.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return start, end


def dbt_var(triggering: Any, which: str, explicit: str | None = None) -> str:
    """The ``start_time``/``end_time`` dbt var for a transform run, as ISO text or ''.

    A param given by hand (``explicit``) wins; then the triggering spans' window.
    """
    if explicit:
        return explicit
    window = rebuild_window(triggering)
    if window is None:
        return ""
    return (window[0] if which == "start" else window[1]).isoformat()
