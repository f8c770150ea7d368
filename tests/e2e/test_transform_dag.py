"""End to end: dag.test() of spancost_transform, the Cosmos rendering of the dbt project.

Spans are loaded with the package, then the Airflow DAG builds the project: one
`dbt build` in Cosmos's watcher producer task, and one task per seed, model and
model's tests reporting that node's result; the mart's total must equal the
independent computation from the uploaded objects.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from spancost import pipeline
from spancost.demo import traffic
from spancost.settings import Settings, SpanSource
from tests.e2e.test_ingest_dag import expected_from_objects

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
T = datetime(2026, 2, 4, 13, 0, tzinfo=UTC)


def test_cosmos_transform_dag_builds_the_marts(
    s3, db_url: str, airflow_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    spans = traffic.generate_spans(T, T + timedelta(minutes=30), seed=23, traces_per_hour=40)
    objects = traffic.build_objects(spans, prefix="otel/traces", seed=23)
    traffic.upload_objects(s3, "spans", objects)
    settings = Settings(
        spans=SpanSource(bucket="spans", prefix="otel/traces"), user_id_salt="t", validate=False
    )
    report = pipeline.ingest_spans(settings, s3, T, T + timedelta(hours=1), url=db_url, run_id="t")
    assert report.count("loaded") == len(objects)
    total, calls, _ = expected_from_objects(objects)

    # Cosmos builds the dbt profile from this connection and requires a password;
    # with trust authentication any value will do.
    parts = urlsplit(db_url)
    if not parts.password:
        parts = parts._replace(
            netloc=f"{parts.username or 'postgres'}:trust@{parts.hostname}:{parts.port}"
        )
    monkeypatch.setenv("AIRFLOW_CONN_SPANCOST_POSTGRES", parts.geturl())

    from airflow.dag_processing.dagbag import DagBag

    from spancost.transform import manifest

    manifest.path()  # the DAG's dbt manifest, made outside the import timeout
    bag = DagBag(dag_folder=str(REPO / "dags" / "spancost_transform.py"))
    assert bag.import_errors == {}
    dag = bag.get_dag("spancost_transform")
    run = dag.test()
    assert str(run.state) in ("success", "DagRunState.SUCCESS")
    # The last tasks tell the alerts and check the marts; they run after every dbt node.
    assert {t.task_id for t in dag.tasks if not t.downstream_list} == {"alerts", "check_marts"}
    dbt_nodes = set(dag.task_ids) - {"alerts", "check_marts"}
    for final in ("alerts", "check_marts"):
        assert dag.get_task(final).get_flat_relative_ids(upstream=True) == dbt_nodes
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    # The one dbt build and every node's task (a model, a seed, a model's tests) succeeded.
    assert "dbt_producer_watcher" in states
    failed = {task_id for task_id, state in states.items() if "success" not in state.lower()}
    assert failed == set()
    with psycopg.connect(db_url) as conn:
        checked = conn.execute(
            "select count(*) from ops.validation_results where dataset = 'marts'"
        ).fetchone()[0]
    assert checked == 4  # every expectation of pipeline_cost_profile, recorded once
    with psycopg.connect(db_url) as conn:
        mart_total, mart_calls = conn.execute(
            "select sum(estimated_cost_usd), sum(calls) from marts.agg_pipeline_costs_hourly"
        ).fetchone()
    assert (mart_total, mart_calls) == (total, calls)
