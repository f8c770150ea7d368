"""Readable tables from the marts, for the CLI and the demo."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from spancost import db

PIPELINE_COSTS_SQL = """
select
    pipeline_id,
    team,
    sum(calls)::bigint as calls,
    sum(input_tokens)::bigint as input_tokens,
    sum(output_tokens)::bigint as output_tokens,
    sum(estimated_cost_usd) as estimated_cost_usd
from marts.agg_pipeline_costs_hourly
where (%(start)s::timestamptz is null or hour >= %(start)s)
    and (%(end)s::timestamptz is null or hour < %(end)s)
group by pipeline_id, team
order by estimated_cost_usd desc nulls last, pipeline_id
"""


def pipeline_costs(
    url: str, start: datetime | None = None, end: datetime | None = None
) -> list[tuple[Any, ...]]:
    """Cost per pipeline and team over the hours in [start, end) (either bound optional)."""
    with db.connect(url) as conn:
        return conn.execute(PIPELINE_COSTS_SQL, {"start": start, "end": end}).fetchall()


def window_text(start: datetime | None, end: datetime | None) -> str:
    """The window a report summed, as a heading says it."""
    if start is None and end is None:
        return "every hour in marts.agg_pipeline_costs_hourly"
    low = f"{start:%Y-%m-%d %H:%M}" if start else "the first hour"
    high = f"{end:%Y-%m-%d %H:%M}" if end else "the last hour"
    return f"hours from {low} to {high} (UTC, end excluded)"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return f"{value:,.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    numeric = [
        all(isinstance(row[i], int | Decimal) or row[i] is None for row in rows) and bool(rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(width) if is_num else value.ljust(width)
            for value, width, is_num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(headers), line(["-" * width for width in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)


def pipeline_costs_table(
    url: str, start: datetime | None = None, end: datetime | None = None
) -> str:
    """The per-pipeline table of the window, headed by the window it summed."""
    rows = pipeline_costs(url, start, end)
    total = sum((row[5] for row in rows if row[5] is not None), Decimal(0))
    headers = [
        "pipeline_id",
        "team",
        "calls",
        "input_tokens",
        "output_tokens",
        "estimated_cost_usd",
    ]
    heading = f"summed over {window_text(start, end)}\n\n"
    return heading + format_table(headers, rows) + f"\n\ntotal estimated cost: ${total:,.4f}"
