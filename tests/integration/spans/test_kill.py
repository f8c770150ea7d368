"""A loader killed with SIGKILL at any point loses nothing and duplicates nothing.

A real `spancost ingest-spans` process is started against real Postgres and the
local S3 endpoint, and killed: once while its COPY is in flight (seen in
pg_stat_progress_copy), and at several moments of a run over many objects.
After each kill, whatever committed is whole objects only; a rerun then
completes the load with every span exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.otlp_factory import export, key, llm_span
from tests.procs import children

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 7, 10, 0, tzinfo=UTC)
START, END = T0.isoformat(), (T0 + timedelta(minutes=15)).isoformat()


def upload(s3, objects: int, spans_per_object: int, seed: int) -> int:
    rng = random.Random(seed)
    for index in range(objects):
        spans = [llm_span(rng, T0, extra={"pad": "x" * 200}) for _ in range(spans_per_object)]
        object_key = key("otel", T0 + timedelta(minutes=index % 15), 100000000 + index)
        s3.put_object(Bucket="spans", Key=object_key, Body=export(spans))
    return objects * spans_per_object


def loader(db_url: str, aws_endpoint: str, **extra: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SPANCOST_DATABASE_URL": db_url,
        "SPANCOST_SPANS_BUCKET": "spans",
        "SPANCOST_SPANS_PREFIX": "otel",
        "SPANCOST_USER_ID_SALT": "kill-test",
        "SPANCOST_VALIDATE": "0",
        "AWS_ENDPOINT_URL": aws_endpoint,
        **extra,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "spancost.cli", "ingest-spans", "--start", START, "--end", END],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def assert_only_whole_objects(db_url: str) -> int:
    """Every committed object has exactly its span_count rows; no row lacks its manifest."""
    with psycopg.connect(db_url) as conn:
        mismatched = conn.execute(
            """
            select m.key, m.span_count, count(s.span_id)
            from raw.s3_objects as m
            left join raw.otel_spans as s on s.source_key = m.key
            group by m.key, m.span_count
            having count(s.span_id) <> m.span_count
            """
        ).fetchall()
        orphans = conn.execute(
            "select count(*) from raw.otel_spans as s where not exists "
            "(select 1 from raw.s3_objects as m where m.key = s.source_key)"
        ).fetchone()[0]
        total = conn.execute("select count(*) from raw.otel_spans").fetchone()[0]
    assert mismatched == [] and orphans == 0
    return int(total)


def assert_exact(db_url: str, expected: int) -> None:
    with psycopg.connect(db_url) as conn:
        total, distinct = conn.execute(
            "select count(*), count(distinct (trace_id, span_id)) from raw.otel_spans"
        ).fetchone()
    assert total == distinct == expected


def prepare_schema(db_url: str) -> None:
    from spancost import db

    with db.connect(db_url) as conn:
        db.apply_schema(conn)


def kill_during_copy(
    db_url: str,
    proc: subprocess.Popen[bytes],
    when: Callable[[int, int], bool],
    *,
    seconds: float,
) -> bool:
    """Watch pg_stat_progress_copy and SIGKILL the loader as soon as
    ``when(rows of the COPY in flight, highest count seen)`` holds; True if it did."""
    highest = 0
    killed = False
    with psycopg.connect(db_url, autocommit=True) as watcher:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and proc.poll() is None:
            row = watcher.execute(
                "select tuples_processed from pg_stat_progress_copy"
                " where datname = current_database()"
            ).fetchone()
            processed = int(row[0]) if row else 0
            if when(processed, highest):
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            highest = max(highest, processed)
            time.sleep(0.01)
    proc.wait(timeout=30)
    return killed


def test_kill_during_copy_commits_nothing_and_a_rerun_loads_everything(
    s3, db_url: str, aws_endpoint: str
) -> None:
    expected = upload(s3, objects=1, spans_per_object=60_000, seed=1)
    prepare_schema(db_url)
    proc = loader(db_url, aws_endpoint)
    copying = kill_during_copy(db_url, proc, lambda processed, _: processed > 0, seconds=120)
    assert copying, "the loader finished before its COPY could be caught in flight"
    assert proc.returncode == -signal.SIGKILL
    assert assert_only_whole_objects(db_url) == 0

    rerun = loader(db_url, aws_endpoint)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read() if rerun.stderr else ""
    assert_exact(db_url, expected)


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if os.path.exists(f"/proc/{pid}")}


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0, 3.5])
def test_kill_at_any_moment_leaves_whole_objects_only(
    s3, db_url: str, aws_endpoint: str, delay: float
) -> None:
    expected = upload(s3, objects=12, spans_per_object=2_000, seed=int(delay * 10))
    prepare_schema(db_url)
    proc = loader(db_url, aws_endpoint, SPANCOST_LOAD_WORKERS="2")
    time.sleep(delay)
    workers = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert_only_whole_objects(db_url)
    deadline = time.monotonic() + 10
    while alive(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(workers), "worker processes outlived the killed loader"

    rerun = loader(db_url, aws_endpoint)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read() if rerun.stderr else ""
    assert_exact(db_url, expected)
    assert_only_whole_objects(db_url)


def test_kill_while_a_big_object_streams_its_second_chunk_commits_none_of_it(
    s3, db_url: str, aws_endpoint: str
) -> None:
    """A streamed object COPYs chunk after chunk in one transaction: killed after its
    first chunk went in, none of it is committed, and a rerun loads it exactly once."""
    import gzip
    import json

    rng = random.Random(9)
    lines = []
    for _ in range(30):
        spans = [llm_span(rng, T0, extra={"pad": "x" * 200}) for _ in range(2_000)]
        request = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
        lines.append(json.dumps(request).encode())
    s3.put_object(
        Bucket="spans",
        Key=key("otel", T0, 100000000).replace(".json.gz", ".jsonl.gz"),
        Body=gzip.compress(b"\n".join(lines)),
    )
    prepare_schema(db_url)
    stream = {"SPANCOST_STREAM_OBJECT_BYTES": "0", "SPANCOST_STREAM_CHUNK_BYTES": str(2 << 20)}
    proc = loader(db_url, aws_endpoint, **stream)
    # A COPY with fewer rows than the highest seen is a new one: the first chunk is in.
    second_chunk = kill_during_copy(
        db_url, proc, lambda processed, highest: 0 < processed < highest, seconds=180
    )
    assert second_chunk, "the loader finished before its second chunk could be caught"
    assert proc.returncode == -signal.SIGKILL
    assert assert_only_whole_objects(db_url) == 0

    rerun = loader(db_url, aws_endpoint, **stream)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read() if rerun.stderr else ""
    assert_exact(db_url, 60_000)
