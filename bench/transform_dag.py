"""How long the transform DAG takes against one ``dbt build`` of the same data.

``python -m bench.transform_dag`` loads demo traffic the way ``spancost demo`` does
(``BENCH_DAG_DAYS`` days, default 4, at ``BENCH_TRACES_PER_HOUR`` traces an hour,
default 30, ending at today's midnight UTC; the real loader from a local S3) into a
database of its own, then times, alternating, ``REPEATS`` rounds (``BENCH_REPEATS``,
default 3) of:

* ``dbt build``: what ``spancost transform`` runs (``dbt_build.build``), a child process;
* ``dag.test()`` of ``dags/spancost_transform.py`` in each Cosmos configuration of
  ``CONFIGS`` (``BENCH_DAG_CONFIGS``, comma-separated, to pick some; those named in
  ``BENCH_DAG_ONCE`` are timed in the first round only): the DAG file
  itself, imported with Cosmos's ``DbtDag`` given that configuration's
  ``project_config``, ``execution_config`` and ``render_config`` instead of its own.

* a run of the DAG under a real scheduler (``BENCH_DAG_SCHEDULER``, default on; ``0``
  skips it): ``spancost airflow`` (LocalExecutor, ``BENCH_DAG_PARALLELISM`` task slots,
  default 32 as Airflow's own) started once on the same database with a dags folder
  holding only the transform DAG, one untimed run first, then one triggered run per
  round through the REST API, timed from the run's start to its end as the UI shows it.

One untimed ``dbt build`` first creates every table, so each timed run is the
incremental 48-hour lookback build that the DAG runs every cycle. The import of the
DAG file (the DagBag parse, where ``LoadMode.DBT_LS`` runs ``dbt ls``) is timed apart
from ``dag.test()``. Airflow's metadata database is SQLite under
``$SPANCOST_HOME/bench-airflow``. It prints a Markdown table: medians, and each
median's ratio to the median ``dbt build`` of the same session.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
DAG_FILE = REPO / "dags" / "spancost_transform.py"
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
DAYS = int(os.environ.get("BENCH_DAG_DAYS", "4"))
TRACES_PER_HOUR = int(os.environ.get("BENCH_TRACES_PER_HOUR", "30"))
# Configurations timed in the first round only (the slow ones, when time is short).
ONCE = {c for c in os.environ.get("BENCH_DAG_ONCE", "").split(",") if c}
SCHEDULER = os.environ.get("BENCH_DAG_SCHEDULER", "1") != "0"
PARALLELISM = os.environ.get("BENCH_DAG_PARALLELISM", "32")
DB_NAME = f"spancost_bench_dag_{uuid.uuid4().hex[:8]}"
BUCKET = "spancost-bench-dag"
PREFIX = "otel/traces"

# Airflow reads its configuration when first imported: a private home and dags folder.
os.environ.setdefault("SPANCOST_HOME", str(REPO / ".spancost"))
os.environ.setdefault("AIRFLOW_HOME", str(Path(os.environ["SPANCOST_HOME"]) / "bench-airflow"))
DAGS = Path(tempfile.mkdtemp(prefix="spancost-bench-dags-"))
atexit.register(shutil.rmtree, DAGS, True)
(DAGS / DAG_FILE.name).symlink_to(DAG_FILE)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT", "600")
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
# As `spancost airflow` runs Cosmos (spancost.local.airflow_local.airflow_env).
os.environ.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")
os.environ.setdefault("AIRFLOW__COSMOS__ENABLE_WATCHER_RELIABLE_RETRY", "False")


def say(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def _configs() -> dict[str, tuple[str, Callable[[], dict[str, Any]]]]:
    """name -> (what it is, the DbtDag kwargs it sets). Built lazily: Cosmos imports Airflow.

    ``dag`` is the DAG file as committed, with the settings ``spancost airflow`` gives
    Cosmos (``spancost.local.airflow_local.airflow_env``: no telemetry, no reliable-retry
    backup); the others run with Cosmos's default ``[cosmos]
    enable_watcher_reliable_retry = True``, except a name ending in ``_no_xcom_backup``.
    """
    from cosmos import ExecutionConfig, ProjectConfig, RenderConfig
    from cosmos.constants import ExecutionMode, InvocationMode, LoadMode, TestBehavior

    from spancost.transform import manifest

    project = REPO / "dbt"
    dbt = str(Path(sys.executable).with_name("dbt"))

    def local(invocation: InvocationMode, load: LoadMode) -> dict[str, Any]:
        return {
            "project_config": ProjectConfig(
                dbt_project_path=project,
                manifest_path=manifest.path(project) if load is LoadMode.DBT_MANIFEST else None,
            ),
            "execution_config": ExecutionConfig(
                invocation_mode=invocation, dbt_executable_path=dbt
            ),
            "render_config": RenderConfig(
                load_method=load,
                test_behavior=TestBehavior.AFTER_EACH,
                should_detach_multiple_parents_tests=True,
            ),
        }

    def watcher(invocation: InvocationMode) -> dict[str, Any]:
        return {
            "project_config": ProjectConfig(
                dbt_project_path=project, manifest_path=manifest.path(project)
            ),
            "execution_config": ExecutionConfig(
                execution_mode=ExecutionMode.WATCHER,
                invocation_mode=invocation,
                dbt_executable_path=dbt,
                setup_operator_args={"retries": 0},
            ),
            "render_config": RenderConfig(
                load_method=LoadMode.DBT_MANIFEST,
                test_behavior=TestBehavior.AFTER_EACH,
                should_detach_multiple_parents_tests=False,
            ),
        }

    return {
        "dag": ("the DAG as committed (watcher, dbt as a child process, manifest)", lambda: {}),
        "local_subprocess_dbt_ls": (
            "local, a dbt subprocess per task, DBT_LS (the DAG before issue 14)",
            lambda: local(InvocationMode.SUBPROCESS, LoadMode.DBT_LS),
        ),
        "local_dbt_runner_manifest": (
            "local, dbt in-process per task (DBT_RUNNER), DBT_MANIFEST",
            lambda: local(InvocationMode.DBT_RUNNER, LoadMode.DBT_MANIFEST),
        ),
        "watcher_dbt_runner_manifest": (
            "watcher: one dbt build (DBT_RUNNER) + a sensor per node, DBT_MANIFEST",
            lambda: watcher(InvocationMode.DBT_RUNNER),
        ),
        "watcher_dbt_runner_manifest_no_xcom_backup": (
            "watcher as above, `[cosmos] enable_watcher_reliable_retry = False`",
            lambda: watcher(InvocationMode.DBT_RUNNER),
        ),
        "watcher_subprocess_manifest": (
            "watcher: one dbt build (subprocess) + a sensor per node, DBT_MANIFEST",
            lambda: watcher(InvocationMode.SUBPROCESS),
        ),
    }


@dataclass
class Timing:
    name: str
    label: str
    runs: list[float]
    imports: list[float]
    tasks: int = 0


def load_demo(url: str) -> int:
    """Demo traffic into ``url`` through the real loader; returns the spans loaded."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    from spancost import pipeline
    from spancost.demo import traffic
    from spancost.local import endpoints
    from spancost.settings import Settings, SpanSource

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request lines
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoints.use(f"http://{host}:{port}")
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        first = end - timedelta(days=DAYS)
        spans = traffic.generate_spans(first, end, seed=7, traces_per_hour=TRACES_PER_HOUR)
        objects = traffic.build_objects(spans, prefix=PREFIX, seed=7)
        traffic.upload_objects(s3, BUCKET, objects)
        settings = Settings(
            spans=SpanSource(bucket=BUCKET, prefix=PREFIX), user_id_salt="bench", validate=False
        )
        pipeline.ingest_spans(
            settings, s3, first, end + timedelta(minutes=15), url=url, run_id="bench-dag"
        )
        return len(spans)
    finally:
        server.stop()


