"""A backfill gives the marts its fifteen-minute runs give, checksum for checksum.

Three fresh databases, the same demo exports in each one's local S3, and a real
`spancost airflow` (LocalExecutor) on each, one after the other:

* *runs*: the fifteen-minute runs of `spancost_ingest`, each triggered through the
  REST API with its interval (params `start`, `end`), as the schedule makes them;
* *backfill*: one backfill of the same intervals, created through the REST API the UI's
  backfill dialog calls (`POST /api/v2/backfills`; `tests/e2e/test_ui_backfill.py`
  drives the dialog itself);
* *cli*: the same backfill created on the command line, `airflow backfill create`, as
  the README shows it (`spancost airflow-cli backfill create …`: the airflow command
  against the home and metadata database of the running `spancost airflow`).

Then `spancost_transform` over the day on each, and every relation in `marts` must have
the same row count and the same md5 of its ordered rows in both databases.

`SPANCOST_BACKFILL_TEST_HOURS` (default 1: 4 runs a side) sets the span; 24 is the day
of 96 runs, about three hours of CPU for the three sides on a 2-core machine, too long for CI.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from spancost.local import endpoints
from tests.e2e.harness import (
    DAY,
    T,
    api,
    fresh_databases,
    mart_checksums,
    mart_rows,
    start_airflow,
    upload_demo_exports,
)

pytestmark = pytest.mark.e2e

HOURS = int(os.environ.get("SPANCOST_BACKFILL_TEST_HOURS", "1"))
STEP = timedelta(minutes=15)
INTERVALS = [(T + STEP * n, T + STEP * (n + 1)) for n in range(HOURS * 4)]


@pytest.fixture
def sides(pg_server_url: str) -> Iterator[dict[str, str]]:
    """A fresh spancost database per side (and its `<name>_airflow`), dropped after."""
    with fresh_databases(pg_server_url, ("runs", "backfill", "cli")) as found:
        yield found


@pytest.mark.timeout(3600 + HOURS * 600)
def test_a_backfill_gives_the_marts_of_its_fifteen_minute_runs(
    tmp_path: Path, sides: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    def say(line: str) -> None:
        with capsys.disabled():
            print(f"\n[{time.strftime('%H:%M:%S')}] {line}", end="", flush=True)

    checksums: dict[str, dict[str, tuple[int, str]]] = {}
    for side, db_url in sides.items():
        home = tmp_path / side
        upload_demo_exports(home)
        started = time.monotonic()
        (tmp_path / f"{side}-out").mkdir()
        airflow = start_airflow("local", db_url, home, tmp_path / f"{side}-out", {})
        try:
            airflow.wait_for_dags()
            # The transform runs once, over the day, after the loads (asset events would
            # start it after each one).
            api(airflow.base, "dags/spancost_transform", {"is_paused": True}, method="PATCH")
            if side == "runs":
                run_ids = []
                for start, end in INTERVALS:
                    run_id = f"interval__{start:%Y%m%dT%H%M}"
                    body = {
                        "dag_run_id": run_id,
                        "logical_date": end.isoformat(),
                        "conf": {"start": start.isoformat(), "end": end.isoformat()},
                    }
                    api(airflow.base, "dags/spancost_ingest/dagRuns", body, method="POST")
                    run_ids.append(run_id)
            else:
                if side == "cli":
                    # One hour: from its first interval's start to its last one's (inclusive).
                    said = airflow.cli(
                        "backfill",
                        "create",
                        "--dag-id",
                        "spancost_ingest",
                        "--from-date",
                        INTERVALS[0][0].isoformat(),
                        "--to-date",
                        INTERVALS[-1][0].isoformat(),
                        "--max-active-runs",
                        "4",
                    )
                    say(f"cli: {said.strip().splitlines()[-1] if said.strip() else '(no output)'}")
                else:
                    api(
                        airflow.base,
                        "backfills",
                        {
                            "dag_id": "spancost_ingest",
                            # A run is named by its interval's start, and the last one counts in.
                            "from_date": INTERVALS[0][0].isoformat(),
                            "to_date": INTERVALS[-1][0].isoformat(),
                            "run_backwards": False,
                            "dag_run_conf": {},
                            "reprocess_behavior": "none",
                            "max_active_runs": 4,
                        },
                        method="POST",
                    )
                deadline = time.monotonic() + 300
                run_ids = []
                while len(run_ids) < len(INTERVALS):
                    assert time.monotonic() < deadline, f"backfill made {run_ids}"
                    found = api(
                        airflow.base, "dags/spancost_ingest/dagRuns?run_type=backfill&limit=500"
                    )["dag_runs"]
                    run_ids = [run["dag_run_id"] for run in found]
                    time.sleep(5)
            for run_id in run_ids:
                airflow.wait_for_success("spancost_ingest", run_id)
            say(f"{side}: {len(run_ids)} runs of spancost_ingest succeeded")
            api(airflow.base, "dags/spancost_transform", {"is_paused": False}, method="PATCH")
            transform = airflow.trigger(
                "spancost_transform",
                {"start_time": DAY[0].isoformat(), "end_time": DAY[1].isoformat()},
            )
            airflow.wait_for_success("spancost_transform", transform)
            if side != "runs":
                # (The DAG is active, so the scheduler also makes today's latest run.)
                runs = api(
                    airflow.base, "dags/spancost_ingest/dagRuns?run_type=backfill&limit=500"
                )["dag_runs"]
                intervals = sorted(
                    (run["data_interval_start"], run["data_interval_end"], run["run_type"])
                    for run in runs
                )
                assert [(s[:16], e[:16], kind) for s, e, kind in intervals] == [
                    (f"{s:%Y-%m-%dT%H:%M}", f"{e:%Y-%m-%dT%H:%M}", "backfill") for s, e in INTERVALS
                ], intervals
        finally:
            airflow.stop()
            endpoints.stop(endpoints.LocalAws(home))
        checksums[side] = mart_checksums(db_url)
        say(f"{side}: {len(checksums[side])} marts, {time.monotonic() - started:.0f} s")

    runs = checksums["runs"]
    for side in ("backfill", "cli"):
        backfill = checksums[side]
        assert set(runs) == set(backfill), side
        differ = {
            name: {
                "runs": (runs[name], mart_rows(sides["runs"], name)),
                side: (backfill[name], mart_rows(sides[side], name)),
            }
            for name in runs
            if runs[name] != backfill[name]
        }
        assert differ == {}, side
    for name in ("fct_llm_calls", "fct_trace_costs", "agg_pipeline_costs_hourly"):
        assert runs[name][0] > 0, name
    # Each side loaded the exports of its intervals once: the same manifest.
    manifests = {}
    for side, db_url in sides.items():
        with psycopg.connect(db_url) as conn:
            manifests[side] = conn.execute(
                "select key, status, span_count from raw.s3_objects order by key"
            ).fetchall()
    assert manifests["runs"] == manifests["backfill"] == manifests["cli"] != []
