"""docker-compose.yaml: valid against the Compose Specification, and the stack it promises.

No Docker engine runs here, so the file is interpolated the way compose does (from
`compose/env.example`), its YAML anchors merged, and validated by `compose-spec`,
a parser of the Compose Specification from PyPI; then the stack's shape is checked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from compose_spec import PyCompose

from spancost.local.airflow_local import POOLS

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = {
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}


def example_env() -> dict[str, str]:
    lines = (REPO / "compose" / "env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}; an unset required one fails."""

    def value(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        if env.get(name):
            return env[name]
        if op == ":?":
            raise AssertionError(f"{name} is required: {arg}")
        return arg if op == ":-" else ""

    return re.sub(r"\$\{([A-Za-z0-9_]+)(?:(:-|:\?)([^}]*))?\}", value, text)


def load(env: dict[str, str]) -> dict:
    text = interpolate((REPO / "docker-compose.yaml").read_text(), env)
    data = yaml.safe_load(text)  # resolves the anchors and `<<` merges, as compose does
    PyCompose.from_json(json.dumps(data)).to_spec()  # raises on anything off-spec
    return data


def test_the_compose_file_validates_and_refuses_a_missing_secret() -> None:
    load(example_env())
    env = example_env()
    del env["SPANCOST_PG_PASSWORD"]
    with pytest.raises(AssertionError, match="SPANCOST_PG_PASSWORD is required"):
        load(env)
    with pytest.raises(ValueError):
        PyCompose.from_json(json.dumps({"services": {"a": {"image": "x", "comand": "y"}}}))


def test_the_stack_is_airflow_on_celery_with_its_own_databases_grafana_and_a_demo_profile() -> None:
    services = load(example_env())["services"]
    assert set(services) == {
        "postgres",
        "redis",
        "airflow-init",
        "grafana",
        "moto",
        "pricing",
        *AIRFLOW,
    }
    for name in AIRFLOW | {"airflow-init"}:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:"), name
        # Airflow's metadata and the warehouse are separate databases on one server.
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow")
        assert env["SPANCOST_DATABASE_URL"].endswith("@postgres:5432/spancost")
    commands = {name: services[name]["command"] for name in AIRFLOW}
    assert commands["airflow-worker"][:3] == ["airflow", "celery", "worker"]
    assert {tuple(commands[n][:2]) for n in AIRFLOW - {"airflow-worker"}} == {
        ("airflow", "api-server"),
        ("airflow", "scheduler"),
        ("airflow", "dag-processor"),
        ("airflow", "triggerer"),
    }
    # The init step installs what `make venv` installs, and runs the local commands.
    init = services["airflow-init"]["command"][-1]
    makefile = (REPO / "Makefile").read_text()
    assert "uv pip sync" in init and "uv pip sync" in makefile
    assert "requirements.lock" in init and "uv==0.13.8" in init
    assert "UV_VERSION := 0.13.8" in makefile
    for pool in POOLS:
        assert f"airflow pools set {pool} 1" in init
    assert init.rstrip().endswith("spancost db init")
    # Demo stand-ins only under the profile; every published port is on loopback.
    assert services["moto"]["profiles"] == services["pricing"]["profiles"] == ["demo"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_grafana_is_provisioned_with_the_bi_login_and_the_dashboard() -> None:
    grafana = load(example_env())["services"]["grafana"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in grafana["volumes"]}
    assert (REPO / mounts["/etc/grafana/provisioning"]).is_dir()
    assert (REPO / mounts["/var/lib/grafana/dashboards"] / "spancost.json").is_file()
    assert grafana["environment"]["SPANCOST_GRAFANA_DB_USER"] == "grafana"
    assert grafana["environment"]["SPANCOST_GRAFANA_DASHBOARDS"] == "/var/lib/grafana/dashboards"
    init = (REPO / "compose" / "postgres-init.sh").read_text()
    assert "create database airflow" in init
    assert "create role grafana login password :'grafana_password' in role spancost_bi" in init