@contextmanager
def database() -> Iterator[str]:
    import psycopg

    from spancost import db
    from spancost.db import embedded

    server = db.database_url()
    admin = urlsplit(server)._replace(path="/postgres").geturl()
    embedded.create_database(admin, DB_NAME)
    try:
        yield urlsplit(server)._replace(path=f"/{DB_NAME}").geturl()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{DB_NAME}" with (force)')


def airflow_connection(url: str) -> None:
    """The connection Cosmos builds the dbt profile from (it requires a password)."""
    parts = urlsplit(url)
    if not parts.password:
        parts = parts._replace(
            netloc=f"{parts.username or 'postgres'}:trust@{parts.hostname}:{parts.port}"
        )
    os.environ["AIRFLOW_CONN_SPANCOST_POSTGRES"] = parts.geturl()


def time_dbt_build(url: str, target: Path) -> float:
    """``spancost transform``'s build, with dbt's target folder (partial parse) its own.

    In ``dbt/target`` it would leave the newest ``partial_parse.msgpack``, which Cosmos
    then copies into every task, and which is stale for the DAG's profile and vars:
    each DAG run would parse the project from scratch, as it never does in production.
    """
    from spancost.transform import dbt_build

    os.environ["DBT_TARGET_PATH"] = str(target)
    try:
        began = time.perf_counter()
        dbt_build.build(url)
        return time.perf_counter() - began
    finally:
        del os.environ["DBT_TARGET_PATH"]


