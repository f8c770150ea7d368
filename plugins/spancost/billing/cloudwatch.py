"""CloudWatch: SageMaker endpoint invocations per hour into ``raw.sagemaker_invocations_hourly``.

One pull is one region's endpoint variants over one window of whole UTC hours
(the start floored, the end ceiled to the hour). It asks ``GetMetricData`` for
the ``Sum`` of ``AWS/SageMaker`` ``Invocations`` per ``EndpointName`` and
``VariantName`` with ``Period`` 3600: one metric query per variant, at most
500 per request (CloudWatch's limit), following ``NextToken`` to the last
page. Every attempt goes through :func:`spancost.billing.aws_requests.call`,
so it is logged in ``ops.api_requests`` with its list price (USD 0.01 per
1,000 metrics requested: USD 0.00001 per query in the request) and retried
with backoff when throttled.

The pull row (``raw.cloudwatch_pulls``) and its hours are written in one
transaction after the last page. CloudWatch data arrives late, so windows
overlap and the same hour is pulled again: the newest pull overwrites it
(``insert ... on conflict do update``), so retries and overlaps never
duplicate a row, and an older pull committing later does not undo a newer
one. An hour with no datapoint has no row. A pull that fails gets a
``failed`` pull row with the error and no rows: throttled to the end, it is
returned as failed; any other AWS error raises :class:`InfrastructureError`.

A datapoint that cannot be stored (not a finite number, not on an hour,
outside the window, an hour repeated) is never dropped silently: it is logged
with its endpoint, variant and timestamp and counted in the result and the
pull row (``bad_datapoints``).
"""

from __future__ import annotations

import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from spancost.billing import aws_requests
from spancost.billing.aws_requests import ApiRequestError, RetryPolicy, ThrottledError
from spancost.errors import ConfigError, InfrastructureError, SpancostError
from spancost.validation import batches as wap

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

NAMESPACE = "AWS/SageMaker"
METRIC_NAME = "Invocations"
STAT = "Sum"
PERIOD_SECONDS = 3600
GET_METRIC_DATA = "GetMetricData"
# "A single GetMetricData call can include as many as 500 MetricDataQuery structures."
MAX_QUERIES = 500
HOUR = timedelta(hours=1)
DEFAULT_RETRY = RetryPolicy()
# Query result StatusCodes that mean CloudWatch did not give all the data.
_INCOMPLETE = frozenset({"InternalError", "Forbidden", "PartialData"})

EndpointVariant = tuple[str, str]  # (endpoint_name, variant_name)


class CloudWatchError(SpancostError, RuntimeError):
    """A CloudWatch pull could not complete; it names the region, the endpoint or the page."""


class BadMetricResponse(CloudWatchError, ValueError):
    """A GetMetricData response did not have the expected shape."""


class PullFailed(CloudWatchError):
    """One or more pulls failed (throttled to the end); their hours keep their previous values."""

    def __init__(self, failed: Sequence[PullResult]) -> None:
        super().__init__(
            f"CloudWatch invocations: {len(failed)} pull(s) failed, previous values kept: "
            + "; ".join(f"{result.region}: {result.error}" for result in failed)
        )
        self.failed = tuple(failed)


@dataclass(frozen=True)
class HourlyInvocations:
    """One row of ``raw.sagemaker_invocations_hourly`` (without region and pull id)."""

    endpoint_name: str
    variant_name: str
    hour: datetime
    invocations: Decimal


@dataclass(frozen=True)
class BadDatapoint:
    """A datapoint CloudWatch returned that was not stored, and why."""

    endpoint_name: str
    variant_name: str
    timestamp: object
    value: object
    reason: str


