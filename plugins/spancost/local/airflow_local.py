"""Airflow on this machine, for ``make airflow``: what ``airflow standalone`` does, on loopback.

``airflow standalone`` starts a log server on 0.0.0.0:8793 beside the scheduler and
another on 0.0.0.0:8794 beside the triggerer, and has no setting to bind them
elsewhere. With the LocalExecutor every task log is a file the API server reads
itself, so spancost runs the four components directly instead, the scheduler and
the triggerer with ``--skip-serve-logs``: the only port open is the API server's,
on 127.0.0.1.

``--executor celery`` (``spancost airflow --executor celery``) runs the same on
the CeleryExecutor, as the compose stack does, plus two Celery workers (``airflow
celery worker``; ``--celery-workers``), each a process running one task at a time
(Celery's solo pool; see ``celery_env``). They take the tasks from Redis
(``AIRFLOW__CELERY__BROKER_URL``, by default ``redis://127.0.0.1:6379/0``, checked
before anything starts), and Celery keeps its results in Airflow's metadata
database in Postgres. The workers run with ``--skip-serve-logs`` too: on one
machine their task logs are files in the same Airflow home, which the API server
reads, so no port opens beside the API server's.

It also sets what a first run needs and ``standalone`` leaves out: the DAGs start
unpaused (a triggered run never sits queued), an ``aws_default`` connection that
points boto3 at the local endpoints (so no task warns that it is missing), a JWT
secret of 64 random bytes (kept in the Airflow home, mode 0600, never printed), and
an OpenLineage namespace (the provider is installed for Cosmos and stays off, as it
has no transport).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from spancost.errors import ConfigError

log = logging.getLogger(__name__)

# name -> the airflow subcommand that runs it
COMPONENTS: dict[str, list[str]] = {
    "api-server": ["api-server"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
}
# The pools spancost_ingest's API tasks run in (one slot each; see the DAG).
POOLS = {
    "spancost_cost_explorer": "Cost Explorer calls ($0.01 a request, throttled)",
    "spancost_price_list": "AWS Price List API calls (throttled)",
}
EXECUTORS = {"local": "LocalExecutor", "celery": "CeleryExecutor"}
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)


def jwt_secret(airflow_home: Path) -> str:
    """The API's JWT signing secret: 64 random bytes, made once and kept in the home."""
    path = airflow_home / "jwt_secret"
    if not path.exists():
        airflow_home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(64))
    return path.read_text().strip()


def metadata_database(url: str) -> str | None:
    """Airflow's metadata database beside spancost's: ``<name>_airflow`` on the same server.

    Created when missing; returned as the SQLAlchemy URL Airflow takes. None when
    it cannot be created (no CREATEDB): Airflow then keeps its SQLite default, on
    which a backfill created from the UI or the API can fail ("database is
    locked") while the scheduler writes.
    """
    import psycopg

    from spancost.db import embedded

    parts = urlsplit(url)
    name = f"{parts.path.lstrip('/') or 'spancost'}_airflow"
    try:
        embedded.create_database(parts._replace(path="/postgres").geturl(), name)
    except psycopg.Error as exc:
        log.warning("Airflow's metadata stays in SQLite: cannot create database %s: %s", name, exc)
        return None
    rest = parts._replace(scheme="postgresql+psycopg2", path=f"/{name}").geturl()
    return rest


def airflow_env(
    base: Mapping[str, str], airflow_home: Path, dags_folder: Path, port: int = 8080
) -> dict[str, str]:
    """The environment every component runs with: ``base`` plus the local settings."""
    env = dict(base)
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret(airflow_home),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "spancost",
            # Cosmos: no usage report over the network from every task, and no
            # per-event backup of the watcher's XComs to a Variable (it restores
            # them for a retried producer; the transform DAG never retries it).
            "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
            "AIRFLOW__COSMOS__ENABLE_WATCHER_RELIABLE_RETRY": "False",
        }
    )
    # boto3 finds the local endpoints and credentials in the environment.
    env.setdefault(
        "AIRFLOW_CONN_AWS_DEFAULT",
        json.dumps({"conn_type": "aws", "extra": {"region_name": env.get("AWS_DEFAULT_REGION")}}),
    )
    bindir = str(Path(sys.executable).parent)
    if bindir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def celery_env(env: Mapping[str, str], workers: int = 2) -> dict[str, str]:
    """``env`` on the CeleryExecutor: Redis as the broker, results in the metadata database.

    The broker is ``AIRFLOW__CELERY__BROKER_URL`` when set, else Redis on
    127.0.0.1:6379; the result backend is ``AIRFLOW__CELERY__RESULT_BACKEND`` when
    set, else Airflow's metadata database (``db+postgresql+psycopg2://…``), which
    must be Postgres: Airflow refuses Celery on SQLite. ``workers`` Celery workers
    run, each one task at a time.
    """
    if workers < 1:
        raise ConfigError(f"--celery-workers must be at least 1, got {workers}")
    metadata = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
    if not metadata.startswith("postgresql"):
        raise ConfigError(
            "the CeleryExecutor needs Airflow's metadata in Postgres, not SQLite: give the"
            " database user CREATEDB (spancost creates <database>_airflow) or set"
            " AIRFLOW__DATABASE__SQL_ALCHEMY_CONN to a Postgres database"
        )
    celery = dict(env)
    celery["AIRFLOW__CORE__EXECUTOR"] = EXECUTORS["celery"]
    celery.setdefault("AIRFLOW__CELERY__BROKER_URL", DEFAULT_BROKER_URL)
    celery.setdefault("AIRFLOW__CELERY__RESULT_BACKEND", f"db+{metadata}")
    # Each worker is one process that runs its task in its main thread (the solo
    # pool): Celery's prefork pool runs a task below a daemonic process, where the
    # span loader cannot start its processes (SPANCOST_LOAD_WORKERS: "daemonic
    # processes are not allowed to have children"), and Airflow's task supervisor
    # needs the main thread (signal handlers), which rules out the threads pool.
    celery["AIRFLOW__CELERY__POOL"] = "solo"
    celery["SPANCOST_CELERY_WORKERS"] = str(workers)
    return celery


