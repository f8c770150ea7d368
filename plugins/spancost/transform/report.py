"""Readable tables from the marts, for the CLI and the demo."""

from __future__ import annotations

from collections.abc import Sequence
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
group by pipeline_id, team
order by estimated_cost_usd desc nulls last, pipeline_id
"""


def pipeline_costs(url: str) -> list[tuple[Any, ...]]:
    with db.connect(url) as conn:
        return conn.execute(PIPELINE_COSTS_SQL).fetchall()


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


def pipeline_costs_table(url: str) -> str:
    rows = pipeline_costs(url)
    total = sum((row[5] for row in rows if row[5] is not None), Decimal(0))
    headers = [
        "pipeline_id",
        "team",
        "calls",
        "input_tokens",
        "output_tokens",
        "estimated_cost_usd",
    ]
    return format_table(headers, rows) + f"\n\ntotal estimated cost: ${total:,.4f}"
