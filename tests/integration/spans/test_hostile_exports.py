"""Hostile and broken span exports never stop ingestion (issue 8).

Every test goes through the real loader, real Postgres and the local S3
endpoint. Each shows that the run finishes, that the bad object or span is
kept with its reason, that its valid neighbours load (or, where the JSON
itself is broken, that the object is quarantined whole), and that a second
run adds nothing and does not retry what was quarantined.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from spancost import pipeline
from spancost.settings import Settings, SpanSource
from tests.otlp_factory import attr, key, llm_span
from tests.procs import rss_bytes, spawn_workers

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 9, 10, 0, tzinfo=UTC)
SETTINGS = Settings(
    spans=SpanSource(bucket="spans", prefix="otel"), user_id_salt="s", validate=False
)
_unique = iter(range(200_000_000, 300_000_000))


def request(spans: list[dict[str, Any]], *, resource: list[dict[str, Any]] | None = None) -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": resource or [attr("service.name", "svc")]},
                "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}],
            }
        ]
    }


def put_bytes(s3, body: bytes, minute: int = 0, *, gz: bool = True) -> str:
    object_key = key("otel", T0 + timedelta(minutes=minute), next(_unique))
    payload = gzip.compress(body, mtime=0) if gz else body
    s3.put_object(Bucket="spans", Key=object_key, Body=payload)
    return object_key


def put(s3, *requests: dict, minute: int = 0) -> str:
    return put_bytes(s3, "\n".join(json.dumps(r) for r in requests).encode(), minute)


def ingest(s3, url: str, settings: Settings = SETTINGS):
    return pipeline.ingest_spans(
        settings, s3, T0, T0 + timedelta(minutes=15), url=url, run_id="hostile"
    )


def query(url: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def manifest(url: str, object_key: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        cursor = conn.execute(
            "select status, reason, error_type, error_location, span_count, rejected_count,"
            " duplicate_count, changed_count, changes from raw.s3_objects where key = %s",
            [object_key],
        )
        names = [column.name for column in cursor.description]
        row = cursor.fetchone()
    assert row is not None, f"{object_key} has no manifest row"
    return dict(zip(names, row, strict=True))


def rejected(url: str, object_key: str) -> list[tuple]:
    return query(
        url,
        "select reason, field, value, span from ops.rejected_spans where source_key = %s"
        " order by id",
        object_key,
    )


def assert_second_run_adds_nothing(s3, url: str, settings: Settings = SETTINGS) -> None:
    before = query(url, "select count(*) from raw.otel_spans")[0][0]
    rejected_before = query(url, "select count(*) from ops.rejected_spans")[0][0]
    again = ingest(s3, url, settings)
    assert again.count("loaded") == 0 and again.count("quarantined") == 0
    assert query(url, "select count(*) from raw.otel_spans")[0][0] == before
    assert query(url, "select count(*) from ops.rejected_spans")[0][0] == rejected_before


def nested(levels: int, kind: str = "kvlist") -> dict[str, Any]:
    value: dict[str, Any] = {"stringValue": "bottom"}
    for level in range(levels):
        if kind == "kvlist":
            value = {"kvlistValue": {"values": [{"key": f"k{level}", "value": value}]}}
        else:
            value = {"arrayValue": {"values": [value]}}
    return value


def deep_json(doc: dict, placeholder: str, value_json: str) -> bytes:
    """json.dumps cannot write 1,000 levels itself: splice the deep value in as text."""
    return json.dumps(doc).replace(json.dumps(placeholder), value_json).encode()


def nested_json(levels: int, kind: str) -> str:
    if kind == "kvlist":
        head = '{"kvlistValue":{"values":[{"key":"k","value":'
        tail = "}]}}"
    else:
        head = '{"arrayValue":{"values":['
        tail = "]}}"
    return head * levels + '{"stringValue":"bottom"}' + tail * levels


# --- no input crashes the run -------------------------------------------------------


@pytest.mark.parametrize("kind", ["kvlist", "array"])
def test_deeply_nested_anyvalue_rejects_only_its_span_naming_the_attribute(
    s3, db_url: str, kind: str
) -> None:
    rng = random.Random(1)
    good = [llm_span(rng, T0) for _ in range(2)]
    deep = llm_span(rng, T0)
    deep["attributes"].append({"key": "tool.arguments", "value": "DEEP"})
    body = deep_json(request([good[0], deep, good[1]]), "DEEP", nested_json(250, kind))
    object_key = put_bytes(s3, body)

    report = ingest(s3, db_url)

    assert report.spans == 2 and report.rejected == 1 and report.count("quarantined") == 0
    ((reason, field, _, span),) = rejected(db_url, object_key)
    assert field == "tool.arguments"
    assert "nested deeper than 32 levels" in reason
    assert "nested deeper" in span["attributes"]["tool.arguments"]  # stored, as a note
    assert manifest(db_url, object_key)["status"] == "loaded"
    assert_second_run_adds_nothing(s3, db_url)


def test_nesting_within_the_limit_loads_whole(s3, db_url: str) -> None:
    rng = random.Random(2)
    span = llm_span(rng, T0)
    span["attributes"].append({"key": "tool.arguments", "value": nested(20)})
    put(s3, request([span]))
    assert ingest(s3, db_url).spans == 1
    (value,) = query(db_url, "select attributes->'tool.arguments' from raw.otel_spans")[0]
    depth = 0
    while isinstance(value, dict):
        (value,) = value.values()
        depth += 1
    assert depth == 20 and value == "bottom"


def test_non_finite_doubles_are_kept_as_strings_and_counted_and_rejected_rows_store(
    s3, db_url: str
) -> None:
    rng = random.Random(3)
    ok = llm_span(rng, T0)
    ok["attributes"] += [
        {"key": "gen_ai.request.temperature", "value": {"doubleValue": "NaN"}},
        {"key": "score", "value": {"doubleValue": "Infinity"}},
        {"key": "scores", "value": {"arrayValue": {"values": [{"doubleValue": "-Infinity"}]}}},
    ]
    bad = llm_span(rng, T0, input_tokens=-1)
    bad["attributes"].append({"key": "score", "value": {"doubleValue": "NaN"}})
    object_key = put(s3, request([ok, bad]))

    report = ingest(s3, db_url)

    assert report.spans == 1 and report.rejected == 1
    ((temperature, score, scores),) = query(
        db_url,
        "select attributes->>'gen_ai.request.temperature', attributes->>'score',"
        " attributes->'scores' from raw.otel_spans",
    )
    assert (temperature, score, scores) == ("NaN", "Infinity", ["-Infinity"])
    ((reason, field, _, span),) = rejected(db_url, object_key)
    assert (reason, field) == ("input_tokens is negative", "gen_ai.usage.input_tokens")
    assert span["attributes"]["score"] == "NaN"
    row = manifest(db_url, object_key)
    assert row["changes"] == {"non_finite_double": 4} and row["changed_count"] == 4
    assert_second_run_adds_nothing(s3, db_url)


def test_invalid_utf8_is_replaced_counted_and_the_neighbours_load(s3, db_url: str) -> None:
    rng = random.Random(4)
    spans = [llm_span(rng, T0) for _ in range(3)]
    spans[1]["name"] = "NAME-PLACEHOLDER"
    body = json.dumps(request(spans)).encode().replace(b"NAME-PLACEHOLDER", b"chat \xff\xfe end")
    object_key = put_bytes(s3, body)

    report = ingest(s3, db_url)

    assert report.spans == 3 and report.count("quarantined") == 0
    names = {row[0] for row in query(db_url, "select name from raw.otel_spans")}
    assert "chat \ufffd\ufffd end" in names
    row = manifest(db_url, object_key)
    assert row["changes"] == {"invalid_utf8": 2}
    assert_second_run_adds_nothing(s3, db_url)


def test_invalid_utf8_outside_a_string_quarantines_the_object_naming_the_line(
    s3, db_url: str
) -> None:
    rng = random.Random(5)
    lines = [json.dumps(request([llm_span(rng, T0)])).encode() for _ in range(3)]
    lines[2] = lines[2].replace(b'"resourceSpans"', b'\xff"resourceSpans"')
    object_key = put_bytes(s3, b"\n".join(lines))
    report = ingest(s3, db_url)
    assert report.count("quarantined") == 1 and report.spans == 0
    row = manifest(db_url, object_key)
    assert row["status"] == "quarantined" and row["error_location"].startswith("line 3,")
    assert object_key in row["reason"]
    assert_second_run_adds_nothing(s3, db_url)


def test_all_zero_ids_are_rejected_with_a_reason(s3, db_url: str) -> None:
    rng = random.Random(6)
    zero_trace = llm_span(rng, T0, trace_id="0" * 32)
    zero_span = llm_span(rng, T0)
    zero_span["spanId"] = "0" * 16
    root = llm_span(rng, T0)
    root["parentSpanId"] = "0" * 16  # some converters write this for a root span
    object_key = put(s3, request([zero_trace, zero_span, root, llm_span(rng, T0)]))

    report = ingest(s3, db_url)

    assert report.spans == 2 and report.rejected == 2
    assert sorted((r[0], r[1]) for r in rejected(db_url, object_key)) == [
        ("span id is all zeros, which OTLP defines as invalid", "spanId"),
        ("trace id is all zeros, which OTLP defines as invalid", "traceId"),
    ]
    parents = query(db_url, "select parent_span_id from raw.otel_spans")
    assert parents == [(None,), (None,)]
    assert manifest(db_url, object_key)["changes"] == {"zero_parent_span_id": 1}


def test_the_size_limit_covers_resource_event_and_link_attributes(s3, db_url: str) -> None:
    settings = replace(SETTINGS, max_attribute_bytes=1024)
    rng = random.Random(7)
    big = "x" * 10_000
    with_event = llm_span(rng, T0)
    with_event["events"] = [
        {
            "name": "e",
            "timeUnixNano": with_event["startTimeUnixNano"],
            "attributes": [attr("payload", big)],
        }
    ]
    with_link = llm_span(rng, T0)
    with_link["links"] = [
        {"traceId": "1" * 32, "spanId": "2" * 16, "attributes": [attr("payload", big)]}
    ]
    with_array = llm_span(rng, T0)
    with_array["attributes"].append(
        {"key": "list", "value": {"arrayValue": {"values": [{"stringValue": big}]}}}
    )
    fat_resource = request(
        [llm_span(rng, T0) for _ in range(3)],
        resource=[attr("service.name", "svc"), attr("process.command_line", big)],
    )
    normal = request([llm_span(rng, T0), with_event, with_link, with_array])
    object_key = put(s3, fat_resource, normal)

    report = ingest(s3, db_url, settings)

    assert report.spans == 1 and report.rejected == 6
    fields = sorted(r[1] for r in rejected(db_url, object_key))
    assert fields == [
        "events[0].payload",
        "links[0].payload",
        "list",
        "resource.process.command_line",
        "resource.process.command_line",
        "resource.process.command_line",
    ]
    assert all("over 1024 bytes" in r[0] for r in rejected(db_url, object_key))
    # The rejected rows are kept small: the oversized value is replaced by a note.
    (largest,) = query(db_url, "select max(octet_length(span::text)) from ops.rejected_spans")[0]
    assert largest < 5000
    assert_second_run_adds_nothing(s3, db_url, settings)


def test_attribute_and_span_count_limits(s3, db_url: str) -> None:
    settings = replace(SETTINGS, max_attributes=12, max_spans_per_object=5)
    rng = random.Random(8)
    crowded = llm_span(rng, T0, extra={f"extra.{n}": n for n in range(10)})
    small = put(s3, request([llm_span(rng, T0) for _ in range(4)] + [crowded]))
    too_many = put(s3, request([llm_span(rng, T0) for _ in range(6)]), minute=1)

    report = ingest(s3, db_url, settings)

    assert report.spans == 4 and report.rejected == 1 and report.count("quarantined") == 1
    ((reason, field, _, _),) = rejected(db_url, small)
    assert field == "attributes" and "18 attributes, over the limit of 12" in reason
    row = manifest(db_url, too_many)
    assert row["status"] == "quarantined"
    assert "more than 5 spans" in row["reason"] and "SPANCOST_MAX_SPANS_PER_OBJECT" in row["reason"]
    assert_second_run_adds_nothing(s3, db_url, settings)


def zero_bomb(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    parts = [compressor.compress(block) for _ in range(size >> 20)]
    return b"".join([*parts, compressor.flush()])


def test_a_gzip_bomb_is_quarantined_and_its_neighbours_load(s3, db_url: str) -> None:
    rng = random.Random(9)
    good = put(s3, request([llm_span(rng, T0)]))
    object_key = key("otel", T0 + timedelta(minutes=3), next(_unique))
    s3.put_object(Bucket="spans", Key=object_key, Body=zero_bomb(1 << 30))

    report = ingest(s3, db_url)

    assert report.spans == 1 and report.count("quarantined") == 1
    row = manifest(db_url, object_key)
    assert row["status"] == "quarantined" and "bomb" in row["reason"]
    assert manifest(db_url, good)["status"] == "loaded"
    assert_second_run_adds_nothing(s3, db_url)


def test_a_json_syntax_error_names_the_line(s3, db_url: str) -> None:
    rng = random.Random(10)
    pretty = json.dumps(request([llm_span(rng, T0)]), indent=2).splitlines()
    broken_line = next(i for i, line in enumerate(pretty) if '"name"' in line)
    pretty[broken_line] = pretty[broken_line].replace('"name":', '"name"')  # no colon
    object_key = put_bytes(s3, "\n".join(pretty).encode())

    report = ingest(s3, db_url)

    assert report.count("quarantined") == 1
    row = manifest(db_url, object_key)
    assert row["error_type"] == "DecodeError"
    assert row["error_location"].startswith(f"line {broken_line + 1}, column ")
    assert f"line {broken_line + 1}" in row["reason"] and "byte" not in row["reason"]
    assert_second_run_adds_nothing(s3, db_url)


def test_a_schema_error_names_the_json_path(s3, db_url: str) -> None:
    rng = random.Random(11)
    doc = request([llm_span(rng, T0)])
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"] = "not a list"
    object_key = put_bytes(s3, json.dumps(doc).encode())
    ingest(s3, db_url)
    row = manifest(db_url, object_key)
    assert row["status"] == "quarantined" and row["error_type"] == "ValidationError"
    assert row["error_location"] == "$.resourceSpans[0].scopeSpans[0].spans[0].attributes"


def test_nul_characters_are_replaced_and_counted(s3, db_url: str) -> None:
    rng = random.Random(12)
    span = llm_span(rng, T0, extra={"note": "a\x00b", "key\x00with nul": "v"})
    span["name"] = "chat\x00"
    literal = llm_span(rng, T0, extra={"literal": "\\u0000 is six characters"})
    object_key = put(s3, request([span, literal]))

    report = ingest(s3, db_url)

    assert report.spans == 2
    names = {row[0] for row in query(db_url, "select name from raw.otel_spans")}
    assert "chat\ufffd" in names
    notes = query(
        db_url,
        "select attributes->>'note', attributes ? 'key\ufffdwith nul', attributes->>'literal'"
        " from raw.otel_spans order by attributes ? 'note' desc",
    )
    assert notes[0][:2] == ("a\ufffdb", True)
    assert notes[1][2] == "\\u0000 is six characters"  # a literal backslash is not a NUL
    row = manifest(db_url, object_key)
    assert row["changes"] == {"nul_replaced": 3} and row["changed_count"] == 3


def test_a_value_of_one_nul_is_replaced_not_made_null(s3, db_url: str) -> None:
    """The encoder uses NUL for SQL null inside a row: a name of one NUL once became
    null, which the not-null column refused, and the run stopped."""
    rng = random.Random(13)
    span = llm_span(rng, T0, extra={"pipeline.id": "\x00"})
    span["name"] = "\x00"
    object_key = put(s3, request([span, llm_span(rng, T0)]))

    report = ingest(s3, db_url)

    assert report.spans == 2
    rows = query(db_url, "select name, pipeline_id from raw.otel_spans where name = '\ufffd'")
    assert rows == [("\ufffd", "\ufffd")]
    row = manifest(db_url, object_key)
    assert row["status"] == "loaded" and row["changes"] == {"nul_replaced": 3}
    assert_second_run_adds_nothing(s3, db_url)


def test_duplicates_inside_one_object_are_counted_and_land_once_for_dbt(s3, db_url: str) -> None:
    rng = random.Random(13)
    spans = [llm_span(rng, T0) for _ in range(3)]
    object_key = put(s3, request([*spans, spans[0], spans[0], spans[2]]))

    report = ingest(s3, db_url)

    assert report.spans == 6 and report.summary()["spans_duplicated"] == 3
    assert manifest(db_url, object_key)["duplicate_count"] == 3
    listed = query(
        db_url,
        "select trace_id, span_id, copies from ops.duplicate_spans where source_key = %s"
        " order by copies desc",
        object_key,
    )
    assert listed == [
        (spans[0]["traceId"], spans[0]["spanId"], 3),
        (spans[2]["traceId"], spans[2]["spanId"], 2),
    ]
    from spancost.transform import dbt_build

    dbt_build.run_dbt(db_url, ["run", "--select", "stg_otel__spans"])
    assert query(db_url, "select count(*) from staging.stg_otel__spans")[0][0] == 3


# --- a worker process that dies -------------------------------------------------------


def oom_killer(limit: int, stop: threading.Event, killed: list[int]) -> None:
    """Like the kernel's OOM killer in a memory-limited container: SIGKILL any worker of
    this process whose resident memory passes ``limit``."""
    me = os.getpid()
    while not stop.is_set():
        for pid in spawn_workers(me):
            if rss_bytes(pid) > limit:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
        time.sleep(0.02)


def test_an_object_that_kills_its_worker_is_quarantined_and_the_loader_survives(
    s3, db_url: str
) -> None:
    settings = replace(
        SETTINGS, load_workers=2, max_compression_ratio=0, max_attribute_bytes=1 << 30
    )
    rng = random.Random(14)
    good = [put(s3, request([llm_span(rng, T0) for _ in range(3)]), minute=m) for m in range(4)]
    span = llm_span(rng, T0, extra={"blob": "BLOB"})
    body = json.dumps(request([span])).encode().replace(b"BLOB", b"y" * (600 << 20))
    killer_key = put_bytes(s3, body, minute=2)
    assert s3.head_object(Bucket="spans", Key=killer_key)["ContentLength"] < 8 << 20

    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=oom_killer, args=(400 << 20, stop, killed), daemon=True)
    watcher.start()
    try:
        report = ingest(s3, db_url, settings)
    finally:
        stop.set()
        watcher.join()

    assert killed, "the emulated OOM killer never fired"
    assert report.spans == 12 and report.count("quarantined") == 1
    row = manifest(db_url, killer_key)
    assert row["status"] == "quarantined" and row["error_type"] == "WorkerDied"
    assert "worker process died" in row["reason"] and killer_key in row["reason"]
    assert all(manifest(db_url, k)["status"] == "loaded" for k in good)
    assert_second_run_adds_nothing(s3, db_url, settings)


# --- everything at once, through the CLI -----------------------------------------------


@pytest.mark.parametrize("validate", ["0", "1"], ids=["validation-off", "audit-on"])
def test_a_mixed_hostile_batch_loads_in_one_run_with_every_span_accounted_for(
    s3, db_url: str, aws_endpoint: str, validate: str
) -> None:
    rng = random.Random(15)
    expected_in_quarantine = 0
    total = 0

    def spans(n: int, **kw: Any) -> list[dict]:
        nonlocal total
        total += n
        return [llm_span(rng, T0, **kw) for _ in range(n)]

    put(s3, request(spans(3)), minute=0)
    deep = spans(2)
    deep[0]["attributes"].append({"key": "deep", "value": "DEEP"})
    put_bytes(s3, deep_json(request(deep), "DEEP", nested_json(300, "kvlist")), minute=1)
    nan = spans(2, input_tokens=-5)
    nan[0]["attributes"].append({"key": "x", "value": {"doubleValue": "NaN"}})
    put(s3, request(nan), minute=2)
    utf = spans(2)
    utf[0]["name"] = "UTF"
    put_bytes(s3, json.dumps(request(utf)).encode().replace(b"UTF", b"\xc3\x28"), minute=3)
    zero = spans(2, trace_id="0" * 32)
    put(s3, request(zero), minute=4)
    truncated = json.dumps(request(spans(4))).encode()
    expected_in_quarantine += 4
    put_bytes(s3, truncated[: len(truncated) // 2], minute=5)
    bomb_key = key("otel", T0 + timedelta(minutes=6), next(_unique))
    s3.put_object(Bucket="spans", Key=bomb_key, Body=zero_bomb(256 << 20))
    dup = spans(2)
    total += 1
    put(s3, request([*dup, dup[0]]), minute=7)
    put(s3, request(spans(3)), minute=8)

    env = {
        **os.environ,
        "SPANCOST_DATABASE_URL": db_url,
        "SPANCOST_SPANS_BUCKET": "spans",
        "SPANCOST_SPANS_PREFIX": "otel",
        "SPANCOST_USER_ID_SALT": "hostile",
        "SPANCOST_VALIDATE": validate,
        "SPANCOST_LOAD_WORKERS": "2",
        "AWS_ENDPOINT_URL": aws_endpoint,
    }
    command = [
        sys.executable,
        "-m",
        "spancost.cli",
        "ingest-spans",
        "--start",
        T0.isoformat(),
        "--end",
        (T0 + timedelta(minutes=15)).isoformat(),
    ]
    first = subprocess.run(command, env=env, capture_output=True, timeout=600)
    assert first.returncode == 0, first.stderr.decode()[-3000:]

    objects = query(db_url, "select status, count(*) from raw.s3_objects group by 1 order by 1")
    assert objects == [("loaded", 7), ("quarantined", 2)]
    listed = s3.list_objects_v2(Bucket="spans", Prefix="otel/")["KeyCount"]
    assert listed == 9
    landed = query(db_url, "select count(*) from raw.otel_spans")[0][0]
    kept_aside = query(db_url, "select count(*) from ops.rejected_spans")[0][0]
    counted = query(db_url, "select sum(span_count), sum(rejected_count) from raw.s3_objects")[0]
    assert (landed, kept_aside) == tuple(counted)
    assert landed + kept_aside + expected_in_quarantine == total
    assert kept_aside == 1 + 2 + 2  # the deep span, both NaN spans, both zero-trace spans

    second = subprocess.run(command, env=env, capture_output=True, timeout=600)
    assert second.returncode == 0, second.stderr.decode()[-3000:]
    assert query(db_url, "select count(*) from raw.otel_spans")[0][0] == landed
    if validate == "1":
        # The batch passed the audit; the repeated span made it a flagged one.
        batches = query(db_url, "select status, flagged, row_count from ops.load_batches")
        assert batches == [("published", True, landed)]  # the rerun loaded nothing: no batch


def test_a_worker_killed_from_outside_loses_nothing(s3, db_url: str) -> None:
    settings = replace(SETTINGS, load_workers=2)
    rng = random.Random(16)
    pad = {"pad": "z" * 2000}
    keys = [
        put(s3, request([llm_span(rng, T0, extra=pad) for _ in range(400)]), minute=m % 15)
        for m in range(12)
    ]
    killed: list[int] = []

    def kill_first_worker() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for pid in spawn_workers(os.getpid()):
                time.sleep(0.3)  # let it start on the batch
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_first_worker, daemon=True)
    killer.start()
    report = ingest(s3, db_url, settings)
    killer.join()

    assert killed
    assert report.count("quarantined") == 0 and report.spans == 12 * 400
    assert query(db_url, "select count(distinct (trace_id, span_id)) from raw.otel_spans") == [
        (12 * 400,)
    ]
    assert all(manifest(db_url, k)["status"] == "loaded" for k in keys)
