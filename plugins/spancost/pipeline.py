"""The jobs behind the CLI and the DAG tasks: each a few calls into the modules."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from spancost import db
from spancost.settings import Settings
from spancost.spans.loader import LoadReport, already_loaded, load_objects
from spancost.spans.normalize import NormalizeSettings
from spancost.spans.s3layout import S3Object, list_objects
from spancost.validation import batches

if TYPE_CHECKING:
    from spancost.billing.cloudwatch import PullResult as InvocationsPull
    from spancost.validation.audit import BatchAudit

log = logging.getLogger(__name__)


def ingest_spans(
    settings: Settings,
    s3: Any,
    start: datetime,
    end: datetime,
    *,
    url: str,
    run_id: str,
) -> LoadReport:
    """Load every trace export whose partition falls in [start, end) (plus lateness).

    With validation on (``settings.validate``), the spans land as a pending batch
    and are audited right after (write-audit-publish): see :func:`audit_batches`.
    """
    report = load_span_objects(
        settings, s3, list_objects(s3, settings.spans, start, end), url=url, run_id=run_id
    )
    if settings.validate:
        audit_batches(url, batches.SPANS, run_id)
    return report


def audit_batches(url: str, dataset: str, run_id: str | None) -> list[BatchAudit]:
    """Audit the pending batches of ``dataset`` for ``run_id`` with Great Expectations.

    Raises :class:`spancost.validation.audit.BatchQuarantined` (after every batch
    was audited) when one failed a critical expectation.
    """
    from spancost.validation import audit  # imports great_expectations when there is work

    return audit.audit(url, dataset, run_id, now=datetime.now(UTC))


def published_span_range(url: str, run_id: str) -> tuple[datetime | None, datetime | None]:
    """The first and last start time of the spans in the run's published batches."""
    with db.connect(url) as conn:
        found = conn.execute(
            """
            select min(spans.start_time), max(spans.start_time)
            from raw.s3_objects as objects
            inner join ops.load_batches as batches
                on batches.batch_id = objects.batch_id
            inner join raw.otel_spans as spans
                on spans.source_bucket = objects.bucket and spans.source_key = objects.key
            where batches.run_id = %s and batches.dataset = %s and batches.status = 'published'
            """,
            [run_id, batches.SPANS],
        ).fetchone()
    if found is None or not isinstance(found[0], datetime) or not isinstance(found[1], datetime):
        return None, None
    return found[0], found[1]


def price_rows_inserted(url: str, run_id: str) -> int:
    """New effective-dated prices opened by the Price List pulls ``run_id`` published."""
    with db.connect(url) as conn:
        found = conn.execute(
            """
            select coalesce(sum(pulls.rows_inserted), 0)
            from ops.load_batches as batches
            inner join raw.aws_price_list_pulls as pulls
                on cast(pulls.pull_id as text) = batches.batch_id
            where batches.dataset = 'aws_price_list' and batches.run_id = %s
              and batches.status = 'published'
            """,
            [run_id],
        ).fetchone()
    return int(str(found[0])) if found else 0


def check_marts(url: str, run_id: str) -> list[BatchAudit]:
    """The Great Expectations checkpoints on the marts, after a build (warnings logged)."""
    from spancost.validation import audit  # imports great_expectations

    return audit.check_marts(url, run_id)


def load_span_objects(
    settings: Settings,
    s3: Any,
    objects: Sequence[S3Object],
    *,
    url: str,
    run_id: str,
) -> LoadReport:
    """Load the given trace exports; each in one transaction with its manifest row.

    With validation on they join the run's pending batch, which staging does not
    read until :func:`audit_batches` publishes it.
    """
    with db.connect(url, autocommit=True) as conn:  # each object commits on its own
        db.apply_schema(conn)
        batch_id = None
        if settings.validate and len(already_loaded(conn, objects)) < len(objects):
            batch_id = batches.open_batch(conn, batches.SPANS, run_id)
        return load_objects(
            conn,
            s3,
            objects,
            NormalizeSettings(
                user_id_salt=settings.user_id_salt,
                content_keys=settings.content_keys,
                max_attribute_bytes=settings.max_attribute_bytes,
                max_attribute_depth=settings.max_attribute_depth,
                max_attributes=settings.max_attributes,
                max_spans_per_object=settings.max_spans_per_object,
            ),
            max_decompressed=settings.max_decompressed_bytes,
            max_ratio=settings.max_compression_ratio,
            batch_id=batch_id,
            workers=settings.load_workers,
            stream_bytes=settings.stream_object_bytes,
            stream_chunk_bytes=settings.stream_chunk_bytes,
        )


def plan_span_chunks(
    settings: Settings,
    s3: Any,
    start: datetime,
    end: datetime,
    *,
    url: str,
) -> list[list[dict[str, Any]]]:
    """The interval's exports not loaded yet (in the manifest with the same etag), in chunks.

    A chunk holds ``settings.load_chunk_objects`` exports.

    Each chunk is a JSON-safe list of objects for one mapped load task. An object
    in two chunks (two runs' lateness windows overlap, say) still loads once: the
    loader commits each object with its manifest row and skips what is there.
    """
    listed = list_objects(s3, settings.spans, start, end)
    with db.connect(url) as conn:
        db.apply_schema(conn)
        done = {
            (bucket, key, etag)
            for bucket, key, etag in conn.execute(
                "select bucket, key, etag from raw.s3_objects where bucket = %s and key = any(%s)",
                (settings.spans.bucket, [obj.key for obj in listed]),
            ).fetchall()
        }
    new = [obj for obj in listed if (obj.bucket, obj.key, obj.etag) not in done]
    log.info("%d new of %d listed exports for [%s, %s)", len(new), len(listed), start, end)
    size = settings.load_chunk_objects
    return [[object_to_json(obj) for obj in new[i : i + size]] for i in range(0, len(new), size)]


