"""Price List parsing and unit normalisation, on the real aws-cli sample and catalogue items."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from spancost.billing import price_list as pl
from spancost.local import pricing_server as ps
from tests.conftest import realworld

pytestmark = pytest.mark.unit

SAMPLE = ("pricing-api", "aws-cli_examples_pricing_get-products_AmazonEC2_output.json")


def _sample() -> dict:
    return json.loads(realworld(*SAMPLE).read_text())


def test_real_sample_parses_to_one_row_with_the_published_values() -> None:
    response = _sample()
    # Expected values, read from the JSON independently of the parser.
    item = json.loads(response["PriceList"][0])
    attributes = item["product"]["attributes"]
    (term_key, term), *_ = item["terms"]["OnDemand"].items()
    (rate_key, dimension), *_ = term["priceDimensions"].items()

    rows = pl.parse_response(response)

    assert len(rows) == 1
    row = rows[0]
    assert row.service_code == item["serviceCode"] == "AmazonEC2"
    assert row.sku == item["product"]["sku"]
    assert row.term_type == "OnDemand"
    assert row.offer_term_code == term["offerTermCode"]
    assert f"{row.sku}.{row.offer_term_code}" == term_key
    assert row.rate_code == dimension["rateCode"] == rate_key
    assert row.usage_type == attributes["usagetype"] == "APS1-EBS:VolumeUsage.piops"
    assert row.product_family == item["product"]["productFamily"]
    assert row.operation == attributes["operation"]
    assert dict(row.attributes) == attributes
    assert row.unit == dimension["unit"]
    assert row.description == dimension["description"]
    assert row.price_usd == Decimal(dimension["pricePerUnit"]["USD"])
    assert str(row.price_usd) == dimension["pricePerUnit"]["USD"]  # as published, all 10 places
    assert row.begin_range == Decimal(dimension["beginRange"])
    assert dimension["endRange"] == "Inf" and row.end_range is None
    assert row.effective_from == datetime.fromisoformat(
        term["effectiveDate"].replace("Z", "+00:00")
    )
    assert row.effective_from.tzinfo is not None
    assert row.publication_date == datetime.fromisoformat(
        item["publicationDate"].replace("Z", "+00:00")
    )
    assert row.version == item["version"]
    # GB-Mo is neither tokens nor hours: not normalised, rather than guessed.
    assert row.normalized_unit is None and row.usd_per_unit is None
    # No regionCode in this 2018 item: the region comes from its location name.
    assert "regionCode" not in attributes
    assert attributes["location"] == "Asia Pacific (Singapore)"
    assert row.region_code == "ap-southeast-1"


def test_price_list_entries_are_json_strings_and_decoded_dicts_parse_the_same() -> None:
    response = _sample()
    entry = response["PriceList"][0]
    assert isinstance(entry, str)
    assert pl.parse_item(entry) == pl.parse_item(json.loads(entry))


def test_real_sample_filters_are_the_api_filter_shape() -> None:
    filters = json.loads(
        realworld("pricing-api", "aws-cli_examples_pricing_get-products_filters.json").read_text()
    )
    query = pl.ProductQuery(
        name="ebs-piops",
        service_code="AmazonEC2",
        filters=tuple(pl.PriceFilter(f["Field"], f["Value"], f["Type"]) for f in filters),
    )
    assert query.api_filters() == filters


@pytest.mark.parametrize(
    ("unit", "price", "description", "usage_type", "expected_unit", "expected"),
    [
        ("1K tokens", "0.0008000000", "Nova Pro input tokens", None, "token", "0.0000008"),
        ("1K tokens", "0.0000350000", None, None, "token", "0.000000035"),
        ("1M tokens", "3.0000000000", None, None, "token", "0.000003"),
        (
            "Units",
            "3.3000000000",
            "AWS Marketplace software usage|us-east-1|Million Input Tokens",
            "USE1-MP:USE1_InputTokenCount-Units",
            "token",
            "0.0000033",
        ),
        (
            "Units",
            "0.3000000000",
            "AWS Marketplace software usage|us-east-1|Million Cache Read Input Tokens Global",
            "USE1-MP:USE1_CacheReadInputTokenCount_Global-Units",
            "token",
            "0.0000003",
        ),
        ("Hrs", "1.4080000000", "per hour", None, "hour", "1.408"),
        ("Hours", "32.7726", None, None, "hour", "32.7726"),
    ],
)
def test_units_normalise_exactly(
    unit: str,
    price: str,
    description: str | None,
    usage_type: str | None,
    expected_unit: str,
    expected: str,
) -> None:
    normalized = pl.normalize_price(unit, Decimal(price), description, usage_type)
    assert normalized is not None
    assert normalized.unit == expected_unit
    assert normalized.usd_per_unit == Decimal(expected)  # exact, not approximately


@pytest.mark.parametrize(
    ("unit", "description", "usage_type"),
    [
        ("GB-Mo", "per GB-month", None),
        ("Requests", None, None),
        # A token price whose scale is not stated is not guessed.
        ("Units", "AWS Marketplace software usage|us-east-1|Input Tokens", None),
        ("Units", "AWS Marketplace software usage", "USE1-MP:USE1_InputTokenCount-Units"),
        ("image", "per image", None),
    ],
)
def test_units_that_are_not_tokens_or_hours_are_not_normalised(
    unit: str, description: str | None, usage_type: str | None
) -> None:
    assert pl.normalize_price(unit, Decimal("1.5"), description, usage_type) is None


def test_1k_and_million_prices_of_the_same_amount_differ_a_thousandfold() -> None:
    per_1k = pl.normalize_price("1K tokens", Decimal("3"), None, None)
    per_million = pl.normalize_price(
        "Units",
        Decimal("3"),
        "x|us-east-1|Million Output Tokens",
        "USE1-MP:USE1_OutputTokenCount-Units",
    )
    assert per_1k is not None and per_million is not None
    assert per_1k.usd_per_unit == per_million.usd_per_unit * 1000
    # 1M tokens at the per-token price costs exactly the published per-million price.
    assert per_million.usd_per_unit * 1_000_000 == Decimal("3")


def _rows(items: list[dict], query: pl.ProductQuery | None = None) -> list[pl.PriceRow]:
    return [row for item in items for row in pl.parse_item(json.dumps(item), query)]


def test_bedrock_edition_items_parse_per_million_with_token_kinds() -> None:
    items = [
        ps.bedrock_edition_tokens("us-east-1", "Claude Sonnet 4.6", "Input", "3.3"),
        ps.bedrock_edition_tokens("us-east-1", "Claude Sonnet 4.6", "Output", "16.5"),
        ps.bedrock_edition_tokens("us-east-1", "Claude Sonnet 4.6", "CacheRead", "0.33"),
        ps.bedrock_edition_tokens("us-east-1", "Claude Sonnet 4.6", "CacheWrite", "4.125"),
        ps.bedrock_edition_tokens("us-east-1", "Claude Sonnet 4.6", "Input", "3", global_=True),
    ]
    rows = _rows(items, pl.BEDROCK_FOUNDATION_MODELS)
    assert [r.token_kind for r in rows] == ["input", "output", "cache_read", "cache_write", "input"]
    assert {r.item_name for r in rows} == {"Claude Sonnet 4.6"}
    assert {r.unit for r in rows} == {"Units"}
    assert {r.normalized_unit for r in rows} == {"token"}
    assert [r.usd_per_unit for r in rows] == [
        Decimal("3.3") / 1_000_000,
        Decimal("16.5") / 1_000_000,
        Decimal("0.33") / 1_000_000,
        Decimal("4.125") / 1_000_000,
        Decimal("3") / 1_000_000,
    ]
    assert rows[4].usage_type == "USE1-MP:USE1_InputTokenCount_Global-Units"
    assert rows[0].usage_type == "USE1-MP:USE1_InputTokenCount-Units"
    assert len({r.sku for r in rows}) == 5


def test_bedrock_items_parse_per_thousand() -> None:
    rows = _rows(
        [
            ps.bedrock_tokens(
                "us-east-1", "Nova Micro", "amazon.nova-micro-v1:0", "Input", "0.000035"
            ),
            ps.bedrock_tokens(
                "us-east-1", "Nova Micro", "amazon.nova-micro-v1:0", "Output", "0.00014"
            ),
        ],
        pl.BEDROCK,
    )
    assert [(r.item_name, r.token_kind, r.unit) for r in rows] == [
        ("Nova Micro", "input", "1K tokens"),
        ("Nova Micro", "output", "1K tokens"),
    ]
    assert rows[0].usd_per_unit == Decimal("0.000035") / 1000 == Decimal("0.000000035")
    assert rows[1].usd_per_unit == Decimal("0.00014") / 1000
    assert rows[0].region_code == "us-east-1"


def test_ec2_query_keeps_gpu_families_only_at_parse_time() -> None:
    items = [
        ps.ec2_instance("us-east-1", name, "1.0")
        for name in ("p4d.24xlarge", "g5.xlarge", "gr6.4xlarge", "trn1.2xlarge", "inf2.xlarge")
    ] + [
        ps.ec2_instance("us-east-1", name, "1.0")
        for name in ("m5.xlarge", "i3.large", "c6g.large", "t3.micro", "im4gn.large")
    ]
    rows = _rows(items, pl.EC2_GPU_INSTANCES)
    assert [r.item_name for r in rows] == [
        "p4d.24xlarge",
        "g5.xlarge",
        "gr6.4xlarge",
        "trn1.2xlarge",
        "inf2.xlarge",
    ]
    assert {(r.normalized_unit, r.usd_per_unit) for r in rows} == {("hour", Decimal("1.0"))}


def test_sagemaker_instance_rows_are_hourly_with_component() -> None:
    item = ps.sagemaker_instance("us-west-2", "ml.g5.xlarge", "Hosting", "1.408")
    (row,) = _rows([item], pl.SAGEMAKER_INSTANCES)
    assert row.item_name == "ml.g5.xlarge"
    assert row.attributes["component"] == "Hosting"
    assert row.product_family == "ML Instance"
    assert row.region_code == "us-west-2"
    assert (row.normalized_unit, row.usd_per_unit, row.token_kind) == (
        "hour",
        Decimal("1.408"),
        None,
    )


def test_only_the_querys_term_types_are_kept() -> None:
    item = ps.ec2_instance("us-east-1", "g5.xlarge", "1.006")
    reserved = json.loads(json.dumps(item["terms"]["OnDemand"]))
    item["terms"]["Reserved"] = reserved
    assert len(_rows([item], pl.EC2_GPU_INSTANCES)) == 1
    both = pl.ProductQuery("all-terms", "AmazonEC2", term_types=("OnDemand", "Reserved"))
    assert {r.term_type for r in _rows([item], both)} == {"OnDemand", "Reserved"}


def test_non_usd_prices_are_skipped() -> None:
    item = ps.ec2_instance("us-east-1", "g5.xlarge", "1.006")
    for term in item["terms"]["OnDemand"].values():
        for dimension in term["priceDimensions"].values():
            dimension["pricePerUnit"] = {"CNY": "7.0000000000"}
    assert _rows([item]) == []


def test_a_malformed_item_names_the_sku_and_field() -> None:
    item = ps.ec2_instance("us-east-1", "g5.xlarge", "1.006")
    sku = item["product"]["sku"]
    for term in item["terms"]["OnDemand"].values():
        for dimension in term["priceDimensions"].values():
            dimension["pricePerUnit"]["USD"] = "one dollar"
    with pytest.raises(pl.PriceListError, match=rf"PriceList\[0\]: sku {sku}: .*pricePerUnit\.USD"):
        pl.parse_response({"PriceList": [json.dumps(item)]})
    with pytest.raises(pl.PriceListError, match="not JSON"):
        pl.parse_response({"PriceList": ["{not json"]})


def test_region_code_falls_back_to_location_names_including_eu() -> None:
    assert pl.region_code({"location": "EU (Ireland)"}) == "eu-west-1"
    assert pl.region_code({"location": "US West (Oregon)"}) == "us-west-2"
    assert pl.region_code({"regionCode": "ap-south-1", "location": "x"}) == "ap-south-1"
    assert pl.region_code({"location": "Any"}) is None


def test_query_in_region_adds_one_region_filter() -> None:
    query = pl.SAGEMAKER_INSTANCES.in_region("us-west-2").in_region("us-east-1")
    assert query.region_code == "us-east-1"
    assert [f for f in query.api_filters() if f["Field"] == "regionCode"] == [
        {"Type": "TERM_MATCH", "Field": "regionCode", "Value": "us-east-1"}
    ]
    assert query.service_code == "AmazonSageMaker"


def test_server_filters_and_pages_like_the_api() -> None:
    catalogue = ps.demo_catalogue()
    body = {
        "ServiceCode": "AmazonSageMaker",
        "Filters": [
            {"Type": "TERM_MATCH", "Field": "regionCode", "Value": "us-east-1"},
            {"Type": "TERM_MATCH", "Field": "component", "Value": "Hosting"},
        ],
        "MaxResults": 2,
    }
    first = ps.get_products(catalogue, body)
    second = ps.get_products(catalogue, {**body, "NextToken": first["NextToken"]})
    assert len(first["PriceList"]) == 2 and len(second["PriceList"]) == 1
    assert "NextToken" not in second
    names = {
        json.loads(p)["product"]["attributes"]["instanceName"]
        for p in first["PriceList"] + second["PriceList"]
    }
    assert names == {"ml.g5.xlarge", "ml.g5.2xlarge", "ml.m5.xlarge"}
    # A token from another request is refused.
    with pytest.raises(ps.ApiError) as error:
        ps.get_products(catalogue, {"ServiceCode": "AmazonEC2", "NextToken": first["NextToken"]})
    assert error.value.error_type == "InvalidNextTokenException"
    with pytest.raises(ps.ApiError) as error:
        ps.get_products(catalogue, {**body, "MaxResults": 0})
    assert error.value.error_type == "InvalidParameterException"


def test_effective_dates_are_utc() -> None:
    item = ps.catalogue_item(
        "AmazonEC2",
        {"instanceType": "g5.xlarge"},
        unit="Hrs",
        price_usd="1",
        description="d",
        effective_date="2025-03-01T00:00:00Z",
    )
    (row,) = _rows([item])
    assert row.effective_from == datetime(2025, 3, 1, tzinfo=UTC)
