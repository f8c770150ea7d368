"""Shared fixtures: a real Postgres database per test, and a real S3 endpoint on loopback.

Postgres is ``SPANCOST_DATABASE_URL`` when set, otherwise the private server
that spancost itself starts. S3 is moto's server on 127.0.0.1, reached through
the standard ``AWS_ENDPOINT_URL`` variable, so boto3 runs unmodified.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
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
