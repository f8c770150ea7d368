"""AWS Cost Explorer (GetCostAndUsage) into ``raw.ce_pulls`` and ``raw.ce_cost_and_usage``.

CE restates costs for days after the fact, so each refresh re-pulls a trailing
window (:func:`windows`) and keeps every pull; staging takes the newest complete
pull per period. Each CE request costs USD 0.01 (each page is one), so a
refresh makes no request at all while the last complete pull of a query is
younger than ``min_interval`` (:func:`refresh_due`), and every attempt is
logged in ``ops.api_requests`` (:mod:`spancost.billing.aws_requests`).

A pull is one query over one time period. It follows ``NextPageToken`` to the
end; on ``RequestChangedException`` (the data changed between pages) it starts
again from page 1, a bounded number of times, so pages of two versions are
never mixed. Its rows and its ``complete`` pull row are written in one
transaction after the last page; a pull that fails gets a ``failed`` pull row
with the error and no rows, and the previous complete pulls stay as they were.

Selecting AI services. CE filters cannot match a suffix (``MatchOptions`` for
``Dimensions`` are only ``EQUALS`` and ``CASE_SENSITIVE``), and third-party models
sold through Bedrock appear as their own services named ``"<model> (Amazon
Bedrock Edition)"``, billed by AWS Marketplace. The default queries therefore
filter ``SERVICE in <configured services> OR BILLING_ENTITY = "AWS Marketplace"``
server-side, and keep at load only the groups whose service is configured or
ends with ``"(Amazon Bedrock Edition)"`` (the others are counted in
``raw.ce_pulls.dropped_groups``). A ``GetDimensionValues`` call to list the
matching service names first would cost another request per pull and could
miss a model that first bills between the two calls; dropping the filter would
pull every service's usage types, many more pages on a large account.
"""

from __future__ import annotations

import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from spancost.billing import aws_requests
from spancost.billing.aws_requests import ApiRequestError, RetryPolicy
from spancost.errors import ConfigError, InfrastructureError, SpancostError
from spancost.validation import batches

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

GRANULARITIES = ("DAILY", "HOURLY", "MONTHLY")
GET_COST_AND_USAGE = "GetCostAndUsage"
WITH_RESOURCES = "GetCostAndUsageWithResources"
REQUEST_CHANGED = "RequestChangedException"
MARKETPLACE = "AWS Marketplace"
BEDROCK_EDITION_SUFFIX = "(Amazon Bedrock Edition)"
DEFAULT_AI_SERVICES = (
    "Amazon Bedrock",
    "Amazon SageMaker",
    "Amazon Elastic Compute Cloud - Compute",
)
DEFAULT_PIPELINE_TAG = "PipelineID"
DEFAULT_METRICS = ("UnblendedCost", "UsageQuantity")
# AWS keeps hourly and resource-level data for the last 14 days; the start day must be
# within them, so the earliest start is today minus 13 days.
RECENT_DAYS = 14

COLUMNS: tuple[str, ...] = (
    "pull_id",
    "query_name",
    "period_start",
    "period_end",
    "granularity",
    "group_dim_1",
    "group_key_1",
    "group_dim_2",
    "group_key_2",
    "tag_key",
    "tag_value",
    "metric",
    "amount",
    "unit",
    "estimated",
)
_COPY_SQL = f"copy raw.ce_cost_and_usage ({', '.join(COLUMNS)}) from stdin"


class CostExplorerError(SpancostError, RuntimeError):
    """A Cost Explorer pull could not complete; it names the query, the period and the page."""


class BadCostResponse(CostExplorerError, ValueError):
    """A GetCostAndUsage response did not have the expected shape."""


class RefreshFailed(CostExplorerError):
    """One or more pulls of a refresh failed; their previous data is kept.

    ``report`` says which pulls failed and why, and which completed.
    """

    def __init__(self, report: RefreshReport) -> None:
        failed = "; ".join(
            f"{pull.query_name} {pull.start}..{pull.end}: {pull.error}" for pull in report.failed
        )
        super().__init__(
            f"Cost Explorer refresh: {len(report.failed)} of {len(report.pulls)} pull(s) "
            f"failed, previous data kept: {failed}"
        )
        self.report = report