def object_to_json(obj: S3Object) -> dict[str, Any]:
    return {
        "bucket": obj.bucket,
        "key": obj.key,
        "etag": obj.etag,
        "size": obj.size,
        "last_modified": obj.last_modified.isoformat() if obj.last_modified else None,
        "partition_time": obj.partition_time.isoformat(),
    }


def object_from_json(data: Mapping[str, Any]) -> S3Object:
    last_modified = data.get("last_modified")
    return S3Object(
        bucket=str(data["bucket"]),
        key=str(data["key"]),
        etag=str(data["etag"]),
        size=int(data["size"]),
        last_modified=datetime.fromisoformat(last_modified) if last_modified else None,
        partition_time=datetime.fromisoformat(str(data["partition_time"])),
    )


def sagemaker_regions(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """``SPANCOST_SAGEMAKER_REGIONS`` (comma-separated), else the default region."""
    env = os.environ if env is None else env
    listed = tuple(r.strip() for r in env.get("SPANCOST_SAGEMAKER_REGIONS", "").split(",") if r)
    return listed or (env.get("AWS_DEFAULT_REGION") or "us-east-1",)


def refresh_costs(
    url: str, ce_client: Any, now: datetime, *, force: bool = False, run_id: str | None = None
) -> Any:
    """Pull Cost Explorer when its data is older than the refresh interval (or forced).

    With ``run_id`` each complete pull lands as a pending batch of that run, for
    :func:`audit_batches` (``batches.COST_EXPLORER``) to publish or quarantine.
    """
    from spancost.billing import cost_explorer

    with db.connect(url) as conn:
        db.apply_schema(conn)
        conn.commit()
        return cost_explorer.refresh(
            conn,
            ce_client,
            cost_explorer.settings_from_env(),
            now,
            force=force,
            batch_run_id=run_id,
        )


def refresh_prices(
    url: str, pricing_client: Any, now: datetime, *, force: bool = False, run_id: str | None = None
) -> Any:
    """Refresh the AWS Price List (daily by default); failures keep the old prices, stale.

    With ``run_id`` each complete pull lands as a pending batch of that run: the
    audit (:func:`audit_batches`, ``batches.PRICES``) merges it into the
    effective-dated prices or quarantines it.
    """
    from spancost.billing import aws_requests, price_list

    with db.connect(url) as conn, aws_requests.RequestLogger(url, pricing_client):
        db.apply_schema(conn)
        conn.commit()
        results = price_list.refresh_all(
            conn, pricing_client, now=now, force=force, batch_run_id=run_id
        )
    for result in results:
        if not result.ok:
            log.warning(
                "price list %s failed, old prices kept as stale: %s",
                result.query_name,
                result.error,
            )
    return results


def snapshot_sagemaker(
    url: str, clients: Mapping[str, Any], now: datetime, *, run_id: str | None = None
) -> list[Any]:
    """Snapshot the SageMaker endpoints of each region.

    With ``run_id`` each region's snapshot lands as a pending batch of that run
    (:func:`audit_batches`, ``batches.ENDPOINTS``).
    """
    from spancost.billing import aws_requests, sagemaker

    results = []
    with db.connect(url) as conn:
        db.apply_schema(conn)
        conn.commit()
        for client in clients.values():
            with aws_requests.RequestLogger(url, client):
                results.append(
                    sagemaker.snapshot_endpoints(conn, client, snapshot_at=now, batch_run_id=run_id)
                )
    return results


def pull_endpoint_invocations(
    url: str,
    cloudwatch_clients: Mapping[str, Any],
    window_start: datetime,
    window_end: datetime,
    *,
    run_id: str | None = None,
) -> list[InvocationsPull]:
    """Hourly invocations of each region's SageMaker endpoints from CloudWatch.

    ``cloudwatch_clients`` maps each region to a CloudWatch client of that region,
    made with ``config=aws_requests.client_config()``. The endpoint variants are those
    snapshotted in the region within a day of the window; a region without any
    records an empty pull and makes no request. A throttled pull is returned as
    failed (its hours keep their values); other failures raise. With ``run_id``
    each complete pull lands as a pending batch of that run (``audit_batches``).
    """
    from spancost.billing import cloudwatch
    from spancost.errors import ConfigError

    results = []
    with db.connect(url) as conn:
        db.apply_schema(conn)
        conn.commit()
        for region, client in cloudwatch_clients.items():
            if client.meta.region_name != region:
                raise ConfigError(
                    f"the CloudWatch client for {region} is for {client.meta.region_name}"
                )
            endpoints = cloudwatch.endpoints_from_snapshots(conn, region, window_start, window_end)
            results.append(
                cloudwatch.pull_invocations(
                    conn,
                    client,
                    endpoints=endpoints,
                    window_start=window_start,
                    window_end=window_end,
                    batch_run_id=run_id,
                )
            )
    return results
