"""Price List refreshes: boto3 → the local Pricing endpoint over HTTP → raw.aws_price_list."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from botocore.config import Config

from spancost import db
from spancost.billing import price_list as pl
from spancost.local import pricing_server as ps
from spancost.local.endpoints import LOCAL_ENV
from tests.conftest import pricing_client

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


@pytest.fixture
def pricing(monkeypatch: pytest.MonkeyPatch) -> Iterator[ps.PricingServer]:
    for name, value in LOCAL_ENV.items():
        monkeypatch.setenv(name, value)
    server, _ = ps.start_pricing_server(ps.demo_catalogue())
    yield server
    server.shutdown()
    server.server_close()


def _count(conn: psycopg.Connection[Any], where: str = "true", *args: object) -> int:
    found = conn.execute(f"select count(*) from raw.aws_price_list where {where}", args).fetchone()
    assert found is not None
    return int(found[0])


def _open_price(conn: psycopg.Connection[Any], **match: str) -> list[tuple[Any, ...]]:
    where = " and ".join(f"{k} = %s" for k in match)
    return conn.execute(
        "select price_usd, usd_per_unit, effective_from, effective_to, stale "
        f"from raw.aws_price_list where effective_to is null and {where}",
        tuple(match.values()),
    ).fetchall()


def _sagemaker_hosting(region: str, instance: str) -> dict[str, str]:
    return {"service_code": "AmazonSageMaker", "region_code": region, "item_name": instance}


def _expected_items(catalogue: list[dict], service_code: str) -> int:
    return sum(1 for item in catalogue if item["serviceCode"] == service_code)


def test_boto3_pages_through_the_endpoint_and_prices_land_normalised(
    pricing: ps.PricingServer, conn: psycopg.Connection[Any]
) -> None:
    client = pricing_client(pricing)
    catalogue = ps.demo_catalogue()
    results = [
        pl.refresh(conn, client, query, now=NOW, page_size=2) for query in pl.DEFAULT_QUERIES
    ]
    assert all(r.ok for r in results), results

    sagemaker, ec2, bedrock, editions = results
    # Every SageMaker item is an "ML Instance": 3 types x 2 regions hosting, 1 training.
    assert sagemaker.items == _expected_items(catalogue, "AmazonSageMaker") == 7
    assert sagemaker.pages == 4  # 2 + 2 + 2 + 1 with MaxResults=2
    assert ec2.items == 3 and ec2.pages == 2
    assert bedrock.items == 6 and bedrock.pages == 3
    assert editions.items == _expected_items(catalogue, "AmazonBedrockFoundationModels") == 16
    assert editions.pages == 8
    assert pricing.requests["GetProducts"] == 4 + 2 + 3 + 8
    assert [r.rows_inserted for r in results] == [7, 3, 6, 16]
    assert _count(conn) == 32
    assert _count(conn, "effective_to is null and not stale") == 32

    (price, per_unit, effective_from, _, _) = _open_price(
        conn, **_sagemaker_hosting("us-west-2", "ml.g5.2xlarge")
    )[0]
    assert (price, per_unit) == (Decimal("1.515"), Decimal("1.515"))
    assert effective_from == datetime(2025, 1, 1, tzinfo=UTC)

    nova = conn.execute(
        "select unit, price_usd, normalized_unit, usd_per_unit from raw.aws_price_list "
        "where service_code = 'AmazonBedrock' and item_name = 'Nova Pro' and token_kind = 'output'"
    ).fetchall()
    assert nova == [("1K tokens", Decimal("0.0032"), "token", Decimal("0.0032") / 1000)]

    sonnet = dict(
        conn.execute(
            "select usage_type, usd_per_unit from raw.aws_price_list "
            "where item_name = 'Claude Sonnet 4.6' and token_kind = 'cache_read'"
        ).fetchall()
    )
    assert sonnet == {
        "USE1-MP:USE1_CacheReadInputTokenCount-Units": Decimal("0.33") / 1_000_000,
        "USE1-MP:USE1_CacheReadInputTokenCount_Global-Units": Decimal("0.3") / 1_000_000,
    }
    # The attributes land as jsonb, queryable.
    components = conn.execute(
        "select attributes ->> 'component', count(*) from raw.aws_price_list "
        "where service_code = 'AmazonSageMaker' group by 1 order by 1"
    ).fetchall()
    assert components == [("Hosting", 6), ("Training", 1)]
    pulls = conn.execute(
        "select query_name, status, pages, items, rows_inserted from raw.aws_price_list_pulls "
        "order by pull_id"
    ).fetchall()
    assert pulls == [
        ("sagemaker-instances", "succeeded", 4, 7, 7),
        ("ec2-gpu-instances", "succeeded", 2, 3, 3),
        ("bedrock", "succeeded", 3, 6, 6),
        ("bedrock-foundation-models", "succeeded", 8, 16, 16),
    ]


def test_filters_reach_the_server_and_narrow_the_pull(
    pricing: ps.PricingServer, conn: psycopg.Connection[Any]
) -> None:
    query = pl.SAGEMAKER_INSTANCES.in_region("us-west-2")
    result = pl.refresh(conn, pricing_client(pricing), query, now=NOW, page_size=100)
    assert (result.items, result.pages, result.rows_inserted) == (3, 1, 3)
    assert _count(conn, "region_code <> 'us-west-2'") == 0


def test_refreshing_unchanged_prices_adds_nothing(
    pricing: ps.PricingServer, conn: psycopg.Connection[Any]
) -> None:
    client = pricing_client(pricing)
    first = pl.refresh(conn, client, pl.SAGEMAKER_INSTANCES, now=NOW, page_size=3)
    second = pl.refresh(
        conn, client, pl.SAGEMAKER_INSTANCES, now=NOW + timedelta(days=1), page_size=3
    )
    assert first.rows_inserted == 7
    assert (second.rows_inserted, second.rows_closed, second.rows_seen) == (0, 0, 7)
    assert _count(conn) == 7
    seen = conn.execute(
        "select distinct last_seen_pull_id, last_seen_at, pull_id from raw.aws_price_list"
    ).fetchall()
    assert seen == [(second.pull_id, NOW + timedelta(days=1), first.pull_id)]


def _reprice(catalogue: list[dict], instance: str, region: str, price: str, effective: str) -> None:
    for index, item in enumerate(catalogue):
        attributes = item["product"]["attributes"]
        if (
            attributes.get("instanceName") == instance
            and attributes.get("regionCode") == region
            and attributes.get("component") == "Hosting"
        ):
            catalogue[index] = ps.sagemaker_instance(
                region,
                instance,
                "Hosting",
                price,
                **{k: attributes[k] for k in ("vCpu", "gpu")},
            )
            term = next(iter(catalogue[index]["terms"]["OnDemand"].values()))
            term["effectiveDate"] = effective
            assert catalogue[index]["product"]["sku"] == item["product"]["sku"]
            return
    raise AssertionError(f"{instance} {region} not in the catalogue")


def test_a_price_change_closes_the_old_row_and_opens_a_new_one(
    pricing: ps.PricingServer, conn: psycopg.Connection[Any]
) -> None:
    client = pricing_client(pricing)
    pl.refresh(conn, client, pl.SAGEMAKER_INSTANCES, now=NOW, page_size=2)
    catalogue = ps.demo_catalogue()
    _reprice(catalogue, "ml.g5.xlarge", "us-east-1", "1.2100", "2026-12-01T00:00:00Z")
    pricing.catalogue.replace(catalogue)

    later = NOW + timedelta(days=10)
    result = pl.refresh(conn, client, pl.SAGEMAKER_INSTANCES, now=later, page_size=2)

    assert (result.rows_inserted, result.rows_closed) == (1, 1)
    assert _count(conn) == 8
    history = conn.execute(
        "select price_usd, effective_from, effective_to from raw.aws_price_list "
        "where item_name = 'ml.g5.xlarge' and region_code = 'us-east-1' "
        "and attributes ->> 'component' = 'Hosting' order by effective_from"
    ).fetchall()
    change = datetime(2026, 12, 1, tzinfo=UTC)
    assert history == [
        (Decimal("1.408"), datetime(2025, 1, 1, tzinfo=UTC), change),
        (Decimal("1.21"), change, None),
    ]
    # The price in effect at a time (what a backfill reprices with).
    in_effect = """
        select price_usd from raw.aws_price_list
        where item_name = 'ml.g5.xlarge' and region_code = 'us-east-1'
          and attributes ->> 'component' = 'Hosting'
          and effective_from <= %s and (effective_to is null or %s < effective_to)
    """
    before, after = change - timedelta(seconds=1), change
    assert conn.execute(in_effect, (before, before)).fetchall() == [(Decimal("1.408"),)]
    assert conn.execute(in_effect, (after, after)).fetchall() == [(Decimal("1.21"),)]
    # The same product in the other region did not change.
    assert _open_price(conn, **_sagemaker_hosting("us-west-2", "ml.g5.xlarge"))[0][0] == Decimal(
        "1.408"
    )


def test_a_price_change_without_a_new_effective_date_starts_when_seen(
    pricing: ps.PricingServer, conn: psycopg.Connection[Any]
) -> None:
    client = pricing_client(pricing)
    pl.refresh(conn, client, pl.EC2_GPU_INSTANCES, now=NOW)
    catalogue = [
        ps.ec2_instance("us-east-1", "g5.xlarge", "0.9", vcpu="4", gpu="1")
        if item["product"]["attributes"].get("instanceType") == "g5.xlarge"
        else item
        for item in ps.demo_catalogue()
    ]
    pricing.catalogue.replace(catalogue)
    seen = NOW + timedelta(days=2)
    result = pl.refresh(conn, client, pl.EC2_GPU_INSTANCES, now=seen)
    assert (result.rows_inserted, result.rows_closed) == (1, 1)
    history = conn.execute(
        "select price_usd, effective_from, effective_to from raw.aws_price_list "
        "where item_name = 'g5.xlarge' order by effective_from"
    ).fetchall()
    assert history == [
        (Decimal("1.006"), datetime(2025, 1, 1, tzinfo=UTC), seen),
        (Decimal("0.9"), seen, None),
    ]


def test_api_errors_keep_the_last_prices_as_stale_until_a_good_refresh(
    pricing: ps.PricingServer, conn: psycopg.Connection[Any]
) -> None:
    client = pricing_client(pricing)
    for query in (pl.SAGEMAKER_INSTANCES, pl.BEDROCK):
        assert pl.refresh(conn, client, query, now=NOW, page_size=2).ok
    # A new price is published, but the API fails on the second page of the pull.
    catalogue = ps.demo_catalogue()
    _reprice(catalogue, "ml.m5.xlarge", "us-east-1", "0.5", "2026-12-01T00:00:00Z")
    pricing.catalogue.replace(catalogue)
    pricing.fail_next("AccessDeniedException", "User is not authorized to GetProducts", skip=1)

    failed = pl.refresh(
        conn, client, pl.SAGEMAKER_INSTANCES, now=NOW + timedelta(days=1), page_size=2
    )

    assert not failed.ok
    assert failed.pages == 1
    assert failed.rows_marked_stale == 7
    assert failed.error is not None and "AccessDeniedException" in failed.error
    # All or nothing: the price on the good first page was not applied; the old ones stay.
    assert _count(conn) == 7 + 6
    assert _count(conn, "service_code = 'AmazonSageMaker' and effective_to is null and stale") == 7
    assert _count(conn, "service_code = 'AmazonBedrock' and stale") == 0
    assert _open_price(conn, **_sagemaker_hosting("us-east-1", "ml.m5.xlarge"))[0][0] == Decimal(
        "0.23"
    )
    pull = conn.execute(
        "select status, pages, error, finished_at >= started_at from raw.aws_price_list_pulls "
        "where pull_id = %s",
        (failed.pull_id,),
    ).fetchone()
    assert pull is not None
    assert pull[0] == "failed" and pull[1] == 1 and pull[3] is True
    assert "User is not authorized" in pull[2]

    # A failed pull does not make the refresh "done": it is still due.
    assert pl.refresh_due(conn, NOW + timedelta(days=1, hours=1), query_name="sagemaker-instances")

    good = pl.refresh(
        conn, client, pl.SAGEMAKER_INSTANCES, now=NOW + timedelta(days=1, hours=1), page_size=2
    )
    assert good.ok and (good.rows_inserted, good.rows_closed) == (1, 1)
    assert _count(conn, "stale") == 0
    assert _open_price(conn, **_sagemaker_hosting("us-east-1", "ml.m5.xlarge"))[0][:2] == (
        Decimal("0.5"),
        Decimal("0.5"),
    )


def test_server_errors_after_retries_and_unknown_services_are_recorded(
    pricing: ps.PricingServer, conn: psycopg.Connection[Any]
) -> None:
    client = boto3.client(
        "pricing",
        region_name="us-east-1",
        endpoint_url=pricing.endpoint_url,
        config=Config(retries={"mode": "standard", "total_max_attempts": 2}),
    )
    pricing.fail_next("InternalErrorException", "An internal error occurred", status=500, times=5)
    before = pricing.requests.get("GetProducts", 0)
    result = pl.refresh(conn, client, pl.EC2_GPU_INSTANCES, now=NOW)
    assert not result.ok and result.error is not None and "InternalErrorException" in result.error
    assert pricing.requests["GetProducts"] - before == 2  # botocore retried the 500 once
    assert result.rows_marked_stale == 0  # nothing to keep yet
    pricing.clear_faults()

    unknown = pl.ProductQuery(name="nope", service_code="AmazonNoSuchService")
    missing = pl.refresh(conn, pricing_client(pricing), unknown, now=NOW)
    assert not missing.ok and missing.error is not None and "NotFoundException" in missing.error
    statuses = conn.execute(
        "select query_name, status from raw.aws_price_list_pulls order by pull_id"
    ).fetchall()
    assert statuses == [("ec2-gpu-instances", "failed"), ("nope", "failed")]
    assert _count(conn) == 0


def test_an_unparseable_item_fails_the_pull_and_names_the_sku(
    pricing: ps.PricingServer, conn: psycopg.Connection[Any]
) -> None:
    client = pricing_client(pricing)
    assert pl.refresh(conn, client, pl.EC2_GPU_INSTANCES, now=NOW).ok
    catalogue = ps.demo_catalogue()
    broken = next(
        i for i in catalogue if i["product"]["attributes"].get("instanceType") == "g6.xlarge"
    )
    for term in broken["terms"]["OnDemand"].values():
        term["effectiveDate"] = "yesterday"
    pricing.catalogue.replace(catalogue)
    result = pl.refresh(conn, client, pl.EC2_GPU_INSTANCES, now=NOW + timedelta(days=1))
    assert not result.ok and result.error is not None
    assert broken["product"]["sku"] in result.error and "effectiveDate" in result.error
    assert _count(conn, "stale") == 3


def test_refresh_due_is_daily_by_default(
    pricing: ps.PricingServer, conn: psycopg.Connection[Any]
) -> None:
    assert pl.refresh_due(conn, NOW)
    results = pl.refresh_all(conn, pricing_client(pricing), now=NOW)
    assert [r.query_name for r in results] == [q.name for q in pl.DEFAULT_QUERIES]
    assert not pl.refresh_due(conn, NOW + timedelta(hours=23))
    assert pl.refresh_due(conn, NOW + timedelta(hours=24))
    assert pl.refresh_due(conn, NOW + timedelta(hours=1), force=True)
    assert pl.refresh_due(conn, NOW + timedelta(hours=2), min_interval=timedelta(hours=1))
    # refresh_all skips what is not due.
    before = pricing.requests["GetProducts"]
    assert pl.refresh_all(conn, pricing_client(pricing), now=NOW + timedelta(hours=1)) == []
    assert pricing.requests["GetProducts"] == before


def test_boto3_finds_the_endpoint_through_the_service_specific_variable(
    pricing: ps.PricingServer, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # would fail if used
    monkeypatch.setenv("AWS_ENDPOINT_URL_PRICING", pricing.endpoint_url)
    client = boto3.client("pricing", region_name="us-east-1")
    services = client.describe_services(ServiceCode="AmazonBedrockFoundationModels")["Services"]
    assert services[0]["ServiceCode"] == "AmazonBedrockFoundationModels"
    assert "usagetype" in services[0]["AttributeNames"]
    values = client.get_attribute_values(
        ServiceCode="AmazonSageMaker", AttributeName="instanceName"
    )
    assert {v["Value"] for v in values["AttributeValues"]} == {
        "ml.g5.xlarge",
        "ml.g5.2xlarge",
        "ml.m5.xlarge",
    }
    paginator = client.get_paginator("get_products")
    pages = list(
        paginator.paginate(
            ServiceCode="AmazonBedrockFoundationModels",
            Filters=[
                {
                    "Type": "TERM_MATCH",
                    "Field": "servicename",
                    "Value": "Claude Haiku 4.5 (Amazon Bedrock Edition)",
                }
            ],
            PaginationConfig={"PageSize": 3},
        )
    )
    assert [len(p["PriceList"]) for p in pages] == [3, 3, 2]
    assert all(isinstance(entry, str) for p in pages for entry in p["PriceList"])
    result = pl.refresh(conn, client, pl.BEDROCK_FOUNDATION_MODELS, now=NOW, page_size=5)
    assert result.ok and result.rows_inserted == 16


def test_a_non_autocommit_connection_commits_each_step(
    pricing: ps.PricingServer, db_url: str
) -> None:
    with db.connect(db_url) as connection:
        db.apply_schema(connection)
        pricing.fail_next("ThrottlingException", "Rate exceeded", times=1)
        failed = pl.refresh(connection, pricing_client(pricing), pl.BEDROCK, now=NOW)
        assert not failed.ok
        ok = pl.refresh(connection, pricing_client(pricing), pl.BEDROCK, now=NOW)
        assert ok.ok
        with psycopg.connect(db_url) as other:  # another session sees both, committed
            statuses = other.execute(
                "select status from raw.aws_price_list_pulls order by pull_id"
            ).fetchall()
            assert statuses == [("failed",), ("succeeded",)]
            found = other.execute("select count(*) from raw.aws_price_list").fetchone()
            assert found == (6,)


def test_the_endpoint_runs_as_a_background_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in LOCAL_ENV.items():
        monkeypatch.setenv(name, value)
    port_file = tmp_path / "pricing" / "port"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spancost.local.pricing_server",
            "--port",
            "0",
            "--port-file",
            str(port_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        client = boto3.client(
            "pricing",
            region_name="us-east-1",
            endpoint_url=f"http://127.0.0.1:{port_file.read_text().strip()}",
        )
        rows = pl.fetch(client, pl.EC2_GPU_INSTANCES, page_size=1)
        assert rows.pages == 3
        assert sorted(r.item_name for r in rows.rows) == ["g5.xlarge", "g6.xlarge", "p4d.24xlarge"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
