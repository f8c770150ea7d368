"""Loading span exports into ``raw.otel_spans``, exactly once per S3 object.

Each object is one transaction: an advisory lock on (bucket, key), a look at
the manifest, the COPY of its spans, its rejected rows and its manifest row.
A retried or concurrent run finds the manifest row and skips the object; a
killed run commits nothing of it. An object re-uploaded with a new etag
replaces that key's rows. An object that cannot be decoded gets a manifest row
with status ``quarantined`` and the reason; the S3 object is never touched.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import multiprocessing
import os
import queue
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

import msgspec
import psycopg

from spancost.errors import BadExport, InfrastructureError
from spancost.spans.normalize import (
    ROW_COLUMNS,
    Normalizer,
    NormalizeSettings,
    Rejection,
    normalize_object,
    too_many_spans,
)
from spancost.spans.otlp import (
    NotJsonLines,
    decode_line,
    decompress_stream,
    expansion_limit,
    numbered_lines,
)
from spancost.spans.s3layout import S3Object
from spancost.validation import batches

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

COLUMNS: tuple[str, ...] = ("source_bucket", "source_key", *ROW_COLUMNS)
_COPY_SQL = f"copy raw.otel_spans ({', '.join(COLUMNS)}) from stdin"
NUL_REPLACED = "nul_replaced"  # counted in changes: NUL cannot be stored in text or jsonb


@dataclass(frozen=True)
class _Options:
    max_decompressed: int
    max_ratio: int
    batch_size: int
    batch_bytes: int
    stream_bytes: int
    stream_chunk_bytes: int
    workers: int
    batch_id: str | None = None  # write-audit-publish: the pending batch the objects join


@dataclass
class PreparedObject:
    obj: S3Object
    etag: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    quarantine_reason: str | None = None
    copy_text: bytes | None = None  # the rows as COPY text (UTF-8), made ahead of the commit
    spans: int = 0  # rows sealed into copy_text
    days: set[str] = field(default_factory=set)  # UTC days (YYYY-MM-DD) the rows start on
    error_type: str | None = None  # with quarantine_reason: the error underneath
    error_location: str | None = None  # with quarantine_reason: line, column or JSON path
    changes: Counter[str] = field(default_factory=Counter)  # values changed, by kind
    duplicates: int = 0  # rows whose trace and span id an earlier row of the object has
    span_keys: list[int] | None = None  # a streamed chunk's ids, for duplicates across chunks

    def quarantine(self, reason: str, error_type: str, location: str | None = None) -> None:
        """Nothing of the object lands: the manifest row keeps the reason."""
        self.quarantine_reason = reason
        self.error_type = error_type
        self.error_location = location
        self.rows, self.rejections, self.copy_text, self.spans = [], [], None, 0
        self.days, self.duplicates, self.span_keys = set(), 0, None

    def quarantine_for(self, exc: BaseException, stage: str) -> None:
        """Quarantine for an error that one object's content caused (never S3 or Postgres)."""
        self.quarantine(*describe_failure(self.obj, exc, stage))

    def seal(self) -> None:
        """Encode the rows as COPY text and keep only what the commit needs.

        After this the object is cheap to hand from a worker process to the
        committing one: one bytes object instead of thousands of row dicts.
        """
        self.spans = len(self.rows)
        self.days = {row["start_time"][:10] for row in self.rows}
        self.copy_text = (
            encode_rows(self.obj.bucket, self.obj.key, self.rows, self.changes)
            if self.rows
            else None
        )
        self.rows = []


@dataclass(frozen=True)
class ObjectResult:
    key: str
    status: str  # loaded | quarantined | skipped
    spans: int = 0
    rejected: int = 0
    reason: str | None = None
    duplicates: int = 0
    changed: int = 0


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

    @property
    def duplicates(self) -> int:
        return sum(result.duplicates for result in self.objects)

    def summary(self) -> dict[str, int]:
        return {
            "objects_loaded": self.count("loaded"),
            "objects_skipped": self.count("skipped"),
            "objects_quarantined": self.count("quarantined"),
            "spans_loaded": self.spans,
            "spans_rejected": self.rejected,
            "spans_duplicated": self.duplicates,
            "values_changed": sum(result.changed for result in self.objects),
        }


def _download_failed(obj: S3Object, exc: Exception) -> InfrastructureError:
    # botocore raises many types; all are infrastructure here
    return InfrastructureError(f"s3://{obj.bucket}/{obj.key}: download failed: {exc}")