# --- queries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupDef:
    """One GroupBy entry: ``type`` DIMENSION, TAG or COST_CATEGORY, and its key."""

    type: str
    key: str

    @property
    def dim(self) -> str:
        """The name stored in ``group_dim_N``: ``SERVICE``, ``TAG:PipelineID``, ..."""
        return self.key if self.type == "DIMENSION" else f"{self.type}:{self.key}"

    def to_api(self) -> dict[str, str]:
        return {"Type": self.type, "Key": self.key}


@dataclass(frozen=True)
class ServiceSelector:
    """Which services a query covers: exact names, plus Marketplace names ending in a suffix.

    CE cannot filter by suffix, so the suffixes widen the server-side filter to
    ``BILLING_ENTITY = AWS Marketplace`` and are applied to the rows at load.
    """

    services: tuple[str, ...]
    suffixes: tuple[str, ...] = (BEDROCK_EDITION_SUFFIX,)

    def filter(self) -> dict[str, Any]:
        """The CE ``Filter`` expression."""
        by_name: dict[str, Any] = {"Dimensions": {"Key": "SERVICE", "Values": list(self.services)}}
        if not self.suffixes:
            return by_name
        marketplace = {"Dimensions": {"Key": "BILLING_ENTITY", "Values": [MARKETPLACE]}}
        return {"Or": [by_name, marketplace]}

    def keeps(self, service: str) -> bool:
        return service in self.services or any(service.endswith(s) for s in self.suffixes)


@dataclass(frozen=True)
class CeQuery:
    """One configured Cost Explorer query.

    ``with_resources`` uses GetCostAndUsageWithResources (an opt-in account
    setting; the last 14 days only, DAILY except for EC2 instances, so always DAILY
    here). ``selector`` is both the Filter and the load-time row filter; it
    needs a SERVICE group to filter rows by.
    """

    name: str
    group_by: tuple[GroupDef, ...]
    selector: ServiceSelector | None = None
    with_resources: bool = False

    def __post_init__(self) -> None:
        if len(self.group_by) > 2:
            raise ConfigError(f"CE query {self.name!r}: at most two GroupBy entries")
        if self.selector is not None and self.service_index is None:
            raise ConfigError(
                f"CE query {self.name!r}: a service selector needs a SERVICE group"
                " to filter rows by"
            )
        if self.with_resources and self.selector is None:
            raise ConfigError(
                f"CE query {self.name!r}: GetCostAndUsageWithResources needs a SERVICE filter"
            )

    @property
    def operation(self) -> str:
        return WITH_RESOURCES if self.with_resources else GET_COST_AND_USAGE

    @property
    def service_index(self) -> int | None:
        for index, group in enumerate(self.group_by):
            if group.type == "DIMENSION" and group.key == "SERVICE":
                return index
        return None

    def filter(self) -> dict[str, Any] | None:
        return None if self.selector is None else self.selector.filter()

    def granularity(self, hourly: bool) -> str:
        return "HOURLY" if hourly and not self.with_resources else "DAILY"

    def request(
        self, start: date, end: date, granularity: str, metrics: Sequence[str]
    ) -> dict[str, Any]:
        """The request parameters for one pull (without ``NextPageToken``)."""
        params: dict[str, Any] = {
            "TimePeriod": {
                "Start": _api_date(start, granularity),
                "End": _api_date(end, granularity),
            },
            "Granularity": granularity,
            "Metrics": list(metrics),
        }
        if self.group_by:
            params["GroupBy"] = [group.to_api() for group in self.group_by]
        expression = self.filter()
        if expression is not None:
            params["Filter"] = expression
        return params


