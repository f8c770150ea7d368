"""`make airflow` (`spancost airflow`): loopback only, DAGs active, pools made, no setup warnings.

The real components (api-server, scheduler, dag-processor, triggerer) start against
the test database and the local AWS endpoints; the test reads which sockets the
whole process tree listens on from /proc, and the DAGs' paused flags from Airflow's
metadata database.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NOISE = ("HMAC key", "aws_default", "Openlineage", "openlineage/namespace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        found.add(current)
        todo.extend(children.get(current, []))
    return found


def listening(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that one of ``pids`` holds."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address[:width])
            if width == 8:
                host = socket.inet_ntop(socket.AF_INET, raw[::-1])
            else:
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                host = socket.inet_ntop(socket.AF_INET6, words)
            found.add((host, int(port, 16)))
    return found


def test_local_airflow_listens_on_loopback_only_and_starts_the_dags_active(
    tmp_path: Path, db_url: str
) -> None:
    port = free_port()
    home = tmp_path / "home"
    env = {
        **os.environ,
        "SPANCOST_HOME": str(home),
        "SPANCOST_DATABASE_URL": db_url,
    }
    for name in list(env):
        if name.startswith("AIRFLOW"):  # the suite's own Airflow settings
            del env[name]
    out = (tmp_path / "airflow.out").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spancost.cli",
            "airflow",
            "--port",
            str(port),
            "--dags-folder",
            str(REPO / "dags"),
        ],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    # Airflow's metadata goes to Postgres beside spancost's database, not to SQLite.
    metadata = f"{db_url}_airflow"
    try:
        deadline = time.monotonic() + 240
        paused: dict[str, bool] = {}
        while time.monotonic() < deadline and len(paused) < 2:
            assert process.poll() is None, (tmp_path / "airflow.out").read_text()[-3000:]
            time.sleep(2)
            try:
                with psycopg.connect(metadata) as conn:
                    paused = dict(conn.execute("select dag_id, is_paused from dag").fetchall())
            except psycopg.Error:
                continue
        assert paused == {"spancost_ingest": False, "spancost_transform": False}
        assert not (home / "airflow" / "airflow.db").exists()
        with psycopg.connect(metadata) as conn:
            pools = dict(conn.execute("select pool, slots from slot_pool").fetchall())
        # The one-slot pools the API tasks of spancost_ingest run in.
        assert pools["spancost_cost_explorer"] == pools["spancost_price_list"] == 1
        # The DAGs can be parsed (a fraction of a second, from the cached dbt manifest)
        # before the API server has started: give it up to 4 more minutes.
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, (tmp_path / "airflow.out").read_text()[-3000:]
            try:
                url = f"http://127.0.0.1:{port}/api/v2/monitor/health"
                with urllib.request.urlopen(url, timeout=10) as health:
                    assert health.status == 200
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "airflow.out").read_text()[-3000:]
                time.sleep(2)

        sockets = listening(descendants(process.pid))
        assert ("127.0.0.1", port) in sockets
        # Nothing on another interface: no log servers on 0.0.0.0:8793 or :8794.
        assert {host for host, _ in sockets} <= {"127.0.0.1", "::1"}, sockets
        assert not {p for _, p in sockets} & {8793, 8794}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=90)
        finally:
            out.close()
            # The local AWS endpoint that `spancost airflow` started under this home.
            subprocess.run(
                [sys.executable, "-m", "spancost.cli", "aws", "down"], env=env, check=False
            )
            admin = psycopg.conninfo.make_conninfo(db_url, dbname="postgres")
            with psycopg.connect(admin, autocommit=True) as conn:
                name = metadata.rsplit("/", 1)[-1]
                conn.execute(f'drop database if exists "{name}" with (force)')
    output = (tmp_path / "airflow.out").read_text()
    assert "stopping Airflow" in output
    assert [noise for noise in NOISE if noise in output] == []