def _open(s3: Any, obj: S3Object) -> tuple[Any, str]:
    """The object's streaming body and the etag of exactly those bytes."""
    try:
        response = s3.get_object(Bucket=obj.bucket, Key=obj.key)
        return response["Body"], str(response["ETag"]).strip('"')
    except Exception as exc:
        raise _download_failed(obj, exc) from exc


def fetch(s3: Any, obj: S3Object) -> tuple[bytes, str]:
    """The object's bytes and the etag of exactly those bytes."""
    body, etag = _open(s3, obj)
    try:
        return body.read(), etag
    except Exception as exc:
        raise _download_failed(obj, exc) from exc


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a batch is decoded and written.

    Decoding allocates millions of short-lived containers; the collector would
    scan them over and over (it tripled decoding time when measured). Nothing
    built here forms reference cycles, so plain reference counting frees it.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def prepare(
    obj: S3Object,
    data: bytes,
    etag: str,
    settings: NormalizeSettings,
    max_decompressed: int,
    max_ratio: int = 0,
) -> PreparedObject:
    """Decode and normalise one object; any failure its content causes quarantines it whole.

    Not only BadExport: whatever the decoder or the normaliser raise on one
    object (RecursionError, MemoryError, a bug meeting an input never seen)
    must not stop the objects after it.
    """
    prepared = PreparedObject(obj=obj, etag=etag)
    try:
        limit = expansion_limit(len(data), max_decompressed, max_ratio)
        normalized = normalize_object(obj.key, data, settings, limit=limit)
    except Exception as exc:
        prepared.quarantine_for(exc, "decoding")
        return prepared
    prepared.rows = normalized.rows
    prepared.rejections = normalized.rejections
    prepared.changes = normalized.changes
    prepared.duplicates = count_duplicates(normalized.rows)
    return prepared


def count_duplicates(rows: Sequence[dict[str, Any]]) -> int:
    """Rows that repeat the trace and span id of an earlier row."""
    return len(rows) - len({(row["trace_id"], row["span_id"]) for row in rows})


def span_key(row: dict[str, Any]) -> int:
    """A compact key of a row's ids, to find duplicates across a streamed object's chunks."""
    return int(row["trace_id"][16:], 16) << 64 | int(row["span_id"], 16)


def describe_failure(obj: S3Object, exc: BaseException, stage: str) -> tuple[str, str, str | None]:
    """The reason, error type and location (line, column or JSON path) that a manifest
    row keeps for an object whose content made ``stage`` raise ``exc``."""
    if isinstance(exc, BadExport):
        return str(exc), exc.error_type, exc.location
    if isinstance(exc, psycopg.DataError):  # Postgres refused a value: name its COPY line
        primary = exc.diag.message_primary or str(exc)
        context = exc.diag.context
        where = context.splitlines()[0] if context else None
        reason = f"{obj.key}: Postgres refused a value: {primary}"
        return reason + (f" ({where})" if where else ""), type(exc).__name__, where
    return f"{obj.key}: {type(exc).__name__} while {stage}: {exc}"[:2000], type(exc).__name__, None


def infrastructure(exc: BaseException) -> bool:
    """S3, Postgres or the machine failed: the run must stop and retry, not quarantine.

    Postgres refusing a value (a DataError) is the input's fault, not the server's.
    """
    if isinstance(exc, InfrastructureError):
        return True
    return isinstance(exc, psycopg.Error) and not isinstance(exc, psycopg.DataError)


def _partition_exists(conn: Conn, day: date) -> bool:
    return conn.execute("select to_regclass(%s)", [f"raw.otel_spans_p{day:%Y%m%d}"]).fetchone() != (
        None,
    )


def ensure_partitions(conn: Conn, days: Iterable[date]) -> None:
    """Create the day partitions of raw.otel_spans that do not exist yet."""
    for day in sorted(set(days)):
        if _partition_exists(conn, day):
            continue
        name = f"otel_spans_p{day:%Y%m%d}"
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(hashtext('spancost.otel_spans.partitions'))")
            conn.execute(
                f"create table if not exists raw.{name} partition of raw.otel_spans "
                f"for values from ('{day.isoformat()} 00:00:00+00') "
                f"to ('{(day + timedelta(days=1)).isoformat()} 00:00:00+00')"
            )


def _json(value: Any) -> str:
    return msgspec.json.encode(value, enc_hook=str).decode()