def default_queries(
    services: Sequence[str] = DEFAULT_AI_SERVICES,
    pipeline_tag: str = DEFAULT_PIPELINE_TAG,
    *,
    resources: bool = False,
    resource_services: Sequence[str] = ("Amazon SageMaker",),
    accounts: bool = False,
) -> tuple[CeQuery, ...]:
    """The default queries; the per-resource (``resources=True``) and the per-account
    (``accounts=True``, SERVICE x LINKED_ACCOUNT, for multi-account organisations)
    ones are opt-in."""
    selector = ServiceSelector(tuple(services))
    queries = [
        CeQuery(
            name="ai_services_by_usage_type",
            group_by=(GroupDef("DIMENSION", "SERVICE"), GroupDef("DIMENSION", "USAGE_TYPE")),
            selector=selector,
        ),
        CeQuery(
            name="pipeline_tag_by_service",
            group_by=(GroupDef("DIMENSION", "SERVICE"), GroupDef("TAG", pipeline_tag)),
            selector=selector,
        ),
    ]
    if accounts:
        queries.append(
            CeQuery(
                name="ai_services_by_account",
                group_by=(
                    GroupDef("DIMENSION", "SERVICE"),
                    GroupDef("DIMENSION", "LINKED_ACCOUNT"),
                ),
                selector=selector,
            )
        )
    if resources:
        queries.append(
            CeQuery(
                name="ai_resources_by_service",
                group_by=(GroupDef("DIMENSION", "SERVICE"), GroupDef("DIMENSION", "RESOURCE_ID")),
                selector=ServiceSelector(tuple(resource_services), suffixes=()),
                with_resources=True,
            )
        )
    return tuple(queries)


@dataclass(frozen=True)
class CostExplorerSettings:
    """What to pull, how far back, how often, and how hard to retry."""

    queries: tuple[CeQuery, ...] = field(default_factory=default_queries)
    metrics: tuple[str, ...] = DEFAULT_METRICS
    hourly: bool = False
    restatement_days: int = 7
    previous_month_until_day: int = 5
    min_interval: timedelta = timedelta(hours=4)
    retry: RetryPolicy = RetryPolicy()
    max_restarts: int = 3
    max_pages: int = 1000

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ConfigError("CostExplorerSettings.metrics: name at least one metric")
        names = [query.name for query in self.queries]
        if len(set(names)) != len(names):
            raise ConfigError(f"CostExplorerSettings.queries: duplicate query names in {names}")
        if self.restatement_days < 0 or self.max_restarts < 0 or self.max_pages < 1:
            raise ConfigError("CostExplorerSettings: days, restarts and pages must be positive")


def settings_from_env(env: Mapping[str, str] | None = None) -> CostExplorerSettings:
    """Settings from ``SPANCOST_CE_*`` variables; every one is optional.

    ``SPANCOST_CE_SERVICES`` (comma-separated service names), ``SPANCOST_CE_PIPELINE_TAG``,
    ``SPANCOST_CE_METRICS`` (comma-separated), ``SPANCOST_CE_HOURLY`` (1/0),
    ``SPANCOST_CE_RESOURCES`` (1/0, per-resource query), ``SPANCOST_CE_LINKED_ACCOUNTS``
    (1/0, per-account query), ``SPANCOST_CE_RESTATEMENT_DAYS``,
    ``SPANCOST_CE_PREVIOUS_MONTH_UNTIL_DAY``, ``SPANCOST_CE_MIN_INTERVAL_MINUTES``,
    ``SPANCOST_CE_MAX_ATTEMPTS``, ``SPANCOST_CE_BACKOFF_BASE_SECONDS``.
    """
    env = os.environ if env is None else env

    def listed(name: str, default: Sequence[str]) -> tuple[str, ...]:
        values = tuple(v.strip() for v in env.get(name, "").split(",") if v.strip())
        return values or tuple(default)

    def number(name: str, default: float) -> float:
        raw = env.get(name, "")
        try:
            return float(raw) if raw else default
        except ValueError as exc:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from exc

    def flag(name: str) -> bool:
        return env.get(name, "0").strip().lower() in ("1", "true", "yes")

    base = RetryPolicy()
    return CostExplorerSettings(
        queries=default_queries(
            listed("SPANCOST_CE_SERVICES", DEFAULT_AI_SERVICES),
            env.get("SPANCOST_CE_PIPELINE_TAG", "").strip() or DEFAULT_PIPELINE_TAG,
            resources=flag("SPANCOST_CE_RESOURCES"),
            accounts=flag("SPANCOST_CE_LINKED_ACCOUNTS"),
        ),
        metrics=listed("SPANCOST_CE_METRICS", DEFAULT_METRICS),
        hourly=flag("SPANCOST_CE_HOURLY"),
        restatement_days=int(number("SPANCOST_CE_RESTATEMENT_DAYS", 7)),
        previous_month_until_day=int(number("SPANCOST_CE_PREVIOUS_MONTH_UNTIL_DAY", 5)),
        min_interval=timedelta(minutes=number("SPANCOST_CE_MIN_INTERVAL_MINUTES", 240)),
        retry=RetryPolicy(
            max_attempts=int(number("SPANCOST_CE_MAX_ATTEMPTS", base.max_attempts)),
            base_delay_s=number("SPANCOST_CE_BACKOFF_BASE_SECONDS", base.base_delay_s),
            max_delay_s=base.max_delay_s,
        ),
    )


