"""Running dbt: ``dbt build`` of the project in ``dbt/`` against the spancost database."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spancost.db import dbt_env
from spancost.errors import InfrastructureError

log = logging.getLogger(__name__)


def project_dir() -> Path:
    """``SPANCOST_DBT_PROJECT_DIR``, or the ``dbt/`` folder beside ``plugins/``."""
    configured = os.environ.get("SPANCOST_DBT_PROJECT_DIR")
    if configured:
        return Path(configured).resolve()
    return Path(__file__).resolve().parents[3] / "dbt"


def dbt_executable() -> str:
    candidate = Path(sys.executable).with_name("dbt")
    return str(candidate) if candidate.exists() else "dbt"


def dbt_args(project: Path, command: Sequence[str]) -> list[str]:
    """``dbt <command>`` on ``project``, whose ``profiles.yml`` is in the project itself."""
    return [
        dbt_executable(),
        *command,
        "--project-dir",
        str(project),
        "--profiles-dir",
        str(project),
    ]


def dbt_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus ``extra``, with dbt's anonymous usage stats off."""
    env = {**os.environ, **(extra or {})}
    env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    return env


def run_dbt(
    url: str,
    command: Sequence[str],
    *,
    dbt_vars: Mapping[str, Any] | None = None,
) -> None:
    """Run one dbt command; raises with dbt's output when it fails."""
    project = project_dir()
    args = dbt_args(project, command)
    if dbt_vars:
        args += ["--vars", json.dumps(dict(dbt_vars))]
    env = dbt_environ(dbt_env(url))
    log.info("running %s", " ".join(args[:2]))
    proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False, cwd=project)
    if proc.returncode != 0:
        raise InfrastructureError(
            f"dbt {' '.join(command)} failed:\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}"
        )
    log.info("dbt %s done", " ".join(command))


def build(
    url: str, *, full_refresh: bool = False, dbt_vars: Mapping[str, Any] | None = None
) -> None:
    command = ["build"] + (["--full-refresh"] if full_refresh else [])
    run_dbt(url, command, dbt_vars=dbt_vars)