@dataclass(frozen=True)
class PullResult:
    """What one pull did. ``requests`` and ``cost_usd`` are its rows in ``ops.api_requests``
    (every attempt, throttled ones included); ``superseded`` counts hours a newer pull
    had already written, left as they were."""

    pull_id: uuid.UUID
    region: str
    window_start: datetime
    window_end: datetime
    status: str  # complete | failed
    endpoints: int
    rows: int = 0
    requests: int = 0
    cost_usd: Decimal = Decimal(0)
    superseded: int = 0
    bad: tuple[BadDatapoint, ...] = ()
    error: str | None = None

    @property
    def bad_datapoints(self) -> int:
        return len(self.bad)

    def summary(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "status": self.status,
            "endpoints": self.endpoints,
            "rows": self.rows,
            "requests": self.requests,
            "cost_usd": str(self.cost_usd),
            "bad_datapoints": self.bad_datapoints,
        }


# --- hours and requests ----------------------------------------------------------------------


def floor_hour(moment: datetime) -> datetime:
    """The start of the UTC hour ``moment`` falls in; naive datetimes are refused."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ConfigError(f"CloudWatch window bound {moment!r} must be timezone-aware (UTC)")
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    """The first whole UTC hour at or after ``moment``."""
    floor = floor_hour(moment)
    return floor if floor == moment else floor + HOUR


def hour_window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """``[start, end)`` widened to whole UTC hours: the start floored, the end ceiled."""
    window = floor_hour(start), ceil_hour(end)
    if window[1] <= window[0]:
        raise ConfigError(f"CloudWatch window {start.isoformat()}..{end.isoformat()} is empty")
    return window


def query_id(index: int) -> str:
    """The ``Id`` of the ``index``-th query of a request: CloudWatch wants
    ``^[a-z][a-zA-Z0-9_]*$``, unique within the request; endpoint names have dashes."""
    if index < 0:
        raise ValueError(f"query index must not be negative, got {index}")
    return f"q{index}"


def batches(
    endpoints: Iterable[EndpointVariant], size: int = MAX_QUERIES
) -> list[list[EndpointVariant]]:
    """The endpoint variants, each once (first seen order), in requests of ``size`` queries."""
    if not 1 <= size <= MAX_QUERIES:
        raise ConfigError(f"GetMetricData takes 1 to {MAX_QUERIES} queries a request, not {size}")
    unique = list(dict.fromkeys((str(name), str(variant)) for name, variant in endpoints))
    return [unique[index : index + size] for index in range(0, len(unique), size)]


def metric_query(id_: str, endpoint_name: str, variant_name: str) -> dict[str, Any]:
    """One ``MetricDataQuery``: the hourly Sum of one variant's invocations."""
    return {
        "Id": id_,
        "MetricStat": {
            "Metric": {
                "Namespace": NAMESPACE,
                "MetricName": METRIC_NAME,
                "Dimensions": [
                    {"Name": "EndpointName", "Value": endpoint_name},
                    {"Name": "VariantName", "Value": variant_name},
                ],
            },
            "Period": PERIOD_SECONDS,
            "Stat": STAT,
        },
        "ReturnData": True,
    }


def request(batch: Sequence[EndpointVariant], start: datetime, end: datetime) -> dict[str, Any]:
    """The ``GetMetricData`` parameters for one batch (without ``NextToken``)."""
    return {
        "MetricDataQueries": [
            metric_query(query_id(index), name, variant)
            for index, (name, variant) in enumerate(batch)
        ],
        "StartTime": start,
        "EndTime": end,
        "ScanBy": "TimestampAscending",
    }


# --- parsing ---------------------------------------------------------------------------------


