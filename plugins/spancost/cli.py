"""The ``spancost`` command line: demo, ingestion, transformation and local services."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import psycopg

from spancost import db, settings
from spancost.db import embedded
from spancost.errors import ConfigError, SpancostError
from spancost.local import endpoints
from spancost.transform import dbt_build, report
from spancost.validation import batches

log = logging.getLogger("spancost")

DEMO_BUCKET = "spancost-demo-traces"
DEMO_PREFIX = "otel/traces"
DEMO_SALT = "spancost-demo-salt"


def _s3() -> object:
    import boto3

    return boto3.client("s3")


def _ce() -> object:
    import boto3

    from spancost.billing import aws_requests

    return boto3.client("ce", region_name="us-east-1", config=aws_requests.client_config())


def _pricing() -> object:
    import boto3

    # The Price List API is served from us-east-1 (and eu-central-1, ap-south-1).
    return boto3.client("pricing", region_name="us-east-1")


def _sagemaker_clients(service: str = "sagemaker") -> dict[str, object]:
    """A client of `service` (sagemaker, or cloudwatch for its metrics) per SageMaker region."""
    import boto3

    from spancost.billing import aws_requests
    from spancost.pipeline import sagemaker_regions

    return {
        region: boto3.client(service, region_name=region, config=aws_requests.client_config())
        for region in sagemaker_regions()
    }


def _now() -> datetime:
    return datetime.now(UTC)


def cmd_db(args: argparse.Namespace) -> int:
    pg = embedded.LocalPostgres(settings.home())
    if args.action == "up":
        print(db.redact(embedded.start(pg)))
    elif args.action == "down":
        print("stopped" if embedded.stop(pg) else "not running")
    elif args.action == "url":
        print(db.database_url() if args.show_password else db.redact(db.database_url()))
    elif args.action == "init":
        with db.connect(db.database_url()) as conn:
            db.apply_schema(conn)
            print("schema ready")
            try:
                db.create_bi_role(conn)
            except psycopg.errors.InsufficientPrivilege as exc:
                # The schema is in; only the BI role needs CREATEROLE.
                print(
                    f"could not create the read-only role {db.BI_ROLE} ({exc}); a user with"
                    " CREATEROLE can run plugins/spancost/db/roles/bi_role.sql once",
                    file=sys.stderr,
                )
                return 0
        print(f"read-only role {db.BI_ROLE} can read marts")
    return 0


def cmd_aws(args: argparse.Namespace) -> int:
    aws = endpoints.LocalAws(settings.home())
    if args.action == "up":
        print(endpoints.start(aws))
    elif args.action == "down":
        print("stopped" if endpoints.stop(aws) else "not running")
    return 0


DEMO_ANOMALY_MIN_COST_USD = "2.00"


def demo_settings() -> settings.Settings:
    return settings.Settings(
        spans=settings.SpanSource(bucket=DEMO_BUCKET, prefix=DEMO_PREFIX),
        user_id_salt=os.environ.get("SPANCOST_USER_ID_SALT", DEMO_SALT),
    )


def demo_window(day: str | None) -> tuple[datetime, datetime]:
    """The demo's day: the given date, or yesterday (UTC), so a rerun gives the same data."""
    if day:
        start = settings.utc_time(day, "--date").replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
            days=1
        )
    return start, start + timedelta(days=1)


