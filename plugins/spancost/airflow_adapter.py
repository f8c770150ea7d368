"""The one module that imports Airflow: turns task context into calls into the package.

DAG files stay a few lines each; they import this module inside their tasks.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from spancost import pipeline, settings
from spancost.errors import ConfigError
from spancost.settings import utc_time
from spancost.transform import dbt_build as marts

log = logging.getLogger(__name__)

POSTGRES_CONN_ID = "spancost_postgres"
AWS_CONN_ID = "aws_default"
# CloudWatch datapoints arrive minutes late: each run re-pulls the hours this far back.
INVOCATIONS_LOOKBACK = timedelta(hours=3)


def database_url(conn_id: str = POSTGRES_CONN_ID) -> str:
    """The spancost database from an Airflow connection, else ``SPANCOST_DATABASE_URL``."""
    from airflow.sdk import Connection

    try:
        conn = Connection.get(conn_id)
    except Exception:  # the SDK raises its own not-found type; treat any as "no connection"
        conn = None
    if conn is not None and conn.host:
        auth = quote(conn.login or "postgres", safe="")
        if conn.password:
            auth += ":" + quote(conn.password, safe="")
        return f"postgresql://{auth}@{conn.host}:{conn.port or 5432}/{conn.schema or 'spancost'}"
    url = os.environ.get("SPANCOST_DATABASE_URL")
    if not url:
        raise ConfigError(
            f"no Postgres for spancost: create the Airflow connection {conn_id!r} "
            "or set SPANCOST_DATABASE_URL"
        )
    return url


def s3_client(conn_id: str = AWS_CONN_ID) -> Any:
    """boto3 S3 client from the Airflow AWS connection (falls back to boto3's default chain)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=conn_id).get_conn()


def aws_client(service: str, conn_id: str = AWS_CONN_ID, **kwargs: Any) -> Any:
    """A boto3 client from the Airflow AWS connection (boto3's default chain without one)."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    return AwsBaseHook(aws_conn_id=conn_id, client_type=service, **kwargs).get_conn()


def _as_utc(value: Any, what: str) -> datetime | None:
    return None if value in (None, "") else utc_time(value, what)


def interval(context: dict[str, Any]) -> tuple[datetime, datetime]:
    """The run's data interval; params ``start``/``end`` override it for manual backfills."""
    params = context.get("params") or {}
    start = _as_utc(params.get("start"), "param start") or _as_utc(
        context.get("data_interval_start"), "data_interval_start"
    )
    end = _as_utc(params.get("end"), "param end") or _as_utc(
        context.get("data_interval_end"), "data_interval_end"
    )
    if start is None or end is None or end <= start:
        raise ConfigError(
            f"the run has no usable data interval ({start} to {end}): "
            "pass params start and end (ISO 8601)"
        )
    return start, end


def _span_settings(context: dict[str, Any]) -> settings.Settings:
    config = settings.from_env()
    params = context.get("params") or {}
    if params.get("lateness_minutes") not in (None, ""):
        config = replace(
            config,
            spans=replace(
                config.spans, lateness=timedelta(minutes=int(params["lateness_minutes"]))
            ),
        )
    if params.get("validate") is False:
        config = replace(config, validate=False)
    return config


def ingest_spans(context: dict[str, Any]) -> dict[str, int]:
    """All of the interval's span exports in one task (what ``spancost ingest-spans`` does)."""
    start, end = interval(context)
    run_id = str(context.get("run_id") or uuid.uuid4())
    report = pipeline.ingest_spans(
        _span_settings(context), s3_client(), start, end, url=database_url(), run_id=run_id
    )
    summary = report.summary()
    log.info("spans [%s, %s): %s", start.isoformat(), end.isoformat(), summary)
    return summary


def plan_spans(context: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The interval's new span exports, in chunks: one mapped load task each."""
    start, end = interval(context)
    chunks = pipeline.plan_span_chunks(
        _span_settings(context),
        s3_client(),
        start,
        end,
        url=database_url(),
    )
    log.info(
        "spans [%s, %s): %d new exports in %d chunks",
        start.isoformat(),
        end.isoformat(),
        sum(len(chunk) for chunk in chunks),
        len(chunks),
    )
    return chunks


def ingest_span_chunk(context: dict[str, Any], chunk: list[dict[str, Any]]) -> dict[str, int]:
    """Load one chunk of the plan; a mapped task, so chunks load on as many workers."""
    start, end = interval(context)
    run_id = str(context.get("run_id") or uuid.uuid4())
    report = pipeline.load_span_objects(
        _span_settings(context),
        s3_client(),
        [pipeline.object_from_json(obj) for obj in chunk],
        url=database_url(),
        run_id=run_id,
    )
    summary = report.summary()
    log.info("spans chunk of %d exports: %s", len(chunk), summary)
    return summary


def _validating(context: dict[str, Any]) -> bool:
    """Write-audit-publish is on: param ``validate``, else ``SPANCOST_VALIDATE``."""
    return _span_settings(context).validate


def validate_dataset(context: dict[str, Any], dataset: str, landed: int) -> dict[str, int]:
    """Audit the run's pending batches of ``dataset`` (and abandoned ones) with GX.

    Returns ``published``: the rows that became readable by dbt. With validation
    off the loads were read as they landed, so ``landed`` is what was published.
    A quarantined batch fails the task, naming the suite and the expectations; a
    retry fails the same way, so the failure stays visible.
    """
    if not _validating(context):
        return {"published": landed, "batches": 0, "flagged": 0}
    run_id = str(context.get("run_id") or "")
    audits = pipeline.audit_batches(database_url(), dataset, run_id or None)
    published = [audit for audit in audits if audit.status == "published"]
    return {
        "published": sum(audit.rows for audit in published),
        "batches": len(published),
        "flagged": sum(1 for audit in published if audit.flagged),
    }


def validate_spans(context: dict[str, Any], loaded: Any) -> dict[str, Any]:
    """The spans' audit (see :func:`validate_dataset`), with the published spans' time range.

    ``spans_from``/``spans_to`` (ISO, UTC) span the start times of the spans the
    audit published; the asset event carries them, so a transform it triggers
    rebuilds old days a backfill loaded (spancost.transform.window).
    """
    from spancost.validation import batches

    validated: dict[str, Any] = dict(
        validate_dataset(context, batches.SPANS, total(loaded).get("spans_loaded", 0))
    )
    run_id = str(context.get("run_id") or "")
    if validated.get("batches") and run_id:
        first, last = pipeline.published_span_range(database_url(), run_id)
        if first is not None and last is not None:
            validated |= {"spans_from": first.isoformat(), "spans_to": last.isoformat()}
    return validated


def publish_spans(context: dict[str, Any], validated: dict[str, Any]) -> dict[str, Any]:
    """Emit the spans asset, its extra the published spans' range; skip when none were."""
    from airflow.sdk import Asset

    from spancost.transform.window import SPANS_URI

    summary = publish_when_new(validated, "published", "spans")
    if summary.get("spans_from"):
        context["outlet_events"][Asset(SPANS_URI)].extra = {
            "spans_from": summary["spans_from"],
            "spans_to": summary["spans_to"],
            "spans": summary["published"],
        }
    return summary


def validate_costs(context: dict[str, Any], pulled: dict[str, Any]) -> dict[str, int]:
    """The Cost Explorer pulls' audit: see :func:`validate_dataset`."""
    from spancost.validation import batches

    return validate_dataset(context, batches.COST_EXPLORER, int(pulled.get("rows_loaded") or 0))


def total(summaries: Any) -> dict[str, int]:
    """The mapped loads' summaries added up, key by key."""
    result: dict[str, int] = {}
    for summary in summaries or []:
        for key, value in summary.items():
            result[key] = result.get(key, 0) + int(value)
    return result


SLACK_CONN_ID = "spancost_slack"


def slack_sender() -> Callable[[str, str, dict[str, Any]], None] | None:
    """Alerts to Slack through the Slack provider's webhook notifier, or None.

    The connection is ``SPANCOST_ALERT_SLACK_CONN_ID`` (default ``spancost_slack``,
    type ``slackwebhook``; empty turns Slack off). It is looked up the way Airflow
    does: in a task, the metadata database too; elsewhere, ``AIRFLOW_CONN_*``
    variables and secrets backends, so no metadata database is needed.
    """
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    from spancost import alerts

    conn_id = os.environ.get("SPANCOST_ALERT_SLACK_CONN_ID", SLACK_CONN_ID).strip()
    if not conn_id:
        return None
    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None

    def send(key: str, kind: str, payload: dict[str, Any]) -> None:
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        notifier = SlackWebhookNotifier(
            slack_webhook_conn_id=conn_id,
            text=f"{alerts.message(payload)} [{key}]",
            blocks=alerts.slack_blocks(payload),
            timeout=10,
        )
        # notify(), not the notifier's __call__: the text is ours, never a Jinja template.
        notifier.notify({})  # type: ignore[no-untyped-call]

    return send


def send_alerts() -> dict[str, Any]:
    """The alerts task of spancost_transform: what ``spancost alerts`` does."""
    from spancost import alerts

    result = alerts.run(database_url(), slack=slack_sender)
    if any(result.failed.values()):
        log.warning("spancost alerts: deliveries failed, retried next run: %s", result.summary())
    return result.summary()


def check_marts(context: dict[str, Any]) -> dict[str, Any]:
    """The marts' Great Expectations checkpoints after the build (``spancost check-marts``)."""
    checked = pipeline.check_marts(database_url(), str(context.get("run_id") or uuid.uuid4()))
    return {
        audited.batch_id: [outcome.describe() for outcome in audited.failed] for audited in checked
    }


def dbt_build(context: dict[str, Any]) -> None:
    """``dbt build`` over the run's window (the incremental models honour start/end vars)."""
    params = context.get("params") or {}
    dbt_vars = {
        name: _as_utc(params.get(name), f"param {name}").isoformat()  # type: ignore[union-attr]
        for name in ("start_time", "end_time")
        if params.get(name)
    }
    marts.build(database_url(), full_refresh=bool(params.get("full_refresh")), dbt_vars=dbt_vars)


def publish_when_new(summary: dict[str, Any], count: str | None, what: str) -> dict[str, Any]:
    """Pass ``summary`` on when it says rows landed, else skip the publishing task.

    ``count`` names the summary's count of new rows; None means the summary maps
    regions (or queries) to counts, summed. A skipped task emits no asset event.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    new = summary.get(count) if count else sum(v for v in summary.values() if isinstance(v, int))
    if not new:
        raise AirflowSkipException(f"no new {what}: no asset event, so no transform for it")
    return summary


def refresh_cost_explorer(context: dict[str, Any]) -> dict[str, Any]:
    """Cost Explorer, only when the last good pull is older than the interval (or forced)."""
    from spancost.billing import aws_requests

    params = context.get("params") or {}
    _, end = interval(context)
    client = aws_client("ce", region_name="us-east-1", config=aws_requests.client_config())
    report = pipeline.refresh_costs(
        database_url(),
        client,
        end,
        force=bool(params.get("force_cost_explorer")),
        run_id=_batch_run_id(context),
    )
    summary: dict[str, Any] = report.summary()
    return summary


def refresh_price_list(context: dict[str, Any]) -> dict[str, Any]:
    """The AWS Price List, daily; a failed pull keeps the last good prices, marked stale."""
    params = context.get("params") or {}
    _, end = interval(context)
    results = pipeline.refresh_prices(
        database_url(),
        aws_client("pricing", region_name="us-east-1"),
        end,
        force=bool(params.get("force_price_list")),
        run_id=_batch_run_id(context),
    )
    return {
        "rows_inserted": sum(result.rows_inserted for result in results),
        "rows_landed": sum(result.rows_seen for result in results if result.status == "landed"),
        "queries": {result.query_name: result.status for result in results},
    }


def validate_prices(context: dict[str, Any], pulled: dict[str, Any]) -> dict[str, int]:
    """The Price List pulls' audit (see :func:`validate_dataset`); a passed pull is merged.

    ``rows_inserted`` counts the new effective-dated prices the merges opened: the
    asset (and so a transform) follows only a price that changed.
    """
    from spancost.validation import batches

    validated = validate_dataset(context, batches.PRICES, int(pulled.get("rows_inserted") or 0))
    if _validating(context):
        validated["rows_inserted"] = pipeline.price_rows_inserted(
            database_url(), str(context.get("run_id") or "")
        )
    else:
        validated["rows_inserted"] = int(pulled.get("rows_inserted") or 0)
    return validated


def snapshot_sagemaker(context: dict[str, Any]) -> dict[str, int]:
    """A snapshot of the SageMaker endpoints of each configured region."""
    _, end = interval(context)
    clients = {
        region: aws_client("sagemaker", region_name=region)
        for region in pipeline.sagemaker_regions()
    }
    results = pipeline.snapshot_sagemaker(
        database_url(), clients, end, run_id=_batch_run_id(context)
    )
    return {result.region: result.endpoints for result in results}


def validate_endpoints(context: dict[str, Any], snapshots: dict[str, int]) -> dict[str, int]:
    """The SageMaker snapshots' audit: see :func:`validate_dataset`."""
    from spancost.validation import batches

    return validate_dataset(context, batches.ENDPOINTS, sum(snapshots.values()))


def _batch_run_id(context: dict[str, Any]) -> str | None:
    """The run whose pending batches a pull lands in, or None with validation off."""
    return str(context.get("run_id") or uuid.uuid4()) if _validating(context) else None


def pull_sagemaker_invocations(context: dict[str, Any]) -> dict[str, int]:
    """Hourly SageMaker endpoint invocations from CloudWatch, for each configured region.

    The window is the run's data interval reaching back ``INVOCATIONS_LOOKBACK`` for
    late datapoints; a pull throttled to the end fails the task (so Airflow retries).
    """
    from spancost.billing import aws_requests, cloudwatch

    start, end = interval(context)
    clients = {
        region: aws_client("cloudwatch", region_name=region, config=aws_requests.client_config())
        for region in pipeline.sagemaker_regions()
    }
    results = pipeline.pull_endpoint_invocations(
        database_url(),
        clients,
        start - INVOCATIONS_LOOKBACK,
        end,
        run_id=_batch_run_id(context),
    )
    failed = [result for result in results if result.status != "complete"]
    if failed:
        raise cloudwatch.PullFailed(failed)
    return {result.region: result.rows for result in results}


def validate_invocations(context: dict[str, Any], pulled: dict[str, int]) -> dict[str, int]:
    """The CloudWatch pulls' audit: see :func:`validate_dataset`."""
    from spancost.validation import batches

    landed = sum(value for value in pulled.values() if isinstance(value, int))
    return validate_dataset(context, batches.INVOCATIONS, landed)
