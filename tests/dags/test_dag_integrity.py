"""DAG integrity: every DAG imports, has tags, an owner, retries >= 2, docs and no cycles."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DAGS = Path(__file__).resolve().parents[2] / "dags"
WATCHER_PRODUCER = "dbt_producer_watcher"  # spancost_transform's `dbt build` (Cosmos)


@pytest.fixture(scope="module")
def dagbag(airflow_db: None):
    from airflow.dag_processing.dagbag import DagBag

    from spancost.transform import manifest

    manifest.path()  # the transform DAG's dbt manifest, made outside the import timeout
    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}


def test_every_dag_file_defines_the_dag_named_after_it(dagbag) -> None:
    files = {path.stem for path in DAGS.glob("*.py") if not path.name.startswith("_")}
    assert files == set(dagbag.dag_ids) == {"spancost_ingest", "spancost_transform"}


@pytest.mark.parametrize("dag_id", ["spancost_ingest", "spancost_transform"])
def test_dag_standards(dagbag, dag_id: str) -> None:
    dag = dagbag.get_dag(dag_id)
    assert dag.tags and "spancost" in dag.tags
    assert dag.doc_md and len(dag.doc_md) > 200
    for task in dag.tasks:
        assert task.owner == "spancost", task.task_id
        if task.task_id == WATCHER_PRODUCER:
            # Cosmos skips a retry of the one `dbt build` (it never runs it twice);
            # each node's own task retries that node alone.
            assert task.retries == 0
            continue
        assert task.retries >= 2, task.task_id
    dag.topological_sort() if hasattr(dag, "topological_sort") else None
    # No cycles: every task is reachable in a walk that never revisits.
    seen: set[str] = set()
    stack = [task for task in dag.tasks if not task.upstream_task_ids]
    assert stack, "a DAG with no root task has a cycle"
    while stack:
        task = stack.pop()
        seen.add(task.task_id)
        stack.extend(dag.get_task(t) for t in task.downstream_task_ids if t not in seen)
    assert seen == {task.task_id for task in dag.tasks}


def test_ingest_publishes_the_asset_transform_is_scheduled_on(dagbag) -> None:
    ingest = dagbag.get_dag("spancost_ingest")
    outlets = {outlet.uri for task in ingest.tasks for outlet in task.outlets}
    assert "spancost://raw/otel_spans" in outlets
    transform = dagbag.get_dag("spancost_transform")
    assert "spancost://raw/otel_spans" in str(transform.timetable.asset_condition)


def test_transform_runs_dbt_once_and_shows_every_model(dagbag) -> None:
    import json

    from spancost.transform import manifest

    transform = dagbag.get_dag("spancost_transform")
    producer = transform.get_task(WATCHER_PRODUCER)
    # Every other task waits for the build (none can run before it and wait forever).
    assert not producer.upstream_task_ids
    assert {t.task_id for t in transform.tasks if not t.upstream_task_ids} == {WATCHER_PRODUCER}
    nodes = json.loads(manifest.path().read_text())["nodes"].values()
    models = {n["name"] for n in nodes if n["resource_type"] == "model"}
    shown = {t.task_id.removesuffix(".run").removesuffix("_run") for t in transform.tasks}
    assert models <= shown


def test_ingest_has_a_group_per_source_pools_backoff_and_timeouts(dagbag) -> None:
    from spancost.local.airflow_local import POOLS

    ingest = dagbag.get_dag("spancost_ingest")
    groups = {task.task_group.group_id for task in ingest.tasks if task.task_group.group_id}
    assert groups == {"spans", "cost_explorer", "prices", "sagemaker", "cloudwatch"}
    for group_id in groups:
        assert ingest.task_group.get_child_by_label(group_id).tooltip, group_id
    for task in ingest.tasks:
        assert task.retries >= 2 and task.retry_exponential_backoff > 1, task.task_id
        assert task.execution_timeout is not None, task.task_id
        # each source's asset comes from its publish task only
        assert bool(task.outlets) == task.task_id.split(".")[-1].startswith("publish_")
    pools = {task.task_id: task.pool for task in ingest.tasks}
    assert pools["cost_explorer.pull_cost_explorer"] == "spancost_cost_explorer"
    assert pools["prices.pull_price_list"] == "spancost_price_list"
    assert {"spancost_cost_explorer", "spancost_price_list"} <= set(POOLS)
