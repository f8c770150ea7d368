"""Backfill from the Airflow UI: one hour of spancost_ingest, driven in headless Chromium.

`spancost airflow` runs the real components (api-server, scheduler, dag-processor,
triggerer) against the test database and the local AWS endpoints under its home,
with Airflow's metadata in Postgres, its default (see `airflow_metadata_url` for why
not SQLite).
Demo span exports for 2026-11-22 00:00-01:00 UTC are in that home's S3, with a few
uploaded at 23:30-23:45 the day before. Playwright drives Debian's chromium (no
browser download) through what a person does: open the DAG, Trigger, Backfill,
From 00:00 To 00:45, param `lateness_minutes` 30, Run Backfill. The test then sees
the four runs succeed in the UI's Runs tab and in the REST API, and reads from
Postgres that exactly the exports uploaded in [23:30, 01:00) landed, every span of
them: the 23:3x exports are reached only through the param (the default lateness
is 15 minutes), and those uploaded after 01:00 belong to no run of the hour.

Screenshots of the filled-in dialog and of the succeeded runs go to the test's
tmp_path, and to SPANCOST_SCREENSHOT_DIR when set; their paths are printed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from spancost.demo import traffic
from spancost.local import endpoints
from tests.e2e.harness import BUCKET, PREFIX, spancost_airflow_env

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
T = datetime(2026, 11, 22, tzinfo=UTC)  # the hour backfilled: [T, T + 1 h)
LATENESS = timedelta(minutes=30)  # the param set in the dialog; the default is 15
RUNS = 4  # 00:00, 00:15, 00:30, 00:45: the dialog's To date counts in
CHROMIUM_HELP = (
    "Debian's chromium is not installed: `apt-get install chromium` as root (`make test`"
    " does it when run as root). Playwright's own browser download is not used."
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api(base: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """The Airflow REST API (every local user is admin under `spancost airflow`)."""
    request = urllib.request.Request(
        f"{base}/api/v2/{path}",
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "PATCH",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def wait_for_dags(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until the API server is up and the dag-processor has parsed both DAGs."""
    deadline = time.monotonic() + 240
    missing = {"spancost_ingest", "spancost_transform"}
    while missing:
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"DAGs {missing} not parsed: {log}"
        for dag_id in sorted(missing):
            try:
                api(base, f"dags/{dag_id}")
                missing.discard(dag_id)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
        time.sleep(2)


