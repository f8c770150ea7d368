"""Big objects are streamed: decoded and COPYed in chunks inside one transaction.

Each test forces streaming with a small ``stream_object_bytes`` and a small
chunk size, so a few hundred spans exercise what a 1 GB JSON Lines file does.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import zstandard

from spancost import db
from spancost.settings import SpanSource
from spancost.spans.loader import load_objects
from spancost.spans.normalize import NormalizeSettings
from spancost.spans.s3layout import list_objects
from tests.otlp_factory import key, llm_span

pytestmark = pytest.mark.integration

T0 = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
SOURCE = SpanSource(bucket="spans", prefix="otel")


def request(spans: list[dict]) -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]
                },
                "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}],
            }
        ]
    }


def json_lines(requests: list[dict]) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in requests)


def put(s3, body: bytes, unique: int, suffix: str = ".json.gz") -> str:
    object_key = key("otel", T0, unique).removesuffix(".json.gz") + suffix
    s3.put_object(Bucket="spans", Key=object_key, Body=body)
    return object_key


def load(s3, url: str, **options: Any):
    objects = list_objects(s3, SOURCE, T0, T0 + timedelta(minutes=15))
    with db.connect(url, autocommit=True) as conn:
        db.apply_schema(conn)
        return load_objects(
            conn,
            s3,
            objects,
            NormalizeSettings(user_id_salt="s", now=T0 + timedelta(hours=1)),
            **{"stream_bytes": 0, "stream_chunk_bytes": 1, **options},  # a line per chunk
        )


def fetch(url: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def spans_for(rng: random.Random, count: int, **options) -> list[dict]:
    return [llm_span(rng, T0, **options) for _ in range(count)]


@pytest.mark.parametrize("compression", ["gzip members", "zstd frames", "none"])
def test_a_streamed_json_lines_object_loads_every_span_once(
    s3, db_url: str, compression: str
) -> None:
    rng = random.Random(1)
    requests = [request(spans_for(rng, 20, input_tokens=100 + n)) for n in range(12)]
    lines = json_lines(requests)
    half = len(lines) // 2
    cut = lines.index(b"\n", half) + 1  # two gzip members / zstd frames, split at a line
    body = {
        "gzip members": gzip.compress(lines[:cut]) + gzip.compress(lines[cut:]),
        "zstd frames": zstandard.ZstdCompressor().compress(lines[:cut])
        + zstandard.ZstdCompressor().compress(lines[cut:]),
        "none": lines,
    }[compression]
    put(s3, body, 100000001, ".jsonl" if compression == "none" else ".json.gz")

    report = load(s3, db_url)
    assert report.count("loaded") == 1 and report.spans == 240

    expected_tokens = sum((100 + n) * 20 for n in range(12))
    [(rows, distinct, tokens)] = fetch(
        db_url, "select count(*), count(distinct span_id), sum(input_tokens) from raw.otel_spans"
    )
    assert (rows, distinct, tokens) == (240, 240, expected_tokens)
    [(status, span_count)] = fetch(db_url, "select status, span_count from raw.s3_objects")
    assert (status, span_count) == ("loaded", 240)

    again = load(s3, db_url)  # the manifest makes a rerun skip it
    assert again.count("skipped") == 1 and fetch(db_url, "select count(*) from raw.otel_spans") == [
        (240,)
    ]


def test_a_bad_line_after_many_chunks_quarantines_the_whole_object(s3, db_url: str) -> None:
    rng = random.Random(2)
    good = json_lines([request(spans_for(rng, 20)) for _ in range(10)])
    body = gzip.compress(good + b'{"resourceSpans": [{"scopeSpans": [\n')
    object_key = put(s3, body, 100000002)
    other = put(s3, gzip.compress(json_lines([request(spans_for(rng, 3))])), 100000003)

    report = load(s3, db_url)
    assert report.count("quarantined") == 1 and report.count("loaded") == 1
    [(status, reason, span_count)] = fetch(
        db_url, "select status, reason, span_count from raw.s3_objects where key = %s", object_key
    )
    assert status == "quarantined" and span_count == 0
    assert object_key in reason and "line 11" in reason
    # The chunks COPYed before the bad line were rolled back; the other object loaded.
    assert fetch(db_url, "select source_key, count(*) from raw.otel_spans group by 1") == [
        (other, 3)
    ]


def test_rejected_spans_of_a_streamed_object_are_kept_aside(s3, db_url: str) -> None:
    rng = random.Random(3)
    spans = spans_for(rng, 60)
    for span in spans[::20]:
        span["attributes"].append(
            {"key": "gen_ai.usage.output_tokens", "value": {"stringValue": "lots"}}
        )
        span["attributes"] = [
            item for item in span["attributes"] if item["key"] != "gen_ai.usage.output_tokens"
        ] + [{"key": "gen_ai.usage.output_tokens", "value": {"stringValue": "lots"}}]
    put(s3, gzip.compress(json_lines([request(spans[:30]), request(spans[30:])])), 100000004)

    report = load(s3, db_url)
    assert (report.spans, report.rejected) == (57, 3)
    reasons = fetch(db_url, "select reason, field, value from ops.rejected_spans")
    assert (
        reasons
        == [("output_tokens is not a whole number", "gen_ai.usage.output_tokens", "lots")] * 3
    )


def test_spans_on_days_without_a_partition_make_the_stream_start_over(
    s3, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The days around the upload get partitions before the object starts. A chunk
    that needs another one (late spans) rolls back, the partitions are made, and the
    object is streamed again from the start: still every span exactly once."""
    rng = random.Random(4)
    days = [T0 - timedelta(days=offset) for offset in (0, 3, 5)]
    requests = [request([llm_span(rng, day) for _ in range(30)]) for day in days]
    put(s3, gzip.compress(json_lines(requests)), 100000005)

    with caplog.at_level(logging.INFO, logger="spancost.spans.loader"):
        report = load(s3, db_url)
    assert report.count("loaded") == 1 and report.spans == 90
    restarts = [record.getMessage() for record in caplog.records if "again" in record.getMessage()]
    # One pass finds both missing days; the second pass loads.
    assert len(restarts) == 1 and "2026-01-29, 2026-01-31" in restarts[0]
    per_day = fetch(
        db_url,
        "select tableoid::regclass::text, count(*) from raw.otel_spans group by 1 order by 1",
    )
    assert per_day == [
        ("raw.otel_spans_p20260129", 30),
        ("raw.otel_spans_p20260131", 30),
        ("raw.otel_spans_p20260203", 30),
    ]


