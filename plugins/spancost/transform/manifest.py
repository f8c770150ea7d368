"""The dbt manifest the transform DAG is rendered from (Cosmos ``LoadMode.DBT_MANIFEST``).

``dbt parse`` writes it, offline (no database connection, no package hub), into
``target/spancost_manifest/`` of the dbt project, named by a hash of the project's
source files. The DAG file asks for it on every parse: while the project is
unchanged that costs one hash of its few dozen files; after an edit the next parse
runs ``dbt parse`` once (seconds) and every later parse, on any machine sharing the
folder, reuses the result. So a fresh checkout needs no build step, and the DAG never
renders from a manifest older than its models. ``python -m spancost.transform.manifest``
(``make airflow`` runs it) makes it ahead, outside Airflow's DAG import timeout.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import tempfile
from pathlib import Path

from spancost.errors import InfrastructureError
from spancost.transform import dbt_build

log = logging.getLogger(__name__)

CACHE = Path("target") / "spancost_manifest"
# Folders of the project that are dbt's output, not its source.
_NOT_SOURCE = {"target", "logs", "dbt_packages"}


def project_hash(project: Path) -> str:
    """sha256 over every source file of the dbt project (relative path and content)."""
    digest = hashlib.sha256()
    for path in sorted(project.rglob("*")):
        relative = path.relative_to(project)
        if relative.parts[0] in _NOT_SOURCE or any(p.startswith(".") for p in relative.parts):
            continue
        if path.is_file():
            digest.update(relative.as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def path(project: Path | None = None) -> Path:
    """The manifest of ``project`` (default: ``dbt/``) as it is now; ``dbt parse`` when missing."""
    project = (project or dbt_build.project_dir()).resolve()
    # dbt's own DBT_TARGET_PATH when set (the compose stack mounts the project read-only).
    target = os.environ.get("DBT_TARGET_PATH")
    cache = Path(target) / CACHE.name if target else project / CACHE
    manifest = cache / f"manifest-{project_hash(project)}.json"
    if manifest.exists():
        return manifest
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix="parse-") as work:
        parse = ["parse", "--target-path", work, "--log-path", work, "--no-partial-parse"]
        args = dbt_build.dbt_args(project, parse)
        env = dbt_build.dbt_environ()
        log.info("dbt parse of %s (no manifest for this version of the project yet)", project)
        proc = subprocess.run(
            args, env=env, capture_output=True, text=True, check=False, cwd=project
        )
        parsed = Path(work) / "manifest.json"
        if proc.returncode != 0 or not parsed.exists():
            raise InfrastructureError(
                f"dbt parse of {project} failed, so the transform DAG has no manifest:\n"
                f"{proc.stdout[-4000:]}{proc.stderr[-2000:]}"
            )
        # Atomic: a parse running beside this one sees the whole file or none.
        os.replace(parsed, manifest)
    for old in cache.glob("manifest-*.json"):
        if old != manifest:
            old.unlink(missing_ok=True)
    return manifest


def main() -> int:
    print(path())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
