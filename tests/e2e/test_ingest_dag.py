"""End to end: demo spans in S3 → dag.test() of spancost_ingest → dbt build → the cost mart.

The expected cost is computed here, independently: the uploaded objects are
read back with gzip and json, and priced with Decimal from the seed CSV.
"""

from __future__ import annotations

import csv
import gzip
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from spancost.demo import traffic
from spancost.transform import dbt_build

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
T = datetime(2026, 2, 3, 9, 0, tzinfo=UTC)
PREFIX = "otel/traces"


# The demo's Bedrock inference-profile id is the Claude Haiku 4.5 in the price table.
MODEL_IDS = {"us.anthropic.claude-haiku-4-5-20251001-v1:0": "claude-haiku-4.5"}


def prices() -> dict[str, dict[str, Decimal]]:
    with open(REPO / "dbt" / "seeds" / "llm_prices.csv", newline="") as handle:
        return {
            row["model"]: {
                name: Decimal(value)
                for name, value in row.items()
                if name.endswith("_per_mtok") and value
            }
            for row in csv.DictReader(handle)
        }


def expected_from_objects(
    objects: list[traffic.DemoObject],
) -> tuple[Decimal, int, dict[str, Decimal]]:
    table = prices()
    total, calls, per_pipeline = Decimal(0), 0, {}
    for obj in objects:
        request = json.loads(gzip.decompress(obj.body))
        for resource_spans in request["resourceSpans"]:
            for scope_spans in resource_spans["scopeSpans"]:
                for span in scope_spans["spans"]:
                    attrs = {
                        kv["key"]: next(iter(kv["value"].values()))
                        for kv in span.get("attributes", [])
                    }
                    if "gen_ai.usage.input_tokens" not in attrs:
                        # A failed call without usage is still a call, costing nothing.
                        failed = span.get("status", {}).get("code") in (2, "STATUS_CODE_ERROR")
                        if failed and attrs.get("gen_ai.operation.name") == "chat":
                            calls += 1
                        continue
                    model = attrs["gen_ai.request.model"]
                    price = table[MODEL_IDS.get(model, model)]
                    inp = int(attrs["gen_ai.usage.input_tokens"])
                    out = int(attrs["gen_ai.usage.output_tokens"])
                    read = int(attrs.get("gen_ai.usage.cache_read.input_tokens", 0))
                    write = int(attrs.get("gen_ai.usage.cache_creation.input_tokens", 0))
                    cost = (
                        (inp - read - write) * price["input_usd_per_mtok"]
                        + read * price["cache_read_usd_per_mtok"]
                        + write * price["cache_write_usd_per_mtok"]
                        + out * price["output_usd_per_mtok"]
                    ) / Decimal(1_000_000)
                    total += cost
                    calls += 1
                    pipeline = attrs["pipeline.id"]
                    per_pipeline[pipeline] = per_pipeline.get(pipeline, Decimal(0)) + cost
    return total, calls, per_pipeline


def span_asset_events() -> int:
    """Events of the spans asset in Airflow's metadata database (what schedules transform)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.uri == "spancost://raw/otel_spans")
            .count()
        )


def newest_span_event_extra() -> dict:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        event = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.uri == "spancost://raw/otel_spans")
            .order_by(AssetEvent.id.desc())
            .first()
        )
        return dict(event.extra or {})


def states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state).rsplit(".", 1)[-1].lower() for ti in run.get_task_instances()}


def test_ingest_dag_then_dbt_build_gives_the_independent_total(
    s3, db_url: str, airflow_db: None, pricing_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spans = traffic.generate_spans(T, T + timedelta(minutes=15), seed=11, traces_per_hour=60)
    objects = traffic.build_objects(spans, prefix=PREFIX, seed=11)
    traffic.upload_objects(s3, "spans", objects)
    in_interval = [obj for obj in objects if obj.upload_time < T + timedelta(minutes=15)]
    late = [obj for obj in objects if obj.upload_time >= T + timedelta(minutes=15)]
    total, calls, per_pipeline = expected_from_objects(in_interval)
    assert calls > 20 and total > 0

    monkeypatch.setenv("SPANCOST_SPANS_BUCKET", "spans")
    monkeypatch.setenv("SPANCOST_SPANS_PREFIX", PREFIX)
    monkeypatch.setenv("SPANCOST_USER_ID_SALT", "e2e-salt")
    monkeypatch.setenv("AIRFLOW_CONN_SPANCOST_POSTGRES", db_url)
    # Small chunks, so the interval's exports fan out over several mapped load tasks.
    monkeypatch.setenv("SPANCOST_LOAD_CHUNK_OBJECTS", "4")

    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags" / "spancost_ingest.py")).get_dag("spancost_ingest")
    # A manual run at T + 15 min owns the interval that just ended: [T, T + 15 min).
    events = span_asset_events()
    run = dag.test(logical_date=T + timedelta(minutes=15))
    assert (run.data_interval_start, run.data_interval_end) == (T, T + timedelta(minutes=15))
    assert str(run.state) in ("success", "DagRunState.SUCCESS")
    assert states(run)["spans.publish_spans"] == "success"
    assert span_asset_events() == events + 1
    loads = [ti for ti in run.get_task_instances() if ti.task_id == "spans.ingest_spans"]
    assert len(loads) == -(-len(in_interval) // 4) > 1  # one mapped task per chunk of 4
    assert {str(ti.state).rsplit(".", 1)[-1].lower() for ti in loads} == {"success"}

    dbt_build.build(db_url)
    with psycopg.connect(db_url) as conn:
        mart_total, mart_calls = conn.execute(
            "select sum(estimated_cost_usd), sum(calls) from marts.agg_pipeline_costs_hourly"
        ).fetchone()
        mart_pipelines = dict(
            conn.execute(
                "select pipeline_id, sum(estimated_cost_usd) from marts.agg_pipeline_costs_hourly "
                "group by pipeline_id"
            ).fetchall()
        )
        loaded_objects = conn.execute("select count(*) from raw.s3_objects").fetchone()[0]
        first, last, spans = conn.execute(
            "select min(start_time), max(start_time), count(*) from raw.otel_spans"
        ).fetchone()
    assert loaded_objects == len(in_interval)
    # The audit published the run's batch; the event says which spans it brought.
    assert newest_span_event_extra() == {
        "spans_from": first.isoformat(),
        "spans_to": last.isoformat(),
        "spans": spans,
    }
    assert mart_calls == calls
    assert mart_total == total
    assert mart_pipelines == per_pipeline

    # A retry of the same interval, and the next interval, never double-count. The
    # retry lands nothing: its publish task is skipped and no asset event schedules
    # a transform for it.
    retry = dag.test(logical_date=T + timedelta(minutes=15))
    assert str(retry.state) in ("success", "DagRunState.SUCCESS")
    assert states(retry)["spans.plan_spans"] == "success"  # it finds nothing new to load
    assert states(retry)["spans.publish_spans"] == "skipped"
    assert span_asset_events() == events + 1
    run = dag.test(logical_date=T + timedelta(minutes=30))
    assert str(run.state) in ("success", "DagRunState.SUCCESS")
    assert states(run)["spans.publish_spans"] == "success"  # the late objects
    assert span_asset_events() == events + 2
    dbt_build.build(db_url)
    all_total, all_calls, _ = expected_from_objects(in_interval + late)
    with psycopg.connect(db_url) as conn:
        mart_total, mart_calls = conn.execute(
            "select sum(estimated_cost_usd), sum(calls) from marts.agg_pipeline_costs_hourly"
        ).fetchone()
    assert (mart_total, mart_calls) == (all_total, all_calls)