# COPY text format: backslash, tab, newline and carriage return are escaped. NUL
# cannot be stored in text or jsonb at all; it becomes U+FFFD instead of failing the object,
# and each one is counted in the object's changes.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\ufffd"})
# A JSON escape of NUL: \u0000 after an even number of backslashes (an odd number means
# the backslash itself is escaped and the text is a literal "\u0000").
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _copy_text(value: str, changes: Counter[str] | None = None) -> str:
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value or "\0" in value:
        if changes is not None and "\0" in value:
            changes[NUL_REPLACED] += value.count("\0")
        return value.translate(_ESCAPES)
    return value


def storable_json(value: Any, changes: Counter[str] | None = None) -> str:
    """JSON text Postgres stores as jsonb: NUL escapes become U+FFFD (and are counted)."""
    text = _json(value)  # JSON text has no raw control characters, only backslash escapes
    if "\\u0000" in text:
        text, replaced = _JSON_NUL.subn(r"\1\\ufffd", text)
        if changes is not None:
            changes[NUL_REPLACED] += replaced
    return text


def storable_text(value: str) -> str:
    return value.replace("\0", "\ufffd")


_ENCODER = msgspec.json.Encoder(enc_hook=str)
_JSON_NUL_BYTES = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def _copy_json(value: Any, changes: Counter[str] | None = None) -> bytes:
    """The value as JSON for a jsonb column of COPY text, as UTF-8: :func:`storable_json`,
    its backslashes escaped for COPY (JSON text has no other character COPY escapes)."""
    data = _ENCODER.encode(value)
    if b"\\" in data:
        if b"\\u0000" in data:
            data, replaced = _JSON_NUL_BYTES.subn(rb"\1\\ufffd", data)
            if changes is not None:
                changes[NUL_REPLACED] += replaced
        data = data.replace(b"\\", b"\\\\")
    return data


_NULL = b"\\N"


def _slow_head(values: Sequence[Any], changes: Counter[str] | None) -> str:
    """Values as COPY text fields, escaped one by one (None is SQL null)."""
    return "\t".join(
        "\\N"
        if value is None
        else _copy_text(value if value.__class__ is str else str(value), changes)
        for value in values
    )


def encode_rows(
    bucket: str, key: str, rows: Sequence[dict[str, Any]], changes: Counter[str] | None = None
) -> bytes:
    """The rows as COPY text, encoded as UTF-8: source bucket and key, then ROW_COLUMNS
    in order.

    Written by hand rather than by ``Copy.write_row``: this is the hot loop. The
    typed columns are joined first, with NUL standing in for SQL null, and the
    joined text is checked for characters that need escaping in a few scans
    (a NUL of a value's own shows as one NUL more than the row has nulls); only
    a row that has one is escaped value by value, as :func:`_slow_head` does.
    The JSON columns stay the bytes msgspec writes, never decoded to text and
    encoded again. The source bucket and key, and a resource's attributes
    (shared by its spans), are encoded once. Bytes, not text: a worker process
    hands them to the committing one as they are (pickling text would encode
    it), and psycopg sends them as they are.
    """
    source = f"{_copy_text(bucket)}\t{_copy_text(key)}\t".encode()
    if changes is not None and rows and ("\0" in bucket or "\0" in key):
        changes[NUL_REPLACED] += (bucket.count("\0") + key.count("\0")) * len(rows)
    tabs = len(ROW_COLUMNS) - 5  # between the head columns, before the four JSON ones
    resources: dict[int, bytes] = {}
    lines: list[bytes] = []
    append = lines.append
    for row in rows:
        *head_values, events, links, attributes, resource = row.values()
        texts = [
            "\0" if value is None else value if value.__class__ is str else str(value)
            for value in head_values
        ]
        head = "\t".join(texts)
        if (
            head.count("\t") != tabs
            or "\\" in head
            or "\n" in head
            or "\r" in head
            or head.count("\0") != head_values.count(None)  # a NUL that is no null
        ):
            head = _slow_head(head_values, changes)
        else:
            head = head.replace("\0", "\\N")
        encoded = resources.get(id(resource))
        if encoded is None:
            encoded = resources[id(resource)] = _copy_json(resource, changes)
        append(
            b"\t".join(
                (
                    source + head.encode(),
                    _NULL if events is None else _copy_json(events, changes),
                    _NULL if links is None else _copy_json(links, changes),
                    _copy_json(attributes, changes),
                    encoded,
                )
            )
        )
    append(b"")
    return b"\n".join(lines)


