"""
### spancost_transform

Builds the dbt project in `dbt/` (staging → intermediate → marts) with
Astronomer Cosmos, one Airflow task per dbt model, seed and test.

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
from cosmos.constants import LoadMode, TestBehavior
from cosmos.profiles import PostgresUserPasswordProfileMapping

from spancost.transform import window

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
    project_config=ProjectConfig(dbt_project_path=DBT_PROJECT),
    profile_config=ProfileConfig(
        profile_name="spancost",
        target_name="airflow",
        profile_mapping=PostgresUserPasswordProfileMapping(
            conn_id="spancost_postgres", profile_args={"schema": "public"}
        ),
    ),
    execution_config=ExecutionConfig(
        dbt_executable_path=str(Path(sys.executable).with_name("dbt"))
    ),
    render_config=RenderConfig(
        load_method=LoadMode.DBT_LS,
        test_behavior=TestBehavior.AFTER_EACH,
        # Tests between two models (relationships) run once both are built.
        should_detach_multiple_parents_tests=True,
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