def time_dag_test(config: dict[str, Any], reliable_retry: bool | None) -> tuple[float, float, int]:
    """(import s, dag.test() s, tasks) of the DAG file with ``config`` given to DbtDag."""
    import cosmos
    from airflow.dag_processing.dagbag import DagBag
    from cosmos import settings

    original = cosmos.DbtDag
    original_retry = settings.enable_watcher_reliable_retry
    if reliable_retry is not None:
        settings.enable_watcher_reliable_retry = reliable_retry

    class DbtDag(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, **config})

    cosmos.DbtDag = DbtDag
    try:
        began = time.perf_counter()
        bag = DagBag(dag_folder=str(DAGS))
        imported = time.perf_counter() - began
        if bag.import_errors:
            raise RuntimeError(f"the transform DAG did not import: {bag.import_errors}")
        dag = bag.get_dag("spancost_transform")
        began = time.perf_counter()
        run = dag.test()
        took = time.perf_counter() - began
    finally:
        cosmos.DbtDag = original
        settings.enable_watcher_reliable_retry = original_retry
    states = {str(ti.state) for ti in run.get_task_instances()}
    if "success" not in str(run.state):
        raise RuntimeError(f"dag.test() ended {run.state}: task states {states}")
    return imported, took, len(dag.tasks)


@contextmanager
def scheduler(url: str) -> Iterator[Any]:
    """``spancost airflow`` (LocalExecutor) on ``url``, the transform DAG alone, stopped after."""
    sys.path.insert(0, str(REPO))
    from spancost.local import endpoints
    from tests.e2e.harness import start_airflow

    work = Path(tempfile.mkdtemp(prefix="spancost-bench-scheduler-"))
    atexit.register(shutil.rmtree, work, True)
    home = work / "home"
    airflow = start_airflow(
        "local", url, home, work, {"AIRFLOW__CORE__PARALLELISM": PARALLELISM}, dags_folder=DAGS
    )
    try:
        airflow.wait_for_dags("spancost_transform")
        yield airflow
    finally:
        airflow.stop()
        endpoints.stop(endpoints.LocalAws(home))


def time_scheduled_run(airflow: Any) -> tuple[float, int]:
    """(seconds from the run's start to its end, tasks) of one triggered transform run."""
    from urllib.parse import quote

    from tests.e2e.harness import api

    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    path = f"dags/spancost_transform/dagRuns/{quote(run_id)}"
    body: dict[str, Any] = {"dag_run_id": run_id, "logical_date": None, "conf": {}}
    api(airflow.base, "dags/spancost_transform/dagRuns", body, method="POST")
    deadline = time.monotonic() + 3600
    while (run := api(airflow.base, path))["state"] not in ("success", "failed"):
        airflow.alive()
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"run {run_id} not done in an hour:\n{airflow.report('spancost_transform', run_id)}"
            )
        time.sleep(1)
    if run["state"] != "success":
        raise RuntimeError(f"run {run_id} failed:\n{airflow.report('spancost_transform', run_id)}")
    took = datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"])
    return took.total_seconds(), len(airflow.task_instances("spancost_transform", run_id))


