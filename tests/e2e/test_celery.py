"""Scale-out: ingest then transform on Celery build the same marts as on the LocalExecutor.

`spancost airflow --executor celery` runs the real components (api-server, scheduler,
dag-processor, triggerer) and two real Celery workers (`airflow celery worker`, each
a process running one task at a time: two tasks at once, the span loader's own
process pool working inside them), Redis on loopback as the broker (the
one at 127.0.0.1:6379, else a private redis-server on a free loopback port: the
`redis_url` fixture) and Celery's results in Airflow's metadata database in
Postgres. `spancost airflow` (the LocalExecutor) runs the same steps on a database
of its own: one hour of demo span exports in its local S3, `spancost_ingest`
triggered through the REST API with params `start`/`end`, then `spancost_transform`
(Cosmos: one task per dbt node) with the day as `start_time`/`end_time`.

The test then checks, for every relation in the `marts` schema of both databases,
the row count and an md5 of its rows (each row as text, in order): the two must be
equal, and the cost must be the one computed from the exports. It also checks that
the Celery run went through Celery (every task instance has its result in the
`celery_taskmeta` table) and ran two tasks at once somewhere.

Takes about 22 minutes on a shared 2-core machine (two Airflows, 83 dbt tasks each).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from spancost.demo import traffic
from spancost.local import endpoints
from tests.e2e.harness import (
    DAY,
    INGEST_END,
    REPO,
    T,
    api,
    fresh_databases,
    mart_checksums,
    mart_rows,
    most_at_once,
    start_airflow,
    upload_demo_exports,
)
from tests.e2e.test_ingest_dag import expected_from_objects

pytestmark = pytest.mark.e2e


@pytest.fixture
def databases(pg_server_url: str) -> Iterator[dict[str, str]]:
    """A fresh spancost database per executor (and its `<name>_airflow`), dropped after."""
    with fresh_databases(pg_server_url, ("celery", "local")) as found:
        yield found


@pytest.fixture
def celery_executor_importable() -> None:
    """Fail at once, naming the versions, when Airflow's CeleryExecutor cannot be imported.

    Otherwise the worker and the scheduler die at start with the import error in
    their output. (apache-airflow-providers-celery 3.26.0 imports `retry` from
    `celery.backends.database`, which celery 5.7.0 no longer has.)
    """
    import importlib
    import importlib.metadata

    try:
        importlib.import_module("airflow.providers.celery.executors.celery_executor_utils")
    except ImportError as exc:
        versions = ", ".join(
            f"{name} {importlib.metadata.version(name)}"
            for name in ("celery", "kombu", "apache-airflow-providers-celery")
        )
        pytest.fail(
            f"Airflow's CeleryExecutor cannot be imported ({versions}): {exc}. Pin a celery"
            " the provider works with (celery<5.7 for provider 3.26) and `make lock`"
        )


@pytest.mark.timeout(4200)
def test_celery_with_two_worker_processes_builds_the_marts_the_local_executor_builds(
    tmp_path: Path,
    databases: dict[str, str],
    redis_url: str,
    celery_executor_importable: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def say(line: str) -> None:  # to the terminal, passed or not
        with capsys.disabled():
            print(f"\n[{time.strftime('%H:%M:%S')}] {line}", end="", flush=True)

    objects: list[traffic.DemoObject] = []
    checksums: dict[str, dict[str, tuple[int, str]]] = {}
    celery_runs: list[str] = []
    # Celery first: it is what is being proven. Its tasks go to a queue of their own,
    # so another Airflow on the same Redis cannot take them.
    extra = {
        "celery": {
            "AIRFLOW__CELERY__BROKER_URL": redis_url,
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": f"spancost-test-{uuid.uuid4().hex[:8]}",
        },
        "local": {},
    }
    for executor in ("celery", "local"):
        home = tmp_path / executor
        uploaded = upload_demo_exports(home)
        assert uploaded and max(o.upload_time for o in uploaded) < INGEST_END
        objects = objects or uploaded
        assert [(o.key, o.body) for o in uploaded] == [(o.key, o.body) for o in objects]
        started = time.monotonic()
        airflow = start_airflow(executor, databases[executor], home, tmp_path, extra[executor])
        try:
            airflow.wait_for_dags()
            say(f"{executor}: DAGs parsed {time.monotonic() - started:.0f} s after launch")
            # Asset events would start spancost_transform on their own: paused, it gets
            # none, and runs once, when triggered with the day.
            api(airflow.base, "dags/spancost_transform", {"is_paused": True}, method="PATCH")
            ingest = airflow.trigger(
                "spancost_ingest", {"start": T.isoformat(), "end": INGEST_END.isoformat()}
            )
            took = airflow.wait_for_success("spancost_ingest", ingest)
            say(f"{executor}: spancost_ingest succeeded in {took:.0f} s")
            api(airflow.base, "dags/spancost_transform", {"is_paused": False}, method="PATCH")
            transform = airflow.trigger(
                "spancost_transform",
                {"start_time": DAY[0].isoformat(), "end_time": DAY[1].isoformat()},
            )
            took = airflow.wait_for_success("spancost_transform", transform)
            tasks = len(airflow.task_instances("spancost_transform", transform))
            say(f"{executor}: spancost_transform ({tasks} tasks) succeeded in {took:.0f} s")
            if executor == "celery":
                celery_runs = [ingest, transform]
        finally:
            airflow.stop()
            endpoints.stop(endpoints.LocalAws(home))
        output = airflow.log.read_text(errors="replace")
        assert "stopping Airflow" in output
        checksums[executor] = mart_checksums(databases[executor])
        say(f"{executor}: {len(checksums[executor])} marts, {time.monotonic() - started:.0f} s")

    # The Celery run went through Celery: two worker processes ran, and every task
    # instance of both runs has its result in Celery's result backend.
    celery_out = (tmp_path / "airflow-celery.out").read_text(errors="replace").splitlines()
    assert any("CeleryExecutor" in line for line in celery_out)
    for worker in ("celery-worker-1", "celery-worker-2"):
        said = [line for line in celery_out if line.startswith(worker)]
        banner = [line for line in said if "concurrency" in line]
        assert banner and "(solo)" in banner[0], (worker, celery_out[-50:])
        assert any("Executing workload" in line for line in said), f"{worker} ran no task"
    metadata = f"{databases['celery']}_airflow"
    with psycopg.connect(metadata) as conn:
        done = conn.execute(
            "select count(*) from task_instance where run_id = any(%s) and state = 'success'",
            (celery_runs,),
        ).fetchone()
        results = conn.execute(
            "select count(*) from celery_taskmeta where status = 'SUCCESS'"
        ).fetchone()
    assert done is not None and results is not None
    assert results[0] >= done[0] > 50, (results, done)
    assert most_at_once(metadata, celery_runs) >= 2

    # The same marts, row for row.
    local, celery = checksums["local"], checksums["celery"]
    assert set(local) == set(celery), set(local) ^ set(celery)
    differ = {
        name: {
            "local": (local[name], mart_rows(databases["local"], name)),
            "celery": (celery[name], mart_rows(databases["celery"], name)),
        }
        for name in local
        if local[name] != celery[name]
    }
    assert differ == {}
    # Every mart model of the dbt project was built.
    assert set(local) == {path.stem for path in (REPO / "dbt" / "models" / "marts").rglob("*.sql")}
    for name in ("fct_llm_calls", "fct_trace_costs", "agg_pipeline_costs_hourly"):
        assert local[name][0] > 0, name

    # And the right marts: the cost computed from the exports themselves.
    total, calls, _ = expected_from_objects(objects)
    for executor, db_url in databases.items():
        with psycopg.connect(db_url) as conn:
            row = conn.execute(
                "select sum(estimated_cost_usd), sum(calls) from marts.agg_pipeline_costs_hourly"
            ).fetchone()
        assert row == (total, calls), executor
        assert isinstance(row[0], Decimal)