# --- windows ---------------------------------------------------------------------------------


def windows(
    today: date, *, restatement_days: int = 7, previous_month_until_day: int = 5
) -> list[tuple[date, date]]:
    """The periods to re-pull on ``today``, as ``(start, end)`` with ``end`` exclusive, merged.

    The trailing restatement window is the ``restatement_days`` days before today
    plus today so far. Until day ``previous_month_until_day`` of a month
    (inclusive), the whole previous month is added: its bill is still being
    finalised.
    """
    spans = [(today - timedelta(days=restatement_days), today + timedelta(days=1))]
    if today.day <= previous_month_until_day:
        this_month = today.replace(day=1)
        previous_month = (this_month - timedelta(days=1)).replace(day=1)
        spans.append((previous_month, this_month))
    merged: list[tuple[date, date]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def clamp_recent(window: tuple[date, date], today: date) -> tuple[date, date] | None:
    """The part of ``window`` within the last 14 days AWS keeps (hourly, per resource)."""
    earliest = today - timedelta(days=RECENT_DAYS - 1)
    start, end = max(window[0], earliest), window[1]
    return (start, end) if start < end else None


def _api_date(day: date, granularity: str) -> str:
    return f"{day.isoformat()}T00:00:00Z" if granularity == "HOURLY" else day.isoformat()


# --- parsing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostRow:
    """One row of ``raw.ce_cost_and_usage`` (without pull_id)."""

    query_name: str
    period_start: datetime
    period_end: datetime
    granularity: str
    group_dim_1: str | None
    group_key_1: str | None
    group_dim_2: str | None
    group_key_2: str | None
    tag_key: str | None
    tag_value: str | None
    metric: str
    amount: Decimal
    unit: str | None
    estimated: bool


def parse_tag_key(key: str) -> tuple[str, str]:
    """Split a TAG group key: ``PipelineID$abc`` -> (PipelineID, abc), ``PipelineID$`` -> ''.

    CE returns TAG (and COST_CATEGORY) group keys as ``<key>$<value>``; tag keys
    cannot contain ``$``, so the first ``$`` separates them. An empty value
    means the resource does not carry the tag.
    """
    name, sep, value = key.partition("$")
    if not sep:
        raise BadCostResponse(f"tag group key {key!r} has no '$' between tag key and value")
    return name, value


def parse_period(value: str) -> datetime:
    """A CE TimePeriod bound (``2024-01-01`` or ``2024-01-01T00:00:00Z``) as UTC datetime."""
    try:
        if "T" in value:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=UTC)
    except ValueError as exc:
        raise BadCostResponse(f"TimePeriod bound {value!r} is not a date or time") from exc