def cmd_demo(args: argparse.Namespace) -> int:
    from spancost import alerts, pipeline
    from spancost.billing import cost_explorer
    from spancost.demo import bill, traffic

    url = db.database_url()
    with db.connect(url) as conn:
        db.apply_schema(conn)
        db.create_bi_role(conn)
    aws = endpoints.LocalAws(settings.home())
    endpoints.use(endpoints.start(aws), endpoints.start_pricing(aws, bill.pricing_catalogue()))
    s3 = _s3()
    buckets = {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}  # type: ignore[attr-defined]
    if DEMO_BUCKET not in buckets:
        s3.create_bucket(Bucket=DEMO_BUCKET)  # type: ignore[attr-defined]
    start, end = demo_window(args.date)
    if args.history_days < 0:
        raise ConfigError(f"--history-days must be 0 or more, got {args.history_days}")
    # Days of steady history before the demo day, so each scope has a baseline, and an
    # incident on the demo day: ticket-triage's researcher loops for an hour.
    first = start - timedelta(days=args.history_days)
    incident = traffic.RetryLoop(
        "support-triage", "ticket-triage", start + timedelta(hours=14), turns=8
    )
    print(
        f"generating demo traffic for {first:%Y-%m-%d} to {start:%Y-%m-%d} (UTC),"
        f" seed {args.seed}, with a retry loop in feature {incident.feature} of"
        f" {incident.pipeline_id} from {incident.start:%Y-%m-%d %H:%M} UTC ..."
    )
    spans = traffic.generate_spans(
        first,
        end,
        seed=args.seed,
        traces_per_hour=args.traces_per_hour,
        retry_loops=[incident],
    )
    objects = traffic.build_objects(spans, prefix=DEMO_PREFIX, seed=args.seed)
    traffic.upload_objects(s3, DEMO_BUCKET, objects)
    print(
        f"uploaded {len(objects)} export objects ({len(spans)} spans) to s3://{DEMO_BUCKET}/{DEMO_PREFIX}/"
    )
    loaded = pipeline.ingest_spans(
        demo_settings(),
        s3,
        first,
        end + timedelta(minutes=15),
        url=url,
        run_id=f"demo-{uuid.uuid4()}",
    )
    print(f"ingest: {loaded.summary()}")

    # The AWS side: a bill consistent with the spans, an idle endpoint, the price list.
    bill.create_idle_endpoint(_sagemaker_clients()["us-east-1"])
    now = _now()
    # The demo bills one linked account too (the opt-in per-account query).
    os.environ.setdefault("SPANCOST_CE_LINKED_ACCOUNTS", "1")
    bill.preset_cost_explorer(
        os.environ["AWS_ENDPOINT_URL"],
        bill.cost_explorer_results(
            spans,
            [(first + timedelta(days=n)).date() for n in range(args.history_days + 1)],
            now.date(),
            cost_explorer.settings_from_env(),
        ),
    )
    costs_run = f"demo-{uuid.uuid4()}"
    costs = pipeline.refresh_costs(url, _ce(), now, run_id=costs_run)
    audits = pipeline.audit_batches(url, batches.COST_EXPLORER, costs_run)
    print(f"cost explorer: {costs.summary()}, {len(audits)} pulls audited and published")
    prices_run = f"demo-{uuid.uuid4()}"
    prices = pipeline.refresh_prices(url, _pricing(), now, run_id=prices_run)
    merged = pipeline.audit_batches(url, batches.PRICES, prices_run)
    print(f"price list: {len(prices)} queries pulled, {len(merged)} audited and merged")
    snapshots_run = f"demo-{uuid.uuid4()}"
    snapshots = pipeline.snapshot_sagemaker(url, _sagemaker_clients(), now, run_id=snapshots_run)
    pipeline.audit_batches(url, batches.ENDPOINTS, snapshots_run)
    print(f"sagemaker: {sum(r.endpoints for r in snapshots)} endpoints snapshotted and audited")
    invocations_run = f"demo-{uuid.uuid4()}"
    invocations = pipeline.pull_endpoint_invocations(
        url, _sagemaker_clients("cloudwatch"), first, now, run_id=invocations_run
    )
    pipeline.audit_batches(url, batches.INVOCATIONS, invocations_run)
    print(f"cloudwatch: {sum(r.rows for r in invocations)} endpoint-hours with invocations")

    # Rebuild the marts of the demo's days, whatever the lookback would reach. At the
    # demo's volume (a few traces per feature and hour, under $1 an hour each) an
    # ordinary busy hour can double; an hour under $2 is not judged.
    dbt_build.build(
        url,
        dbt_vars={
            "start_time": first.isoformat(),
            "end_time": end.isoformat(),
            "anomaly_min_cost_usd": DEMO_ANOMALY_MIN_COST_USD,
        },
    )
    print(f"dbt build: ok (anomaly_min_cost_usd {DEMO_ANOMALY_MIN_COST_USD} at the demo's volume)")
    for audited in pipeline.check_marts(url, f"demo-{uuid.uuid4()}"):
        failed = [outcome.describe() for outcome in audited.failed]
        print(f"marts check {audited.batch_id}: {'; '.join(failed) or 'every expectation passed'}")
    print()
    for view in report.VIEWS:
        if view == "idle":
            # The demo's endpoint exists from now on (moto creates it now): every day.
            print(f"{report.VIEWS[view].title}, every day:\n")
            print(report.table(view, url, None, None, limit=5) + "\n")
            continue
        when = f", {start:%Y-%m-%d} (UTC)" if report.VIEWS[view].windowed else ""
        print(f"{report.VIEWS[view].title}{when}:\n")
        print(report.table(view, url, start, end, limit=5) + "\n")
    result = alerts.run(url)  # the demo tells the log only
    print(f"alerts (what `spancost alerts` would tell, here to the log): {result.summary()}")
    return 0