def _claim(conn: Conn, obj: S3Object, etag: str) -> bool:
    """Inside the object's transaction: lock its key; False if this etag is already in.

    An object already loaded under another etag was re-uploaded: its rows and
    rejected rows are deleted here, to be replaced.
    """
    conn.execute(
        "select pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"{obj.bucket}/{obj.key}"]
    )
    current = conn.execute(
        "select etag from raw.s3_objects where bucket = %s and key = %s", [obj.bucket, obj.key]
    ).fetchone()
    if current is not None and current[0] == etag:
        return False
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
    return True


def _write(conn: Conn, obj: S3Object, prepared: PreparedObject) -> None:
    """COPY the sealed object's rows and insert its rejected ones."""
    if prepared.copy_text:
        with conn.cursor().copy(_COPY_SQL) as copy:
            copy.write(prepared.copy_text)
    if prepared.rejections:
        conn.cursor().executemany(
            "insert into ops.rejected_spans "
            "(source_bucket, source_key, trace_id, span_id, reason, field, value, span) "
            "values (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    obj.bucket,
                    obj.key,
                    rejection.trace_id and storable_text(rejection.trace_id),
                    rejection.span_id and storable_text(rejection.span_id),
                    storable_text(rejection.reason),
                    storable_text(rejection.field),
                    storable_text(rejection.value),
                    storable_json(rejection.span),
                )
                for rejection in prepared.rejections
            ],
        )


def _record(
    conn: Conn,
    obj: S3Object,
    etag: str,
    result: ObjectResult,
    *,
    error_type: str | None = None,
    error_location: str | None = None,
    changes: Counter[str] | None = None,
    batch_id: str | None = None,
) -> ObjectResult:
    """Write the object's manifest row (same transaction as its rows).

    With a ``batch_id`` the row names its write-audit-publish batch, which must
    still be pending (:func:`spancost.validation.batches.claim_for_write`).
    """
    if batch_id is not None:
        batches.claim_for_write(conn, batch_id)
    counted = {kind: count for kind, count in sorted((changes or {}).items()) if count}
    result = replace(result, changed=sum(counted.values()))
    conn.execute(
        """
        insert into raw.s3_objects
            (bucket, key, etag, size_bytes, last_modified, partition_time,
             status, reason, span_count, rejected_count, loaded_at,
             error_type, error_location, duplicate_count, changed_count, changes, batch_id)
        values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), %s, %s, %s, %s, %s, %s)
        on conflict (bucket, key) do update set
            etag = excluded.etag,
            size_bytes = excluded.size_bytes,
            last_modified = excluded.last_modified,
            partition_time = excluded.partition_time,
            status = excluded.status,
            reason = excluded.reason,
            span_count = excluded.span_count,
            rejected_count = excluded.rejected_count,
            loaded_at = excluded.loaded_at,
            error_type = excluded.error_type,
            error_location = excluded.error_location,
            duplicate_count = excluded.duplicate_count,
            changed_count = excluded.changed_count,
            changes = excluded.changes,
            batch_id = excluded.batch_id
        """,
        [
            obj.bucket,
            obj.key,
            etag,
            obj.size,
            obj.last_modified,
            obj.partition_time,
            result.status,
            result.reason and storable_text(result.reason),
            result.spans,
            result.rejected,
            error_type,
            error_location and storable_text(error_location),
            result.duplicates,
            result.changed,
            storable_json(counted) if counted else None,
            batch_id,
        ],
    )
    if result.status == "quarantined":
        log.warning("quarantined s3://%s/%s: %s", obj.bucket, obj.key, result.reason)
    if result.duplicates:
        log.warning(
            "s3://%s/%s repeats %d spans (same trace and span id); dbt reads each once",
            obj.bucket,
            obj.key,
            result.duplicates,
        )
    return result


def commit_object(
    conn: Conn, prepared: PreparedObject, batch_id: str | None = None
) -> ObjectResult:
    """Land one sealed object in one transaction; skip it if this etag is already in."""
    obj = prepared.obj
    with conn.transaction():
        if not _claim(conn, obj, prepared.etag):
            return ObjectResult(key=obj.key, status="skipped")
        try:
            with conn.transaction():  # a savepoint: a refused value quarantines the object
                _write(conn, obj, prepared)
        except psycopg.DataError as exc:
            prepared.quarantine_for(exc, "writing")
        return _record(
            conn,
            obj,
            prepared.etag,
            ObjectResult(
                key=obj.key,
                status="quarantined" if prepared.quarantine_reason else "loaded",
                spans=prepared.spans,
                rejected=len(prepared.rejections),
                reason=prepared.quarantine_reason,
                duplicates=prepared.duplicates,
            ),
            error_type=prepared.error_type,
            error_location=prepared.error_location,
            changes=prepared.changes,
            batch_id=batch_id,
        )