def parse_response(
    response: Mapping[str, Any],
    query_name: str,
    granularity: str,
    group_by: Sequence[GroupDef] = (),
) -> list[CostRow]:
    """The rows of one GetCostAndUsage page (grouped: from Groups; ungrouped: from Total).

    The group definitions come from the response's ``GroupDefinitions`` when
    present, else from ``group_by`` (the request).
    """
    definitions = [
        GroupDef(str(entry["Type"]), str(entry["Key"]))
        for entry in response.get("GroupDefinitions") or []
    ] or list(group_by)
    rows: list[CostRow] = []
    for index, result in enumerate(response.get("ResultsByTime") or []):
        where = f"{query_name}: ResultsByTime[{index}]"
        try:
            period = result["TimePeriod"]
            start, end = parse_period(period["Start"]), parse_period(period["End"])
        except (KeyError, TypeError) as exc:
            raise BadCostResponse(f"{where}: no TimePeriod Start/End") from exc
        estimated = bool(result.get("Estimated", False))
        if definitions:
            entries = [
                (tuple(group.get("Keys") or []), group.get("Metrics") or {})
                for group in result.get("Groups") or []
            ]
        else:
            entries = [((), result.get("Total") or {})]
        for keys, metrics in entries:
            if len(keys) != len(definitions):
                raise BadCostResponse(
                    f"{where} ({period['Start']}): group keys {list(keys)} do not match "
                    f"GroupBy {[d.dim for d in definitions]}"
                )
            dims = [d.dim for d in definitions] + [None, None]
            padded: list[str | None] = [str(k) for k in keys] + [None, None]
            tag_key = tag_value = None
            for definition, key in zip(definitions, keys, strict=True):
                if definition.type == "TAG":
                    tag_key, tag_value = parse_tag_key(str(key))
                    break
            for metric, value in metrics.items():
                try:
                    amount = Decimal(str(value["Amount"]))
                except (KeyError, TypeError, InvalidOperation) as exc:
                    raise BadCostResponse(
                        f"{where} ({period['Start']}) group {list(keys)} metric {metric}: "
                        f"no numeric Amount in {value!r}"
                    ) from exc
                rows.append(
                    CostRow(
                        query_name=query_name,
                        period_start=start,
                        period_end=end,
                        granularity=granularity,
                        group_dim_1=dims[0],
                        group_key_1=padded[0],
                        group_dim_2=dims[1],
                        group_key_2=padded[1],
                        tag_key=tag_key,
                        tag_value=tag_value,
                        metric=str(metric),
                        amount=amount,
                        unit=value.get("Unit"),
                        estimated=estimated,
                    )
                )
    return rows


def keep_rows(rows: Iterable[CostRow], query: CeQuery) -> tuple[list[CostRow], int]:
    """The rows of the services the query selects, and how many groups were dropped."""
    index = query.service_index
    if query.selector is None or index is None:
        return list(rows), 0
    kept: list[CostRow] = []
    dropped: set[tuple[datetime, str | None, str | None]] = set()
    for row in rows:
        service = row.group_key_1 if index == 0 else row.group_key_2
        if service is not None and query.selector.keeps(service):
            kept.append(row)
        else:
            dropped.add((row.period_start, row.group_key_1, row.group_key_2))
    return kept, len(dropped)


# --- pulls -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PullResult:
    pull_id: uuid.UUID
    query_name: str
    operation: str
    granularity: str
    start: date
    end: date
    status: str  # complete | failed
    pages: int
    rows: int
    restarts: int
    dropped_groups: int = 0
    error: str | None = None


@dataclass(frozen=True)
class RefreshReport:
    """What a refresh did. ``due`` is false when nothing was pulled because data was fresh."""

    due: bool
    pulls: tuple[PullResult, ...] = ()
    fresh_queries: tuple[str, ...] = ()
    busy: bool = False
    requests: int = 0
    cost_usd: Decimal = Decimal(0)

    @property
    def failed(self) -> tuple[PullResult, ...]:
        return tuple(pull for pull in self.pulls if pull.status == "failed")

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> dict[str, Any]:
        return {
            "due": self.due,
            "busy": self.busy,
            "pulls_complete": sum(1 for p in self.pulls if p.status == "complete"),
            "pulls_failed": len(self.failed),
            "rows_loaded": sum(p.rows for p in self.pulls if p.status == "complete"),
            "ce_requests": self.requests,
            "ce_cost_usd": str(self.cost_usd),
        }


