"""`spancost airflow-cli`: an airflow command against the Airflow `spancost airflow` runs.

An operator runs `airflow backfill create` in a second terminal; run bare, it would
use Airflow's defaults (a SQLite file in ~/airflow) and create the backfill where
no scheduler looks. `spancost airflow-cli …` gives it the home, the metadata database
(`<database>_airflow` on the same server) and the settings of `spancost airflow`.
The backfill itself, created this way, is proven in
`tests/e2e/test_backfill_equals_runs.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

REPO = Path(__file__).resolve().parents[2]


def airflow_cli(db_url: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("AIRFLOW")}
    env.update({"SPANCOST_HOME": str(home), "SPANCOST_DATABASE_URL": db_url})
    return subprocess.run(
        [sys.executable, "-m", "spancost.cli", "airflow-cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


def test_airflow_cli_uses_the_home_metadata_database_and_settings_of_spancost_airflow(
    db_url: str, tmp_path: Path
) -> None:
    name = urlsplit(db_url).path.lstrip("/")
    try:
        said = airflow_cli(
            db_url, tmp_path, "--", "config", "get-value", "database", "sql_alchemy_conn"
        )
        assert said.returncode == 0, said.stderr
        conn = said.stdout.strip().splitlines()[-1]
        assert conn.startswith("postgresql+psycopg2://"), conn
        assert urlsplit(conn).path == f"/{name}_airflow"
        for section, key, value in (
            ("core", "executor", "LocalExecutor"),
            ("core", "dags_folder", str(REPO / "dags")),
            ("cosmos", "enable_telemetry", "False"),
        ):
            said = airflow_cli(db_url, tmp_path, "config", "get-value", section, key)
            assert said.returncode == 0, said.stderr
            assert said.stdout.strip().splitlines()[-1] == value, (section, key, said.stdout)
        said = airflow_cli(db_url, tmp_path, "info")
        assert said.returncode == 0, said.stderr
        assert str(tmp_path / "airflow") in said.stdout  # AIRFLOW_HOME under SPANCOST_HOME
    finally:
        admin = urlsplit(db_url)._replace(path="/postgres").geturl()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}_airflow" with (force)')


def test_airflow_cli_without_a_command_says_what_to_give(db_url: str, tmp_path: Path) -> None:
    said = airflow_cli(db_url, tmp_path)
    assert said.returncode != 0
    assert "give the airflow command to run" in said.stderr
