"""
### spancost_transform

Builds the dbt project in `dbt/` (staging → intermediate → marts) with
Astronomer Cosmos in its *watcher* execution mode: one task per dbt model and
seed, and one per model's tests, but dbt itself runs once.

* **How dbt runs:** the first task, `dbt_producer_watcher`, runs one `dbt build`
  of the whole project (a dbt child process, 2 threads), the same build as
  `spancost transform`, and records each node's result from dbt's JSON log as it
  finishes. When it ends, each model's task (`<model>.run`, `<seed>.seed`) and
  test task (`<model>.test`: every data test of the model, a relationships test
  in both models' tasks) reads its node's result and succeeds or fails with it;
  its log shows dbt's lines for that node and the producer's log the whole build.
  So the graph and the run's state show every model while dbt starts once, not
  once per task (`python -m bench.transform_dag` compares the run with one
  `dbt build`).
* **Cosmos settings:** run it with `AIRFLOW__COSMOS__ENABLE_TELEMETRY=False` and
  `AIRFLOW__COSMOS__ENABLE_WATCHER_RELIABLE_RETRY=False` (`make airflow` and the compose
  stack do): no usage report over the network from every task, and no backup of every
  dbt event to an Airflow Variable for a producer retry this DAG never makes. No
  Airflow asset is registered per dbt model (nothing schedules on them).
* **Retries:** the producer is not retried (a retry would not run the build
  again). A failed model's or test's task is retried on its own: the retry runs
  `dbt run` (or `dbt test`) of that node alone, then its downstream tasks go on.
* **Rendering:** the task graph comes from dbt's manifest, which `dbt parse`
  writes once per version of the project (`dbt/target/spancost_manifest/`,
  `spancost.transform.manifest`), so parsing this file runs no dbt while the
  project is unchanged.
* **When:** whenever `spancost_ingest` publishes new spans or Cost Explorer
  results (assets `spancost://raw/otel_spans`, `spancost://raw/ce_cost_and_usage`),
  or by hand.
* **Window:** incremental marts reprocess the last `lookback_hours` (dbt var,
  default 48). For a backfill, trigger with params `start_time` and `end_time`
  (ISO 8601, UTC); they become the dbt vars of the same name. A run triggered by
  `spancost_ingest` runs that published spans older than the lookback (a backfill
  of last Tuesday) rebuilds whole UTC days from the oldest of those spans to the
  newest span of the triggering runs, so those days' marts are rebuilt too; the
  range comes from each asset event's extra (`spans_from`, `spans_to`).
* **Profile:** built by Cosmos from the Airflow connection `spancost_postgres`.
* **Output:** `marts.agg_pipeline_costs_hourly` and the other marts; their
  documentation is the dbt docs site (`dbt docs generate`).
* **Alerts:** the last task, `alerts`, runs the same code as `spancost alerts`:
  new anomalies (`marts.fct_cost_anomalies`, within `SPANCOST_ALERT_LOOKBACK_HOURS`,
  48, of the newest data) and budget status rises (`marts.rpt_budget_status`) are
  recorded once in `ops.alerts` and delivered once to the log; when
  `SPANCOST_ALERT_WEBHOOK_URL` is set, as one JSON POST each; and to Slack when
  the connection `spancost_slack` (type `slackwebhook`) exists. A failed delivery
  does not fail the run; the next run retries it.
* **Mart checks:** `check_marts`, beside `alerts`, runs the Great Expectations
  checkpoint `pipeline_cost_profile` (`expectations/`) on
  `marts.rpt_pipeline_cost_profile`: each pipeline's newest whole day against its
  trailing 14 days. A cost more than 4 standard deviations above the trailing
  mean, or a 90% drop in calls, is a failed warning: recorded in
  `ops.validation_results` (dataset `marts`) and in the task's log and return
  value; it does not fail the run. A failed critical expectation does.
* **Paused?** Under `make airflow` the DAGs start active. Elsewhere Airflow's
  default (`dags_are_paused_at_creation`) leaves a new DAG paused, and a run
  triggered then waits, queued, until the DAG is switched on (the toggle beside
  its name).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk import Asset, Param, get_current_context, task
from cosmos import DbtDag, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import (
    PRODUCER_WATCHER_TASK_ID,
    ExecutionMode,
    InvocationMode,
    LoadMode,
    TestBehavior,
)
from cosmos.profiles import PostgresUserPasswordProfileMapping

from spancost.transform import manifest, window

DBT_PROJECT = Path(__file__).resolve().parents[1] / "dbt"
SPANS = Asset("spancost://raw/otel_spans")
COSTS = Asset("spancost://raw/ce_cost_and_usage")

spancost_transform = DbtDag(
    dag_id="spancost_transform",
    schedule=SPANS | COSTS,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "spancost",
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,
        "execution_timeout": timedelta(minutes=30),
    },
    tags=["spancost", "dbt"],
    doc_md=__doc__,
    params={
        "start_time": Param("", type="string", description="Backfill window start (ISO 8601)"),
        "end_time": Param("", type="string", description="Backfill window end (ISO 8601)"),
    },
    # Rendered from dbt's manifest (`dbt parse`, cached per version of the project:
    # spancost.transform.manifest), not from a `dbt ls` at every DAG parse.
    project_config=ProjectConfig(
        dbt_project_path=DBT_PROJECT, manifest_path=manifest.path(DBT_PROJECT)
    ),
    profile_config=ProfileConfig(
        profile_name="spancost",
        target_name="airflow",
        profile_mapping=PostgresUserPasswordProfileMapping(
            conn_id="spancost_postgres", profile_args={"schema": "public", "threads": 2}
        ),
    ),
    # One `dbt build` in the producer task; one sensor task per node. dbt runs as a
    # child process: in-process (DBT_RUNNER) its threads wait on Cosmos's XCom writes
    # of every node event, and the DAG took about twice as long (bench/transform_dag.py).
    execution_config=ExecutionConfig(
        execution_mode=ExecutionMode.WATCHER,
        invocation_mode=InvocationMode.SUBPROCESS,
        dbt_executable_path=str(Path(sys.executable).with_name("dbt")),
        # A retry of the producer would only skip (Cosmos never runs the build twice);
        # a failed node is retried by its own task, which then runs that node alone.
        setup_operator_args={"retries": 0},
    ),
    render_config=RenderConfig(
        load_method=LoadMode.DBT_MANIFEST,
        test_behavior=TestBehavior.AFTER_EACH,
        # A test of two models (relationships) is reported by the test task of each:
        # the one dbt build runs it once both are built. (As a task of its own under
        # the watcher it would only ever report "not run".)
        should_detach_multiple_parents_tests=False,
        # No Airflow asset per dbt model: nothing schedules on them, and each would
        # be one more asset event per node task and run for the scheduler to handle.
        emit_datasets=False,
    ),
    # The window: params by hand, else the days of old spans the triggering ingest
    # runs published (spancost.transform.window), else dbt's lookback.
    user_defined_macros={"spancost_dbt_var": window.dbt_var},
    operator_args={
        "install_deps": False,
        "vars": {
            "start_time": (
                "{{ spancost_dbt_var(triggering_asset_events, 'start', params.start_time) }}"
            ),
            "end_time": "{{ spancost_dbt_var(triggering_asset_events, 'end', params.end_time) }}",
        },
    },
)

# Cosmos starts the first nodes' tasks with the producer (trigger rule "always", and
# the staging models, whose parents are sources, with no upstream task at all) and
# has them wait for its results. They start when it has finished instead: the build
# gets the machine to itself, each node's task then reads its result at once, and
# dag.test(), which runs one task at a time, cannot run a waiting task before the
# producer and block forever.
producer = spancost_transform.task_dict.get(PRODUCER_WATCHER_TASK_ID)
if producer is not None:
    for first in list(spancost_transform.tasks):
        if first is not producer and first.upstream_task_ids <= {producer.task_id}:
            producer >> first
            first.trigger_rule = "all_done"

with spancost_transform:

    @task
    def alerts() -> dict[str, object]:
        """Record and deliver new anomalies and budget changes (spancost.alerts)."""
        from spancost import airflow_adapter

        return airflow_adapter.send_alerts()

    @task
    def check_marts() -> dict[str, object]:
        """Great Expectations on the marts (checkpoint pipeline_cost_profile); warnings logged."""
        from spancost import airflow_adapter

        return airflow_adapter.check_marts(dict(get_current_context()))

    finals = [alerts(), check_marts()]
    ends = {final.operator.task_id for final in finals}
    for node in list(spancost_transform.tasks):
        if node.task_id not in ends and not node.downstream_list:
            for final in finals:
                node >> final
