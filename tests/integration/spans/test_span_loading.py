"""Span ingestion against a real Postgres and a real S3 endpoint on loopback."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from spancost import pipeline
from spancost.settings import Settings, SpanSource
from tests.otlp_factory import attr, export, key, llm_span

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
SETTINGS = Settings(
    spans=SpanSource(bucket="spans", prefix="otel"), user_id_salt="s", validate=False
)


def put(s3, minute: int, unique: int, spans: list[dict]) -> str:
    object_key = key("otel", T0 + timedelta(minutes=minute), unique)
    s3.put_object(Bucket="spans", Key=object_key, Body=export(spans), ContentEncoding="gzip")
    return object_key


def ingest(s3, url: str, settings: Settings = SETTINGS):
    return pipeline.ingest_spans(
        settings, s3, T0, T0 + timedelta(minutes=15), url=url, run_id="test"
    )


def scalar(url: str, sql: str, *params: object):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchone()[0]


def test_load_is_exactly_once_across_reruns(s3, db_url: str) -> None:
    rng = random.Random(1)
    for minute in range(3):
        put(s3, minute, 100000000 + minute, [llm_span(rng, T0) for _ in range(5)])
    put(s3, 20, 100000099, [llm_span(rng, T0)])  # outside the interval: not read

    first = ingest(s3, db_url)
    assert first.summary()["spans_loaded"] == 15
    assert first.count("loaded") == 3
    second = ingest(s3, db_url)
    assert second.count("skipped") == 3 and second.spans == 0
    assert scalar(db_url, "select count(*) from raw.otel_spans") == 15
    assert scalar(db_url, "select count(*) from raw.s3_objects where status = 'loaded'") == 3
    assert scalar(db_url, "select sum(span_count) from raw.s3_objects") == 15
    # Day partition made on demand.
    assert scalar(db_url, "select to_regclass('raw.otel_spans_p20260105')::text") == (
        "raw.otel_spans_p20260105"
    )


def test_reuploaded_key_replaces_its_rows(s3, db_url: str) -> None:
    rng = random.Random(2)
    object_key = put(s3, 1, 100000001, [llm_span(rng, T0) for _ in range(4)])
    ingest(s3, db_url)
    put(s3, 1, 100000001, [llm_span(rng, T0) for _ in range(7)])  # same key, new etag
    report = ingest(s3, db_url)
    assert report.count("loaded") == 1
    assert (
        scalar(db_url, "select count(*) from raw.otel_spans where source_key = %s", object_key) == 7
    )


def test_corrupt_object_is_quarantined_and_the_rest_loads(s3, db_url: str) -> None:
    rng = random.Random(3)
    put(s3, 0, 100000010, [llm_span(rng, T0) for _ in range(3)])
    bad_key = key("otel", T0 + timedelta(minutes=2), 100000011)
    s3.put_object(Bucket="spans", Key=bad_key, Body=b"\x1f\x8b\x08\x00garbage")
    report = ingest(s3, db_url)
    assert report.count("quarantined") == 1 and report.spans == 3
    with psycopg.connect(db_url) as conn:
        status, reason = conn.execute(
            "select status, reason from raw.s3_objects where key = %s", [bad_key]
        ).fetchone()
    assert status == "quarantined"
    assert bad_key in reason and "corrupt gzip" in reason
    # The source object is untouched, and a rerun does not retry it for ever.
    assert s3.get_object(Bucket="spans", Key=bad_key)["Body"].read() == b"\x1f\x8b\x08\x00garbage"
    assert ingest(s3, db_url).count("skipped") == 2


def test_rule_breaking_spans_are_kept_aside_and_the_object_loads(s3, db_url: str) -> None:
    rng = random.Random(4)
    good = [llm_span(rng, T0) for _ in range(3)]
    negative = llm_span(rng, T0, input_tokens=-3)
    no_id = llm_span(rng, T0)
    no_id["spanId"] = ""
    object_key = put(s3, 0, 100000020, [*good, negative, no_id])
    report = ingest(s3, db_url)
    assert report.spans == 3 and report.rejected == 2
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "select reason, field from ops.rejected_spans where source_key = %s order by reason",
            [object_key],
        ).fetchall()
        rejected_count = conn.execute(
            "select rejected_count from raw.s3_objects where key = %s", [object_key]
        ).fetchone()[0]
    assert rows == [
        ("input_tokens is negative", "gen_ai.usage.input_tokens"),
        ("span has no valid span id", "spanId"),
    ]
    assert rejected_count == 2


def test_message_content_is_not_stored(s3, db_url: str) -> None:
    rng = random.Random(5)
    put(
        s3,
        0,
        100000030,
        [llm_span(rng, T0, extra={"gen_ai.input.messages": "TOP-SECRET", "user.id": "alice"})],
    )
    ingest(s3, db_url)
    with psycopg.connect(db_url) as conn:
        dump = conn.execute("select row_to_json(s)::text from raw.otel_spans as s").fetchone()[0]
    assert "TOP-SECRET" not in dump and "alice" not in dump


def test_awkward_text_events_and_links_survive_copy_exactly(s3, db_url: str) -> None:
    """Tabs, newlines, backslashes and quotes come back as sent; NUL (which Postgres
    cannot store) becomes U+FFFD instead of failing the object; events and links are
    kept with their content attributes removed."""
    rng = random.Random(11)
    awkward = 'tab\there\nnew "line" \\N back\\slash\r'
    span = llm_span(rng, T0, pipeline=awkward, extra={"note": awkward, "nul": "a\x00b"})
    span["name"] = awkward
    span["events"] = [
        {
            "timeUnixNano": span["startTimeUnixNano"],
            "name": "gen_ai.content.prompt",
            "attributes": [attr("gen_ai.prompt", "TOP-SECRET"), attr("tokens", 3)],
        },
        {"name": "exception", "attributes": [attr("exception.type", "RateLimitError")]},
    ]
    span["links"] = [{"traceId": "AB" * 16, "spanId": "CD" * 8, "attributes": []}]
    plain = llm_span(rng, T0)
    put(s3, 0, 100000060, [span, plain])
    report = ingest(s3, db_url)
    assert report.spans == 2 and report.rejected == 0
    with psycopg.connect(db_url) as conn:
        name, pipeline_id, note, nul, events, links = conn.execute(
            "select name, pipeline_id, attributes ->> 'note', attributes ->> 'nul', events, links"
            " from raw.otel_spans where span_id = %s",
            [span["spanId"]],
        ).fetchone()
        others = conn.execute(
            "select events, links from raw.otel_spans where span_id = %s", [plain["spanId"]]
        ).fetchone()
    assert name == pipeline_id == note == awkward
    assert nul == "a\ufffdb"
    assert [event["name"] for event in events] == ["gen_ai.content.prompt", "exception"]
    assert events[0]["attributes"] == {"tokens": 3}  # the prompt text is gone
    assert events[1]["attributes"] == {"exception.type": "RateLimitError"}
    assert links == [{"trace_id": "ab" * 16, "span_id": "cd" * 8, "attributes": {}}]
    assert others == (None, None)


def test_concurrent_runs_load_each_object_once(s3, db_url: str) -> None:
    rng = random.Random(6)
    for minute in range(10):
        put(s3, minute, 100000100 + minute, [llm_span(rng, T0) for _ in range(20)])
    ingest(s3, db_url, SETTINGS)  # creates schema and partitions up front
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("truncate raw.otel_spans, raw.s3_objects")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ingest(s3, db_url)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert scalar(db_url, "select count(*) from raw.otel_spans") == 200
    assert scalar(db_url, "select count(distinct (trace_id, span_id)) from raw.otel_spans") == 200


def test_small_batches_load_the_same_rows(s3, db_url: str) -> None:
    """Batches are cut by object count; every object still commits whole, once."""
    from spancost import db
    from spancost.spans.loader import load_objects
    from spancost.spans.normalize import NormalizeSettings
    from spancost.spans.s3layout import list_objects

    rng = random.Random(8)
    for minute in range(5):
        put(s3, minute, 100000200 + minute, [llm_span(rng, T0) for _ in range(5)])
    objects = list_objects(s3, SETTINGS.spans, T0, T0 + timedelta(minutes=15))
    with db.connect(db_url, autocommit=True) as conn:
        db.apply_schema(conn)
        report = load_objects(conn, s3, objects, NormalizeSettings(user_id_salt="s"), batch_size=2)
    assert report.count("loaded") == 5 and report.spans == 25
    assert scalar(db_url, "select count(*) from raw.otel_spans") == 25


def test_a_missing_bucket_is_an_infrastructure_error_naming_it(s3, db_url: str) -> None:
    from spancost.errors import InfrastructureError

    settings = Settings(spans=SpanSource(bucket="no-such-bucket"), user_id_salt="s", validate=False)
    with pytest.raises(InfrastructureError, match="s3://no-such-bucket/.*listing failed"):
        ingest(s3, db_url, settings)


def test_each_object_commits_alone_so_a_later_failure_keeps_the_earlier_ones(
    s3, db_url: str
) -> None:
    """An object deleted between the listing and its download (an S3 lifecycle rule,
    say) fails the run with an infrastructure error naming it; the objects before it
    are already committed, each in its own transaction, and stay loaded."""
    from spancost import db
    from spancost.errors import InfrastructureError
    from spancost.spans.loader import load_objects
    from spancost.spans.normalize import NormalizeSettings
    from spancost.spans.s3layout import list_objects

    rng = random.Random(12)
    for minute in range(3):
        put(s3, minute, 100000300 + minute, [llm_span(rng, T0) for _ in range(4)])
    objects = list_objects(s3, SETTINGS.spans, T0, T0 + timedelta(minutes=15))
    s3.delete_object(Bucket="spans", Key=objects[2].key)
    with db.connect(db_url, autocommit=True) as conn:
        db.apply_schema(conn)
        with pytest.raises(InfrastructureError, match=objects[2].key):
            load_objects(conn, s3, objects, NormalizeSettings(user_id_salt="s"))
    assert scalar(db_url, "select count(*) from raw.s3_objects") == 2
    assert scalar(db_url, "select count(*) from raw.otel_spans") == 8


def test_the_loader_refuses_a_connection_that_would_nest_every_object(s3, db_url: str) -> None:
    from spancost import db
    from spancost.spans.loader import load_objects
    from spancost.spans.normalize import NormalizeSettings

    with db.connect(db_url) as conn, pytest.raises(ValueError, match="autocommit"):
        load_objects(conn, s3, [], NormalizeSettings(user_id_salt="s"))


def test_worker_processes_load_exactly_what_one_process_loads(s3, db_url: str) -> None:
    """Objects prepared in two worker processes land as the same rows, each once."""
    from spancost import db
    from spancost.spans.loader import load_objects
    from spancost.spans.normalize import NormalizeSettings
    from spancost.spans.s3layout import list_objects

    rng = random.Random(13)
    for minute in range(6):
        put(s3, minute, 100000400 + minute, [llm_span(rng, T0) for _ in range(30)])
    objects = list_objects(s3, SETTINGS.spans, T0, T0 + timedelta(minutes=15))
    settings = NormalizeSettings(user_id_salt="s", now=T0 + timedelta(hours=1))
    dumps = {}
    for workers in (0, 2):
        with db.connect(db_url, autocommit=True) as conn:
            db.apply_schema(conn)
            conn.execute("truncate raw.otel_spans, raw.s3_objects")
            report = load_objects(conn, s3, objects, settings, workers=workers, batch_size=2)
            assert report.count("loaded") == 6 and report.spans == 180
            dumps[workers] = sorted(
                row[0]
                for row in conn.execute(
                    "select (to_jsonb(s) - 'loaded_at')::text from raw.otel_spans as s"
                ).fetchall()
            )
    assert len(dumps[2]) == 180 == len(set(dumps[2]))
    assert dumps[2] == dumps[0]


def _load_in_a_daemon(db_url: str, answers: Any) -> None:
    """In a daemonic child (as a Celery prefork pool runs tasks): load with 2 workers."""
    import boto3

    from spancost import db
    from spancost.spans.loader import load_objects
    from spancost.spans.normalize import NormalizeSettings
    from spancost.spans.s3layout import list_objects

    try:
        s3 = boto3.client("s3")
        objects = list_objects(s3, SETTINGS.spans, T0, T0 + timedelta(minutes=15))
        with db.connect(db_url, autocommit=True) as conn:
            report = load_objects(conn, s3, objects, NormalizeSettings(user_id_salt="s"), workers=2)
        answers.put(("ok", report.count("loaded"), report.spans))
    except BaseException as exc:  # reported to the test, which fails with it
        answers.put(("error", repr(exc), 0))


def test_a_daemonic_process_loads_in_process_instead_of_starting_workers(s3, db_url: str) -> None:
    """Celery's prefork children are daemonic and may not start processes."""
    import multiprocessing

    from spancost import db

    rng = random.Random(17)
    for minute in range(3):
        put(s3, minute, 100000500 + minute, [llm_span(rng, T0) for _ in range(4)])
    with db.connect(db_url, autocommit=True) as conn:
        db.apply_schema(conn)
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    child = context.Process(target=_load_in_a_daemon, args=(db_url, answers), daemon=True)
    child.start()
    answer = answers.get(timeout=120)
    child.join(timeout=60)
    assert answer == ("ok", 3, 12), answer
    assert scalar(db_url, "select count(*) from raw.otel_spans") == 12
