"""Loading span exports into ``raw.otel_spans``, exactly once per S3 object.

Each object is one transaction: an advisory lock on (bucket, key), a look at
the manifest, the COPY of its spans, its rejected rows and its manifest row.
A retried or concurrent run finds the manifest row and skips the object; a
killed run commits nothing of it. An object re-uploaded with a new etag
replaces that key's rows. An object that cannot be decoded gets a manifest row
with status ``quarantined`` and the reason; the S3 object is never touched.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import msgspec
import psycopg

from spancost.errors import BadExport, InfrastructureError
from spancost.normalize import ROW_COLUMNS, Normalizer, NormalizeSettings, Rejection
from spancost.otlp import decode_object
from spancost.s3layout import S3Object

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

COLUMNS: tuple[str, ...] = ("source_bucket", "source_key", *ROW_COLUMNS)
_COPY_SQL = f"copy raw.otel_spans ({', '.join(COLUMNS)}) from stdin"

# A validator gets the rows of a batch and returns {row index: reason} for the rows it rejects.
Validator = Callable[[Sequence[dict[str, Any]]], dict[int, tuple[str, str, str]]]


@dataclass
class PreparedObject:
    obj: S3Object
    etag: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    quarantine_reason: str | None = None


@dataclass(frozen=True)
class ObjectResult:
    key: str
    status: str  # loaded | quarantined | skipped
    spans: int = 0
    rejected: int = 0
    reason: str | None = None


@dataclass(frozen=True)
class LoadReport:
    objects: tuple[ObjectResult, ...]

    def count(self, status: str) -> int:
        return sum(1 for result in self.objects if result.status == status)

    @property
    def spans(self) -> int:
        return sum(result.spans for result in self.objects)

    @property
    def rejected(self) -> int:
        return sum(result.rejected for result in self.objects)

    def summary(self) -> dict[str, int]:
        return {
            "objects_loaded": self.count("loaded"),
            "objects_skipped": self.count("skipped"),
            "objects_quarantined": self.count("quarantined"),
            "spans_loaded": self.spans,
            "spans_rejected": self.rejected,
        }


def fetch(s3: Any, obj: S3Object) -> tuple[bytes, str]:
    """The object's bytes and the etag of exactly those bytes."""
    try:
        response = s3.get_object(Bucket=obj.bucket, Key=obj.key)
        return response["Body"].read(), str(response["ETag"]).strip('"')
    except Exception as exc:  # botocore raises many types; all are infrastructure here
        raise InfrastructureError(f"s3://{obj.bucket}/{obj.key}: download failed: {exc}") from exc


def prepare(
    obj: S3Object, data: bytes, etag: str, settings: NormalizeSettings, max_decompressed: int
) -> PreparedObject:
    """Decode and normalise one object; a decode failure quarantines it whole."""
    prepared = PreparedObject(obj=obj, etag=etag)
    try:
        spans = decode_object(obj.key, data, limit=max_decompressed)
    except BadExport as exc:
        prepared.quarantine_reason = str(exc)
        return prepared
    normalizer = Normalizer(settings)
    for span in spans:
        result = normalizer.row(span)
        if isinstance(result, Rejection):
            prepared.rejections.append(result)
        else:
            prepared.rows.append(result)
    return prepared


def apply_validator(batch: Sequence[PreparedObject], validator: Validator) -> None:
    """Run a batch-level validator (Great Expectations) and move failing rows aside."""
    flat = [(prepared, row) for prepared in batch for row in prepared.rows]
    if not flat:
        return
    failures = validator([row for _, row in flat])
    if not failures:
        return
    for prepared in batch:
        prepared.rows = []
    for index, (prepared, row) in enumerate(flat):
        failure = failures.get(index)
        if failure is None:
            prepared.rows.append(row)
            continue
        reason, column, value = failure
        prepared.rejections.append(
            Rejection(
                trace_id=row["trace_id"],
                span_id=row["span_id"],
                reason=reason,
                field=column,
                value=value,
                span={key: row[key] for key in ("name", "attributes", "resource_attributes")},
            )
        )


def ensure_partitions(conn: Conn, days: Iterable[date]) -> None:
    """Create the day partitions of raw.otel_spans that do not exist yet."""
    for day in sorted(set(days)):
        name = f"otel_spans_p{day:%Y%m%d}"
        if conn.execute("select to_regclass(%s)", [f"raw.{name}"]).fetchone() != (None,):
            continue
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(hashtext('spancost.otel_spans.partitions'))")
            conn.execute(
                f"create table if not exists raw.{name} partition of raw.otel_spans "
                f"for values from ('{day.isoformat()} 00:00:00+00') "
                f"to ('{(day + timedelta(days=1)).isoformat()} 00:00:00+00')"
            )


def _json(value: Any) -> str:
    return msgspec.json.encode(value, enc_hook=str).decode()


def _copy_rows(copy: Any, bucket: str, key: str, rows: Sequence[dict[str, Any]]) -> None:
    """COPY rows whose values are in ROW_COLUMNS order; the last two are JSON."""
    encoded_resources: dict[int, str] = {}
    for row in rows:
        values = list(row.values())
        resource = values[-1]
        text = encoded_resources.get(id(resource))
        if text is None:
            text = encoded_resources[id(resource)] = _json(resource)
        values[-2] = _json(values[-2])
        values[-1] = text
        copy.write_row((bucket, key, *values))