def _number(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    return number if number.is_finite() else None


def parse_results(
    pages: Sequence[Mapping[str, Any]],
    batch: Sequence[EndpointVariant],
    window: tuple[datetime, datetime],
) -> tuple[list[HourlyInvocations], list[BadDatapoint]]:
    """The hours of one batch's pages, and the datapoints that could not be stored.

    Raises :class:`BadMetricResponse` when a page answers a query that was not
    asked or has unequal ``Timestamps`` and ``Values``, when a query has no
    result at all, and :class:`CloudWatchError` when the last page of a query
    says its data is incomplete (``InternalError``, ``Forbidden``, ``PartialData``).
    """
    by_id = {query_id(index): pair for index, pair in enumerate(batch)}
    status: dict[str, tuple[str, list[Any]]] = {}
    seen: dict[tuple[str, str, datetime], Decimal] = {}
    rows: list[HourlyInvocations] = []
    bad: list[BadDatapoint] = []
    start, end = window
    for number, page in enumerate(pages, start=1):
        for result in page.get("MetricDataResults") or []:
            id_ = result.get("Id")
            if id_ not in by_id:
                raise BadMetricResponse(f"page {number}: a result for query {id_!r}, not asked")
            name, variant = by_id[id_]
            timestamps = list(result.get("Timestamps") or [])
            values = list(result.get("Values") or [])
            if len(timestamps) != len(values):
                raise BadMetricResponse(
                    f"page {number}: {name}/{variant}: {len(timestamps)} timestamps "
                    f"but {len(values)} values"
                )
            status[id_] = (str(result.get("StatusCode") or ""), list(result.get("Messages") or []))
            for stamp, value in zip(timestamps, values, strict=True):
                reason = None
                hour: datetime | None = None
                if not isinstance(stamp, datetime) or stamp.utcoffset() is None:
                    reason = "timestamp is not a timezone-aware time"
                else:
                    hour = stamp.astimezone(UTC)
                    if hour != floor_hour(hour):
                        reason = "timestamp is not on a whole UTC hour"
                    elif not start <= hour < end:
                        reason = "timestamp is outside the window"
                amount = _number(value)
                if reason is None and amount is None:
                    reason = "value is not a finite number"
                if reason is None and hour is not None and amount is not None:
                    key = (name, variant, hour)
                    if key in seen:
                        reason = f"hour repeated (first value {seen[key]} kept)"
                    else:
                        seen[key] = amount
                        rows.append(HourlyInvocations(name, variant, hour, amount))
                        continue
                point = BadDatapoint(name, variant, stamp, value, reason or "not stored")
                log.warning(
                    "CloudWatch %s %s endpoint %s variant %s at %s: value %r not stored: %s",
                    NAMESPACE,
                    METRIC_NAME,
                    name,
                    variant,
                    stamp,
                    value,
                    point.reason,
                )
                bad.append(point)
    for id_, (name, variant) in by_id.items():
        if id_ not in status:
            raise BadMetricResponse(f"no result for query {id_} ({name}/{variant})")
        code, messages = status[id_]
        if code in _INCOMPLETE:
            raise CloudWatchError(
                f"{name}/{variant}: StatusCode {code} on the last page: {messages or 'no message'}"
            )
    return rows, bad


# --- pulls -----------------------------------------------------------------------------------


def endpoints_from_snapshots(
    conn: Conn, region: str, window_start: datetime, window_end: datetime
) -> list[EndpointVariant]:
    """The (endpoint, variant) pairs snapshotted in ``region`` within a day of the window.

    Reads ``raw.sagemaker_endpoint_snapshots`` with ``snapshot_at`` in
    ``[window_start - 1 day, window_end + 1 day)``, in its own transaction.
    """
    for bound in (window_start, window_end):
        if bound.tzinfo is None or bound.utcoffset() is None:
            raise ConfigError(f"endpoints_from_snapshots: {bound!r} must be timezone-aware")
    with conn.transaction():
        found = conn.execute(
            """
            select distinct endpoint_name, variant_name
            from raw.sagemaker_endpoint_snapshots
            where region = %s
                and snapshot_at >= %s - interval '1 day'
                and snapshot_at < %s + interval '1 day'
            order by endpoint_name, variant_name
            """,
            (region, window_start, window_end),
        ).fetchall()
    return [(str(name), str(variant)) for name, variant in found]


def _fetch(
    conn: Conn,
    client: Any,
    batch_params: Sequence[Mapping[str, Any]],
    pull_id: uuid.UUID,
    retry: RetryPolicy,
    max_pages: int,
    sleep: Callable[[float], None],
    rng: random.Random,
) -> list[list[dict[str, Any]]]:
    """Every page of every batch request."""
    fetched: list[list[dict[str, Any]]] = []
    for number, params in enumerate(batch_params, start=1):
        pages: list[dict[str, Any]] = []
        token: str | None = None
        seen: set[str] = set()
        while True:
            if len(pages) >= max_pages:
                raise CloudWatchError(
                    f"request {number}: more than {max_pages} pages; stopped (max_pages)"
                )
            page_params = dict(params)
            if token is not None:
                page_params["NextToken"] = token
            pages.append(
                aws_requests.call(
                    conn,
                    client,
                    GET_METRIC_DATA,
                    page_params,
                    policy=retry,
                    pull_id=pull_id,
                    page=len(pages) + 1,
                    summary={
                        # the count, not 500 queries' dimensions on every log row
                        "MetricDataQueries": len(params["MetricDataQueries"]),
                        "namespace": NAMESPACE,
                        "metric": METRIC_NAME,
                        "batch": number,
                        "batches": len(batch_params),
                    },
                    sleep=sleep,
                    rng=rng,
                )
            )
            token = pages[-1].get("NextToken") or None
            if token is None:
                break
            if token in seen:
                raise CloudWatchError(f"request {number}: page {len(pages)} repeats a NextToken")
            seen.add(token)
        fetched.append(pages)
    return fetched


def pull_invocations(
    conn: Conn,
    client: Any,
    *,
    endpoints: Sequence[EndpointVariant],
    window_start: datetime,
    window_end: datetime,
    retry: RetryPolicy = DEFAULT_RETRY,
    batch_size: int = MAX_QUERIES,
    max_pages: int = 100,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    batch_run_id: str | None = None,
) -> PullResult:
    """Pull the hourly invocations of ``endpoints`` (endpoint, variant) over the window.

    With ``batch_run_id`` a complete pull lands as a pending write-audit-publish
    batch of that run (in the same transaction): staging reads it once audited.

    ``client`` is a CloudWatch client made with ``config=aws_requests.client_config()``;
    its region is the pull's. ``conn`` must not be inside a transaction: request log
    rows commit one by one, then the pull commits on its own. Returns the result,
    ``failed`` when every attempt of a request was throttled; raises
    :class:`InfrastructureError` on any other AWS or database failure, after
    recording the failed pull.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ConfigError("pull_invocations: the connection is inside a transaction; commit it")
    aws_requests.check_client(client)
    start, end = hour_window(window_start, window_end)
    region = str(client.meta.region_name)
    groups = batches(endpoints, batch_size)
    pull_id = uuid.uuid4()
    started_at = datetime.now(UTC)
    base = PullResult(
        pull_id=pull_id,
        region=region,
        window_start=start,
        window_end=end,
        status="failed",
        endpoints=sum(len(group) for group in groups),
    )
    where = f"CloudWatch pull {pull_id} ({region} {start.isoformat()}..{end.isoformat()})"
    try:
        fetched = _fetch(
            conn,
            client,
            [request(group, start, end) for group in groups],
            pull_id,
            retry,
            max_pages,
            sleep,
            rng or random.Random(),
        )
        rows: list[HourlyInvocations] = []
        bad: list[BadDatapoint] = []
        for number, (group, pages) in enumerate(zip(groups, fetched, strict=True), start=1):
            try:
                parsed, rejected = parse_results(pages, group, (start, end))
            except CloudWatchError as exc:
                raise type(exc)(f"request {number}: {exc}") from exc
            rows += parsed
            bad += rejected
    except (ApiRequestError, CloudWatchError) as exc:
        failed = _with_requests(conn, replace(base, error=str(exc)))
        log.error("%s failed, previous values kept: %s", where, exc)
        _record_failed(conn, failed, started_at)
        if isinstance(exc, ThrottledError):
            return failed
        raise InfrastructureError(f"{where} failed: {exc}") from exc
    result = _with_requests(conn, replace(base, status="complete", bad=tuple(bad)))
    try:
        written = _store(conn, result, started_at, rows, batch_run_id)
    except psycopg.Error as exc:
        failed = replace(result, status="failed", error=f"could not land the rows: {exc}")
        _record_failed(conn, failed, started_at)
        raise InfrastructureError(f"{where}: could not land the rows: {exc}") from exc
    result = replace(result, rows=written, superseded=len(rows) - written)
    log.info(
        "%s: %d endpoint variant(s), %d hour row(s), %d superseded by a newer pull, "
        "%d bad datapoint(s), %d request(s), USD %s",
        where,
        result.endpoints,
        result.rows,
        result.superseded,
        result.bad_datapoints,
        result.requests,
        result.cost_usd,
    )
    return result


def _with_requests(conn: Conn, result: PullResult) -> PullResult:
    """The result with its request count and cost from ``ops.api_requests``."""
    try:
        with conn.transaction():
            row = conn.execute(
                "select count(*), coalesce(sum(cost_usd), 0) from ops.api_requests"
                " where pull_id = %s",
                (result.pull_id,),
            ).fetchone()
    except psycopg.Error as exc:
        raise InfrastructureError(
            f"could not count the requests of CloudWatch pull {result.pull_id}: {exc}"
        ) from exc
    if row is None:
        return result
    return replace(result, requests=int(row[0]), cost_usd=Decimal(row[1]))


_INSERT_PULL = """
    insert into raw.cloudwatch_pulls (
        pull_id, region, namespace, metric_name, window_start, window_end, period_seconds,
        status, endpoints, rows, requests, bad_datapoints, error, started_at, finished_at
    ) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""

# The newest pull wins: a row is overwritten only by a pull that started no earlier than
# the one holding it, so an older pull that commits late leaves a newer value alone.
_UPSERT = """
    insert into raw.sagemaker_invocations_hourly as held (
        region, endpoint_name, variant_name, hour, invocations, pull_id
    )
    select %(region)s, pulled.endpoint_name, pulled.variant_name, pulled.hour,
        pulled.invocations, %(pull_id)s
    from unnest(
        %(endpoints)s::text[], %(variants)s::text[], %(hours)s::timestamptz[],
        %(invocations)s::numeric[]
    ) as pulled (endpoint_name, variant_name, hour, invocations)
    on conflict (region, endpoint_name, variant_name, hour) do update
        set invocations = excluded.invocations,
            pull_id = excluded.pull_id,
            loaded_at = excluded.loaded_at
        where (
            select holder.started_at from raw.cloudwatch_pulls as holder
            where holder.pull_id = held.pull_id
        ) <= %(started_at)s
    returning 1
"""


def _pull_values(result: PullResult, started_at: datetime, rows: int) -> tuple[object, ...]:
    return (
        result.pull_id,
        result.region,
        NAMESPACE,
        METRIC_NAME,
        result.window_start,
        result.window_end,
        PERIOD_SECONDS,
        result.status,
        result.endpoints,
        rows,
        result.requests,
        result.bad_datapoints,
        result.error,
        started_at,
        datetime.now(UTC),
    )


def _store(
    conn: Conn,
    result: PullResult,
    started_at: datetime,
    rows: Sequence[HourlyInvocations],
    batch_run_id: str | None = None,
) -> int:
    """The complete pull row and its hours, one transaction; returns the hours written."""
    with conn.transaction():
        conn.execute(_INSERT_PULL, _pull_values(result, started_at, 0))
        if batch_run_id is not None:
            wap.register_pending(conn, wap.INVOCATIONS, str(result.pull_id), batch_run_id)
        written = 0
        if rows:
            written = len(
                conn.execute(
                    _UPSERT,
                    {
                        "region": result.region,
                        "pull_id": result.pull_id,
                        "started_at": started_at,
                        "endpoints": [row.endpoint_name for row in rows],
                        "variants": [row.variant_name for row in rows],
                        "hours": [row.hour for row in rows],
                        "invocations": [row.invocations for row in rows],
                    },
                ).fetchall()
            )
        conn.execute(
            "update raw.cloudwatch_pulls set rows = %s, finished_at = %s where pull_id = %s",
            (written, datetime.now(UTC), result.pull_id),
        )
    return written


def _record_failed(conn: Conn, result: PullResult, started_at: datetime) -> None:
    try:
        with conn.transaction():
            conn.execute(_INSERT_PULL, _pull_values(result, started_at, 0))
    except psycopg.Error as exc:
        raise InfrastructureError(
            f"could not record failed CloudWatch pull {result.pull_id}: {exc}"
        ) from exc