def cmd_ingest_spans(args: argparse.Namespace) -> int:
    from spancost import pipeline

    config = settings.from_env()
    start, end = settings.utc_time(args.start, "--start"), settings.utc_time(args.end, "--end")
    if end <= start:
        raise ConfigError(f"--end ({end.isoformat()}) must be after --start ({start.isoformat()})")
    loaded = pipeline.ingest_spans(
        config, _s3(), start, end, url=db.database_url(), run_id=f"cli-{uuid.uuid4()}"
    )
    print(loaded.summary())
    return 1 if loaded.count("quarantined") and args.strict else 0


def cmd_pull_costs(args: argparse.Namespace) -> int:
    from spancost import pipeline

    url = db.database_url()
    run_id = f"cli-{uuid.uuid4()}" if settings.from_env().validate else None
    report = pipeline.refresh_costs(url, _ce(), _now(), force=args.force, run_id=run_id)
    print(report.summary())
    if run_id is not None:
        audits = pipeline.audit_batches(url, batches.COST_EXPLORER, run_id)
        print(f"audited {len(audits)} pulls: every one published")
    return 0


def cmd_pull_prices(args: argparse.Namespace) -> int:
    from spancost import pipeline

    url = db.database_url()
    run_id = f"cli-{uuid.uuid4()}" if settings.from_env().validate else None
    results = pipeline.refresh_prices(url, _pricing(), _now(), force=args.force, run_id=run_id)
    for result in results:
        print(
            f"{result.query_name}: {result.status}, "
            f"{result.rows_inserted} new, {result.rows_closed} closed"
        )
    if run_id is not None:
        # Merged into the effective-dated prices only now, when the audit passed them.
        for audited in pipeline.audit_batches(url, batches.PRICES, run_id):
            print(f"pull {audited.batch_id}: {audited.rows} rows audited, {audited.status}")
    return 0 if all(result.ok for result in results) else 1


def cmd_snapshot_endpoints(args: argparse.Namespace) -> int:
    from spancost import pipeline

    url = db.database_url()
    run_id = f"cli-{uuid.uuid4()}" if settings.from_env().validate else None
    for result in pipeline.snapshot_sagemaker(url, _sagemaker_clients(), _now(), run_id=run_id):
        print(f"{result.region}: {result.endpoints} endpoints, {result.rows} variants")
    if run_id is not None:
        pipeline.audit_batches(url, batches.ENDPOINTS, run_id)
    return 0


def cmd_transform(args: argparse.Namespace) -> int:
    dbt_vars = {}
    if args.start:
        dbt_vars["start_time"] = settings.utc_time(args.start, "--start").isoformat()
    if args.end:
        dbt_vars["end_time"] = settings.utc_time(args.end, "--end").isoformat()
    dbt_build.build(db.database_url(), full_refresh=args.full_refresh, dbt_vars=dbt_vars)
    print("dbt build: ok")
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from spancost import alerts
    from spancost.airflow_adapter import slack_sender

    result = alerts.run(db.database_url(), lookback_hours=args.lookback_hours, slack=slack_sender)
    print(f"alerts: {result.summary()}")
    return 1 if any(result.failed.values()) else 0


def cmd_check_marts(args: argparse.Namespace) -> int:
    from spancost import pipeline

    checked = pipeline.check_marts(db.database_url(), f"cli-{uuid.uuid4()}")
    for audited in checked:
        failed = [outcome.describe() for outcome in audited.failed]
        print(f"{audited.batch_id}: {'; '.join(failed) if failed else 'every expectation passed'}")
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    from spancost.validation import audit

    url = db.database_url()
    dbt_build.run_dbt(url, ["docs", "generate"])
    print(f"dbt docs: {dbt_build.project_dir() / 'target' / 'index.html'}")
    print(f"Great Expectations Data Docs: {audit.build_data_docs(url)}")
    return 0


