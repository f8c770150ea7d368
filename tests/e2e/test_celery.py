"""Scale-out: ingest then transform on Celery build the same marts as on the LocalExecutor.

`spancost airflow --executor celery` runs the real components (api-server, scheduler,
dag-processor, triggerer) and two real Celery workers (`airflow celery worker`, each
a process running one task at a time: two tasks at once, the span loader's own
process pool working inside them), Redis on loopback as the broker (the
one at 127.0.0.1:6379, else a private redis-server on a free loopback port: the
`redis_url` fixture) and Celery's results in Airflow's metadata database in
Postgres. `spancost airflow` (the LocalExecutor) runs the same steps on a database
of its own: one hour of demo span exports in its local S3, `spancost_ingest`
triggered through the REST API with params `start`/`end`, then `spancost_transform`
(Cosmos: one task per dbt node) with the day as `start_time`/`end_time`.

The test then checks, for every relation in the `marts` schema of both databases,
the row count and an md5 of its rows (each row as text, in order): the two must be
equal, and the cost must be the one computed from the exports. It also checks that
the Celery run went through Celery (every task instance has its result in the
`celery_taskmeta` table) and ran two tasks at once somewhere.

Takes about 22 minutes on a shared 2-core machine (two Airflows, 83 dbt tasks each).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg
import pytest
from psycopg import sql

from spancost.db import embedded
from spancost.demo import traffic
from spancost.local import endpoints
from tests.e2e.test_ingest_dag import expected_from_objects

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
T = datetime(2026, 11, 22, 14, tzinfo=UTC)  # the hour of traffic: [T, T + 1 h)
INGEST_END = T + timedelta(hours=2)  # every export of the hour is uploaded before this
DAY = (T.replace(hour=0), T.replace(hour=0) + timedelta(days=1))  # what the transform rebuilds
BUCKET, PREFIX = "spans", "otel/traces"
RUN_TIMEOUT = 1500  # seconds for one DAG run on a busy 2-core machine
ENDED = {"success", "failed"}
BAD_TASK_STATES = {"failed", "upstream_failed"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api(base: str, path: str, body: dict[str, Any] | None = None, method: str = "GET") -> Any:
    """The Airflow REST API (every local user is admin under `spancost airflow`)."""
    request = urllib.request.Request(
        f"{base}/api/v2/{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{method} {path}: {exc.code} {exc.read()[:2000]!r}") from exc


@dataclass
class LocalAirflow:
    """One `spancost airflow` on its own database, home and port."""

    executor: str
    db_url: str
    home: Path
    base: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def alive(self) -> None:
        assert self.process.poll() is None, (
            f"spancost airflow --executor {self.executor} exited"
            f" ({self.process.returncode}):\n{self.tail()}"
        )

    def wait_for_dags(self) -> None:
        """Until the API server is up and the dag-processor has parsed both DAGs."""
        deadline = time.monotonic() + 420
        missing = {"spancost_ingest", "spancost_transform"}
        while missing:
            self.alive()
            assert time.monotonic() < deadline, f"DAGs {missing} not parsed:\n{self.tail()}"
            for dag_id in sorted(missing):
                try:
                    request = urllib.request.Request(f"{self.base}/api/v2/dags/{dag_id}")
                    urllib.request.urlopen(request, timeout=30).close()
                    missing.discard(dag_id)
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
            time.sleep(3)

    def trigger(self, dag_id: str, conf: dict[str, str]) -> str:
        run_id = f"scale-out-{dag_id}-{uuid.uuid4().hex[:6]}"
        body = {"dag_run_id": run_id, "logical_date": (T + timedelta(hours=1)).isoformat()}
        api(self.base, f"dags/{dag_id}/dagRuns", {**body, "conf": conf}, method="POST")
        return run_id

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"dags/{dag_id}/dagRuns/{quote(run_id)}/taskInstances?limit=1000"
        return list(api(self.base, path)["task_instances"])

    def log_tail(self, dag_id: str, run_id: str, ti: dict[str, Any], chars: int = 1500) -> str:
        """The end of a task instance's log file (the executor writes it under the home)."""
        folder = self.home / "airflow" / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        folder = folder / f"task_id={ti['task_id']}"
        if ti.get("map_index", -1) >= 0:
            folder = folder / f"map_index={ti['map_index']}"
        files = sorted(folder.glob("attempt=*.log")) if folder.exists() else []
        if not files:
            return f"(no log file under {folder})"
        return files[-1].read_text(errors="replace")[-chars:]

    def report(self, dag_id: str, run_id: str) -> str:
        """Each task's state, the log tails of the ones not done, and the components' output."""
        try:
            tis = self.task_instances(dag_id, run_id)
        except (AssertionError, OSError) as exc:
            return f"task instances unreadable: {exc}\n{self.tail()}"
        lines = [
            f"{ti['task_id']}[{ti.get('map_index', -1)}]: {ti['state']} (try {ti['try_number']})"
            for ti in sorted(tis, key=lambda ti: (str(ti["state"]), ti["task_id"]))
        ]
        for ti in tis:
            if ti["state"] not in ("success", "skipped", None, "scheduled", "queued"):
                lines.append(f"--- {ti['task_id']} ({ti['state']}) log tail:")
                lines.append(self.log_tail(dag_id, run_id, ti))
        lines.append(f"--- spancost airflow --executor {self.executor} output tail:")
        lines.append(self.tail())
        return "\n".join(lines)

    def wait_for_success(self, dag_id: str, run_id: str, timeout: float = RUN_TIMEOUT) -> float:
        """Seconds until the run succeeded; fails at once when a task or the run fails."""
        started = time.monotonic()
        while True:
            self.alive()
            run = api(self.base, f"dags/{dag_id}/dagRuns/{quote(run_id)}")
            if run["state"] == "success":
                return time.monotonic() - started
            states = {ti["state"] for ti in self.task_instances(dag_id, run_id)}
            failed = run["state"] == "failed" or bool(states & BAD_TASK_STATES)
            late = time.monotonic() - started > timeout
            if failed or late:
                why = "failed" if failed else f"not done after {timeout:.0f} s"
                raise AssertionError(
                    f"{dag_id} run {run_id} on {self.executor} {why} ({run['state']}):\n"
                    + self.report(dag_id, run_id)
                )
            time.sleep(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # it stops its components in order
            try:
                self.process.wait(timeout=180)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def upload_demo_exports(home: Path) -> list[traffic.DemoObject]:
    """The hour's demo exports, in the local S3 endpoint that `spancost airflow` uses."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoints.start(endpoints.LocalAws(home)),
        region_name=endpoints.LOCAL_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=endpoints.LOCAL_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=endpoints.LOCAL_ENV["AWS_SECRET_ACCESS_KEY"],
    )
    s3.create_bucket(Bucket=BUCKET)
    spans = traffic.generate_spans(T, T + timedelta(hours=1), seed=11, traces_per_hour=30)
    objects = traffic.build_objects(spans, prefix=PREFIX, seed=11)
    traffic.upload_objects(s3, BUCKET, objects)
    return objects


def start_airflow(
    executor: str, db_url: str, home: Path, tmp_path: Path, extra: dict[str, str]
) -> LocalAirflow:
    port = free_port()
    env = {
        **os.environ,
        "SPANCOST_HOME": str(home),
        "SPANCOST_DATABASE_URL": db_url,
        "SPANCOST_SPANS_BUCKET": BUCKET,
        "SPANCOST_SPANS_PREFIX": PREFIX,
        "SPANCOST_USER_ID_SALT": "e2e-salt",
        "SPANCOST_LOAD_WORKERS": "1",
    }
    for name in list(env):
        if name.startswith("AIRFLOW"):  # the suite's own Airflow settings
            del env[name]
    env["AIRFLOW__CORE__PARALLELISM"] = "4"  # a shared 2-core machine
    env.update(extra)
    log = tmp_path / f"airflow-{executor}.out"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "spancost.cli", "airflow", "--executor", executor]
            + ["--port", str(port), "--dags-folder", str(REPO / "dags")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    return LocalAirflow(executor, db_url, home, f"http://127.0.0.1:{port}", process, log)


def mart_checksums(db_url: str) -> dict[str, tuple[int, str]]:
    """Every relation in `marts`: (rows, md5 of its rows as text, ordered)."""
    with psycopg.connect(db_url) as conn:
        names = [
            name
            for (name,) in conn.execute(
                "select table_name from information_schema.tables"
                " where table_schema = 'marts' order by table_name"
            ).fetchall()
        ]
        found = {}
        for name in names:
            query = sql.SQL(
                "select count(*), md5(coalesce(string_agg(row_text, E'\\n' order by row_text), ''))"
                " from (select mart::text as row_text from marts.{} as mart) as rows"
            ).format(sql.Identifier(name))
            row = conn.execute(query).fetchone()
            assert row is not None
            found[name] = (int(row[0]), str(row[1]))
    return found


def mart_rows(db_url: str, name: str, limit: int = 5) -> list[str]:
    with psycopg.connect(db_url) as conn:
        query = sql.SQL("select mart::text from marts.{} as mart order by 1 limit {}").format(
            sql.Identifier(name), sql.Literal(limit)
        )
        return [row for (row,) in conn.execute(query).fetchall()]


def most_at_once(metadata_url: str, run_ids: list[str]) -> int:
    """The most task instances of these runs that were running at the same moment."""
    with psycopg.connect(metadata_url) as conn:
        spans = conn.execute(
            "select start_date, end_date from task_instance"
            " where run_id = any(%s) and start_date is not null and end_date is not null",
            (run_ids,),
        ).fetchall()
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        running += step
        most = max(most, running)
    return most


@pytest.fixture
def databases(pg_server_url: str) -> Iterator[dict[str, str]]:
    """A fresh spancost database per executor; each `<name>_airflow` too is dropped after."""
    admin = urlsplit(pg_server_url)._replace(path="/postgres").geturl()
    names = {executor: f"spancost_test_{uuid.uuid4().hex[:10]}" for executor in ("celery", "local")}
    for name in names.values():
        embedded.create_database(admin, name)
    yield {
        executor: urlsplit(pg_server_url)._replace(path=f"/{name}").geturl()
        for executor, name in names.items()
    }
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names.values():
            for database in (name, f"{name}_airflow"):
                conn.execute(f'drop database if exists "{database}" with (force)')


@pytest.fixture
def celery_executor_importable() -> None:
    """Fail at once, naming the versions, when Airflow's CeleryExecutor cannot be imported.

    Otherwise the worker and the scheduler die at start with the import error in
    their output. (apache-airflow-providers-celery 3.26.0 imports `retry` from
    `celery.backends.database`, which celery 5.7.0 no longer has.)
    """
    import importlib
    import importlib.metadata

    try:
        importlib.import_module("airflow.providers.celery.executors.celery_executor_utils")
    except ImportError as exc:
        versions = ", ".join(
            f"{name} {importlib.metadata.version(name)}"
            for name in ("celery", "kombu", "apache-airflow-providers-celery")
        )
        pytest.fail(
            f"Airflow's CeleryExecutor cannot be imported ({versions}): {exc}. Pin a celery"
            " the provider works with (celery<5.7 for provider 3.26) and `make lock`"
        )


@pytest.mark.timeout(4200)
def test_celery_with_two_worker_processes_builds_the_marts_the_local_executor_builds(
    tmp_path: Path,
    databases: dict[str, str],
    redis_url: str,
    celery_executor_importable: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def say(line: str) -> None:  # to the terminal, passed or not
        with capsys.disabled():
            print(f"\n[{time.strftime('%H:%M:%S')}] {line}", end="", flush=True)

    objects: list[traffic.DemoObject] = []
    checksums: dict[str, dict[str, tuple[int, str]]] = {}
    celery_runs: list[str] = []
    # Celery first: it is what is being proven. Its tasks go to a queue of their own,
    # so another Airflow on the same Redis cannot take them.
    extra = {
        "celery": {
            "AIRFLOW__CELERY__BROKER_URL": redis_url,
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": f"spancost-test-{uuid.uuid4().hex[:8]}",
        },
        "local": {},
    }
    for executor in ("celery", "local"):
        home = tmp_path / executor
        uploaded = upload_demo_exports(home)
        assert uploaded and max(o.upload_time for o in uploaded) < INGEST_END
        objects = objects or uploaded
        assert [(o.key, o.body) for o in uploaded] == [(o.key, o.body) for o in objects]
        started = time.monotonic()
        airflow = start_airflow(executor, databases[executor], home, tmp_path, extra[executor])
        try:
            airflow.wait_for_dags()
            say(f"{executor}: DAGs parsed {time.monotonic() - started:.0f} s after launch")
            # Asset events would start spancost_transform on their own: paused, it gets
            # none, and runs once, when triggered with the day.
            api(airflow.base, "dags/spancost_transform", {"is_paused": True}, method="PATCH")
            ingest = airflow.trigger(
                "spancost_ingest", {"start": T.isoformat(), "end": INGEST_END.isoformat()}
            )
            took = airflow.wait_for_success("spancost_ingest", ingest)
            say(f"{executor}: spancost_ingest succeeded in {took:.0f} s")
            api(airflow.base, "dags/spancost_transform", {"is_paused": False}, method="PATCH")
            transform = airflow.trigger(
                "spancost_transform",
                {"start_time": DAY[0].isoformat(), "end_time": DAY[1].isoformat()},
            )
            took = airflow.wait_for_success("spancost_transform", transform)
            tasks = len(airflow.task_instances("spancost_transform", transform))
            say(f"{executor}: spancost_transform ({tasks} tasks) succeeded in {took:.0f} s")
            if executor == "celery":
                celery_runs = [ingest, transform]
        finally:
            airflow.stop()
            endpoints.stop(endpoints.LocalAws(home))
        output = airflow.log.read_text(errors="replace")
        assert "stopping Airflow" in output
        checksums[executor] = mart_checksums(databases[executor])
        say(f"{executor}: {len(checksums[executor])} marts, {time.monotonic() - started:.0f} s")

    # The Celery run went through Celery: two worker processes ran, and every task
    # instance of both runs has its result in Celery's result backend.
    celery_out = (tmp_path / "airflow-celery.out").read_text(errors="replace").splitlines()
    assert any("CeleryExecutor" in line for line in celery_out)
    for worker in ("celery-worker-1", "celery-worker-2"):
        said = [line for line in celery_out if line.startswith(worker)]
        banner = [line for line in said if "concurrency" in line]
        assert banner and "(solo)" in banner[0], (worker, celery_out[-50:])
        assert any("Executing workload" in line for line in said), f"{worker} ran no task"
    metadata = f"{databases['celery']}_airflow"
    with psycopg.connect(metadata) as conn:
        done = conn.execute(
            "select count(*) from task_instance where run_id = any(%s) and state = 'success'",
            (celery_runs,),
        ).fetchone()
        results = conn.execute(
            "select count(*) from celery_taskmeta where status = 'SUCCESS'"
        ).fetchone()
    assert done is not None and results is not None
    assert results[0] >= done[0] > 50, (results, done)
    assert most_at_once(metadata, celery_runs) >= 2

    # The same marts, row for row.
    local, celery = checksums["local"], checksums["celery"]
    assert set(local) == set(celery), set(local) ^ set(celery)
    differ = {
        name: {
            "local": (local[name], mart_rows(databases["local"], name)),
            "celery": (celery[name], mart_rows(databases["celery"], name)),
        }
        for name in local
        if local[name] != celery[name]
    }
    assert differ == {}
    # Every mart model of the dbt project was built.
    assert set(local) == {path.stem for path in (REPO / "dbt" / "models" / "marts").rglob("*.sql")}
    for name in ("fct_llm_calls", "fct_trace_costs", "agg_pipeline_costs_hourly"):
        assert local[name][0] > 0, name

    # And the right marts: the cost computed from the exports themselves.
    total, calls, _ = expected_from_objects(objects)
    for executor, db_url in databases.items():
        with psycopg.connect(db_url) as conn:
            row = conn.execute(
                "select sum(estimated_cost_usd), sum(calls) from marts.agg_pipeline_costs_hourly"
            ).fetchone()
        assert row == (total, calls), executor
        assert isinstance(row[0], Decimal)