class _MissingPartitions(Exception):  # noqa: N818 - a signal to create them and start over
    def __init__(self, days: set[str]) -> None:
        super().__init__(", ".join(sorted(days)))
        self.days = days


class _Partitions:
    """The day partitions (UTC days, YYYY-MM-DD) a run knows exist: each is looked up once."""

    def __init__(self) -> None:
        self.days: set[str] = set()

    def ensure(self, conn: Conn, days: Iterable[str]) -> None:
        """Create the partitions of these days that do not exist yet."""
        new = set(days) - self.days
        if new:
            ensure_partitions(conn, (date.fromisoformat(day) for day in new))
            self.days |= new

    def missing(self, conn: Conn, days: Iterable[str]) -> set[str]:
        """The days without a partition, creating none (inside a transaction)."""
        new = set(days) - self.days
        absent = {day for day in new if not _partition_exists(conn, date.fromisoformat(day))}
        self.days |= new - absent
        return absent


def prepare_lines(
    obj: S3Object,
    etag: str,
    lines: Sequence[tuple[int, bytes]],
    settings: NormalizeSettings,
) -> PreparedObject:
    """Decode, normalise and seal a chunk of a streamed object's JSON lines.

    Runs in a worker process (or in the loading thread when there are no
    workers); a line that is not a trace export raises BadExport naming it.
    The chunk keeps its rows' id keys, for duplicates across chunks.
    """
    normalizer = Normalizer(settings)
    requests = [
        decode_line(line, number, obj.key, changes=normalizer.changes) for number, line in lines
    ]
    with gc_paused():
        normalized = normalizer.normalize(requests, where=obj.key)
    part = PreparedObject(
        obj=obj,
        etag=etag,
        rows=normalized.rows,
        rejections=normalized.rejections,
        changes=normalized.changes,
        span_keys=[span_key(row) for row in normalized.rows],
    )
    (sealed,) = _seal([part])
    if sealed.quarantine_reason is not None:
        raise BadExport(
            sealed.quarantine_reason,
            location=sealed.error_location,
            error_type=sealed.error_type,
        )
    return sealed


