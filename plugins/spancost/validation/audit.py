"""Write-audit-publish: Great Expectations audits each landed batch in Postgres, in SQL.

The loaders write a batch under a pending id (:mod:`spancost.validation.batches`);
staging does not read it yet. :func:`audit` then runs the dataset's checkpoint
from the GX file context in ``expectations/`` on each pending batch, one at a
time, through the ``ops.audit_<dataset>`` view, which shows exactly that batch's
rows: GX computes every metric with SQL in Postgres and no row reaches Python.

* Every expectation passes: the batch is published.
* Only ``warning`` or ``info`` expectations fail: published, flagged.
* A ``critical`` expectation fails: the batch is quarantined. Its rows stay in
  raw, staging keeps them out, ``ops.load_batches.reason`` names the suite and
  the expectations, and, once every pending batch was audited (so a later good
  one still publishes), :class:`BatchQuarantined` fails the task with the same.

Each expectation's outcome is a row of ``ops.validation_results``. Great
Expectations takes seconds to import, so only :func:`audit` imports it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

from spancost import db
from spancost.errors import SpancostError
from spancost.validation import batches

if TYPE_CHECKING:
    from great_expectations.data_context.data_context.abstract_data_context import (
        AbstractDataContext,
    )

log = logging.getLogger(__name__)

REJECTING_SEVERITY = "critical"
# A 90% drop against the trailing day's mean batch warns (the suites' min_rows).
VOLUME_FLOOR = 0.1


class SuiteError(SpancostError, ValueError):
    """The GX context, a checkpoint or one of its expectations cannot be run.

    The message names the checkpoint and the expectation. The batch stays pending:
    a broken gate publishes nothing.
    """


class BatchQuarantined(SpancostError):
    """At least one batch failed a critical expectation; the message names each.

    ``reasons`` maps each quarantined batch to its reason (suite and expectations).
    """

    def __init__(self, reasons: Mapping[str, str]) -> None:
        self.reasons = dict(reasons)
        super().__init__(
            "quarantined (kept in raw, out of the marts): "
            + "; ".join(f"batch {batch}: {reason}" for batch, reason in self.reasons.items())
        )


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict on one batch."""

    type: str
    kwargs: dict[str, Any]
    severity: str
    success: bool
    observed: Any  # the observed value, or the unexpected count and a sample
    result: dict[str, Any]
    description: str | None = None

    def describe(self) -> str:
        target = self.kwargs.get("column") or self.kwargs.get("column_list") or "table"
        label = f"{self.type}({_text(target)})"
        if self.description:
            label += f" [{self.description}]"
        return f"{label} observed {_text(self.observed)}"


@dataclass(frozen=True)
class BatchAudit:
    """What the audit decided for one batch."""

    batch_id: str
    dataset: str
    suite: str
    status: str  # published or quarantined (a batch); passed or failed (a marts check)
    rows: int
    outcomes: tuple[ExpectationOutcome, ...]

    @property
    def failed(self) -> tuple[ExpectationOutcome, ...]:
        return tuple(outcome for outcome in self.outcomes if not outcome.success)

    @property
    def flagged(self) -> bool:
        return bool(self.failed) and self.status in ("published", "passed")

    @property
    def reason(self) -> str | None:
        failed = self.failed
        if not failed:
            return None
        return f"suite {self.suite}: " + "; ".join(
            f"{outcome.severity} {outcome.describe()}" for outcome in failed
        )


