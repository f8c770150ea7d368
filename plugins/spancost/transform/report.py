"""Readable tables from the marts, for the CLI and the demo."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


MODEL_COSTS_SQL = """
select
    provider,
    model,
    sum(calls)::bigint as calls,
    sum(unpriced_calls)::bigint as unpriced_calls,
    sum(input_tokens)::bigint as input_tokens,
    sum(output_tokens)::bigint as output_tokens,
    sum(cache_read_tokens)::bigint as cache_read_tokens,
    sum(estimated_cost_usd) as estimated_cost_usd
from marts.agg_pipeline_costs_hourly
where (%(start)s::timestamptz is null or hour >= %(start)s)
    and (%(end)s::timestamptz is null or hour < %(end)s)
group by provider, model
order by estimated_cost_usd desc nulls last, provider, model
"""

TRACE_COSTS_SQL = """
select
    trace_id,
    root_span_name,
    pipeline_id,
    llm_calls,
    error_calls,
    retry_calls,
    unpriced_calls,
    duration_ms,
    error_cost_usd,
    estimated_cost_usd
from marts.fct_trace_costs
where (%(start)s::timestamptz is null or start_time >= %(start)s)
    and (%(end)s::timestamptz is null or start_time < %(end)s)
order by estimated_cost_usd desc nulls last, trace_id
limit %(limit)s
"""

AGENT_COSTS_SQL = """
select
    agent_name,
    count(*)::bigint as runs,
    sum(llm_calls)::bigint as llm_calls,
    sum(own_cost_usd) as own_cost_usd,
    avg(subtree_cost_usd)::numeric(20, 6) as avg_subtree_cost_usd,
    max(subtree_cost_usd) as max_subtree_cost_usd
from marts.fct_agent_costs
where (%(start)s::timestamptz is null or start_time >= %(start)s)
    and (%(end)s::timestamptz is null or start_time < %(end)s)
group by agent_name
order by own_cost_usd desc nulls last, agent_name
limit %(limit)s
"""


RECONCILIATION_SQL = """
select day, service, model, estimated_cost_usd, billed_cost_usd, drift_usd, drift_pct, is_final
from marts.rpt_cost_reconciliation
where (%(start)s::timestamptz is null or day >= (%(start)s::timestamptz at time zone 'UTC')::date)
    and (%(end)s::timestamptz is null or day < (%(end)s::timestamptz at time zone 'UTC')::date)
order by day, service, model
limit %(limit)s
"""

UNATTRIBUTED_SQL = """
select day, service, cost_key, unattributed_cost_usd, billed_cost_usd, unattributed_pct
from marts.rpt_unattributed_spend
where (%(start)s::timestamptz is null or day >= (%(start)s::timestamptz at time zone 'UTC')::date)
    and (%(end)s::timestamptz is null or day < (%(end)s::timestamptz at time zone 'UTC')::date)
order by unattributed_cost_usd desc, day, service
limit %(limit)s
"""

IDLE_ENDPOINTS_SQL = """
select day, endpoint_name, instance_type, hours_in_service, idle_hours, hourly_price_usd,
       idle_cost_usd, pipeline_tag
from marts.rpt_idle_endpoints
where (%(start)s::timestamptz is null or day >= (%(start)s::timestamptz at time zone 'UTC')::date)
    and (%(end)s::timestamptz is null or day < (%(end)s::timestamptz at time zone 'UTC')::date)
order by idle_cost_usd desc, day, endpoint_name
limit %(limit)s
"""


ANOMALIES_SQL = """
select period_start, grain, scope_type, scope_value, pipeline_id, observed_cost_usd,
       baseline_cost_usd, ratio, severity
from marts.fct_cost_anomalies
where (%(start)s::timestamptz is null or period_start >= %(start)s)
    and (%(end)s::timestamptz is null or period_start < %(end)s)
order by period_start desc, observed_cost_usd desc
limit %(limit)s
"""

BUDGETS_SQL = """
select budget_id, scope_type, scope_value, period, period_start, limit_usd, spent_usd,
       pct_used, status, forecast_usd, billed_through