class _Workers:
    """The worker processes, renewed when one dies (a segfault, the OOM killer).

    A dead worker breaks the whole pool: every future in it fails with
    BrokenProcessPool. The loader then renews the pool and prepares each
    failed batch again in a separate one-process pool, halving it while the
    worker still dies, so an object that kills its worker is found (in about
    2·log2(batch) tries) and quarantined while the others load, and a batch
    whose worker was killed from outside simply loads.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._isolation: ProcessPoolExecutor | None = None
        self.generation = 0

    @staticmethod
    def _new(count: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            count,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_watch_parent,
            initargs=(os.getpid(),),
        )

    def submit(self, task: Callable[..., Any], *args: Any) -> tuple[Future[Any], int]:
        """``task(*args)`` in a worker, and the pool generation it went to."""
        with self._lock:
            for _ in range(2):
                if self._pool is None:
                    self._pool = self._new(self.count)
                try:
                    return self._pool.submit(task, *args), self.generation
                except BrokenProcessPool:
                    self._renew_locked(self.generation)
            raise InfrastructureError("worker processes keep dying before any work reaches them")

    def renew(self, generation: int) -> None:
        """Replace the pool of ``generation`` if it is still the current one."""
        with self._lock:
            self._renew_locked(generation)

    def _renew_locked(self, generation: int) -> None:
        if generation == self.generation and self._pool is not None:
            log.warning("a worker process died: starting new workers")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            self.generation += 1

    def isolated(self, task: Callable[..., Any], *args: Any) -> Any:
        """``task(*args)`` alone in the one-process pool; BrokenProcessPool if it dies."""
        if self._isolation is None:
            self._isolation = self._new(1)
        try:
            return self._isolation.submit(task, *args).result()
        except BrokenProcessPool:
            self._isolation.shutdown(wait=False, cancel_futures=True)
            self._isolation = None
            raise

    def shutdown(self) -> None:
        with self._lock:
            for pool in (self._pool, self._isolation):
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
            self._pool = self._isolation = None


def _run(workers: _Workers | None, task: Callable[..., Any], *args: Any) -> Future[Any]:
    """``task(*args)`` in a worker process, or here when there are no workers."""
    if workers is not None:
        return workers.submit(task, *args)[0]
    done: Future[Any] = Future()
    try:
        done.set_result(task(*args))
    except Exception as exc:
        done.set_exception(exc)
    return done


def _worker_died(obj: S3Object, etag: str, stage: str) -> PreparedObject:
    prepared = PreparedObject(obj=obj, etag=etag)
    prepared.quarantine(
        f"{obj.key}: the worker process died while {stage} it (killed by a signal, "
        "for example the kernel's OOM killer, or crashed); tried twice",
        "WorkerDied",
    )
    return prepared


def stream_object(
    conn: Conn,
    s3: Any,
    obj: S3Object,
    settings: NormalizeSettings,
    options: _Options,
    partitions: _Partitions,
    workers: _Workers | None = None,
) -> ObjectResult:
    """Load one big object in one transaction without holding it in memory.

    The body is downloaded and decompressed here and cut into chunks of
    ``options.stream_chunk_bytes`` of JSON lines, which the workers decode,
    normalise and encode; this thread COPYs the chunks in order, all
    inside the object's transaction: a kill leaves nothing of it. A decode
    error at any line rolls the chunks back and quarantines the object. An
    object that is not JSON Lines (one big or pretty-printed document,
    protobuf, YAML) is loaded whole instead.

    Day partitions cannot be created inside the transaction without blocking
    every other loader. The days around the object's upload are made before
    it starts; when a chunk still needs a new one (spans older than a day),
    the rest of the object is read only to find every missing day, the
    transaction is rolled back, the partitions are made, and the object starts
    again. When a worker
    dies on a chunk, the object is streamed once more with new workers, and
    quarantined if that dies too.
    """
    partitions.ensure(
        conn,
        ((obj.partition_time + timedelta(days=offset)).date().isoformat() for offset in (-1, 0, 1)),
    )
    deaths = 0
    for _ in range(4):
        generation = workers.generation if workers is not None else 0
        try:
            return _stream_once(conn, s3, obj, settings, options, partitions, workers)
        except _MissingPartitions as missing:
            log.info(
                "s3://%s/%s has spans on days without a partition (%s): "
                "creating them and streaming the object again",
                obj.bucket,
                obj.key,
                missing,
            )
            partitions.ensure(conn, missing.days)
        except BrokenProcessPool:
            assert workers is not None
            workers.renew(generation)
            deaths += 1
            if deaths == 2:
                return commit_object(
                    conn, _worker_died(obj, obj.etag, "streaming"), options.batch_id
                )
        except NotJsonLines:
            break
    data, etag = fetch(s3, obj)
    (prepared,) = prepare_batch(
        [(obj, data, etag)],
        settings,
        options.max_decompressed,
        options.max_ratio,
    )
    del data
    partitions.ensure(conn, prepared.days)
    return commit_object(conn, prepared, options.batch_id)


def _stream_once(
    conn: Conn,
    s3: Any,
    obj: S3Object,
    settings: NormalizeSettings,
    options: _Options,
    partitions: _Partitions,
    workers: _Workers | None,
) -> ObjectResult:
    if obj.key.removesuffix(".gz").removesuffix(".zst").endswith((".binpb", ".yaml", ".yml")):
        raise NotJsonLines(obj.key)
    body, etag = _open(s3, obj)

    def download() -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(1 << 20)
        except Exception as exc:
            raise _download_failed(obj, exc) from exc

    absent: set[str] = set()  # days with no partition yet
    spans = rejected = duplicates = 0
    seen: set[int] = set()
    changes: Counter[str] = Counter()
    reason: str | None = None
    error_type: str | None = None
    location: str | None = None
    in_flight: collections.deque[Future[PreparedObject]] = collections.deque()
    most = settings.max_spans_per_object

    def write_finished(keep: int) -> None:
        """COPY the finished chunks, in order, until at most ``keep`` are in flight."""
        nonlocal spans, rejected, duplicates
        while len(in_flight) > keep:
            part = in_flight.popleft().result()
            # Missing days: read on to find them all, then start over once.
            absent.update(partitions.missing(conn, part.days - absent))
            if absent:
                continue
            spans += part.spans
            rejected += len(part.rejections)
            if spans + rejected > most:
                raise too_many_spans(obj.key, most)
            for key in part.span_keys or ():
                if key in seen:
                    duplicates += 1
                else:
                    seen.add(key)
            changes.update(part.changes)
            with gc_paused():
                _write(conn, obj, part)

    with conn.transaction():
        if not _claim(conn, obj, etag):
            body.close()
            return ObjectResult(key=obj.key, status="skipped")
        try:
            with conn.transaction():  # a savepoint: a bad line rolls back every chunk
                limit = expansion_limit(obj.size, options.max_decompressed, options.max_ratio)
                lines = numbered_lines(decompress_stream(download(), where=obj.key, limit=limit))
                chunk: list[tuple[int, bytes]] = []
                size = 0
                checked = False
                for number, line in lines:
                    if not checked:  # is it JSON Lines at all? NotJsonLines if not
                        decode_line(line, number, obj.key, first=True)
                        checked = True
                    chunk.append((number, line))
                    size += len(line)
                    if size >= options.stream_chunk_bytes:
                        args = (obj, etag, chunk, settings)
                        in_flight.append(_run(workers, prepare_lines, *args))
                        chunk, size = [], 0
                        write_finished(keep=options.workers)
                if chunk:
                    in_flight.append(_run(workers, prepare_lines, obj, etag, chunk, settings))
                write_finished(keep=0)
                if absent:
                    raise _MissingPartitions(absent)
        except (_MissingPartitions, NotJsonLines, BrokenProcessPool):
            raise
        except Exception as exc:
            if infrastructure(exc):
                raise
            reason, error_type, location = describe_failure(obj, exc, "streaming")
        finally:
            for future in in_flight:
                future.cancel()
        if reason is not None:
            spans = rejected = duplicates = 0
            changes.clear()
        return _record(
            conn,
            obj,
            etag,
            ObjectResult(
                key=obj.key,
                status="quarantined" if reason else "loaded",
                spans=spans,
                rejected=rejected,
                reason=reason,
                duplicates=duplicates,
            ),
            error_type=error_type,
            error_location=location,
            changes=changes,
            batch_id=options.batch_id,
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


def prepare_batch(
    items: Sequence[tuple[S3Object, bytes, str]],
    settings: NormalizeSettings,
    max_decompressed: int,
    max_ratio: int = 0,
) -> list[PreparedObject]:
    """Decode, normalise and seal a batch of downloaded objects.

    Runs in a worker process (or in the feeding thread when there are no workers).
    """
    with gc_paused():
        batch = [
            prepare(obj, data, etag, settings, max_decompressed, max_ratio)
            for obj, data, etag in items
        ]
    return _seal(batch)


def _seal(batch: list[PreparedObject]) -> list[PreparedObject]:
    """Seal each object; an object that cannot be encoded is quarantined."""
    with gc_paused():
        for prepared in batch:
            try:
                prepared.seal()
            except Exception as exc:
                prepared.quarantine_for(exc, "encoding")
    return batch


def _watch_parent(parent: int) -> None:
    """Worker initializer: exit when the loading process dies (even by SIGKILL)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="spancost-parent-watch", daemon=True).start()