def report_window(
    day: str | None, start: str | None, end: str | None
) -> tuple[datetime | None, datetime | None]:
    """The window ``spancost report`` sums: one UTC day, a range, or everything."""
    if day and (start or end):
        raise ConfigError("--date cannot be combined with --start/--end")
    if day:
        return demo_window(day)
    low = settings.utc_time(start, "--start") if start else None
    high = settings.utc_time(end, "--end") if end else None
    if low and high and high <= low:
        raise ConfigError(f"--end ({high.isoformat()}) must be after --start ({low.isoformat()})")
    return low, high


def cmd_report(args: argparse.Namespace) -> int:
    start, end = report_window(args.date, args.start, args.end)
    if args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    url = db.database_url()
    views = list(report.VIEWS) if args.by == "all" else [args.by]
    for number, view in enumerate(views):
        if number:
            print()
        if len(views) > 1:
            print(f"{report.VIEWS[view].title}:\n")
        print(report.table(view, url, start, end, args.limit))
    return 0


def local_env(db_only: bool = False) -> dict[str, str]:
    """The variables that point dbt, Airflow and boto3 at spancost's database and services."""
    from spancost.demo import bill

    url = db.database_url()
    exports = {"SPANCOST_DATABASE_URL": url, **db.dbt_env(url)}
    if not db_only:
        aws = endpoints.LocalAws(settings.home())
        endpoint = endpoints.start(aws)
        exports |= {
            "AWS_ENDPOINT_URL_PRICING": endpoints.start_pricing(aws, bill.pricing_catalogue()),
            "SPANCOST_HOME": str(settings.home()),
            "AIRFLOW_CONN_SPANCOST_POSTGRES": url,
            "AWS_ENDPOINT_URL": endpoint,
            **endpoints.LOCAL_ENV,
            "SPANCOST_SPANS_BUCKET": os.environ.get("SPANCOST_SPANS_BUCKET", DEMO_BUCKET),
            "SPANCOST_SPANS_PREFIX": os.environ.get("SPANCOST_SPANS_PREFIX", DEMO_PREFIX),
            "SPANCOST_USER_ID_SALT": os.environ.get("SPANCOST_USER_ID_SALT", DEMO_SALT),
        }
    return exports


def cmd_env(args: argparse.Namespace) -> int:
    """Shell exports that point dbt, Airflow and boto3 at spancost's database and services."""
    for name, value in local_env(args.db_only).items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def airflow_environment(args: argparse.Namespace) -> dict[str, str]:
    """The environment of `spancost airflow`: its home, metadata database and settings."""
    from pathlib import Path

    from spancost.local import airflow_local

    env = airflow_local.airflow_env(
        os.environ | local_env(),
        settings.home() / "airflow",
        Path(args.dags_folder).resolve(),
        port=args.port,
    )
    if not env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        # Airflow's metadata on the same Postgres, not its SQLite default, on which
        # creating a backfill while the scheduler writes fails ("database is locked").
        metadata = airflow_local.metadata_database(env["SPANCOST_DATABASE_URL"])
        if metadata is not None:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = metadata
    return env


def cmd_airflow(args: argparse.Namespace) -> int:
    from spancost.local import airflow_local

    env = airflow_environment(args)
    if args.executor == "celery":
        env = airflow_local.celery_env(env, args.celery_workers)
    # The transform DAG renders from dbt's manifest: make it now (a `dbt parse` once per
    # version of the project), not inside the dag-processor's import timeout.
    from spancost.transform import manifest

    manifest.path()
    return airflow_local.run(env)


