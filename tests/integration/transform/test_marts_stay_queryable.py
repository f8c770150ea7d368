"""Nothing a BI tool or a downstream model reads vanishes or is half-built during a build.

dbt rebuilds a relation by building a new one beside it, swapping the names and
dropping the old one with CASCADE; a view built on a rebuilt relation would be
dropped with it and be missing until its own turn came (a user saw "relation
does not exist" on intermediate.int_llm_calls_priced for minutes of every
transform). Here a reader queries every relation dbt builds, over and over,
while `dbt build --full-refresh` and then an ordinary build run; every query must
succeed and see the whole relation, as it was before the build.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import psycopg
import pytest

from spancost.transform import dbt_build
from tests.integration.transform.test_llm_marts import T0, agent, call, ingest, put

pytestmark = pytest.mark.integration

SCHEMAS = ("staging", "intermediate", "marts", "seeds")


def relations(db_url: str) -> list[str]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "select table_schema, table_name from information_schema.tables"
            " where table_schema = any(%s) order by 1, 2",
            [list(SCHEMAS)],
        ).fetchall()
    return [f'"{schema}"."{name}"' for schema, name in rows]


def counts(db_url: str, names: list[str]) -> dict[str, int]:
    with psycopg.connect(db_url) as conn:
        return {name: conn.execute(f"select count(*) from {name}").fetchone()[0] for name in names}


class Reader(threading.Thread):
    """Counts the rows of every relation in a loop until stopped; keeps what went wrong."""

    def __init__(self, db_url: str, names: list[str], expected: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.db_url, self.names, self.expected = db_url, names, expected
        self.stop = threading.Event()
        self.rounds = 0
        self.problems: list[str] = []

    def run(self) -> None:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            while not self.stop.is_set():
                for name in self.names:
                    try:
                        (seen,) = conn.execute(f"select count(*) from {name}").fetchone()
                    except psycopg.Error as error:
                        self.problems.append(f"round {self.rounds}: {name}: {error}".strip())
                        continue
                    want = self.expected[name]
                    if seen != want:
                        self.problems.append(f"{self.rounds}: {name}: {seen} rows, not {want}")
                self.rounds += 1
                time.sleep(0.01)


def test_every_relation_stays_whole_and_queryable_through_full_and_incremental_builds(
    s3, db_url: str
) -> None:
    sup = "a" * 16
    spans = [
        agent(sup, None, 0, 60_000, "supervisor"),
        call("1" * 16, sup, 500, "gpt-5.4", 1000, 100),
        call("2" * 16, sup, 2_000, "claude-sonnet-4.5", 2000, 200),
        call("3" * 16, sup, 4_000, "unknown-model-x", 10, 1),
    ]
    put(s3, 0, [{"scope": {"name": "demo"}, "spans": spans}], serial=1)
    ingest(s3, db_url, T0 - timedelta(minutes=5), T0 + timedelta(minutes=15), "r1")
    dbt_build.build(db_url)

    names = relations(db_url)
    # Every layer is there, and the marts hold the calls (or the test proves nothing).
    for schema in SCHEMAS:
        assert any(name.startswith(f'"{schema}".') for name in names), schema
    expected = counts(db_url, names)
    assert expected['"marts"."fct_llm_calls"'] == 3
    assert expected['"intermediate"."int_llm_prices_effective"'] > 0

    reader = Reader(db_url, names, expected)
    reader.start()
    try:
        dbt_build.build(db_url, full_refresh=True)
        rounds_in_full_build = reader.rounds
        dbt_build.build(db_url)
    finally:
        reader.stop.set()
        reader.join(timeout=60)

    assert reader.problems == []
    # The reader was really reading while the builds ran.
    assert rounds_in_full_build >= 5
    assert reader.rounds > rounds_in_full_build