from marts.rpt_budget_status
order by pct_used desc nulls last, budget_id
limit %(limit)s
"""


@dataclass(frozen=True)
class View:
    """One way to cut the marts: what it sums, from where, and its columns."""

    title: str
    mart: str
    time_column: str
    sql: str
    headers: tuple[str, ...]
    # The column the table ends with the total of; None for a top-N list.
    total: str | None = "estimated_cost_usd"
    # False for a mart whose rows carry their own period (budgets): no window applies.
    windowed: bool = True


VIEWS: dict[str, View] = {
    "pipeline": View(
        "Estimated LLM cost per pipeline",
        "marts.agg_pipeline_costs_hourly",
        "hour",
        PIPELINE_COSTS_SQL,
        ("pipeline_id", "team", "calls", "input_tokens", "output_tokens", "estimated_cost_usd"),
    ),
    "model": View(
        "Estimated LLM cost per model",
        "marts.agg_pipeline_costs_hourly",
        "hour",
        MODEL_COSTS_SQL,
        (
            "provider",
            "model",
            "calls",
            "unpriced_calls",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "estimated_cost_usd",
        ),
    ),
    "trace": View(
        "The costliest traces",
        "marts.fct_trace_costs",
        "start_time",
        TRACE_COSTS_SQL,
        (
            "trace_id",
            "root_span_name",
            "pipeline_id",
            "llm_calls",
            "error_calls",
            "retry_calls",
            "unpriced_calls",
            "duration_ms",
            "error_cost_usd",
            "estimated_cost_usd",
        ),
        total=None,
    ),
    "agent": View(
        "Estimated LLM cost per agent",
        "marts.fct_agent_costs",
        "start_time",
        AGENT_COSTS_SQL,
        (
            "agent_name",
            "runs",
            "llm_calls",
            "own_cost_usd",
            "avg_subtree_cost_usd",
            "max_subtree_cost_usd",
        ),
        total=None,
    ),
    "anomalies": View(
        "Cost anomalies (against each scope's own 14 days)",
        "marts.fct_cost_anomalies",
        "period_start",
        ANOMALIES_SQL,
        (
            "period_start",
            "grain",
            "scope_type",
            "scope_value",
            "pipeline_id",
            "observed_cost_usd",
            "baseline_cost_usd",
            "ratio",
            "severity",
        ),
        total=None,
    ),
    "budgets": View(
        "Budgets (periods end with the newest hour of spans)",
        "marts.rpt_budget_status",
        "period_start",
        BUDGETS_SQL,
        (
            "budget_id",
            "scope_type",
            "scope_value",
            "period",
            "period_start",
            "limit_usd",
            "spent_usd",
            "pct_used",
            "status",
            "forecast_usd",
            "billed_through",
        ),
        total=None,
        windowed=False,
    ),
    "bill": View(
        "The estimate against the AWS bill",
        "marts.rpt_cost_reconciliation",
        "day",
        RECONCILIATION_SQL,
        (
            "day",
            "service",
            "model",
            "estimated_cost_usd",
            "billed_cost_usd",
            "drift_usd",
            "drift_pct",
            "is_final",
        ),
        total="billed_cost_usd",
    ),
    "unattributed": View(
        "Billed cost no pipeline explains",
        "marts.rpt_unattributed_spend",
        "day",
        UNATTRIBUTED_SQL,
        (
            "day",
            "service",
            "cost_key",
            "unattributed_cost_usd",
            "billed_cost_usd",
            "unattributed_pct",
        ),
        total="unattributed_cost_usd",
    ),
    "idle": View(
        "Idle SageMaker endpoints",
        "marts.rpt_idle_endpoints",
        "day",
        IDLE_ENDPOINTS_SQL,
        (
            "day",
            "endpoint_name",
            "instance_type",
            "hours_in_service",
            "idle_hours",
            "hourly_price_usd",
            "idle_cost_usd",
            "pipeline_tag",
        ),
        total="idle_cost_usd",
    ),
}


def pipeline_costs(
    url: str, start: datetime | None = None, end: datetime | None = None
) -> list[tuple[Any, ...]]:
    """Cost per pipeline and team over the hours in [start, end) (either bound optional)."""
    return rows_of("pipeline", url, start, end)


def rows_of(
    view: str,
    url: str,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 20,
) -> list[tuple[Any, ...]]:
    """The rows of one view over [start, end) (either bound optional)."""
    with db.connect(url) as conn:
        params = {"start": start, "end": end, "limit": limit}
        return conn.execute(VIEWS[view].sql, params).fetchall()


def window_text(
    start: datetime | None,
    end: datetime | None,
    mart: str = "marts.agg_pipeline_costs_hourly",
    time_column: str = "hour",
) -> str:
    """The window a report summed, as a heading says it."""
    noun = "hour" if time_column == "hour" else "row"
    if start is None and end is None:
        return f"every {noun} in {mart}"
    low = f"{start:%Y-%m-%d %H:%M}" if start else f"the first {noun}"
    high = f"{end:%Y-%m-%d %H:%M}" if end else f"the last {noun}"
    what = "hours" if time_column == "hour" else f"rows of {mart} whose {time_column} is"
    return f"{what} from {low} to {high} (UTC, end excluded)"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        return f"{value:,.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    numeric = [
        all(
            (isinstance(row[i], int | Decimal) and not isinstance(row[i], bool)) or row[i] is None
            for row in rows
        )
        and bool(rows)
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
    return table("pipeline", url, start, end)


def table(
    view: str,
    url: str,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 20,
) -> str:
    """One view's table of the window, headed by the window it summed.

    The per-pipeline and per-model tables end with the window's total; the
    trace and agent tables show the top `limit` rows, so they say so instead.
    """
    spec = VIEWS[view]
    if not spec.windowed:
        start = end = None
    rows = rows_of(view, url, start, end, limit)
    heading = f"summed over {window_text(start, end, spec.mart, spec.time_column)}\n\n"
    body = format_table(spec.headers, rows)
    if spec.total is None:
        return heading + body + f"\n\n(top {limit} by cost)"
    cost = spec.headers.index(spec.total)
    total = sum((row[cost] for row in rows if row[cost] is not None), Decimal(0))
    what = "estimated cost" if spec.total == "estimated_cost_usd" else spec.total
    return heading + body + f"\n\ntotal {what}: ${total:,.4f}"