def cmd_airflow_cli(args: argparse.Namespace) -> int:
    """`airflow <args>` against the Airflow `spancost airflow` runs (same home, same database)."""
    command = list(args.airflow_args)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise ConfigError("give the airflow command to run, e.g. `spancost airflow-cli dags list`")
    return subprocess.run(
        [sys.executable, "-m", "airflow", *command], env=airflow_environment(args), check=False
    ).returncode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spancost", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="generate demo traffic, load it, build the marts, print costs")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--date", help="UTC day to generate (YYYY-MM-DD); default yesterday")
    p.add_argument("--traces-per-hour", type=int, default=30)
    p.add_argument(
        "--history-days",
        type=int,
        default=3,
        help="days of steady traffic before the demo day, the anomaly baseline (default 3)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("ingest-spans", help="load the span exports of an interval from S3")
    p.add_argument("--start", required=True, help="interval start, ISO 8601 (UTC if no offset)")
    p.add_argument("--end", required=True, help="interval end, ISO 8601, exclusive")
    p.add_argument("--strict", action="store_true", help="exit 1 when an object was quarantined")
    p.set_defaults(func=cmd_ingest_spans)

    p = sub.add_parser("pull-costs", help="refresh Cost Explorer results (when due)")
    p.add_argument("--force", action="store_true", help="pull even if the data is fresh")
    p.set_defaults(func=cmd_pull_costs)

    p = sub.add_parser("pull-prices", help="refresh the AWS Price List (when due)")
    p.add_argument("--force", action="store_true", help="pull even if the prices are fresh")
    p.set_defaults(func=cmd_pull_prices)

    p = sub.add_parser("snapshot-endpoints", help="snapshot SageMaker endpoints")
    p.set_defaults(func=cmd_snapshot_endpoints)

    p = sub.add_parser("transform", help="run dbt build")
    p.add_argument("--full-refresh", action="store_true")
    p.add_argument("--start", help="rebuild marts from this time (backfill)")
    p.add_argument("--end", help="rebuild marts up to this time (backfill)")
    p.set_defaults(func=cmd_transform)

    p = sub.add_parser(
        "alerts", help="record new anomalies and budget changes; deliver them (log, webhook, Slack)"
    )
    p.add_argument(
        "--lookback-hours",
        type=int,
        default=None,
        help="send anomalies of this many hours before the newest data (default 48)",
    )
    p.set_defaults(func=cmd_alerts)

    p = sub.add_parser(
        "check-marts", help="run the Great Expectations checkpoints on the marts (after transform)"
    )
    p.set_defaults(func=cmd_check_marts)

    p = sub.add_parser("docs", help="build the dbt docs and the Great Expectations Data Docs")
    p.set_defaults(func=cmd_docs)

    p = sub.add_parser("report", help="print the cost per pipeline, model, trace or agent")
    p.add_argument(
        "--by",
        choices=[*report.VIEWS, "all"],
        default="pipeline",
        help="which cut of the marts to print (default pipeline; all: each in turn)",
    )
    p.add_argument("--limit", type=int, default=20, help="rows of the trace and agent tables")
    p.add_argument("--date", help="one UTC day (YYYY-MM-DD)")
    p.add_argument("--start", help="first hour to sum (ISO 8601, UTC)")
    p.add_argument("--end", help="end of the window, excluded (ISO 8601, UTC)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "db", help="the private Postgres server (when SPANCOST_DATABASE_URL is unset)"
    )
    p.add_argument("action", choices=["up", "down", "url", "init"])
    p.add_argument("--show-password", action="store_true", help="with url: print it whole")
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("aws", help="the local AWS endpoint (moto) for the demo")
    p.add_argument("action", choices=["up", "down"])
    p.set_defaults(func=cmd_aws)

    p = sub.add_parser(
        "airflow", help="Airflow on loopback against the local services (make airflow)"
    )
    p.add_argument("--port", type=int, default=8080, help="the UI and API port (default 8080)")
    p.add_argument("--dags-folder", default="dags", help="the DAGs folder (default ./dags)")
    p.add_argument(
        "--executor",
        choices=["local", "celery"],
        default="local",
        help="local: the LocalExecutor (default); celery: the CeleryExecutor, with Celery"
        " workers and Redis as the broker (AIRFLOW__CELERY__BROKER_URL, default"
        " redis://127.0.0.1:6379/0)",
    )
    p.add_argument(
        "--celery-workers",
        type=int,
        default=2,
        help="with --executor celery: Celery worker processes, one task at a time each (default 2)",
    )
    p.set_defaults(func=cmd_airflow)

    p = sub.add_parser(
        "airflow-cli",
        help="run an airflow command (say `backfill create …`) against the Airflow that"
        " `spancost airflow` runs: its home and metadata database",
    )
    p.add_argument("--port", type=int, default=8080, help="that Airflow's port (default 8080)")
    p.add_argument("--dags-folder", default="dags", help="the DAGs folder (default ./dags)")
    p.add_argument(
        "airflow_args", nargs=argparse.REMAINDER, help="the airflow command and its args"
    )
    p.set_defaults(func=cmd_airflow_cli)

    p = sub.add_parser("env", help="print shell exports for dbt and Airflow (eval them)")
    p.add_argument("--db-only", action="store_true", help="only the database, no local AWS")
    p.set_defaults(func=cmd_env)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except SpancostError as exc:
        print(f"spancost: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
