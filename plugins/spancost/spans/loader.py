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
import json
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
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
)
from spancost.spans.otlp import NotJsonLines, decode_line, decompress_stream, numbered_lines
from spancost.spans.s3layout import S3Object

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

COLUMNS: tuple[str, ...] = ("source_bucket", "source_key", *ROW_COLUMNS)
_COPY_SQL = f"copy raw.otel_spans ({', '.join(COLUMNS)}) from stdin"


# A validator gets the rows of a batch and returns {row index: reason} for the rows it rejects.
@dataclass(frozen=True)
class _Options:
    max_decompressed: int
    validator: Validator | None
    batch_size: int
    batch_bytes: int
    stream_bytes: int
    stream_chunk_bytes: int
    workers: int


Validator = Callable[[Sequence[dict[str, Any]]], dict[int, tuple[str, str, str]]]


@dataclass
class PreparedObject:
    obj: S3Object
    etag: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    quarantine_reason: str | None = None
    copy_text: str | None = None  # the rows as COPY text, made ahead of the commit
    spans: int = 0  # rows sealed into copy_text
    days: set[str] = field(default_factory=set)  # UTC days (YYYY-MM-DD) the rows start on

    def seal(self) -> None:
        """Encode the rows as COPY text and keep only what the commit needs.

        After this the object is cheap to hand from a worker process to the
        committing one: one string instead of thousands of row dicts.
        """
        self.spans = len(self.rows)
        self.days = {row["start_time"][:10] for row in self.rows}
        self.copy_text = (
            encode_rows(self.obj.bucket, self.obj.key, self.rows) if self.rows else None
        )
        self.rows = []


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
    obj: S3Object, data: bytes, etag: str, settings: NormalizeSettings, max_decompressed: int
) -> PreparedObject:
    """Decode and normalise one object; a decode failure quarantines it whole."""
    prepared = PreparedObject(obj=obj, etag=etag)
    try:
        normalized = normalize_object(obj.key, data, settings, limit=max_decompressed)
    except BadExport as exc:
        prepared.quarantine_reason = str(exc)
        return prepared
    prepared.rows = normalized.rows
    prepared.rejections = normalized.rejections
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
# cannot be stored in text or jsonb at all; it becomes U+FFFD instead of failing the object.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\ufffd"})


def _copy_text(value: str) -> str:
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value or "\0" in value:
        return value.translate(_ESCAPES)
    return value


def _copy_json(value: Any) -> str:
    text = _json(value)  # JSON text has no raw control characters, only backslash escapes
    if "\\u0000" in text:
        text = text.replace("\\u0000", "\\ufffd")
    return text.replace("\\", "\\\\")


_HEAD = len(ROW_COLUMNS) - 4  # the columns before events, links, attributes, resource_attributes
_HEAD_TABS = _HEAD + 1  # bucket, key, then the head columns
_NULL = "\\N"


def _slow_head(values: Sequence[Any]) -> str:
    return "\t".join(
        "\\N" if value is None else _copy_text(value if value.__class__ is str else str(value))
        for value in values
    )


def encode_rows(bucket: str, key: str, rows: Sequence[dict[str, Any]]) -> str:
    """The rows as COPY text: source bucket and key, then ROW_COLUMNS in order.

    Written by hand rather than by ``Copy.write_row``: this is the hot loop. The
    typed columns are joined first, with NUL standing in for SQL null (NUL can
    never be stored, so it cannot be a real value), and the joined text is
    checked for characters that need escaping in a few scans; only a row that
    has one is escaped value by value. A resource's attributes, shared by its
    spans, are encoded once.
    """
    source = [bucket, key]
    resources: dict[int, str] = {}
    lines: list[str] = []
    for row in rows:
        values = list(row.values())
        head_values = source + values[:_HEAD]
        texts = [
            "\0" if value is None else value if value.__class__ is str else str(value)
            for value in head_values
        ]
        head = "\t".join(texts)
        if (
            head.count("\t") != _HEAD_TABS
            or "\\" in head
            or "\n" in head
            or "\r" in head
            or head.count("\0") != texts.count("\0")
        ):
            head = _slow_head(head_values)
        else:
            head = head.replace("\0", "\\N")
        events, links, attributes, resource = values[_HEAD:]
        encoded = resources.get(id(resource))
        if encoded is None:
            encoded = resources[id(resource)] = _copy_json(resource)
        lines.append(
            "\t".join(
                (
                    head,
                    _NULL if events is None else _copy_json(events),
                    _NULL if links is None else _copy_json(links),
                    _copy_json(attributes),
                    encoded,
                )
            )
        )
    lines.append("")
    return "\n".join(lines)


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