@dataclass
class _Batch:
    """A batch handed to the workers: its future, and what to prepare again if a worker dies."""

    future: Future[list[PreparedObject]]
    items: list[tuple[S3Object, bytes, str]]
    generation: int


_Item = _Batch | S3Object | BaseException | None


def _feed(
    s3: Any,
    objects: Sequence[S3Object],
    settings: NormalizeSettings,
    options: _Options,
    workers: _Workers | None,
    out: queue.Queue[_Item],
    stop: threading.Event,
) -> None:
    """Download the objects in order and hand them to the workers in batches.

    Puts, in order: each batch, each big object (which the committing thread
    streams itself), then None, or the exception that stopped it. The queue's
    bound keeps at most a few batches in flight.
    """
    items: list[tuple[S3Object, bytes, str]] = []
    size = 0

    def submit() -> None:
        nonlocal size
        if not items:
            return
        batch = list(items)
        args = (batch, settings, options.max_decompressed, options.max_ratio)
        items.clear()
        size = 0
        if workers is None:
            _put(out, _Batch(_run(None, prepare_batch, *args), [], 0), stop)
        else:
            future, generation = workers.submit(prepare_batch, *args)
            _put(out, _Batch(future, batch, generation), stop)

    try:
        for obj in objects:
            if stop.is_set():
                return
            if obj.size >= options.stream_bytes:
                submit()
                _put(out, obj, stop)
                continue
            try:
                data, etag = fetch(s3, obj)
            except InfrastructureError:
                submit()  # what was downloaded before the failure still loads
                raise
            items.append((obj, data, etag))
            size += len(data)
            if size >= options.batch_bytes or len(items) >= options.batch_size:
                submit()
        submit()
        _put(out, None, stop)
    except BaseException as exc:  # handed to the committing thread, which raises it
        _put(out, exc, stop)


