"""Data tests on span-sized relations check the recent rows each cycle, all rows on demand.

See dbt/macros/test_window.sql: a 15-minute build must not rescan the history.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from spancost.errors import InfrastructureError
from spancost.transform import dbt_build
from tests.integration.transform.test_llm_marts import T0, agent, call, ingest, put

pytestmark = pytest.mark.integration

UNIQUE_SPAN_KEY = ["test", "--select", "fct_llm_calls,test_name:unique"]


def duplicate_a_call(db_url: str, age: timedelta) -> None:
    """Copy one call of fct_llm_calls, moved `age` back: a duplicate span_key."""
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "insert into marts.fct_llm_calls select * from marts.fct_llm_calls"
            " where span_key = (select min(span_key) from marts.fct_llm_calls)"
        )
        conn.execute(
            "update marts.fct_llm_calls set start_time = start_time - %s, end_time = end_time - %s"
            " where ctid = (select max(ctid) from marts.fct_llm_calls"
            " where span_key = (select min(span_key) from marts.fct_llm_calls))",
            [age, age],
        )


def test_recent_rows_are_tested_every_build_and_old_ones_on_demand(s3, db_url: str) -> None:
    sup = "a" * 16
    spans = [
        agent(sup, None, 0, 60_000, "supervisor"),
        call("1" * 16, sup, 500, "gpt-5.4", 1000, 100),
        call("2" * 16, sup, 2_000, "gpt-5.4-mini", 2000, 200),
    ]
    put(s3, 0, [{"scope": {"name": "demo"}, "spans": spans}], serial=1)
    ingest(s3, db_url, T0 - timedelta(minutes=5), T0 + timedelta(minutes=15), "r1")
    dbt_build.build(db_url)
    dbt_build.run_dbt(db_url, UNIQUE_SPAN_KEY)

    # A duplicate far older than the window (lookback 48 h + trace context 24 h)
    # is not rescanned by an ordinary build's tests, but a full-history test finds it.
    duplicate_a_call(db_url, timedelta(days=30))
    dbt_build.run_dbt(db_url, UNIQUE_SPAN_KEY)
    with pytest.raises(InfrastructureError, match="unique_fct_llm_calls_span_key"):
        dbt_build.run_dbt(db_url, UNIQUE_SPAN_KEY, dbt_vars={"test_full_history": True})

    # A duplicate inside the window fails the ordinary test.
    duplicate_a_call(db_url, timedelta(hours=1))
    with pytest.raises(InfrastructureError, match="unique_fct_llm_calls_span_key"):
        dbt_build.run_dbt(db_url, UNIQUE_SPAN_KEY)
