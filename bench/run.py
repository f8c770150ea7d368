"""``make bench``: span ingestion speed, beside the baselines, measured in one run.

Figures (each the median of ``BENCH_REPEATS`` runs, default 3):

* spancost end to end: S3 (local moto server, a separate process) → decode →
  normalise → COPY → committed rows, via ``spancost ingest-spans`` in a child
  process (so its peak memory is its own), with validation on (write-audit-publish:
  the Great Expectations audit in SQL before the batch is published) and off, and
  the audit step alone;
* (a) Postgres server-side ``COPY FROM`` a file holding the same rows: the limit;
* (b) a naive loader: ``json.loads`` of each object plus ``executemany`` INSERTs;
* (c) dlt loading the same flattened spans into Postgres.

The baselines (b) and (c) are slow, so they load a sample (``BENCH_SAMPLE_SPANS``)
and are compared per span. Results go to ``bench/RESULTS.md``.

Then the transform benchmark (``bench/transform.py``: dbt build and BI queries as
history grows) writes its own section of the same file. ``python -m bench.run ingest``
or ``python -m bench.run transform`` (or ``BENCH_ONLY=ingest|transform``) runs one
part alone and rewrites only its section.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import psycopg

from bench.data import PREFIX, START, empty_bucket, objects
from spancost import db, settings
from spancost.db import embedded
from spancost.local import endpoints
from spancost.spans.loader import COLUMNS, encode_rows
from spancost.spans.normalize import NormalizeSettings, normalize_object

REPO = Path(__file__).resolve().parents[1]
BUCKET = "spancost-bench"
TOTAL = int(os.environ.get("BENCH_SPANS", "1000000"))
SAMPLE = int(os.environ.get("BENCH_SAMPLE_SPANS", "40000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))


def log(message: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def fresh_database(server_url: str) -> str:
    name = f"spancost_bench_{uuid.uuid4().hex[:8]}"
    admin = urlsplit(server_url)._replace(path="/postgres").geturl()
    embedded.create_database(admin, name)
    url = urlsplit(server_url)._replace(path=f"/{name}").geturl()
    with db.connect(url) as conn:
        db.apply_schema(conn)
    return url


def drop_database(server_url: str, url: str) -> None:
    admin = urlsplit(server_url)._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{urlsplit(url).path[1:]}" with (force)')


def _tree_rss(root: int) -> int:
    """Resident bytes of a process and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sum(rss.get(pid, 0) for pid in tree)