def commit_object(conn: Conn, prepared: PreparedObject) -> ObjectResult:
    """Land one prepared object in one transaction; skip it if this etag is already in."""
    obj = prepared.obj
    with conn.transaction():
        conn.execute(
            "select pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"{obj.bucket}/{obj.key}"]
        )
        current = conn.execute(
            "select etag from raw.s3_objects where bucket = %s and key = %s", [obj.bucket, obj.key]
        ).fetchone()
        if current is not None and current[0] == prepared.etag:
            return ObjectResult(key=obj.key, status="skipped")
        if current is not None:
            log.info("s3://%s/%s changed etag: replacing its rows", obj.bucket, obj.key)
            conn.execute(
                "delete from raw.otel_spans where source_bucket = %s and source_key = %s",
                [obj.bucket, obj.key],
            )
            conn.execute(
                "delete from ops.rejected_spans where source_bucket = %s and source_key = %s",
                [obj.bucket, obj.key],
            )
        status = "quarantined" if prepared.quarantine_reason else "loaded"
        if prepared.rows:
            with conn.cursor().copy(_COPY_SQL) as copy:
                _copy_rows(copy, obj.bucket, obj.key, prepared.rows)
        if prepared.rejections:
            conn.cursor().executemany(
                "insert into ops.rejected_spans "
                "(source_bucket, source_key, trace_id, span_id, reason, field, value, span) "
                "values (%s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        obj.bucket,
                        obj.key,
                        rejection.trace_id,
                        rejection.span_id,
                        rejection.reason,
                        rejection.field,
                        rejection.value,
                        json.dumps(rejection.span, default=str),
                    )
                    for rejection in prepared.rejections
                ],
            )
        conn.execute(
            """
            insert into raw.s3_objects
                (bucket, key, etag, size_bytes, last_modified, partition_time,
                 status, reason, span_count, rejected_count, loaded_at)
            values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
            on conflict (bucket, key) do update set
                etag = excluded.etag,
                size_bytes = excluded.size_bytes,
                last_modified = excluded.last_modified,
                partition_time = excluded.partition_time,
                status = excluded.status,
                reason = excluded.reason,
                span_count = excluded.span_count,
                rejected_count = excluded.rejected_count,
                loaded_at = excluded.loaded_at
            """,
            [
                obj.bucket,
                obj.key,
                prepared.etag,
                obj.size,
                obj.last_modified,
                obj.partition_time,
                status,
                prepared.quarantine_reason,
                len(prepared.rows),
                len(prepared.rejections),
            ],
        )
    if status == "quarantined":
        log.warning("quarantined s3://%s/%s: %s", obj.bucket, obj.key, prepared.quarantine_reason)
    return ObjectResult(
        key=obj.key,
        status=status,
        spans=len(prepared.rows),
        rejected=len(prepared.rejections),
        reason=prepared.quarantine_reason,
    )


def already_loaded(conn: Conn, objects: Sequence[S3Object]) -> set[tuple[str, str]]:
    """(key, etag) pairs of these objects already in the manifest."""
    if not objects:
        return set()
    rows = conn.execute(
        "select key, etag from raw.s3_objects where bucket = %s and key = any(%s)",
        [objects[0].bucket, [obj.key for obj in objects]],
    ).fetchall()
    return {(str(key), str(etag)) for key, etag in rows}


def load_objects(
    conn: Conn,
    s3: Any,
    objects: Sequence[S3Object],
    settings: NormalizeSettings,
    *,
    max_decompressed: int = 1 << 30,
    validator: Validator | None = None,
    batch_size: int = 200,
    batch_rows: int = 20_000,
) -> LoadReport:
    """Fetch, decode, validate and commit each object; returns what happened to each.

    Objects are prepared in batches of at most ``batch_size`` objects or about
    ``batch_rows`` spans (the validator sees a batch at once), so memory stays
    bounded however much a run has to load.
    """
    done = already_loaded(conn, objects)
    results: list[ObjectResult] = [
        ObjectResult(key=obj.key, status="skipped")
        for obj in objects
        if (obj.key, obj.etag) in done
    ]
    batch: list[PreparedObject] = []
    rows = 0

    def flush() -> None:
        if validator is not None:
            apply_validator(batch, validator)
        ensure_partitions(
            conn, (row["start_time"].date() for prepared in batch for row in prepared.rows)
        )
        for prepared in batch:
            results.append(commit_object(conn, prepared))
        batch.clear()

    for obj in objects:
        if (obj.key, obj.etag) in done:
            continue
        data, etag = fetch(s3, obj)
        prepared = prepare(obj, data, etag, settings, max_decompressed)
        del data
        batch.append(prepared)
        rows += len(prepared.rows)
        if rows >= batch_rows or len(batch) >= batch_size:
            flush()
            rows = 0
    if batch:
        flush()
    report = LoadReport(objects=tuple(results))
    log.info("span load: %s", report.summary())
    return report