@dataclass
class _Progress:
    """How far a pull got: pages of the current version, and restarts so far."""

    pages: int = 0
    restarts: int = 0


def _fetch_pages(
    conn: Conn,
    client: Any,
    query: CeQuery,
    params: Mapping[str, Any],
    pull_id: uuid.UUID,
    settings: CostExplorerSettings,
    progress: _Progress,
    sleep: Callable[[float], None],
    rng: random.Random,
) -> list[dict[str, Any]]:
    """Every page of one request version; restart from page 1 on RequestChangedException."""
    while True:
        pages: list[dict[str, Any]] = []
        progress.pages = 0
        token: str | None = None
        seen: set[str] = set()
        try:
            while True:
                if len(pages) >= settings.max_pages:
                    raise CostExplorerError(
                        f"{query.name}: more than {settings.max_pages} pages; stopped (max_pages)"
                    )
                page_params = dict(params)
                if token is not None:
                    page_params["NextPageToken"] = token
                response = aws_requests.call(
                    conn,
                    client,
                    query.operation,
                    page_params,
                    policy=settings.retry,
                    pull_id=pull_id,
                    page=len(pages) + 1,
                    summary={"query": query.name, "restart": progress.restarts},
                    sleep=sleep,
                    rng=rng,
                )
                pages.append(response)
                progress.pages = len(pages)
                token = response.get("NextPageToken") or None
                if token is None:
                    return pages
                if token in seen:
                    raise CostExplorerError(
                        f"{query.name}: page {len(pages)} repeats an earlier NextPageToken"
                    )
                seen.add(token)
        except ApiRequestError as exc:
            if exc.code != REQUEST_CHANGED or progress.restarts >= settings.max_restarts:
                raise
            progress.restarts += 1
            log.warning(
                "%s: data changed between pages (%s); restarting from page 1 (%d of %d)",
                query.name,
                exc.code,
                progress.restarts,
                settings.max_restarts,
            )


def _record_pull(
    conn: Conn,
    result: PullResult,
    query: CeQuery,
    settings: CostExplorerSettings,
    started_at: datetime,
    rows: Sequence[CostRow] = (),
    batch_run_id: str | None = None,
) -> None:
    """The pull row and, when complete, its rows: one transaction.

    With ``batch_run_id`` a complete pull is also a pending write-audit-publish
    batch of that run, in the same transaction: staging reads it once audited.
    """
    with conn.transaction():
        conn.execute(
            """
            insert into raw.ce_pulls (
                pull_id, query_name, operation, granularity, metrics, group_by, filter,
                time_period_start, time_period_end, status, pages, restarts, row_count,
                dropped_groups, started_at, finished_at, error
            ) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            """,
            (
                result.pull_id,
                result.query_name,
                result.operation,
                result.granularity,
                list(settings.metrics),
                Jsonb([group.to_api() for group in query.group_by]),
                None if query.filter() is None else Jsonb(query.filter()),
                result.start,
                result.end,
                result.status,
                result.pages,
                result.restarts,
                result.rows,
                result.dropped_groups,
                started_at,
                datetime.now(UTC),
                result.error,
            ),
        )
        if batch_run_id is not None and result.status == "complete":
            batches.register_pending(conn, batches.COST_EXPLORER, str(result.pull_id), batch_run_id)
        if rows:
            with conn.cursor() as cur, cur.copy(_COPY_SQL) as copy:
                for row in rows:
                    copy.write_row(
                        (
                            result.pull_id,
                            row.query_name,
                            row.period_start,
                            row.period_end,
                            row.granularity,
                            row.group_dim_1,
                            row.group_key_1,
                            row.group_dim_2,
                            row.group_key_2,
                            row.tag_key,
                            row.tag_value,
                            row.metric,
                            row.amount,
                            row.unit,
                            row.estimated,
                        )
                    )