def timed_child(args: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak resident memory (bytes) of a child process and its workers.

    The memory is sampled every 0.1 s over the whole process tree, so worker
    processes count with the loader.
    """
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"{args} failed: {errors.read().decode(errors='replace')}")
    return elapsed, peak


def spancost_end_to_end(
    server_url: str,
    endpoint: str,
    *,
    prefix: str = PREFIX,
    validate: bool = False,
    keep: bool = False,
    **extra_env: str,
) -> tuple[float, int, int]:
    """One ``spancost ingest-spans`` of the day: (seconds, peak RSS, spans landed).

    With ``validate`` the spans land as a pending batch and are audited by Great
    Expectations before the command ends (write-audit-publish), so the time
    includes the audit. ``keep`` leaves the database for the caller (``kept_url``).
    """
    url = fresh_database(server_url)
    global kept_url
    env = {
        **os.environ,
        "SPANCOST_DATABASE_URL": url,
        "SPANCOST_SPANS_BUCKET": BUCKET,
        "SPANCOST_SPANS_PREFIX": prefix,
        "SPANCOST_USER_ID_SALT": "bench",
        "SPANCOST_VALIDATE": "1" if validate else "0",
        "AWS_ENDPOINT_URL": endpoint,
        **extra_env,
    }
    end = START + timedelta(days=1)
    try:
        seconds, rss = timed_child(
            [
                sys.executable,
                "-m",
                "spancost.cli",
                "ingest-spans",
                "--start",
                START.isoformat(),
                "--end",
                end.isoformat(),
            ],
            env,
        )
        with psycopg.connect(url) as conn:
            loaded = int(conn.execute("select count(*) from raw.otel_spans").fetchone()[0])  # type: ignore[index]
            if validate:
                published = conn.execute(
                    "select count(*) from ops.load_batches where status = 'published'"
                ).fetchone()
                assert published and published[0] == 1, "the day's batch was not published"
    finally:
        if keep:
            kept_url = url
        else:
            drop_database(server_url, url)
    return seconds, rss, loaded


kept_url = ""


def audit_step(url: str) -> tuple[list[float], int, list[float], int]:
    """The audit alone, in this process (GX imported once before timing).

    Times the Great Expectations checkpoint on the whole day's batch, and on one
    export (about half an hour of demo traffic) as a batch of its own.
    """
    from spancost.validation import audit

    now = datetime.now(UTC)
    context = audit.load_context(url)

    def again(batch_id: str) -> float:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "update ops.load_batches set status = 'pending' where batch_id = %s", [batch_id]
            )
        started = time.perf_counter()
        (done,) = audit.audit(url, "otel_spans", None, now=now, context=context)
        assert done.status == "published", done.reason
        return time.perf_counter() - started

    with psycopg.connect(url, autocommit=True) as conn:
        (day_batch, day_rows), *_ = conn.execute(
            "select batch_id, row_count from ops.load_batches"
        ).fetchall()
        first_key, interval_rows = conn.execute(
            "select key, span_count from raw.s3_objects order by key limit 1"
        ).fetchone()  # type: ignore[misc]
    day = [again(day_batch) for _ in range(REPEATS)]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "insert into ops.load_batches (batch_id, dataset, run_id)"
            " values ('bench-interval', 'otel_spans', 'bench-interval')"
        )
        conn.execute(
            "update raw.s3_objects set batch_id = 'bench-interval' where key = %s", [first_key]
        )
    interval = [again("bench-interval") for _ in range(REPEATS)]
    return day, int(day_rows), interval, int(interval_rows)


ONE_PREFIX = "bench/one"


def upload_as_one_object(s3: Any, bodies: list[tuple[str, bytes]]) -> str:
    """Every export as one gzip JSON Lines object, a request per line (the file exporter's)."""
    object_key = f"{ONE_PREFIX}/{START:year=%Y/month=%m/day=%d/hour=%H/minute=%M}/traces_1.jsonl.gz"
    with tempfile.TemporaryFile() as spool:
        with gzip.GzipFile(fileobj=spool, mode="wb", compresslevel=1, mtime=0) as out:
            for _, body in bodies:
                out.write(gzip.decompress(body).strip().replace(b"\n", b" ") + b"\n")
        spool.seek(0)
        s3.upload_fileobj(spool, BUCKET, object_key)
    return object_key


def copy_file(bodies: list[tuple[str, bytes]], path: Path) -> list[tuple[str, int, int]]:
    """Write the rows spancost would COPY, as a COPY text file.

    Returns (key, offset, row count) of each object's run of lines in the file.
    """
    settings = NormalizeSettings(user_id_salt="bench")
    extents = []
    with open(path, "wb") as out:
        for key, body in bodies:
            normalized = normalize_object(key, body, settings)
            offset = out.tell()
            out.write(encode_rows(BUCKET, key, normalized.rows))
            extents.append((key, offset, len(normalized.rows)))
    return extents


def _partitions(conn: Any) -> None:
    from spancost.spans.loader import ensure_partitions

    ensure_partitions(conn, [START.date() + timedelta(days=offset) for offset in (-1, 0, 1)])


def server_copy(server_url: str, path: Path) -> float:
    url = fresh_database(server_url)
    try:
        with db.connect(url, autocommit=True) as conn:
            _partitions(conn)
            started = time.perf_counter()
            with conn.transaction():
                conn.execute(
                    f"copy raw.otel_spans ({', '.join(COLUMNS)}) from '{path}'"  # type: ignore[arg-type]
                )
            return time.perf_counter() - started
    finally:
        drop_database(server_url, url)


def wire_copy(server_url: str, path: Path, extents: list[tuple[str, int, int]]) -> float:
    """spancost's commit path alone: each object's ready COPY text sent over the wire in
    its own transaction with its advisory lock and manifest row; no decoding at all."""
    from spancost.spans.loader import PreparedObject, commit_object
    from spancost.spans.s3layout import S3Object

    url = fresh_database(server_url)
    try:
        with db.connect(url, autocommit=True) as conn, open(path, "rb") as source:
            _partitions(conn)
            started = time.perf_counter()
            for index, (key, offset, count) in enumerate(extents):
                end = extents[index + 1][1] if index + 1 < len(extents) else None
                source.seek(offset)
                text = source.read(None if end is None else end - offset)
                obj = S3Object(BUCKET, key, "etag", len(text), None, START)
                prepared = PreparedObject(obj=obj, etag="etag", rows=[{}] * count, copy_text=text)
                commit_object(conn, prepared)
            return time.perf_counter() - started
    finally:
        drop_database(server_url, url)


def flatten_naively(key: str, body: bytes) -> list[dict[str, Any]]:
    """What a user's first script does: json.loads and pick the attributes by hand."""
    request = json.loads(gzip.decompress(body))
    rows = []
    for resource_spans in request.get("resourceSpans", []):
        resource = {
            kv["key"]: next(iter(kv["value"].values()), None)
            for kv in resource_spans.get("resource", {}).get("attributes", [])
        }
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                attrs = {
                    kv["key"]: next(iter(kv["value"].values()), None)
                    for kv in span.get("attributes", [])
                }
                rows.append(
                    {
                        "source_key": key,
                        "trace_id": span["traceId"],
                        "span_id": span["spanId"],
                        "name": span.get("name", ""),
                        "start_time": datetime.fromtimestamp(
                            int(span["startTimeUnixNano"]) / 1e9, UTC
                        ),
                        "end_time": datetime.fromtimestamp(int(span["endTimeUnixNano"]) / 1e9, UTC),
                        "service_name": resource.get("service.name"),
                        "request_model": attrs.get("gen_ai.request.model"),
                        "input_tokens": attrs.get("gen_ai.usage.input_tokens"),
                        "output_tokens": attrs.get("gen_ai.usage.output_tokens"),
                        "pipeline_id": attrs.get("pipeline.id"),
                        "attributes": json.dumps(attrs),
                    }
                )
    return rows


NAIVE_DDL = """
create table if not exists public.naive_spans (
    source_key text, trace_id text, span_id text, name text,
    start_time timestamptz, end_time timestamptz, service_name text, request_model text,
    input_tokens bigint, output_tokens bigint, pipeline_id text, attributes jsonb
)
"""


def naive_loader(server_url: str, bodies: list[tuple[str, bytes]]) -> tuple[float, int]:
    url = fresh_database(server_url)
    try:
        with psycopg.connect(url) as conn:
            conn.execute(NAIVE_DDL)
            conn.commit()
            started = time.perf_counter()
            rows = 0
            for key, body in bodies:
                flat = flatten_naively(key, body)
                conn.cursor().executemany(
                    "insert into public.naive_spans values "
                    "(%(source_key)s, %(trace_id)s, %(span_id)s, %(name)s, %(start_time)s,"
                    " %(end_time)s, %(service_name)s, %(request_model)s, %(input_tokens)s,"
                    " %(output_tokens)s, %(pipeline_id)s, %(attributes)s)",
                    flat,
                )
                conn.commit()
                rows += len(flat)
            return time.perf_counter() - started, rows
    finally:
        drop_database(server_url, url)


def dlt_loader(server_url: str, bodies: list[tuple[str, bytes]]) -> tuple[float, int]:
    import dlt

    url = fresh_database(server_url)
    workdir = tempfile.mkdtemp(prefix="spancost-dlt-")
    os.environ["DLT_DATA_DIR"] = workdir
    os.environ["RUNTIME__LOG_LEVEL"] = "WARNING"
    try:
        started = time.perf_counter()
        rows = 0

        def spans() -> Any:
            nonlocal rows
            for key, body in bodies:
                flat = flatten_naively(key, body)
                rows += len(flat)
                yield from flat

        pipeline = dlt.pipeline(
            pipeline_name=f"spancost_bench_{uuid.uuid4().hex[:6]}",
            destination=dlt.destinations.postgres(credentials=url),
            dataset_name="dlt_spans",
            pipelines_dir=workdir,
        )
        pipeline.run(spans(), table_name="spans")
        return time.perf_counter() - started, rows
    finally:
        drop_database(server_url, url)


def median_of(runs: int, measure: Callable[[], tuple[float, ...]]) -> list[tuple[float, ...]]:
    return [measure() for _ in range(runs)]


def main() -> None:
    only = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("BENCH_ONLY", "")
    if only not in ("", "ingest", "transform"):
        raise SystemExit(f"usage: python -m bench.run [ingest|transform], got {only!r}")
    if only != "transform":
        ingest()
    if only != "ingest":
        from bench import transform

        transform.main()


def ingest() -> None:
    home = settings.home()
    server_url = db.database_url()
    endpoint = endpoints.start(endpoints.LocalAws(home / "bench"))
    endpoints.use(endpoint)
    s3 = boto3.client("s3")
    empty_bucket(s3, BUCKET)

    log(f"generating {TOTAL:,} spans")
    bodies: list[tuple[str, bytes]] = []
    raw_bytes = 0
    total_spans = 0
    for obj in objects(TOTAL):
        total_spans += obj.spans
        s3.put_object(Bucket=BUCKET, Key=obj.key, Body=obj.body, ContentEncoding="gzip")
        bodies.append((obj.key, obj.body))
        raw_bytes += obj.raw_bytes
    gz_bytes = sum(len(body) for _, body in bodies)
    log(f"{len(bodies)} objects, {raw_bytes / 1e6:.0f} MB of JSON ({gz_bytes / 1e6:.0f} MB gzip)")

    e2e = []
    for attempt in range(REPEATS):
        seconds, rss, loaded = spancost_end_to_end(server_url, endpoint)
        log(
            f"spancost end to end #{attempt + 1}: {loaded / seconds:,.0f} spans/s, "
            f"peak {rss / 2**20:.0f} MiB"
        )
        assert loaded == total_spans, f"loaded {loaded} of {total_spans}"
        e2e.append((seconds, rss))

    audited = []
    for attempt in range(REPEATS):
        last = attempt == REPEATS - 1
        seconds, rss, loaded = spancost_end_to_end(server_url, endpoint, validate=True, keep=last)
        assert loaded == total_spans, f"loaded {loaded} of {total_spans}"
        log(
            f"spancost with write-audit-publish #{attempt + 1}: {loaded / seconds:,.0f} spans/s, "
            f"peak {rss / 2**20:.0f} MiB"
        )
        audited.append((seconds, rss))
    try:
        audit_day, day_rows, audit_interval, interval_rows = audit_step(kept_url)
    finally:
        drop_database(server_url, kept_url)
    log(
        f"audit alone: {statistics.median(audit_day):.2f} s for {day_rows:,} spans, "
        f"{statistics.median(audit_interval):.2f} s for {interval_rows:,}"
    )
    gate_rate = statistics.median(total_spans / seconds for seconds, _ in audited)
    gate_rss = max(rss for _, rss in audited)

    one_key = upload_as_one_object(s3, bodies)
    seconds, one_rss, loaded = spancost_end_to_end(
        server_url,
        endpoint,
        prefix=ONE_PREFIX,
        SPANCOST_MAX_DECOMPRESSED_BYTES=str(4 << 30),  # the 1 GiB default would refuse it
        SPANCOST_MAX_SPANS_PER_OBJECT=str(2 * TOTAL),  # and the 1M-span default too
    )
    assert loaded == total_spans, f"loaded {loaded} of {total_spans} from {one_key}"
    one_rate = total_spans / seconds
    s3.delete_object(Bucket=BUCKET, Key=one_key)
    log(f"one big object: {one_rate:,.0f} spans/s, peak {one_rss / 2**20:.0f} MiB")

    folder = Path(tempfile.mkdtemp(prefix="spancost-bench-"))
    folder.chmod(0o755)
    copy_path = folder / "spans.copy"
    extents = copy_file(bodies, copy_path)
    rows = sum(count for _, _, count in extents)
    copy_path.chmod(0o644)
    copies = []
    for attempt in range(REPEATS):
        seconds = server_copy(server_url, copy_path)
        log(f"server-side COPY #{attempt + 1}: {rows / seconds:,.0f} rows/s")
        copies.append(seconds)
    wires = []
    for attempt in range(REPEATS):
        seconds = wire_copy(server_url, copy_path, extents)
        log(f"COPY over the wire, object by object #{attempt + 1}: {rows / seconds:,.0f} rows/s")
        wires.append(seconds)
    copy_path.unlink()

    sample: list[tuple[str, bytes]] = []
    count = 0
    for key, body in bodies:
        if count >= SAMPLE:
            break
        sample.append((key, body))
        count += len(normalize_object(key, body, NormalizeSettings(user_id_salt="bench")).rows)
    naive = []
    for attempt in range(REPEATS):
        seconds, n = naive_loader(server_url, sample)
        log(f"naive loader #{attempt + 1}: {n / seconds:,.0f} spans/s")
        naive.append(n / seconds)
    dlt_rates = []
    for attempt in range(REPEATS):
        seconds, n = dlt_loader(server_url, sample)
        log(f"dlt #{attempt + 1}: {n / seconds:,.0f} spans/s")
        dlt_rates.append(n / seconds)

    spancost_rate = statistics.median(total_spans / seconds for seconds, _ in e2e)
    copy_rate = statistics.median(rows / seconds for seconds in copies)
    wire_rate = statistics.median(rows / seconds for seconds in wires)
    peak = max(rss for _, rss in e2e)
    write_results(
        spancost_rate=spancost_rate,
        gate_rate=gate_rate,
        gate_rss=gate_rss,
        audit_day=statistics.median(audit_day),
        day_rows=day_rows,
        audit_interval=statistics.median(audit_interval),
        interval_rows=interval_rows,
        wire_rate=wire_rate,
        one_rate=one_rate,
        one_rss=one_rss,
        copy_rate=copy_rate,
        naive_rate=statistics.median(naive),
        dlt_rate=statistics.median(dlt_rates),
        peak_rss=peak,
        raw_bytes=raw_bytes,
        gz_bytes=gz_bytes,
        objects=len(bodies),
        sample=count,
        total_spans=total_spans,
    )


def write_results(
    *,
    spancost_rate: float,
    gate_rate: float,
    gate_rss: int,
    audit_day: float,
    day_rows: int,
    audit_interval: float,
    interval_rows: int,
    wire_rate: float,
    one_rate: float,
    one_rss: int,
    copy_rate: float,
    naive_rate: float,
    dlt_rate: float,
    peak_rss: int,
    raw_bytes: int,
    gz_bytes: int,
    objects: int,
    sample: int,
    total_spans: int,
) -> None:
    path = REPO / "bench" / "RESULTS.md"
    lines = [
        "# Benchmark results",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make bench` on "
        f"{platform.machine()} with {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"PostgreSQL from `{db.redact(db.database_url()).rsplit('@', 1)[-1]}`. "
        f"Every figure is the median of {REPEATS} runs in the same session; the machine is "
        "shared, so compare the ratios, not the absolute numbers.",
        "",
        f"Data: {total_spans:,} GenAI spans (demo traffic from the OpenTelemetry SDK, "
        f"replicated with fresh ids) in {objects} gzip OTLP/JSON objects: "
        f"{raw_bytes / 1e6:,.0f} MB of JSON, "
        f"{raw_bytes / total_spans:,.0f} bytes per span, {gz_bytes / 1e6:,.0f} MB compressed.",
        "",
        "| what | spans/s | ÷ server-side COPY | spancost ÷ this |",
        "|---|---:|---:|---:|",
        f"| **spancost, validation on (the default)**: S3 → decode → normalise → COPY → "
        f"commit → Great Expectations audit in SQL → publish | {gate_rate:,.0f} | "
        f"{gate_rate / copy_rate:.2f} | {spancost_rate / gate_rate:.2f} |",
        f"| spancost, validation off (`SPANCOST_VALIDATE=0`) | "
        f"{spancost_rate:,.0f} | {spancost_rate / copy_rate:.2f} | 1.00 |",
        f"| spancost, the same spans as **one** {raw_bytes / 2**30:.2f} GiB JSON Lines object "
        f"(streamed), 1 run | {one_rate:,.0f} | {one_rate / copy_rate:.2f} | "
        f"{spancost_rate / one_rate:.2f} |",
        f"| (a) server-side `COPY FROM` a file of the same rows (the limit) | {copy_rate:,.0f} | "
        f"1.00 | {spancost_rate / copy_rate:.2f} |",
        f"| (a′) the same rows' COPY text sent object by object, each in its own transaction "
        f"with its manifest row (spancost's commit path, no decoding) | {wire_rate:,.0f} | "
        f"{wire_rate / copy_rate:.2f} | {spancost_rate / wire_rate:.2f} |",
        f"| (b) naive: `json.loads` + `executemany` ({sample:,}-span sample) | {naive_rate:,.0f} | "
        f"{naive_rate / copy_rate:.2f} | {spancost_rate / naive_rate:.2f} |",
        f"| (c) dlt into Postgres, same flattened spans ({sample:,}-span sample) | "
        f"{dlt_rate:,.0f} | {dlt_rate / copy_rate:.2f} | {spancost_rate / dlt_rate:.2f} |",
        "",
        "What each figure includes:",
        "",
        "* spancost: a fresh `spancost ingest-spans` process (start-up included) that lists and "
        "downloads the objects from the local S3 endpoint (moto, another process on the same "
        "two cores), decodes (in worker processes, as many as cores), normalises 34 typed "
        "columns plus four jsonb columns, strips message "
        "content, hashes user ids, applies the row rules, and commits each object in its own "
        "transaction with its manifest row.",
        "* validation on: the same, the spans landing as one pending batch, then the "
        "Great Expectations checkpoint `otel_spans` (`expectations/`) on that batch, every "
        "metric computed by SQL in Postgres through `ops.audit_otel_spans`, then the batch "
        "published. The audit alone (GX already imported, median of "
        f"{REPEATS}): {audit_day:.2f} s for the whole day's {day_rows:,} spans, and "
        f"{audit_interval:.2f} s for one export of {interval_rows:,} spans as a batch of "
        "its own, about half an hour of `make demo` traffic (more than one 15-minute "
        "interval of it). A 15-minute DAG run adds the Great Expectations import "
        "(10–16 s here) in its `validate_spans` task.",
        "* one object: the same spans as a single gzip JSON Lines object (one request per "
        "line), streamed inside one transaction: the loader decompresses and cuts it into "
        "16 MiB chunks of lines, the worker processes decode and encode them, the loader "
        "COPYs them in order; "
        "`SPANCOST_MAX_DECOMPRESSED_BYTES` is raised to 4 GiB and "
        "`SPANCOST_MAX_SPANS_PER_OBJECT` to twice the spans for it.",
        "* (a): the rows spancost writes, already as a COPY text file on the server's disk.",
        "* (b) and (c): start from the objects' bytes already in memory (no S3), flatten a dozen "
        "columns with no normalisation, privacy, rejection or manifest: what a user's first "
        "script does. They are not like-for-like with spancost; they bound what the simple "
        "route costs.",
        "",
        f"Peak memory of the spancost loader and its worker processes together (sampled "
        f"every 0.1 s): {peak_rss / 2**20:,.0f} MiB "
        f"for {raw_bytes / 2**30:.2f} GiB of JSON in {objects} objects "
        f"({gate_rss / 2**20:,.0f} MiB with validation on: the audit runs in the loader "
        f"process after the load, its workers never import Great Expectations), and "
        f"{one_rss / 2**20:,.0f} MiB for the same "
        f"{raw_bytes / 2**30:.2f} GiB as one object.",
        "",
        "Targets (issues 3 and 13): ≥ 0.6× of server-side COPY with validation on, "
        "≥ 100k spans/s end to end, peak memory < 1 GB for a 1 GB export.",
        "",
        "Reproduce: `make bench` (`BENCH_SPANS`, `BENCH_SAMPLE_SPANS`, `BENCH_REPEATS` "
        "change the sizes).",
        "",
    ]
    from bench.transform import existing_section

    section = existing_section(path)  # the transform section stays as it was
    path.write_text("\n".join(lines) + (f"\n{section}" if section else ""))
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