def _put(out: queue.Queue[_Item], item: _Item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out.put(item, timeout=0.5)
            return
        except queue.Full:
            continue


def _prepared(
    batch: _Batch, workers: _Workers | None, settings: NormalizeSettings, options: _Options
) -> list[PreparedObject]:
    """The batch's sealed objects; when a worker died, the batch is prepared again alone."""
    try:
        return batch.future.result()
    except BrokenProcessPool:
        if workers is None:
            raise
    workers.renew(batch.generation)
    log.warning("a worker died on a batch of %d objects: preparing it again", len(batch.items))
    args = (settings, options.max_decompressed, options.max_ratio)
    return _isolate(workers, batch.items, args)


def _isolate(
    workers: _Workers, items: list[tuple[S3Object, bytes, str]], args: tuple[Any, ...]
) -> list[PreparedObject]:
    """Prepare ``items`` alone in a process; halve them while a worker still dies."""
    try:
        sealed: list[PreparedObject] = workers.isolated(prepare_batch, items, *args)
        return sealed
    except BrokenProcessPool:
        if len(items) == 1:
            obj, _, etag = items[0]
            return [_worker_died(obj, etag, "preparing")]
        middle = len(items) // 2
        return _isolate(workers, items[:middle], args) + _isolate(workers, items[middle:], args)


def load_objects(
    conn: Conn,
    s3: Any,
    objects: Sequence[S3Object],
    settings: NormalizeSettings,
    *,
    max_decompressed: int = 1 << 30,
    max_ratio: int = 0,
    batch_id: str | None = None,
    workers: int = 0,
    batch_size: int = 200,
    batch_bytes: int = 2 << 20,
    stream_bytes: int = 8 << 20,
    stream_chunk_bytes: int = 16 << 20,
) -> LoadReport:
    """Fetch, decode and commit each object; returns what happened to each.

    A feeding thread downloads the objects and hands them, in batches of up to
    ``batch_size`` objects or ``batch_bytes`` downloaded bytes, to ``workers``
    processes (or, with 0, prepares them itself) that decode, normalise
    and encode them. This thread commits the results in order, one
    object per transaction, so Postgres parses one object's COPY while the
    workers prepare the next. A few batches at most are in flight, so memory
    stays bounded however much a run has to load. An object of
    ``stream_bytes`` or more (its size in S3) is streamed instead, in chunks of
    ``stream_chunk_bytes`` of JSON: see :func:`stream_object`.

    Only S3 and Postgres failures stop the run (InfrastructureError, psycopg
    errors): whatever one object's content makes any step raise, and a worker
    process dying on it, quarantines that object and the run goes on.
    ``max_ratio`` (0: off) bounds each object's expansion to that multiple of
    its compressed size, while it inflates.
    """
    if not conn.autocommit:
        # Statements outside a transaction block would open one that every object's
        # transaction then nests in as a savepoint: nothing would commit until the end.
        raise ValueError("load_objects needs an autocommit connection: each object commits alone")
    done = already_loaded(conn, objects)
    results: list[ObjectResult] = [
        ObjectResult(key=obj.key, status="skipped")
        for obj in objects
        if (obj.key, obj.etag) in done
    ]
    todo = [obj for obj in objects if (obj.key, obj.etag) not in done]
    if workers > 0 and multiprocessing.current_process().daemon:
        # A daemonic process (a Celery prefork pool's child, for one) may not start
        # processes: prepare here instead; the executor's processes run tasks side by side.
        log.info("running in a daemonic process: exports are prepared in-process")
        workers = 0
    options = _Options(
        max_decompressed,
        max_ratio,
        batch_size,
        batch_bytes,
        stream_bytes,
        stream_chunk_bytes,
        workers,
        batch_id,
    )
    pool = _Workers(workers) if workers > 0 and todo else None
    batches: queue.Queue[_Item] = queue.Queue(max(workers, 1) + 1)
    stop = threading.Event()
    feeder = threading.Thread(
        target=_feed,
        args=(s3, todo, settings, options, pool, batches, stop),
        name="spancost-feed",
        daemon=True,
    )
    feeder.start()
    partitions = _Partitions()
    try:
        while (item := batches.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, S3Object):
                results.append(stream_object(conn, s3, item, settings, options, partitions, pool))
                continue
            for prepared in _prepared(item, pool, settings, options):
                partitions.ensure(conn, prepared.days)
                with gc_paused():
                    results.append(commit_object(conn, prepared, options.batch_id))
    finally:
        stop.set()
        feeder.join()
        if pool is not None:
            pool.shutdown()
    report = LoadReport(objects=tuple(results))
    log.info("span load: %s", report.summary())
    return report