def test_a_big_pretty_printed_document_is_loaded_whole(s3, db_url: str) -> None:
    """Not JSON Lines: the stream gives way to the whole-object path, same result."""
    rng = random.Random(5)
    body = json.dumps(request(spans_for(rng, 40, input_tokens=7)), indent=2).encode()
    put(s3, gzip.compress(body), 100000006)

    report = load(s3, db_url)
    assert report.count("loaded") == 1 and report.spans == 40
    assert fetch(db_url, "select sum(input_tokens) from raw.otel_spans") == [(280,)]


def test_a_streamed_object_lands_in_its_pending_batch_and_never_in_an_audited_one(
    s3, db_url: str
) -> None:
    from spancost.validation import batches

    rng = random.Random(6)
    spans = spans_for(rng, 50)
    put(s3, gzip.compress(json_lines([request(spans[:25]), request(spans[25:])])), 100000007)
    with db.connect(db_url, autocommit=True) as conn:
        db.apply_schema(conn)
        closed = batches.open_batch(conn, batches.SPANS, "stream")
        conn.execute(
            "update ops.load_batches set status = 'published' where batch_id = %s", [closed]
        )
        pending = batches.open_batch(conn, batches.SPANS, "stream")
    assert (closed, pending) == ("otel_spans/stream/1", "otel_spans/stream/2")

    # An audited batch takes no more rows: the object's transaction rolls back whole.
    with pytest.raises(batches.BatchClosed, match="otel_spans/stream/1 is published"):
        load(s3, db_url, batch_id=closed)
    assert fetch(db_url, "select count(*) from raw.otel_spans") == [(0,)]
    assert fetch(db_url, "select count(*) from raw.s3_objects") == [(0,)]

    report = load(s3, db_url, batch_id=pending)  # a chunk per line: 25 spans each
    assert report.spans == 50
    assert fetch(db_url, "select batch_id, span_count from raw.s3_objects") == [(pending, 50)]


def test_worker_processes_stream_chunks_in_order_and_report_bad_lines(s3, db_url: str) -> None:
    """Chunks decoded in two worker processes are COPYed in line order; a bad line
    found by a worker still quarantines its object by line number."""
    rng = random.Random(7)
    requests = [request(spans_for(rng, 10, input_tokens=n + 1)) for n in range(9)]
    good = put(s3, gzip.compress(json_lines(requests)), 100000008)
    bad = put(s3, gzip.compress(json_lines(requests[:4]) + b'{"resourceSpans": 7}\n'), 100000009)

    report = load(s3, db_url, workers=2)
    assert report.count("loaded") == 1 and report.count("quarantined") == 1
    assert fetch(
        db_url, "select source_key, count(*), sum(input_tokens) from raw.otel_spans group by 1"
    ) == [(good, 90, sum((n + 1) * 10 for n in range(9)))]
    [(reason,)] = fetch(db_url, "select reason from raw.s3_objects where key = %s", bad)
    assert "line 5 is not a trace export" in reason