def check_broker(url: str, timeout: float = 5.0) -> None:
    """Raise ConfigError, saying how to start one, unless a Redis broker answers PING.

    Only plain ``redis://`` URLs are checked; a Celery run without its broker would
    sit queued with no word of why.
    """
    parts = urlsplit(url)
    if parts.scheme != "redis":
        return
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError as exc:
        answer = f"{exc}".encode()
    # +PONG, or an error such as -NOAUTH: either way Redis is there.
    if not answer.startswith((b"+", b"-")):
        said = answer.decode(errors="replace").strip() or "no answer to PING"
        raise ConfigError(
            f"no Redis answers at {host}:{port}, the Celery broker"
            f" (AIRFLOW__CELERY__BROKER_URL): {said}. Start one on loopback"
            f" (`redis-server --bind 127.0.0.1 --port {port} --save ''`; Debian's"
            " redis-server package, or `make redis`) or point the variable at yours"
        )


def components(env: Mapping[str, str]) -> dict[str, list[str]]:
    """The airflow subcommands to run: the four, and the Celery workers on the CeleryExecutor."""
    found = dict(COMPONENTS)
    if env.get("AIRFLOW__CORE__EXECUTOR") == EXECUTORS["celery"]:
        port = env.get("AIRFLOW__API__PORT", "8080")
        for number in range(1, int(env.get("SPANCOST_CELERY_WORKERS", "2")) + 1):
            found[f"celery-worker-{number}"] = [
                "celery",
                "worker",
                "--concurrency",
                "1",
                "--skip-serve-logs",
                # A name of its own, so workers on one broker do not clash.
                "--celery-hostname",
                f"spancost-{port}-{number}@%h",
                "--pid",
                str(Path(env["AIRFLOW_HOME"]) / f"celery-worker-{number}.pid"),
            ]
    return found


def _relay(name: str, stream: Iterable[str], out: TextIO) -> None:
    for line in stream:
        print(f"{name:15} | {line}", end="", file=out, flush=True)


def _signal_group(process: subprocess.Popen[str], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


class _Stop(Exception):
    """SIGINT or SIGTERM arrived."""


def _stop(signum: int, frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def run(env: Mapping[str, str]) -> int:
    """Migrate the metadata database, start the components, and wait.

    On the CeleryExecutor (``celery_env``) the broker must answer first, and a
    Celery worker runs beside the four.

    Ctrl-C or SIGTERM (or any component exiting) stops them all; returns the first
    non-zero exit code. The components run in sessions of their own, so a Ctrl-C
    reaches this process only, which stops them in order.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop)
    airflow = [sys.executable, "-m", "airflow"]
    if env.get("AIRFLOW__CORE__EXECUTOR") == EXECUTORS["celery"]:
        check_broker(env["AIRFLOW__CELERY__BROKER_URL"])
    subprocess.run([*airflow, "db", "migrate"], env=dict(env), check=True)
    for pool, description in POOLS.items():
        subprocess.run(
            [*airflow, "pools", "set", pool, "1", description],
            env=dict(env),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    processes: dict[str, subprocess.Popen[str]] = {}
    threads = []
    try:
        for name, command in components(env).items():
            process = subprocess.Popen(
                [*airflow, *command],
                env=dict(env),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            processes[name] = process
            assert process.stdout is not None  # stdout=PIPE
            thread = threading.Thread(
                target=_relay, args=(name, process.stdout, sys.stdout), daemon=True
            )
            thread.start()
            threads.append(thread)
        print(
            f"spancost: Airflow UI on {env['AIRFLOW__API__BASE_URL']} (loopback only;"
            f" every local user is admin; {env['AIRFLOW__CORE__EXECUTOR']}). Ctrl-C stops it.",
            flush=True,
        )
        while all(process.poll() is None for process in processes.values()):
            try:
                next(iter(processes.values())).wait(timeout=1)
            except subprocess.TimeoutExpired:
                continue
    except _Stop as stop:
        print(f"spancost: {stop}: stopping Airflow", flush=True)
    finally:
        # Each component leads its own process group: its workers stop with it. The
        # API server goes last: running tasks report their end through it.
        for group in ([n for n in processes if n != "api-server"], ["api-server"]):
            for name in group:
                if name in processes and processes[name].poll() is None:
                    _signal_group(processes[name], signal.SIGTERM)
            for name in group:
                if name not in processes:
                    continue
                try:
                    processes[name].wait(timeout=30)
                except subprocess.TimeoutExpired:
                    _signal_group(processes[name], signal.SIGKILL)
                    processes[name].wait()
    codes = [process.returncode for process in processes.values() if process.returncode]
    return next((code for code in codes if code > 0), 0)
