"""A real `spancost airflow` for the end-to-end tests (and `bench.transform_dag`).

`start_airflow` launches one on its own database, home and port; `LocalAirflow`
drives it through the REST API (trigger a run, wait for it, report its tasks' states
and log tails when it fails). `fresh_databases` makes throwaway spancost databases
(and drops each `<name>_airflow` with them); `mart_checksums` is the row count and md5
of every relation in `marts`, what two runs are compared by.
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg
from psycopg import sql

from spancost.db import embedded
from spancost.demo import traffic
from spancost.local import endpoints

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
    env: dict[str, str] = field(default_factory=dict)  # what `spancost airflow` was given

    def cli(self, *args: str) -> str:
        """`spancost airflow-cli <args>` against this Airflow, as an operator runs it."""
        port = str(urlsplit(self.base).port)
        done = subprocess.run(
            [sys.executable, "-m", "spancost.cli", "airflow-cli", "--port", port]
            + ["--dags-folder", str(REPO / "dags"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=self.log.parent,
        )
        assert done.returncode == 0, f"airflow {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def alive(self) -> None:
        assert self.process.poll() is None, (
            f"spancost airflow --executor {self.executor} exited"
            f" ({self.process.returncode}):\n{self.tail()}"
        )

    def wait_for_dags(self, *dag_ids: str) -> None:
        """Until the API server is up and the dag-processor has parsed the DAGs (default both)."""
        deadline = time.monotonic() + 420
        missing = set(dag_ids or ("spancost_ingest", "spancost_transform"))
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


def spancost_airflow_env(db_url: str, home: Path) -> dict[str, str]:
    """The environment a test's `spancost airflow` runs with: this one without the
    suite's own AIRFLOW* settings, on ``db_url`` and ``home``, four task slots."""
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
    return env


def start_airflow(
    executor: str,
    db_url: str,
    home: Path,
    tmp_path: Path,
    extra: dict[str, str],
    dags_folder: Path = REPO / "dags",
) -> LocalAirflow:
    port = free_port()
    env = spancost_airflow_env(db_url, home)
    env.update(extra)
    log = tmp_path / f"airflow-{executor}.out"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "spancost.cli", "airflow", "--executor", executor]
            + ["--port", str(port), "--dags-folder", str(dags_folder)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    base = f"http://127.0.0.1:{port}"
    return LocalAirflow(executor, db_url, home, base, process, log, env)


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


@contextmanager
def fresh_databases(pg_server_url: str, sides: Sequence[str]) -> Iterator[dict[str, str]]:
    """A fresh spancost database per side; each `<name>_airflow` too is dropped after."""
    admin = urlsplit(pg_server_url)._replace(path="/postgres").geturl()
    names = {side: f"spancost_test_{uuid.uuid4().hex[:10]}" for side in sides}
    for name in names.values():
        embedded.create_database(admin, name)
    try:
        yield {
            side: urlsplit(pg_server_url)._replace(path=f"/{name}").geturl()
            for side, name in names.items()
        }
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in names.values():
                for database in (name, f"{name}_airflow"):
                    conn.execute(f'drop database if exists "{database}" with (force)')