def _record(conn: Conn, obj: S3Object, etag: str, result: ObjectResult) -> ObjectResult:
    """Write the object's manifest row (same transaction as its rows)."""
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
            etag,
            obj.size,
            obj.last_modified,
            obj.partition_time,
            result.status,
            result.reason,
            result.spans,
            result.rejected,
        ],
    )
    if result.status == "quarantined":
        log.warning("quarantined s3://%s/%s: %s", obj.bucket, obj.key, result.reason)
    return result


def commit_object(conn: Conn, prepared: PreparedObject) -> ObjectResult:
    """Land one sealed object in one transaction; skip it if this etag is already in."""
    obj = prepared.obj
    with conn.transaction():
        if not _claim(conn, obj, prepared.etag):
            return ObjectResult(key=obj.key, status="skipped")
        _write(conn, obj, prepared)
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
            ),
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
    validator: Validator | None,
) -> PreparedObject:
    """Decode, normalise, validate and seal a chunk of a streamed object's JSON lines.

    Runs in a worker process (or in the loading thread when there are no
    workers); a line that is not a trace export raises BadExport naming it.
    """
    requests = [decode_line(line, number, obj.key) for number, line in lines]
    with gc_paused():
        normalized = Normalizer(settings).normalize(requests)
    part = PreparedObject(
        obj=obj, etag=etag, rows=normalized.rows, rejections=normalized.rejections
    )
    (sealed,) = _validate_and_seal([part], validator)
    return sealed


def _run(pool: ProcessPoolExecutor | None, task: Callable[..., Any], *args: Any) -> Future[Any]:
    """``task(*args)`` in a worker process, or here when there is no pool."""
    if pool is not None:
        return pool.submit(task, *args)
    done: Future[Any] = Future()
    try:
        done.set_result(task(*args))
    except Exception as exc:
        done.set_exception(exc)
    return done


def stream_object(
    conn: Conn,
    s3: Any,
    obj: S3Object,
    settings: NormalizeSettings,
    options: _Options,
    partitions: _Partitions,
    pool: ProcessPoolExecutor | None = None,
) -> ObjectResult:
    """Load one big object in one transaction without holding it in memory.

    The body is downloaded and decompressed here and cut into chunks of
    ``options.stream_chunk_bytes`` of JSON lines, which the workers decode,
    normalise, validate and encode; this thread COPYs the chunks in order, all
    inside the object's transaction: a kill leaves nothing of it. A decode
    error at any line rolls the chunks back and quarantines the object. An
    object that is not JSON Lines (one big or pretty-printed document,
    protobuf, YAML) is loaded whole instead.

    Day partitions cannot be created inside the transaction without blocking
    every other loader. The days around the object's upload are made before
    it starts; when a chunk still needs a new one (spans older than a day),
    the rest of the object is read only to find every missing day, the
    transaction is rolled back, the partitions are made, and the object starts
    again (its validation results are then recorded twice).
    """
    partitions.ensure(
        conn,
        ((obj.partition_time + timedelta(days=offset)).date().isoformat() for offset in (-1, 0, 1)),
    )
    for _ in range(3):
        try:
            return _stream_once(conn, s3, obj, settings, options, partitions, pool)
        except _MissingPartitions as missing:
            log.info(
                "s3://%s/%s has spans on days without a partition (%s): "
                "creating them and streaming the object again",
                obj.bucket,
                obj.key,
                missing,
            )
            partitions.ensure(conn, missing.days)
        except NotJsonLines:
            break
    data, etag = fetch(s3, obj)
    (prepared,) = prepare_batch(
        [(obj, data, etag)], settings, options.max_decompressed, options.validator
    )
    del data
    partitions.ensure(conn, prepared.days)
    return commit_object(conn, prepared)