def reliable_retry(config: str) -> bool | None:
    """Cosmos's reliable-retry setting for a configuration; None: the environment's."""
    return None if config == "dag" else not config.endswith("_no_xcom_backup")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(build: list[float], timings: list[Timing], spans: int) -> str:
    base = median(build)
    lines = [
        f"Data: {spans:,} demo spans over {DAYS} days ({TRACES_PER_HOUR} traces an hour),"
        f" {REPEATS} alternating rounds; medians.",
        "",
        "'run s' is `dag.test()` alone, or a scheduled run's start to end; 'DAG import s' the"
        " DagBag parse of the DAG file before `dag.test()`.",
        "",
        "| what | tasks | DAG import s | run s | ÷ `dbt build` | median of per-round ratios |"
        " runs s |",
        "|---|---:|---:|---:|---:|---:|---|",
        f"| `dbt build` (`spancost transform`) | – | – | {base:.1f} | 1.00 | – |"
        f" {', '.join(f'{v:.1f}' for v in build)} |",
    ]
    for timing in timings:
        runs = median(timing.runs)
        per_round = median([run / built for run, built in zip(timing.runs, build, strict=False)])
        what = timing.label if timing.name == "scheduler" else f"`dag.test()`, {timing.label}"
        imports = f"{median(timing.imports):.1f}" if timing.imports else "–"
        lines.append(
            f"| {what} (`{timing.name}`) | {timing.tasks} | {imports} | {runs:.1f} |"
            f" {runs / base:.2f} | {per_round:.2f} | {', '.join(f'{v:.1f}' for v in timing.runs)} |"
        )
    return "\n".join(lines)


def main() -> int:
    # Stopped (timeout, kill): still drop the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        check=True,
        capture_output=True,
    )
    configs = _configs()
    chosen = [c for c in os.environ.get("BENCH_DAG_CONFIGS", "").split(",") if c] or list(configs)
    unknown = set(chosen) - set(configs)
    if unknown:
        raise SystemExit(f"BENCH_DAG_CONFIGS: unknown {sorted(unknown)}; known {sorted(configs)}")
    with database() as url:
        say(f"loading {DAYS} days of demo traffic into {DB_NAME}")
        spans = load_demo(url)
        airflow_connection(url)
        say(f"{spans:,} spans loaded; untimed dbt build (creates every table)")
        target = Path(tempfile.mkdtemp(prefix="spancost-bench-dbt-target-"))
        atexit.register(shutil.rmtree, target, True)
        time_dbt_build(url, target)
        build: list[float] = []
        timings = [Timing(name, configs[name][0], [], []) for name in chosen]
        scheduled = Timing(
            "scheduler",
            f"the DAG as committed under `spancost airflow` (LocalExecutor, {PARALLELISM} slots),"
            " start to end of a triggered run",
            [],
            [],
        )
        with contextlib.ExitStack() as stack:
            airflow = stack.enter_context(scheduler(url)) if SCHEDULER else None
            if airflow is not None:
                warm, _ = time_scheduled_run(airflow)
                say(f"scheduler: untimed first run {warm:.1f}s")
            for round_no in range(1, REPEATS + 1):
                build.append(time_dbt_build(url, target))
                say(f"round {round_no}: dbt build {build[-1]:.1f}s")
                for timing in timings:
                    if round_no > 1 and timing.name in ONCE:
                        continue
                    imported, took, timing.tasks = time_dag_test(
                        configs[timing.name][1](), reliable_retry(timing.name)
                    )
                    timing.imports.append(imported)
                    timing.runs.append(took)
                    said = f"import {imported:.1f}s, dag.test {took:.1f}s"
                    say(f"round {round_no}: {timing.name} {said}")
                if airflow is not None:
                    took, scheduled.tasks = time_scheduled_run(airflow)
                    scheduled.runs.append(took)
                    say(f"round {round_no}: scheduler run {took:.1f}s")
        if SCHEDULER:
            timings.append(scheduled)
    print(table(build, timings, spans))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