def pull(
    conn: Conn,
    client: Any,
    query: CeQuery,
    window: tuple[date, date],
    settings: CostExplorerSettings,
    *,
    granularity: str = "DAILY",
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    batch_run_id: str | None = None,
) -> PullResult:
    """Pull one query over one window and land it, or record it as failed (no rows).

    Returns the result either way; only a database failure raises
    (InfrastructureError). With ``batch_run_id`` the pull lands as a pending batch.
    """
    if granularity not in GRANULARITIES:
        raise ConfigError(
            f"CE query {query.name!r}: granularity {granularity!r} not in {GRANULARITIES}"
        )
    pull_id = uuid.uuid4()
    started_at = datetime.now(UTC)
    start, end = window
    params = query.request(start, end, granularity, settings.metrics)
    base = PullResult(
        pull_id=pull_id,
        query_name=query.name,
        operation=query.operation,
        granularity=granularity,
        start=start,
        end=end,
        status="failed",
        pages=0,
        rows=0,
        restarts=0,
    )
    progress = _Progress()
    try:
        pages = _fetch_pages(
            conn, client, query, params, pull_id, settings, progress, sleep, rng or random.Random()
        )
        parsed: list[CostRow] = []
        for number, page in enumerate(pages, start=1):
            try:
                parsed.extend(parse_response(page, query.name, granularity, query.group_by))
            except BadCostResponse as exc:
                raise BadCostResponse(f"page {number}: {exc}") from exc
        rows, dropped = keep_rows(parsed, query)
    except (CostExplorerError, ApiRequestError) as exc:
        error = f"{query.name} {start}..{end}: {exc}"
        log.error("Cost Explorer pull %s failed, previous data kept: %s", pull_id, error)
        result = replace(base, pages=progress.pages, restarts=progress.restarts, error=error)
        _record_failed(conn, result, query, settings, started_at)
        return result
    result = replace(
        base,
        status="complete",
        pages=len(pages),
        rows=len(rows),
        restarts=progress.restarts,
        dropped_groups=dropped,
    )
    try:
        _record_pull(conn, result, query, settings, started_at, rows, batch_run_id)
    except psycopg.Error as exc:
        failed = replace(result, status="failed", rows=0, error=f"could not land the rows: {exc}")
        _record_failed(conn, failed, query, settings, started_at)
        raise InfrastructureError(
            f"Cost Explorer pull {pull_id} ({query.name} {start}..{end}): could not land: {exc}"
        ) from exc
    log.info(
        "Cost Explorer pull %s: %s %s..%s %s, %d page(s), %d row(s), %d group(s) dropped, "
        "%d restart(s)",
        pull_id,
        query.name,
        start,
        end,
        granularity,
        result.pages,
        result.rows,
        result.dropped_groups,
        result.restarts,
    )
    return result


def _record_failed(
    conn: Conn,
    result: PullResult,
    query: CeQuery,
    settings: CostExplorerSettings,
    started_at: datetime,
) -> None:
    try:
        _record_pull(conn, result, query, settings, started_at)
    except psycopg.Error as exc:
        raise InfrastructureError(
            f"could not record failed Cost Explorer pull {result.pull_id}: {exc}"
        ) from exc


# --- refresh ---------------------------------------------------------------------------------


def last_complete(conn: Conn, query_names: Sequence[str] | None = None) -> datetime | None:
    """When the newest complete pull (of these queries, or of any) finished.

    A quarantined pull does not count: its data is not read, so it is not fresh.
    """
    with conn.transaction():
        row = conn.execute(
            """
            select max(finished_at) from raw.ce_pulls
            where status = 'complete' and (%(names)s::text[] is null or query_name = any(%(names)s))
              and pull_id::text not in (
                  select batch_id from ops.load_batches where status = 'quarantined'
              )
            """,
            {"names": None if query_names is None else list(query_names)},
        ).fetchone()
    return None if row is None else row[0]


def refresh_due(
    conn: Conn,
    now: datetime,
    min_interval: timedelta = timedelta(hours=4),
    force: bool = False,
    query_names: Sequence[str] | None = None,
) -> bool:
    """True when forced, or when the last complete pull finished ``min_interval`` or more ago.

    ``query_names`` narrows "the last complete pull" to those queries; a failed
    pull does not count, so previous data stays until a pull completes.
    """
    if force:
        return True
    finished = last_complete(conn, query_names)
    return finished is None or now - finished >= min_interval