def upload_demo_exports(endpoint: str) -> list[traffic.DemoObject]:
    """Exports of the hour's traces, of some from 23:30 to 23:40 and of some after 01:00."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=endpoints.LOCAL_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=endpoints.LOCAL_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=endpoints.LOCAL_ENV["AWS_SECRET_ACCESS_KEY"],
    )
    s3.create_bucket(Bucket=BUCKET)
    batches = [  # (start, end, seed) of the traces
        (T - LATENESS, T - timedelta(minutes=20), 3),  # reached only through the param
        (T, T + timedelta(hours=1), 5),  # the hour
        (T + timedelta(hours=1), T + timedelta(minutes=70), 6),  # after it: no run's
    ]
    objects = [
        obj
        for start, end, seed in batches
        for obj in traffic.build_objects(
            traffic.generate_spans(start, end, seed=seed, traces_per_hour=30),
            prefix=PREFIX,
            seed=seed,
        )
    ]
    traffic.upload_objects(s3, BUCKET, objects)
    return objects


def backfill_from_the_ui(page: Any, base: str, shots: Path) -> None:
    """Trigger → Backfill → one hour, lateness_minutes 30 → Run Backfill."""
    page.goto(f"{base}/dags/spancost_ingest")
    page.get_by_role("button", name="Trigger").click()
    dialog = page.locator("[role=dialog][data-state=open]").last
    dialog.get_by_text("Backfill", exact=True).click()
    # From and To open a popover each, with a date and a time field (UTC).
    for field, when in enumerate((T, T + timedelta(minutes=45))):
        dialog.get_by_test_id("datetime-input").nth(field).click()
        popover = page.locator("[data-scope=popover][data-part=content][data-state=open]")
        popover.get_by_placeholder("YYYY/MM/DD").fill(f"{when:%Y/%m/%d}")
        popover.get_by_placeholder("HH:mm").fill(f"{when:%H:%M}")
        page.keyboard.press("Escape")
    # The dialog's dry run: the To date counts in.
    dialog.get_by_text(f"{RUNS} runs will be triggered.").wait_for()
    dialog.locator("input[name=max_active_runs]").fill("2")
    # Airflow 3.3 sends the Run Parameters only with this box ticked; the backfill
    # creates new runs only ("Missing Runs"), so nothing existing is overridden.
    dialog.get_by_text("Override parameters on existing runs").click()
    lateness = dialog.locator("input[name=element_lateness_minutes]")
    lateness.fill(str(int(LATENESS.total_seconds() // 60)))
    dialog.get_by_text("Date Range").click()  # leave the field: the form takes it on blur
    dialog.screenshot(path=shots / "backfill-dialog.png")
    dialog.get_by_role("button", name="Run Backfill").click()
    page.get_by_text("Backfill generated").first.wait_for()


def succeeded_in_the_ui(
    page: Any, base: str, shots: Path, process: subprocess.Popen[bytes], log: Path
) -> list[str]:
    """Reload the DAG's Runs tab (backfill runs) until RUNS rows show Success (10 min)."""
    deadline = time.monotonic() + 600
    rows = page.locator("tbody tr")
    page.set_viewport_size({"width": 1100, "height": 860})
    while True:
        assert process.poll() is None, f"spancost airflow exited: {log.read_text()[-3000:]}"
        page.goto(f"{base}/dags/spancost_ingest/runs?run_type=backfill")
        page.get_by_text(f"{RUNS} Dag Runs").wait_for()
        states = [
            "Success" if row.get_by_text("Success", exact=True).count() else row.inner_text()
            for row in rows.all()
        ]
        if states == ["Success"] * RUNS or time.monotonic() > deadline:
            page.screenshot(path=shots / "backfill-runs.png")
            return states
        assert not [s for s in states if "Failed" in s], states
        time.sleep(10)


@pytest.fixture
def airflow_metadata_url(db_url: str) -> Iterator[str]:
    """Where `spancost airflow` keeps Airflow's metadata: `<test db>_airflow`, then dropped.

    It is `spancost airflow`'s own default (Postgres beside spancost's database), not
    SQLite, where Airflow does not support creating a backfill while the scheduler
    writes: the API answers 503 ("Database is locked. Backfill creation is not
    supported on SQLite under concurrent access.") and the scheduler can die on the
    half-made runs. The test creates nothing: it checks the default did.
    """
    parts = urlsplit(db_url)
    name = f"{parts.path.lstrip('/')}_airflow"
    admin = parts._replace(path="/postgres").geturl()
    yield parts._replace(path=f"/{name}").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def chromium() -> str:
    """Debian's chromium; the test is skipped, saying how to install it, when missing."""
    path = shutil.which("chromium")
    if path is None:
        pytest.skip(CHROMIUM_HELP)
    return path


