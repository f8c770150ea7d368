"""The read-only BI role: `spancost db init` creates it, and it reads marts and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from spancost.transform import dbt_build

pytestmark = pytest.mark.integration

SPANCOST = Path(sys.executable).with_name("spancost")


def test_the_bi_role_reads_every_mart_and_nothing_else(db_url: str) -> None:
    env = {**os.environ, "SPANCOST_DATABASE_URL": db_url}
    init = subprocess.run(
        [str(SPANCOST), "db", "init"], env=env, capture_output=True, text=True, timeout=120
    )
    assert init.returncode == 0, init.stderr
    assert "spancost_bi" in init.stdout
    # A second init is a no-op, not an error.
    again = subprocess.run(
        [str(SPANCOST), "db", "init"], env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr
    dbt_build.build(db_url)

    with psycopg.connect(db_url, autocommit=True) as conn:
        tables = {
            schema: [
                name
                for (name,) in conn.execute(
                    "select tablename from pg_tables where schemaname = %s order by 1", (schema,)
                )
            ]
            for schema in ("marts", "intermediate", "staging", "seeds", "raw", "ops")
        }
        views = [
            f"staging.{name}"
            for (name,) in conn.execute(
                "select viewname from pg_views where schemaname = 'staging' order by 1"
            )
        ]
        assert {"fct_llm_calls", "fct_allocated_costs_daily"} <= set(tables["marts"])
        assert tables["raw"] and tables["ops"] and tables["intermediate"] and views

        conn.execute("set role spancost_bi")
        for name in tables["marts"]:
            conn.execute(f"select * from marts.{name} limit 1").fetchall()

        others = [
            f"{schema}.{name}"
            for schema in ("intermediate", "seeds", "raw", "ops")
            for name in tables[schema]
        ] + views
        for relation in others:
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(f"select 1 from {relation} limit 1")

        for statement in (
            "delete from marts.fct_llm_calls",
            "insert into marts.rpt_unattributed_spend (day, service) values (current_date, 'x')",
            "update marts.fct_billed_costs_daily set billed_cost_usd = 0",
            "create table marts.mine (x int)",
            "drop table marts.fct_llm_calls",
            "create table raw.mine (x int)",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)