def _stream_once(
    conn: Conn,
    s3: Any,
    obj: S3Object,
    settings: NormalizeSettings,
    options: _Options,
    partitions: _Partitions,
    pool: ProcessPoolExecutor | None,
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
    spans = rejected = 0
    reason: str | None = None
    in_flight: collections.deque[Future[PreparedObject]] = collections.deque()

    def write_finished(keep: int) -> None:
        """COPY the finished chunks, in order, until at most ``keep`` are in flight."""
        nonlocal spans, rejected
        while len(in_flight) > keep:
            part = in_flight.popleft().result()
            # Missing days: read on to find them all, then start over once.
            absent.update(partitions.missing(conn, part.days - absent))
            if absent:
                continue
            with gc_paused():
                _write(conn, obj, part)
            spans += part.spans
            rejected += len(part.rejections)

    with conn.transaction():
        if not _claim(conn, obj, etag):
            body.close()
            return ObjectResult(key=obj.key, status="skipped")
        try:
            with conn.transaction():  # a savepoint: a bad line rolls back every chunk
                lines = numbered_lines(
                    decompress_stream(download(), where=obj.key, limit=options.max_decompressed)
                )
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
                        args = (obj, etag, chunk, settings, options.validator)
                        in_flight.append(_run(pool, prepare_lines, *args))
                        chunk, size = [], 0
                        write_finished(keep=options.workers)
                if chunk:
                    in_flight.append(
                        _run(pool, prepare_lines, obj, etag, chunk, settings, options.validator)
                    )
                write_finished(keep=0)
                if absent:
                    raise _MissingPartitions(absent)
        except BadExport as exc:
            reason, spans, rejected = str(exc), 0, 0
        finally:
            for future in in_flight:
                future.cancel()
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
            ),
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
    validator: Validator | None,
) -> list[PreparedObject]:
    """Decode, normalise, validate and seal a batch of downloaded objects.

    Runs in a worker process (or in the feeding thread when there are no
    workers); the validator sees the whole batch at once.
    """
    with gc_paused():
        batch = [prepare(obj, data, etag, settings, max_decompressed) for obj, data, etag in items]
    return _validate_and_seal(batch, validator)


def _validate_and_seal(
    batch: list[PreparedObject], validator: Validator | None
) -> list[PreparedObject]:
    """Run the validator on the batch as a whole, then seal each object."""
    if validator is not None:
        apply_validator(batch, validator)
    with gc_paused():
        for prepared in batch:
            prepared.seal()
    return batch


def _watch_parent(parent: int) -> None:
    """Worker initializer: exit when the loading process dies (even by SIGKILL)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="spancost-parent-watch", daemon=True).start()


_Item = Future[list[PreparedObject]] | S3Object | BaseException | None


def _feed(
    s3: Any,
    objects: Sequence[S3Object],
    settings: NormalizeSettings,
    options: _Options,
    pool: ProcessPoolExecutor | None,
    out: queue.Queue[_Item],
    stop: threading.Event,
) -> None:
    """Download the objects in order and hand them to the workers in batches.

    Puts, in order: a future of each batch's sealed objects, each big object
    (which the committing thread streams itself), then None, or the exception
    that stopped it. The queue's bound keeps at most a few batches in flight.
    """
    items: list[tuple[S3Object, bytes, str]] = []
    size = 0

    def submit() -> None:
        nonlocal size
        if not items:
            return
        args = (list(items), settings, options.max_decompressed, options.validator)
        items.clear()
        size = 0
        _put(out, _run(pool, prepare_batch, *args), stop)

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


def load_objects(
    conn: Conn,
    s3: Any,
    objects: Sequence[S3Object],
    settings: NormalizeSettings,
    *,
    max_decompressed: int = 1 << 30,
    validator: Validator | None = None,
    workers: int = 0,
    batch_size: int = 200,
    batch_bytes: int = 2 << 20,
    stream_bytes: int = 8 << 20,
    stream_chunk_bytes: int = 16 << 20,
) -> LoadReport:
    """Fetch, decode, validate and commit each object; returns what happened to each.

    A feeding thread downloads the objects and hands them, in batches of up to
    ``batch_size`` objects or ``batch_bytes`` downloaded bytes, to ``workers``
    processes (or, with 0, prepares them itself) that decode, normalise,
    validate and encode them. This thread commits the results in order, one
    object per transaction, so Postgres parses one object's COPY while the
    workers prepare the next. A few batches at most are in flight, so memory
    stays bounded however much a run has to load. An object of
    ``stream_bytes`` or more (its size in S3) is streamed instead, in chunks of
    ``stream_chunk_bytes`` of JSON: see :func:`stream_object`.
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
    options = _Options(
        max_decompressed,
        validator,
        batch_size,
        batch_bytes,
        stream_bytes,
        stream_chunk_bytes,
        workers,
    )
    pool = (
        ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_watch_parent,
            initargs=(os.getpid(),),
        )
        if workers > 0 and todo
        else None
    )
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
            for prepared in item.result():
                partitions.ensure(conn, prepared.days)
                with gc_paused():
                    results.append(commit_object(conn, prepared))
    finally:
        stop.set()
        feeder.join()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    report = LoadReport(objects=tuple(results))
    log.info("span load: %s", report.summary())
    return report
