"""Write-audit-publish of Price List pulls (raw.aws_price_list_landed → raw.aws_price_list).

Real pulls: boto3 against the local Pricing endpoint over HTTP, landed by the real
refresh, audited by the `aws_price_list` checkpoint in SQL. A pull that breaks a
critical expectation is never merged: the effective-dated prices the marts read keep
the last good price (marked stale), the pull's rows stay landed with the reason, and
the next good pull, with a real price change, is merged.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from spancost import pipeline
from spancost.billing import price_list as pl
from spancost.local import pricing_server as ps
from spancost.local.endpoints import LOCAL_ENV
from spancost.validation import batches
from spancost.validation.audit import BatchQuarantined
from tests.conftest import pricing_client

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
G5 = {"instanceName": "ml.g5.xlarge", "regionCode": "us-east-1", "component": "Hosting"}


@pytest.fixture
def pricing(monkeypatch: pytest.MonkeyPatch) -> Iterator[ps.PricingServer]:
    for name, value in LOCAL_ENV.items():
        monkeypatch.setenv(name, value)
    server, _ = ps.start_pricing_server(ps.demo_catalogue())
    yield server
    server.shutdown()
    server.server_close()


def _is_g5(item: dict[str, Any]) -> bool:
    attributes = item["product"]["attributes"]
    return all(attributes.get(key) == value for key, value in G5.items())


def _g5(price: str, effective: str, like: dict[str, Any]) -> dict[str, Any]:
    """The ml.g5.xlarge hosting product again (same sku and rate code), at another price."""
    attributes = like["product"]["attributes"]
    item = ps.sagemaker_instance(
        "us-east-1",
        "ml.g5.xlarge",
        "Hosting",
        price,
        vCpu=attributes["vCpu"],
        gpu=attributes["gpu"],
    )
    assert item["product"]["sku"] == like["product"]["sku"]
    next(iter(item["terms"]["OnDemand"].values()))["effectiveDate"] = effective
    return item


def _with_g5(*versions: tuple[str, str]) -> list[dict[str, Any]]:
    """The demo catalogue with ml.g5.xlarge in us-east-1 replaced by these (price, date)s."""
    catalogue = ps.demo_catalogue()
    original = next(item for item in catalogue if _is_g5(item))
    others = [item for item in catalogue if not _is_g5(item)]
    return others + [_g5(price, effective, original) for price, effective in versions]


def _g5_history(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "select price_usd, effective_from, effective_to, stale from raw.aws_price_list"
        " where item_name = 'ml.g5.xlarge' and region_code = 'us-east-1'"
        " and attributes ->> 'component' = 'Hosting' order by effective_from"
    ).fetchall()


def _pull(conn: psycopg.Connection[Any], server: ps.PricingServer, at: datetime, run: str) -> Any:
    (result,) = [
        pl.refresh(conn, pricing_client(server), pl.SAGEMAKER_INSTANCES, now=at, batch_run_id=run)
    ]
    assert result.status == "landed", result
    return result


BAD_PULLS: dict[str, tuple[Callable[[], list[dict[str, Any]]], str]] = {
    # A unit slip: $250,000 an instance-hour would reprice every endpoint-hour.
    "absurd price": (
        lambda: _with_g5(("250000", "2026-12-01T00:00:00Z")),
        "critical expect_column_values_to_be_between(price_usd)",
    ),
    "negative price": (
        lambda: _with_g5(("-1.21", "2026-12-01T00:00:00Z")),
        "critical expect_column_values_to_be_between(price_usd)",
    ),
    # An epoch date (a zero parsed as a time) would close the price in use in 1970.
    "effective date before 2000": (
        lambda: _with_g5(("1.21", "1970-01-01T00:00:00Z")),
        "critical expect_column_values_to_be_between(effective_from)",
    ),
    "effective date years ahead": (
        lambda: _with_g5(("1.21", "2031-01-01T00:00:00Z")),
        "critical expect_column_values_to_be_between(effective_from)",
    ),
    # The same sku and rate code twice at two prices: which one is in effect?
    "one key, two prices": (
        lambda: _with_g5(("1.21", "2026-12-01T00:00:00Z"), ("1.50", "2026-12-01T00:00:00Z")),
        "critical unexpected_rows_expectation(table)"
        " [(sku, offer_term_code, rate_code) has one price in the pull]",
    ),
}


@pytest.mark.parametrize("case", list(BAD_PULLS))
def test_a_bad_pull_is_never_merged_and_the_next_good_pull_is(
    case: str, pricing: ps.PricingServer, conn: psycopg.Connection[Any], db_url: str
) -> None:
    build, expected = BAD_PULLS[case]
    first = _pull(conn, pricing, NOW, "good-0")
    # Landed, not merged: nothing reads a pull before its audit.
    assert _g5_history(conn) == []
    (audited,) = pipeline.audit_batches(db_url, batches.PRICES, "good-0")
    assert (audited.batch_id, audited.status, audited.rows) == (str(first.pull_id), "published", 7)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    assert _g5_history(conn) == [(Decimal("1.408"), start, None, False)]

    pricing.catalogue.replace(build())
    bad = _pull(conn, pricing, NOW + timedelta(days=1), "bad")
    with pytest.raises(BatchQuarantined) as raised:
        pipeline.audit_batches(db_url, batches.PRICES, "bad")
    message = str(raised.value)
    assert f"batch {bad.pull_id}: suite aws_price_list: " in message
    assert expected in message

    # The price in use stays, now stale; the pull's rows stay landed, with the reason.
    assert _g5_history(conn) == [(Decimal("1.408"), start, None, True)]
    pulls = conn.execute(
        "select status, error from raw.aws_price_list_pulls where pull_id = %s", [bad.pull_id]
    ).fetchone()
    assert pulls[0] == "quarantined" and expected in pulls[1]
    kept = conn.execute(
        "select count(*) from raw.aws_price_list_landed where pull_id = %s", [bad.pull_id]
    ).fetchone()
    assert kept == (bad.rows_seen,)
    assert bad.rows_seen >= 7
    batch = conn.execute(
        "select run_id, status, reason from ops.load_batches where batch_id = %s",
        [str(bad.pull_id)],
    ).fetchone()
    assert batch[:2] == ("bad", "quarantined") and expected in batch[2]
    # A quarantined pull is not a refresh: the next run pulls again.
    assert pl.refresh_due(conn, NOW + timedelta(days=1, hours=1), query_name="sagemaker-instances")
    # A retry of the run's audit fails the same way.
    with pytest.raises(BatchQuarantined):
        pipeline.audit_batches(db_url, batches.PRICES, "bad")

    # The next good pull, with a real price change, is merged and closes the old price.
    pricing.catalogue.replace(_with_g5(("1.21", "2026-12-01T00:00:00Z")))
    good = _pull(conn, pricing, NOW + timedelta(days=2), "good-1")
    (audited,) = pipeline.audit_batches(db_url, batches.PRICES, "good-1")
    assert audited.status == "published"
    change = datetime(2026, 12, 1, tzinfo=UTC)
    assert _g5_history(conn) == [
        (Decimal("1.408"), start, change, False),
        (Decimal("1.21"), change, None, False),
    ]
    merged = conn.execute(
        "select status, rows_inserted, rows_closed from raw.aws_price_list_pulls"
        " where pull_id = %s",
        [good.pull_id],
    ).fetchone()
    assert merged == ("succeeded", 1, 1)
    assert pipeline.price_rows_inserted(db_url, "good-1") == 1
    # A merged pull's landed rows are in the history now; the quarantined pull's stay.
    landed = conn.execute(
        "select pull_id, count(*) from raw.aws_price_list_landed group by pull_id"
    ).fetchall()
    assert landed == [(bad.pull_id, bad.rows_seen)]


def test_repeated_rows_warn_and_merge_once(
    pricing: ps.PricingServer, conn: psycopg.Connection[Any], db_url: str
) -> None:
    # The API repeating a product on two pages (same price): flagged, merged once.
    catalogue = ps.demo_catalogue()
    repeated = copy.deepcopy(next(item for item in catalogue if _is_g5(item)))
    pricing.catalogue.replace([*catalogue, repeated])
    pulled = _pull(conn, pricing, NOW, "repeats")
    assert pulled.rows_seen == 8
    (audited,) = pipeline.audit_batches(db_url, batches.PRICES, "repeats")
    assert audited.status == "published" and audited.flagged
    assert audited.reason is not None
    assert "warning unexpected_rows_expectation(table)" in audited.reason
    assert conn.execute("select count(*) from raw.aws_price_list").fetchone() == (7,)


def test_validation_off_merges_at_once(
    pricing: ps.PricingServer, conn: psycopg.Connection[Any]
) -> None:
    result = pl.refresh(conn, pricing_client(pricing), pl.SAGEMAKER_INSTANCES, now=NOW)
    assert (result.status, result.rows_inserted) == ("succeeded", 7)
    assert conn.execute("select count(*) from ops.load_batches").fetchone() == (0,)
    assert conn.execute("select count(*) from raw.aws_price_list_landed").fetchone() == (0,)


def test_every_critical_expectation_has_a_case() -> None:
    suite = json.loads((REPO / "expectations/expectations/aws_price_list.json").read_text())
    critical = {
        (e["type"], e["kwargs"].get("column"))
        for e in suite["expectations"]
        if e["severity"] == "critical"
    }
    broken = {
        ("expect_column_values_to_be_between", "price_usd"),
        ("expect_column_values_to_be_between", "effective_from"),
        ("unexpected_rows_expectation", None),
    }
    assert broken <= critical
    # The rest cannot fail on a pull the refresh landed: the landing table's NOT NULL
    # columns (the parser refuses an item without them) and its own columns.
    assert {kind for kind, _ in critical - broken} == {
        "expect_table_columns_to_match_set",
        "expect_column_values_to_not_be_null",
    }
    not_null = {column for kind, column in critical if kind.endswith("_not_be_null")}
    with_constraint = {"sku", "offer_term_code", "rate_code", "unit", "price_usd", "effective_from"}
    assert not_null == with_constraint
