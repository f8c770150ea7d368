"""The dbt docs are what a data consumer reads: every mart and column described, our overview."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from spancost.transform import dbt_build

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> dict:
    target = tmp_path_factory.mktemp("dbt-target")
    project = dbt_build.project_dir()
    subprocess.run(
        [
            dbt_build.dbt_executable(),
            "parse",
            "--project-dir",
            str(project),
            "--profiles-dir",
            str(project),
            "--target-path",
            str(target),
        ],
        check=True,
        capture_output=True,
        cwd=project,
        env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
    )
    return json.loads(Path(target, "manifest.json").read_text())


def marts(manifest: dict) -> dict[str, dict]:
    return {
        node["name"]: node
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and node["config"]["schema"] == "marts"
    }


def test_every_mart_and_column_is_described(manifest: dict) -> None:
    found = marts(manifest)
    assert {"fct_llm_calls", "fct_trace_costs", "fct_agent_costs"} <= set(found)
    undocumented = [
        f"{name}.{column}"
        for name, node in found.items()
        for column, spec in node["columns"].items()
        if not spec["description"].strip()
    ] + [name for name, node in found.items() if not node["description"].strip()]
    assert undocumented == []


def test_the_overview_page_is_ours_and_names_every_mart(manifest: dict) -> None:
    overview = manifest["docs"]["doc.spancost.__overview__"]["block_contents"]
    assert "spancost" in overview
    missing = [name for name in marts(manifest) if f"marts.{name}" not in overview]
    assert missing == []


def test_the_exposures_read_only_marts_and_every_mart(manifest: dict) -> None:
    exposures = list(manifest["exposures"].values())
    assert {e["name"] for e in exposures} == {
        "pipeline_cost_dashboard",
        "aws_bill_dashboard",
        "cost_alerts_dashboard",
    }
    upstream = {node for e in exposures for node in e["depends_on"]["nodes"]}
    names = {manifest["nodes"][node]["name"] for node in upstream}
    assert names == set(marts(manifest))
