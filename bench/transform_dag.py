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

One untimed ``dbt build`` first creates every table, so each timed run is the
incremental 48-hour lookback build that the DAG runs every cycle. The import of the
DAG file (the DagBag parse, where ``LoadMode.DBT_LS`` runs ``dbt ls``) is timed apart
from ``dag.test()``. Airflow's metadata database is SQLite under
``$SPANCOST_HOME/bench-airflow``. It prints a Markdown table: medians, and each
median's ratio to the median ``dbt build`` of the same session.
"""

from __future__ import annotations

import atexit
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


def say(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def _configs() -> dict[str, tuple[str, Callable[[], dict[str, Any]]]]:
    """name -> (what it is, the DbtDag kwargs it sets). Built lazily: Cosmos imports Airflow.

    A name ending in ``_no_xcom_backup`` also turns off Cosmos's
    ``[cosmos] enable_watcher_reliable_retry`` while its run lasts.
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


def time_dag_test(config: dict[str, Any], reliable_retry: bool) -> tuple[float, float, int]:
    """(import s, dag.test() s, tasks) of the DAG file with ``config`` given to DbtDag."""
    import cosmos
    from airflow.dag_processing.dagbag import DagBag
    from cosmos import settings

    original = cosmos.DbtDag
    original_retry = settings.enable_watcher_reliable_retry
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


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(build: list[float], timings: list[Timing], spans: int) -> str:
    base = median(build)
    lines = [
        f"Data: {spans:,} demo spans over {DAYS} days ({TRACES_PER_HOUR} traces an hour),"
        f" {REPEATS} alternating rounds; medians.",
        "",
        "'run s' is `dag.test()` alone; 'DAG import s' the DagBag parse of the DAG file before it.",
        "",
        "| what | tasks | DAG import s | run s | ÷ `dbt build` | runs s |",
        "|---|---:|---:|---:|---:|---|",
        f"| `dbt build` (`spancost transform`) | – | – | {base:.1f} | 1.00 |"
        f" {', '.join(f'{v:.1f}' for v in build)} |",
    ]
    for timing in timings:
        runs = median(timing.runs)
        lines.append(
            f"| `dag.test()`, {timing.label} (`{timing.name}`) | {timing.tasks} |"
            f" {median(timing.imports):.1f} | {runs:.1f} | {runs / base:.2f} |"
            f" {', '.join(f'{v:.1f}' for v in timing.runs)} |"
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
        for round_no in range(1, REPEATS + 1):
            build.append(time_dbt_build(url, target))
            say(f"round {round_no}: dbt build {build[-1]:.1f}s")
            for timing in timings:
                if round_no > 1 and timing.name in ONCE:
                    continue
                imported, took, timing.tasks = time_dag_test(
                    configs[timing.name][1](), not timing.name.endswith("_no_xcom_backup")
                )
                timing.imports.append(imported)
                timing.runs.append(took)
                say(f"round {round_no}: {timing.name} import {imported:.1f}s, dag.test {took:.1f}s")
    print(table(build, timings, spans))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