def context_dir() -> Path:
    """The GX file context: ``SPANCOST_GX_DIR``, else ``expectations/`` beside ``plugins/``."""
    configured = os.environ.get("SPANCOST_GX_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3] / "expectations"


def sqlalchemy_url(url: str) -> str:
    """spancost's libpq URL as SQLAlchemy's, on the psycopg 3 driver."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgres", "postgresql", "postgresql+psycopg"):
        raise SuiteError(f"not a PostgreSQL URL for Great Expectations: {db.redact(url)}")
    return f"postgresql+psycopg://{rest}"


def load_context(url: str, directory: Path | None = None) -> AbstractDataContext:
    """The file context, its datasource pointed at ``url`` (via ``SPANCOST_GX_DB_URL``)."""
    os.environ["SPANCOST_GX_DB_URL"] = sqlalchemy_url(url)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx  # slow: only here

    root = directory or context_dir()
    if not (root / "great_expectations.yml").is_file():
        raise SuiteError(f"{root}: no great_expectations.yml (SPANCOST_GX_DIR)")
    try:
        return gx.get_context(mode="file", context_root_dir=str(root))
    except Exception as exc:  # GX raises many unrelated types for a bad context
        raise SuiteError(f"{root}: cannot load the Great Expectations context: {exc}") from exc


def build_data_docs(url: str) -> Path:
    """Build the GX Data Docs site (the suites, and the validation results kept here).

    Returns the site's ``index.html``, under ``expectations/uncommitted/data_docs``.
    """
    context = load_context(url)
    try:
        sites = context.build_data_docs()
    except Exception as exc:  # GX raises many unrelated types
        raise SuiteError(f"{context_dir()}: cannot build the Data Docs: {exc}") from exc
    index = sites.get("local_site", "")
    return Path(index.removeprefix("file://")) if index else context_dir()


def audit(
    url: str,
    dataset: str,
    run_id: str | None,
    *,
    now: datetime,
    context: AbstractDataContext | None = None,
    abandoned_after: timedelta = batches.DEFAULT_ABANDONED_AFTER,
) -> list[BatchAudit]:
    """Audit the pending batches of ``dataset`` that ``run_id`` should (see pending_batches).

    Returns one BatchAudit per batch, oldest first; raises BatchQuarantined after
    all were audited when any was quarantined, and SuiteError (the batch stays
    pending) when a checkpoint cannot run.
    """
    if dataset not in batches.DATASETS:
        raise SuiteError(f"no suite for dataset {dataset!r}: one of {batches.DATASETS}")
    with db.connect(url, autocommit=True) as conn:
        db.apply_schema(conn)
        todo = batches.pending_batches(
            conn, dataset, run_id, now=now, abandoned_after=abandoned_after
        )
        done: list[BatchAudit] = []
        if todo:
            context = context or load_context(url)
            for batch in todo:
                audited = _audit_batch(url, conn, context, batch, run_id or batch.run_id)
                if audited is not None:
                    done.append(audited)
        elif run_id is not None and dataset == batches.SPANS:
            # Spans are expected every interval; Cost Explorer only when it was due.
            _warn_when_nothing_landed(conn, dataset, run_id, now)
        if done:
            prune_results(context_dir(), now)
        quarantined = {a.batch_id: a.reason or "" for a in done if a.status == "quarantined"}
        if run_id is not None:
            # A retry of the run's audit fails as the first try did.
            quarantined |= {
                str(batch_id): str(reason)
                for batch_id, reason in conn.execute(
                    "select batch_id, reason from ops.load_batches"
                    " where dataset = %s and run_id = %s and status = 'quarantined'",
                    [dataset, run_id],
                ).fetchall()
            }
    if quarantined:
        raise BatchQuarantined(quarantined)
    return done


def _audit_batch(
    url: str,
    conn: batches.Conn,
    context: AbstractDataContext,
    batch: batches.Batch,
    run_id: str,
) -> BatchAudit | None:
    """Audit one batch under the dataset's lock; None when another audit got there first."""
    lock = f"spancost.audit/{batch.dataset}"
    conn.execute("select pg_advisory_lock(hashtextextended(%s, 0))", [lock])
    try:
        conn.execute(
            "insert into ops.audit_targets (dataset, batch_id) values (%s, %s)"
            " on conflict (dataset) do update set batch_id = excluded.batch_id",
            [batch.dataset, batch.batch_id],
        )
        with conn.transaction():
            # Loads into the batch hold it for share: wait for them, and keep new ones
            # out until it is decided (they then fail with BatchClosed and retry).
            row = conn.execute(
                "select status from ops.load_batches where batch_id = %s for update",
                [batch.batch_id],
            ).fetchone()
            if row is None or row[0] != "pending":
                return None
            if batch.dataset == batches.SPANS:
                _target_objects(url, batch.batch_id)
            rows = _row_count(conn, batch)
            parameters = _parameters(conn, batch)
            outcomes = _run_checkpoint(context, batch.dataset, parameters, batch.batch_id)
            critical = [o for o in outcomes if not o.success and o.severity == REJECTING_SEVERITY]
            audited = BatchAudit(
                batch_id=batch.batch_id,
                dataset=batch.dataset,
                suite=batch.dataset,
                status="quarantined" if critical else "published",
                rows=rows,
                outcomes=tuple(outcomes),
            )
            _apply_verdict(conn, audited)
            _record(conn, audited, run_id)
    finally:
        conn.execute("select pg_advisory_unlock(hashtextextended(%s, 0))", [lock])
    level = logging.WARNING if audited.failed else logging.INFO
    log.log(
        level,
        "batch %s (%d rows): %s, %s",
        batch.batch_id,
        rows,
        audited.status,
        audited.reason or "every expectation passed",
    )
    return audited


def _target_objects(url: str, batch_id: str) -> None:
    """Show the batch's span exports to ``ops.audit_otel_spans`` (``ops.audit_objects``).

    Committed on a connection of its own, so GX's connection sees them, while the
    caller's transaction holds the batch: no load can add an export meanwhile.
    Analysed, so the planner knows the batch's size.
    """
    with db.connect(url, autocommit=True) as side, side.transaction():
        side.execute("delete from ops.audit_objects")
        side.execute(
            "insert into ops.audit_objects (bucket, key)"
            " select bucket, key from raw.s3_objects where batch_id = %s",
            [batch_id],
        )
        side.execute("analyze ops.audit_objects")


def prune_results(root: Path, now: datetime) -> int:
    """Delete GX's stored validation results older than ``SPANCOST_GX_KEEP_DAYS`` (14).

    Each audit stores one result file (Data Docs show them); a 15-minute schedule
    would otherwise keep 35,000 a year. ``ops.validation_results`` keeps every
    outcome. Returns how many run folders were deleted.
    """
    import shutil

    cutoff = (now - timedelta(days=_env_int("SPANCOST_GX_KEEP_DAYS", 14))).timestamp()
    deleted = 0
    # uncommitted/validations/<suite>/<run name>/<run time>/<batch>.json
    for run_time in (root / "uncommitted" / "validations").glob("*/*/*"):
        if run_time.is_dir() and run_time.stat().st_mtime < cutoff:
            shutil.rmtree(run_time, ignore_errors=True)
            deleted += 1
    return deleted


def _row_count(conn: batches.Conn, batch: batches.Batch) -> int:
    row = conn.execute(f"select count(*) from ops.audit_{batch.dataset}").fetchone()  # noqa: S608
    return int(row[0]) if row else 0


def _parameters(conn: batches.Conn, batch: batches.Batch) -> dict[str, Any]:
    """The suite's ``$PARAMETER`` values for this batch: its time window and volume floor."""
    window = _window(conn, batch)
    # The trailing batches a volume drop is measured against: the same query's pulls
    # for prices (daily, each query its own size), the same region's snapshots for
    # endpoints, the dataset's batches otherwise.
    trailing_days, peers = 1, ""
    if batch.dataset == batches.PRICES:
        trailing_days = 7
        peers = (
            " and batch_id in (select cast(pull_id as text) from raw.aws_price_list_pulls"
            " where query_name = (select query_name from raw.aws_price_list_pulls"
            " where cast(pull_id as text) = %(batch)s))"
        )
    elif batch.dataset == batches.ENDPOINTS:
        peers = " and split_part(batch_id, '/', 1) = split_part(%(batch)s, '/', 1)"
    trailing = conn.execute(
        "select avg(row_count) from ops.load_batches where dataset = %(dataset)s"
        " and status = 'published' and row_count is not null"
        " and created_at >= %(since)s and created_at < %(until)s" + peers,
        {
            "dataset": batch.dataset,
            "batch": batch.batch_id,
            "since": batch.created_at - timedelta(days=trailing_days),
            "until": batch.created_at,
        },
    ).fetchone()
    mean = float(trailing[0]) if trailing and trailing[0] is not None else 0.0
    return {
        "window_start": window[0].isoformat(),
        "window_end": window[1].isoformat(),
        # Rounded up: with any trailing traffic, an empty batch warns.
        "min_rows": math.ceil(mean * VOLUME_FLOOR),
    }


# Price List effective dates are history: from here to a year after the pull (AWS
# publishes some price changes ahead). Endpoints were not created before SageMaker.
PRICES_EFFECTIVE_SINCE = datetime(2000, 1, 1, tzinfo=UTC)
ENDPOINTS_CREATED_SINCE = datetime(2017, 1, 1, tzinfo=UTC)


def _window(conn: batches.Conn, batch: batches.Batch) -> tuple[datetime, datetime]:
    """The batch's time window (the suites' ``window_start`` and ``window_end``)."""
    skew = timedelta(minutes=_env_int("SPANCOST_AUDIT_CLOCK_SKEW_MINUTES", 60))
    if batch.dataset == batches.SPANS:
        max_age = timedelta(hours=_env_int("SPANCOST_AUDIT_SPAN_MAX_AGE_HOURS", 48))
        first, last = conn.execute(
            "select min(partition_time), max(greatest(partition_time, last_modified))"
            " from raw.s3_objects where batch_id = %s",
            [batch.batch_id],
        ).fetchone() or (None, None)
        if first is None or last is None:
            first = last = batch.created_at
        return (first - max_age, last + timedelta(minutes=1) + skew)
    if batch.dataset == batches.INVOCATIONS:
        pulled = conn.execute(
            "select window_start, window_end from raw.cloudwatch_pulls where pull_id = %s",
            [batch.batch_id],
        ).fetchone()
        if pulled is None:
            raise SuiteError(f"batch {batch.batch_id}: no CloudWatch pull with that id")
        return (pulled[0], pulled[1] - timedelta(hours=1))  # hours start before the end
    if batch.dataset == batches.PRICES:
        started = conn.execute(
            "select started_at from raw.aws_price_list_pulls where cast(pull_id as text) = %s",
            [batch.batch_id],
        ).fetchone()
        if started is None:
            raise SuiteError(f"batch {batch.batch_id}: no Price List pull with that id")
        return (PRICES_EFFECTIVE_SINCE, started[0] + timedelta(days=366))
    if batch.dataset == batches.ENDPOINTS:
        # <region>/<snapshot time>/<suffix> (spancost.billing.sagemaker.store)
        try:
            snapshot_at = datetime.fromisoformat(batch.batch_id.split("/")[1])
        except (IndexError, ValueError) as exc:
            raise SuiteError(f"batch {batch.batch_id}: not a SageMaker snapshot batch") from exc
        return (ENDPOINTS_CREATED_SINCE, snapshot_at + skew)
    found = conn.execute(
        "select time_period_start, time_period_end from raw.ce_pulls where pull_id = %s",
        [batch.batch_id],
    ).fetchone()
    if found is None:
        raise SuiteError(f"batch {batch.batch_id}: no Cost Explorer pull with that id")
    return (_utc_midnight(found[0]), _utc_midnight(found[1]))


def _apply_verdict(conn: batches.Conn, audited: BatchAudit) -> None:
    """What a verdict does beyond the batch's status, in the audit's transaction.

    A Price List pull is merged into the effective-dated history only when it is
    published, so prices that fail their audit never close a row; a quarantined
    pull's rows stay landed and the prices in use are marked stale.
    """
    if audited.dataset != batches.PRICES:
        return
    from spancost.billing import price_list

    if audited.status == "published":
        price_list.publish_landed(conn, int(audited.batch_id))
    else:
        price_list.quarantine_landed(conn, int(audited.batch_id), audited.reason or "")


def _run_checkpoint(
    context: AbstractDataContext, name: str, parameters: Mapping[str, Any], run_name: str
) -> list[ExpectationOutcome]:
    from great_expectations.core.run_identifier import RunIdentifier

    # GX's file store refuses '/' in its keys.
    run_id = RunIdentifier(run_name=run_name.replace("/", "~").replace("\\", "~"))
    try:
        # The checkpoint gives the verdicts alone (result format BOOLEAN_ONLY): one
        # aggregate query covers every column expectation.
        result = context.checkpoints.get(name).run(
            expectation_parameters=dict(parameters), run_id=run_id
        )
        suite_results = list(result.run_results.values())
        if not result.success or any(
            _exception_message(i.exception_info) for r in suite_results for i in r.results
        ):
            # Something failed: its validation definition again, with a sample of the
            # values that failed (a query per expectation, so only now).
            suite_results = [
                context.validation_definitions.get(name).run(
                    expectation_parameters=dict(parameters),
                    result_format="SUMMARY",
                    run_id=run_id,
                )
            ]
    except Exception as exc:  # a missing checkpoint, a bad suite, a broken datasource
        raise SuiteError(f"checkpoint {name}: cannot run: {exc}") from exc
    outcomes: list[ExpectationOutcome] = []
    for suite_result in suite_results:
        for position, item in enumerate(suite_result.results):
            config = item.expectation_config
            if config is None:
                raise SuiteError(f"checkpoint {name}: a result without its expectation")
            kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
            problem = _exception_message(item.exception_info)
            if problem is not None:
                raise SuiteError(
                    f"checkpoint {name}: expectation {position} ({config.type}"
                    f" {_text(kwargs)}) could not be evaluated: {problem}"
                )
            severity = getattr(config, "severity", None) or REJECTING_SEVERITY
            details = _json_safe(dict(item.result or {}))
            observed = details.get("observed_value")
            if "unexpected_count" in details:
                observed = {
                    "unexpected_count": details["unexpected_count"],
                    "element_count": details.get("element_count"),
                    "sample": details.get("partial_unexpected_list", [])[:5],
                }
            outcomes.append(
                ExpectationOutcome(
                    type=str(config.type),
                    kwargs=_json_safe(kwargs),
                    severity=str(getattr(severity, "value", severity)),
                    success=bool(item.success),
                    observed=observed,
                    result=details,
                    description=getattr(config, "description", None),
                )
            )
    return outcomes


def _record(conn: batches.Conn, audited: BatchAudit, run_id: str) -> None:
    """The outcomes into ops.validation_results and the verdict onto the batch."""
    _record_outcomes(conn, audited, run_id)
    conn.execute(
        "update ops.load_batches set status = %s, flagged = %s, row_count = %s, reason = %s,"
        " audited_at = now() where batch_id = %s",
        [audited.status, audited.flagged, audited.rows, audited.reason, audited.batch_id],
    )


def _record_outcomes(conn: batches.Conn, audited: BatchAudit, run_id: str) -> None:
    conn.cursor().executemany(
        """
        insert into ops.validation_results
            (run_id, suite, batch, success, rows_checked, rows_failed, result,
             dataset, batch_id, expectation, severity, kwargs, observed_value)
        values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        """,
        [
            (
                run_id,
                audited.suite,
                audited.batch_id,
                outcome.success,
                audited.rows,
                int(outcome.result.get("unexpected_count") or 0),
                Jsonb(outcome.result),
                audited.dataset,
                audited.batch_id,
                outcome.type,
                outcome.severity,
                Jsonb(outcome.kwargs),
                Jsonb(outcome.observed),
            )
            for outcome in audited.outcomes
        ],
    )


# The marts' checkpoints, run after dbt: (checkpoint, relation checked).
MART_CHECKPOINTS = (("pipeline_cost_profile", "marts.rpt_pipeline_cost_profile"),)


class MartsCheckFailed(SpancostError):
    """A critical expectation on the marts failed; the message names each."""


def check_marts(
    url: str, run_id: str, *, context: AbstractDataContext | None = None
) -> list[BatchAudit]:
    """Run the marts' checkpoints (what dbt tests express badly) after a build.

    Each outcome is recorded in ``ops.validation_results`` (dataset ``marts``,
    batch ``<checkpoint>/<newest day>``). Failed warnings (a pipeline's day far
    above its trailing days, a 90% volume drop) are logged and returned; a failed
    critical expectation raises MartsCheckFailed after everything was recorded.
    """
    context = context or load_context(url)
    checked: list[BatchAudit] = []
    with db.connect(url, autocommit=True) as conn:
        db.apply_schema(conn)
        for name, relation in MART_CHECKPOINTS:
            found = conn.execute(f"select count(*), max(day) from {relation}").fetchone()  # noqa: S608
            rows, day = (int(str(found[0])), found[1]) if found else (0, None)
            outcomes = _run_checkpoint(context, name, {}, f"{name}/{day}")
            critical = [o for o in outcomes if not o.success and o.severity == REJECTING_SEVERITY]
            audited = BatchAudit(
                batch_id=f"{name}/{day or 'empty'}",
                dataset="marts",
                suite=name,
                status="failed" if critical else "passed",
                rows=rows,
                outcomes=tuple(outcomes),
            )
            _record_outcomes(conn, audited, run_id)
            if audited.failed:
                log.warning("marts check %s on %s: %s", name, day, audited.reason)
            checked.append(audited)
    failed = [audited for audited in checked if audited.status == "failed"]
    if failed:
        raise MartsCheckFailed("; ".join(f"{a.batch_id}: {a.reason}" for a in failed))
    return checked


def _warn_when_nothing_landed(conn: batches.Conn, dataset: str, run_id: str, now: datetime) -> None:
    """A run that landed no batch while the trailing day had traffic: a volume warning."""
    if conn.execute("select 1 from ops.load_batches where run_id = %s", [run_id]).fetchone():
        return
    trailing = conn.execute(
        "select count(*) from ops.load_batches where dataset = %s and status = 'published'"
        " and row_count > 0 and created_at >= %s",
        [dataset, now - timedelta(days=1)],
    ).fetchone()
    if not trailing or not trailing[0]:
        return
    observed = {"observed_value": 0, "trailing_day_batches": int(trailing[0])}
    conn.execute(
        """
        insert into ops.validation_results
            (run_id, suite, batch, success, rows_checked, rows_failed, result,
             dataset, batch_id, expectation, severity, kwargs, observed_value)
        values (%s, %s, '', false, 0, 0, %s, %s, null,
                'expect_table_row_count_to_be_between', 'warning', %s, %s)
        """,
        [run_id, dataset, Jsonb(observed), dataset, Jsonb({"min_value": 1}), Jsonb(0)],
    )
    log.warning(
        "%s: run %s landed nothing, while the trailing day had %d batches",
        dataset,
        run_id,
        trailing[0],
    )


def _utc_midnight(day: Any) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise SuiteError(f"{name}={value!r} is not a whole number") from exc


def _exception_message(info: Any) -> str | None:
    """The message of an exception GX caught while evaluating an expectation, if any.

    ``exception_info`` is either one {raised_exception, exception_message, ...} dict
    or a dict of them keyed by metric.
    """
    if not isinstance(info, Mapping):
        return None
    if "raised_exception" in info:
        return str(info.get("exception_message")) if info.get("raised_exception") else None
    for nested in info.values():
        message = _exception_message(nested)
        if message is not None:
            return message
    return None


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, sort_keys=True)
