"""
### spancost_ingest

Every 15 minutes, loads the OpenTelemetry trace exports that the Collector's
**awss3exporter** wrote to S3 into Postgres (`raw.otel_spans`).

* **What a run reads:** the S3 partitions (upload time) of its data interval,
  plus a lateness lookback (param `lateness_minutes`, default from
  `SPANCOST_SPANS_LATENESS_MINUTES`, 15). Bucket and prefix come from
  `SPANCOST_SPANS_BUCKET` / `SPANCOST_SPANS_PREFIX`.
* **Exactly once:** each object is loaded in one transaction together with its
  row in the manifest `raw.s3_objects`. Retries, overlapping runs and backfills
  skip what is already loaded; an object re-uploaded with a new etag replaces
  its rows.
* **Fan-out:** `spans.plan_spans` lists the interval's exports not loaded yet
  and cuts them into chunks of `SPANCOST_LOAD_CHUNK_OBJECTS` (100);
  `spans.ingest_spans` is mapped over the chunks, so more Airflow workers load
  more at once. Chunks that overlap (two runs' lateness windows) still load each
  object once.
* **Speed and memory:** `SPANCOST_LOAD_WORKERS` processes (default: the CPU
  count, at most 4; ~150 MiB each, ~400 MiB with the GX gate) decode and
  encode while the task commits; objects of
  `SPANCOST_STREAM_OBJECT_BYTES` (8 MiB) or more are streamed in chunks inside
  their one transaction, so a 1 GB JSON Lines file never sits in memory.
  Figures: `bench/RESULTS.md`.
* **Bad input:** an object that cannot be decoded, that makes any step raise,
  or whose worker process dies on it twice, is *quarantined*: the manifest
  `raw.s3_objects` keeps its status, reason, `error_type` and `error_location`
  (line and column, or JSON path), and later runs skip it. A span that breaks a
  row rule goes to `ops.rejected_spans` with the reason. Values changed to be
  storable (NUL, invalid UTF-8, NaN) are counted in the manifest's `changes`.
  The rest loads; the load tasks fail only when S3 or Postgres fail.
* **Write, audit, publish:** with param `validate` on (the default), the run's
  spans land as one *pending* batch (`ops.load_batches`) that dbt does not read.
  `spans.validate_spans` then runs the Great Expectations checkpoint
  `otel_spans` (`expectations/`) on that batch, in SQL inside Postgres. Passed
  (or only warnings): the batch is published, flagged when warned. A critical
  expectation failed: the batch stays in raw, quarantined, out of the marts, and
  the task fails naming the suite and the expectations (its retries too). Every
  outcome is a row of `ops.validation_results`. A pending batch left by a run
  that died is audited by the next run, two hours after its last write. Cost
  Explorer pulls go the same way: each complete pull is a batch, audited by
  `cost_explorer.validate_costs` with the checkpoint `ce_cost_and_usage`; a
  quarantined pull is not read, so each period keeps its previous good pull.
  CloudWatch pulls too (`cloudwatch.validate_invocations`, checkpoint
  `sagemaker_invocations_hourly`): the hours a quarantined pull wrote are not
  read until a later good pull writes them again. Price List pulls land in
  `raw.aws_price_list_landed` and `prices.validate_prices` (checkpoint
  `aws_price_list`) merges a passed pull into the effective-dated prices; a
  quarantined pull's rows stay landed, the prices in use stay, marked stale, and
  the next run pulls again. Each region's SageMaker snapshot is a batch too
  (`sagemaker.validate_endpoints`, checkpoint `sagemaker_endpoint_snapshots`);
  staging skips a quarantined one.
* **Backfill:** trigger with params `start` and `end` (ISO 8601, UTC), or use
  Airflow's backfill; a run always reads its own interval, never "now". A run is
  named by its interval's start and `--to-date` counts in: one hour is
  `--from-date …T00:00 --to-date …T00:45` (4 runs), one day ends at `T23:45`.
* **Connections:** `spancost_postgres` (Postgres) and `aws_default` (AWS; the
  standard `AWS_ENDPOINT_URL` variable points it at a local endpoint).
* **Billing and prices**, beside the spans:
  * `pull_cost_explorer` re-pulls Cost Explorer's restatement window (last 7
    days, plus the previous month until the 5th) only when the last complete
    pull is older than `SPANCOST_CE_MIN_INTERVAL_MINUTES` (240): Cost Explorer
    costs $0.01 a page, and every request is logged in `ops.api_requests`.
    Param `force_cost_explorer` pulls anyway. A failed pull keeps the previous
    data and fails the task, saying which query failed.
  * `pull_price_list` refreshes the AWS Price List (SageMaker and EC2 GPU
    instance-hours, Bedrock tokens) once a day, effective-dated; when the API
    fails the last good prices stay, marked stale. Param `force_price_list`.
  * `snapshot_sagemaker` records the SageMaker endpoints of
    `SPANCOST_SAGEMAKER_REGIONS` every run, so idle endpoints can be priced.
  * `pull_sagemaker_invocations`, after it, pulls the hourly CloudWatch
    `Invocations` of those endpoints (`raw.sagemaker_invocations_hourly`) for
    the run's interval plus the 3 hours before it, as CloudWatch data arrives
    late; a re-pulled hour is overwritten, never duplicated. GetMetricData
    costs $0.01 per 1,000 metrics; every request is in `ops.api_requests`.
* **Publishes** the assets `spancost://raw/otel_spans`,
  `spancost://raw/ce_cost_and_usage`, `spancost://raw/aws_price_list`,
  `spancost://raw/sagemaker_endpoint_snapshots` and
  `spancost://raw/sagemaker_invocations_hourly`, each from a `publish_*` task
  after its source's task, and only when new rows landed: with nothing new
  (a backfill run over loaded objects, Cost Explorer not due) the `publish_*`
  task is skipped and no asset event is emitted. Spans and Cost Explorer
  results schedule `spancost_transform`. The spans event's extra holds the
  published spans' time range (`spans_from`, `spans_to`), so the transform it
  triggers rebuilds the days of spans older than its lookback (a backfill).
* **Paused?** Under `make airflow` the DAGs start active. Elsewhere Airflow's
  default (`dags_are_paused_at_creation`) leaves a new DAG paused, and a run
  triggered then waits, queued, until the DAG is switched on (the toggle beside
  its name).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import (
    Asset,
    CronDataIntervalTimetable,
    Param,
    dag,
    get_current_context,
    task,
    task_group,
)

SPANS = Asset("spancost://raw/otel_spans")
COSTS = Asset("spancost://raw/ce_cost_and_usage")
PRICES = Asset("spancost://raw/aws_price_list")
ENDPOINTS = Asset("spancost://raw/sagemaker_endpoint_snapshots")
INVOCATIONS = Asset("spancost://raw/sagemaker_invocations_hourly")
# One slot each: Cost Explorer charges per request and throttles, the Price List API
# throttles; overlapping runs and backfills queue here instead of both calling.
CE_POOL = "spancost_cost_explorer"
PRICE_LIST_POOL = "spancost_price_list"


@dag(
    dag_id="spancost_ingest",
    # Data intervals, not trigger times: each run owns [start, start + 15 min).
    schedule=CronDataIntervalTimetable("*/15 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=4,
    default_args={
        "owner": "spancost",
        "retries": 3,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,  # 1, 2, 4 minutes
        "max_retry_delay": timedelta(minutes=15),
        "execution_timeout": timedelta(minutes=5),
    },
    tags=["spancost", "ingest"],
    doc_md=__doc__,
    params={
        "start": Param(
            None, type=["null", "string"], description="Override interval start (ISO 8601)"
        ),
        "end": Param(None, type=["null", "string"], description="Override interval end (ISO 8601)"),
        "lateness_minutes": Param(None, type=["null", "integer"], minimum=0),
        "validate": Param(
            True,
            type="boolean",
            description="Audit the landed spans with Great Expectations before dbt reads them",
        ),
        "force_cost_explorer": Param(False, type="boolean", description="Pull CE even if fresh"),
        "force_price_list": Param(False, type="boolean", description="Pull prices even if fresh"),
    },
)
def spancost_ingest() -> None:
    # One task group per source. Each loads in one task and publishes its asset in
    # the next; a publish task with nothing new to tell is skipped, and a skipped
    # task emits no asset event, so spancost_transform runs only when rows landed.

    @task_group(group_id="spans")
    def spans() -> None:
        """The interval's new span exports, chunked over mapped load tasks; asset `spancost://raw/otel_spans`."""

        @task(execution_timeout=timedelta(minutes=10))
        def plan_spans() -> list[list[dict[str, object]]]:
            """List the interval's new exports and cut them into chunks, one per load task."""
            from spancost import airflow_adapter

            return airflow_adapter.plan_spans(dict(get_current_context()))

        @task(execution_timeout=timedelta(minutes=30))
        def ingest_spans(chunk: list[dict[str, object]]) -> dict[str, int]:
            """Load one chunk of exports into raw.otel_spans (mapped: one task per chunk)."""
            from spancost import airflow_adapter

            return airflow_adapter.ingest_span_chunk(dict(get_current_context()), chunk)

        @task(trigger_rule="none_failed", execution_timeout=timedelta(minutes=15))
        def validate_spans(loaded: list[dict[str, int]]) -> dict[str, object]:
            """Audit the run's span batch with GX in SQL; publish or quarantine it."""
            from spancost import airflow_adapter

            return airflow_adapter.validate_spans(dict(get_current_context()), loaded)

        @task(outlets=[SPANS])
        def publish_spans(validated: dict[str, object]) -> dict[str, object]:
            """Emit the spans asset (extra: the spans' time range) when spans were published."""
            from spancost import airflow_adapter

            return airflow_adapter.publish_spans(dict(get_current_context()), validated)

        publish_spans(validate_spans(ingest_spans.expand(chunk=plan_spans())))

    @task_group(group_id="cost_explorer")
    def cost_explorer() -> None:
        """Cost Explorer results when due (pool `spancost_cost_explorer`); asset `spancost://raw/ce_cost_and_usage`."""

        @task(pool=CE_POOL, execution_timeout=timedelta(minutes=20))
        def pull_cost_explorer() -> dict[str, object]:
            """Refresh Cost Explorer results when they are older than the refresh interval."""
            from spancost import airflow_adapter

            return airflow_adapter.refresh_cost_explorer(dict(get_current_context()))

        @task(execution_timeout=timedelta(minutes=15))
        def validate_costs(pulled: dict[str, object]) -> dict[str, int]:
            """Audit the run's Cost Explorer pulls with GX in SQL; publish or quarantine each."""
            from spancost import airflow_adapter

            return airflow_adapter.validate_costs(dict(get_current_context()), pulled)

        @task(outlets=[COSTS])
        def publish_costs(validated: dict[str, object]) -> dict[str, object]:
            """Emit the Cost Explorer asset when a pull was published; skipped when not due."""
            from spancost import airflow_adapter

            return airflow_adapter.publish_when_new(validated, "published", "Cost Explorer rows")

        publish_costs(validate_costs(pull_cost_explorer()))

    @task_group(group_id="prices")
    def prices() -> None:
        """The AWS Price List, daily (pool `spancost_price_list`); asset `spancost://raw/aws_price_list`."""

        @task(pool=PRICE_LIST_POOL, execution_timeout=timedelta(minutes=20))
        def pull_price_list() -> dict[str, object]:
            """Refresh the AWS Price List when it is older than a day."""
            from spancost import airflow_adapter

            return airflow_adapter.refresh_price_list(dict(get_current_context()))

        @task(execution_timeout=timedelta(minutes=15))
        def validate_prices(pulled: dict[str, object]) -> dict[str, int]:
            """Audit the run's Price List pulls with GX in SQL; merge the passed ones."""
            from spancost import airflow_adapter

            return airflow_adapter.validate_prices(dict(get_current_context()), pulled)

        @task(outlets=[PRICES])
        def publish_prices(validated: dict[str, object]) -> dict[str, object]:
            """Emit the price-list asset when a published pull changed a price."""
            from spancost import airflow_adapter

            return airflow_adapter.publish_when_new(validated, "rows_inserted", "prices")

        publish_prices(validate_prices(pull_price_list()))

    @task_group(group_id="sagemaker")
    def sagemaker() -> None:
        """The SageMaker endpoints of each region, every run; asset `spancost://raw/sagemaker_endpoint_snapshots`."""

        @task(execution_timeout=timedelta(minutes=10))
        def snapshot_sagemaker() -> dict[str, int]:
            """Snapshot the SageMaker endpoints and their instances."""
            from spancost import airflow_adapter

            return airflow_adapter.snapshot_sagemaker(dict(get_current_context()))

        @task(execution_timeout=timedelta(minutes=15))
        def validate_endpoints(snapshots: dict[str, int]) -> dict[str, int]:
            """Audit the run's endpoint snapshots with GX in SQL; publish or quarantine each."""
            from spancost import airflow_adapter

            return airflow_adapter.validate_endpoints(dict(get_current_context()), snapshots)

        @task(outlets=[ENDPOINTS])
        def publish_endpoints(validated: dict[str, int]) -> dict[str, int]:
            """Emit the endpoint-snapshot asset when a snapshot with endpoints was published."""
            from spancost import airflow_adapter

            return airflow_adapter.publish_when_new(validated, "published", "endpoint snapshots")

        publish_endpoints(validate_endpoints(snapshot_sagemaker()))

    @task_group(group_id="cloudwatch")
    def cloudwatch() -> None:
        """Hourly endpoint invocations from CloudWatch; asset `spancost://raw/sagemaker_invocations_hourly`."""

        # Runs when the snapshot failed its audit too: the endpoints it asks CloudWatch
        # about come from every snapshot of the last day.
        @task(execution_timeout=timedelta(minutes=10), trigger_rule="all_done")
        def pull_sagemaker_invocations() -> dict[str, int]:
            """Pull the endpoints' hourly CloudWatch invocations (interval plus 3 hours back)."""
            from spancost import airflow_adapter

            return airflow_adapter.pull_sagemaker_invocations(dict(get_current_context()))

        @task(execution_timeout=timedelta(minutes=15))
        def validate_invocations(pulled: dict[str, int]) -> dict[str, int]:
            """Audit the run's CloudWatch pulls with GX in SQL; publish or quarantine each."""
            from spancost import airflow_adapter

            return airflow_adapter.validate_invocations(dict(get_current_context()), pulled)

        @task(outlets=[INVOCATIONS])
        def publish_invocations(validated: dict[str, int]) -> dict[str, int]:
            """Emit the invocations asset when endpoint-hours were published."""
            from spancost import airflow_adapter

            return airflow_adapter.publish_when_new(validated, "published", "endpoint invocations")

        publish_invocations(validate_invocations(pull_sagemaker_invocations()))

    spans()
    cost_explorer()
    prices()
    # The invocations are pulled for the endpoints just snapshotted.
    sagemaker() >> cloudwatch()


spancost_ingest()