_LOCK_SQL = "select pg_try_advisory_lock(hashtext('spancost.cost_explorer'))"
_UNLOCK_SQL = "select pg_advisory_unlock(hashtext('spancost.cost_explorer'))"


def refresh(
    conn: Conn,
    ce_client: Any,
    settings: CostExplorerSettings,
    now: datetime,
    force: bool = False,
    *,
    raise_on_failure: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    batch_run_id: str | None = None,
) -> RefreshReport:
    """Re-pull the restatement windows of every query that is due; no CE request otherwise.

    ``ce_client`` must be made with ``config=aws_requests.client_config()``.
    ``conn`` must not be inside a transaction: request log rows commit one by
    one, and each pull commits on its own. A refresh already running elsewhere
    (advisory lock) makes this one return ``busy`` without pulling. When a pull
    fails its previous data is kept; the refresh goes on with the others, logs
    the failure, and raises :class:`RefreshFailed` (with the report) at the end,
    unless ``raise_on_failure`` is false. With ``batch_run_id`` each complete
    pull lands as a pending write-audit-publish batch of that run.
    """
    if now.tzinfo is None:
        raise ConfigError(f"refresh: now must be timezone-aware, got {now!r}")
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ConfigError("refresh: the connection is inside a transaction; commit it first")
    aws_requests.check_client(ce_client)
    today = now.astimezone(UTC).date()
    if not _due_queries(conn, settings, now, force):
        log.info("Cost Explorer data is fresh (< %s old); no request made", settings.min_interval)
        return RefreshReport(due=False, fresh_queries=tuple(q.name for q in settings.queries))
    with conn.transaction():
        locked = conn.execute(_LOCK_SQL).fetchone()
    if not locked or not locked[0]:
        log.warning("another Cost Explorer refresh is running; skipped")
        return RefreshReport(due=True, busy=True)
    results: list[PullResult] = []
    try:
        # Again under the lock: a refresh that just finished elsewhere made some data fresh.
        due = _due_queries(conn, settings, now, force)
        due_names = {query.name for query in due}
        fresh = tuple(query.name for query in settings.queries if query.name not in due_names)
        spans = windows(
            today,
            restatement_days=settings.restatement_days,
            previous_month_until_day=settings.previous_month_until_day,
        )
        for query in due:
            granularity = query.granularity(settings.hourly)
            for window in spans:
                span: tuple[date, date] | None = window
                if granularity == "HOURLY" or query.with_resources:
                    span = clamp_recent(window, today)
                    if span != window:
                        log.info(
                            "%s: %s clamped to the last %d days", query.name, window, RECENT_DAYS
                        )
                if span is None:
                    continue
                results.append(
                    pull(
                        conn,
                        ce_client,
                        query,
                        span,
                        settings,
                        granularity=granularity,
                        sleep=sleep,
                        rng=rng,
                        batch_run_id=batch_run_id,
                    )
                )
    finally:
        with conn.transaction():
            conn.execute(_UNLOCK_SQL)
    requests, cost = _request_totals(conn, [result.pull_id for result in results])
    report = RefreshReport(
        due=bool(due), pulls=tuple(results), fresh_queries=fresh, requests=requests, cost_usd=cost
    )
    log.info("Cost Explorer refresh: %s", report.summary())
    if report.failed and raise_on_failure:
        raise RefreshFailed(report)
    return report


def _due_queries(
    conn: Conn, settings: CostExplorerSettings, now: datetime, force: bool
) -> list[CeQuery]:
    return [
        query
        for query in settings.queries
        if refresh_due(conn, now, settings.min_interval, force, [query.name])
    ]


def _request_totals(conn: Conn, pull_ids: Sequence[uuid.UUID]) -> tuple[int, Decimal]:
    with conn.transaction():
        row = conn.execute(
            "select count(*), coalesce(sum(cost_usd), 0) from ops.api_requests"
            " where pull_id = any(%s)",
            (list(pull_ids),),
        ).fetchone()
    if row is None:
        return 0, Decimal(0)
    return int(row[0]), Decimal(row[1])
