"""The Grafana dashboard: every panel's SQL returns rows on the demo's marts, as spancost_bi.

The demo runs for real (a subprocess, with its own local AWS endpoints) into the
test database; each panel's query then runs with Grafana's time macro expanded
to a window holding the demo's days, under the read-only role the provisioned
datasource logs in through.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "grafana" / "dashboards" / "spancost.json"
PROVISIONING = REPO / "grafana" / "provisioning"
DEMO_DAY = "2026-11-22"


def expand(sql: str) -> str:
    """Grafana's $__timeFilter(column), for a window that holds every demo day."""
    return re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        r"\1 >= timestamptz '2026-01-01' and \1 < timestamptz '2027-01-01'",
        sql,
    )


def test_every_panel_returns_rows_on_the_demo(tmp_path: Path, db_url: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "spancost.yaml").read_text())
    [source] = datasources["datasources"]
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "spancost.yaml").read_text())
    assert providers["providers"][0]["options"]["path"] == "${SPANCOST_GRAFANA_DASHBOARDS}"
    panels = dashboard["panels"]
    assert {panel["datasource"]["uid"] for panel in panels} == {source["uid"]}
    titles = {panel["title"] for panel in panels}
    for wanted in (
        "over time",
        "by model",
        "by pipeline",
        "by feature",
        "Input against output",
        "Top traces",
        "Billed against estimated",
        "Idle",
        "anomalies",
        "Budget",
    ):
        assert any(wanted.lower() in title.lower() for title in titles), wanted

    env = {**os.environ, "SPANCOST_DATABASE_URL": db_url, "SPANCOST_HOME": str(tmp_path)}
    cli = [sys.executable, "-m", "spancost.cli"]
    try:
        subprocess.run(
            [*cli, "demo", "--date", DEMO_DAY], env=env, check=True, stdout=subprocess.DEVNULL
        )
    finally:
        subprocess.run([*cli, "aws", "down"], env=env, check=False, stdout=subprocess.DEVNULL)

    empty = []
    with psycopg.connect(db_url) as conn:
        conn.execute("set role spancost_bi")  # what the provisioned datasource can read
        for panel in panels:
            [target] = panel["targets"]
            rows = conn.execute(expand(target["rawSql"])).fetchall()
            if not rows:
                empty.append(panel["title"])
    assert empty == []