@pytest.mark.timeout(1200)
def test_backfill_one_hour_from_the_ui_loads_that_hour(
    chromium: str,
    tmp_path: Path,
    db_url: str,
    airflow_metadata_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from playwright.sync_api import sync_playwright

    said: list[str] = []

    def say(line: str) -> None:  # to the terminal, passed or not
        with capsys.disabled():
            print(line if said else f"\n{line}", flush=True)
        said.append(line)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    home = tmp_path / "home"
    shots = tmp_path / "screenshots"
    shots.mkdir()
    env = spancost_airflow_env(db_url, home)
    # The local AWS endpoint that `spancost airflow` uses: the one under its home.
    objects = upload_demo_exports(endpoints.start(endpoints.LocalAws(home)))
    window = [o for o in objects if T - LATENESS <= o.upload_time < T + timedelta(hours=1)]
    only_by_param = [o for o in window if o.upload_time < T - timedelta(minutes=15)]
    after = [o for o in objects if o.upload_time >= T + timedelta(hours=1)]
    assert only_by_param and after and len(window) > 20

    log = tmp_path / "airflow.out"
    out = log.open("w")
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
    started = time.monotonic()
    try:
        wait_for_dags(base, process, log)
        say(f"DAGs parsed {time.monotonic() - started:.0f} s after launch")
        # Each spans asset event would start spancost_transform (a dbt build): not
        # what this test is about, and heavy on two cores.
        api(base, "dags/spancost_transform", {"is_paused": True})
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium)
            page = browser.new_page(viewport={"width": 1100, "height": 1700})
            page.set_default_timeout(60_000)
            try:
                backfill_from_the_ui(page, base, shots)
                say(f"backfill started {time.monotonic() - started:.0f} s after launch")
                states = succeeded_in_the_ui(page, base, shots, process, log)
            except Exception:
                page.screenshot(path=shots / "failure.png")  # what the page showed then
                exited = "" if process.poll() is None else "spancost airflow exited; "
                say(f"{exited}screenshot: {shots / 'failure.png'}; Airflow's output: {log}")
                raise
            finally:
                browser.close()
        say(f"backfill runs succeeded {time.monotonic() - started:.0f} s after launch")
        for shot in sorted(shots.iterdir()):
            say(f"screenshot: {shot}")
        if os.environ.get("SPANCOST_SCREENSHOT_DIR"):
            copies = Path(os.environ["SPANCOST_SCREENSHOT_DIR"])
            copies.mkdir(parents=True, exist_ok=True)
            for shot in shots.iterdir():
                shutil.copy(shot, copies / shot.name)
            say(f"screenshots copied to {copies}")
        assert states == ["Success"] * RUNS, (states, log)

        runs = api(base, "dags/spancost_ingest/dagRuns?run_type=backfill")["dag_runs"]
        intervals = sorted((r["data_interval_start"], r["data_interval_end"]) for r in runs)
        assert [r["state"] for r in runs] == ["success"] * RUNS
        assert intervals == [
            (f"{T + timedelta(minutes=m):%Y-%m-%dT%H:%M:%SZ}",
             f"{T + timedelta(minutes=m + 15):%Y-%m-%dT%H:%M:%SZ}")
            for m in range(0, 60, 15)
        ]  # fmt: skip
        assert {r["conf"].get("lateness_minutes") for r in runs} == {30}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=90)
        finally:
            out.close()
            endpoints.stop(endpoints.LocalAws(home))

    with psycopg.connect(db_url) as conn:
        manifest: dict[str, str] = dict(
            conn.execute("select key, status from raw.s3_objects").fetchall()
        )
        landed: dict[str, int] = dict(
            conn.execute("select source_key, count(*) from raw.otel_spans group by 1").fetchall()
        )
        in_hour = conn.execute(
            "select count(*) from raw.otel_spans where start_time >= %s and start_time < %s",
            (T, T + timedelta(hours=1)),
        ).fetchone()
    # Exactly the exports of the four intervals plus the 30-minute lookback, all of
    # each: the 23:3x ones only through the param, none uploaded after 01:00.
    assert manifest == {o.key: "loaded" for o in window}
    assert landed == {o.key: o.span_count for o in window}
    assert in_hour is not None and in_hour[0] > 0
    # The backfill was kept in Postgres, where `spancost airflow` put Airflow's metadata.
    assert not (home / "airflow" / "airflow.db").exists()
    with psycopg.connect(airflow_metadata_url) as conn:
        backfill_runs = conn.execute(
            "select count(*) from dag_run where dag_id = 'spancost_ingest'"
            " and run_type = 'backfill' and state = 'success'"
        ).fetchone()
    assert backfill_runs == (4,)
