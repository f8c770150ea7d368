"""Cost Explorer: parsing (the real AWS CLI sample), windows, requests, retry policy."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import boto3
import pytest

from spancost.billing import aws_requests
from spancost.billing.aws_requests import RetryPolicy
from spancost.billing.cost_explorer import (
    BEDROCK_EDITION_SUFFIX,
    BadCostResponse,
    CeQuery,
    CostExplorerSettings,
    GroupDef,
    ServiceSelector,
    clamp_recent,
    default_queries,
    keep_rows,
    parse_response,
    parse_tag_key,
    settings_from_env,
    windows,
)
from spancost.errors import ConfigError
from tests.conftest import realworld

pytestmark = pytest.mark.unit

SAMPLE = ("cost-explorer", "aws-cli_examples_ce_get-cost-and-usage_output.json")
FILTER_SAMPLE = ("cost-explorer", "aws-cli_examples_ce_get-cost-and-usage_filters.json")


def test_parses_the_real_aws_cli_sample() -> None:
    response = json.loads(realworld(*SAMPLE).read_text())
    rows = parse_response(response, "sample", "MONTHLY")

    expected = {}
    for result in response["ResultsByTime"]:
        for group in result["Groups"]:
            for metric, value in group["Metrics"].items():
                expected[(tuple(group["Keys"]), metric)] = (
                    Decimal(value["Amount"]),
                    value["Unit"],
                )
    assert len(rows) == len(expected) == 6
    got = {((r.group_key_1, r.group_key_2), r.metric): (r.amount, r.unit) for r in rows}
    assert got == expected
    # Total is {} when grouped: no extra rows from it.
    assert all(r.group_key_1 == "Amazon Simple Storage Service" for r in rows)
    assert {r.group_dim_1 for r in rows} == {"SERVICE"}
    assert {r.group_dim_2 for r in rows} == {"TAG:Environment"}
    untagged = [r for r in rows if r.group_key_2 == "Environment$"]
    dev = [r for r in rows if r.group_key_2 == "Environment$Dev"]
    assert {(r.tag_key, r.tag_value) for r in untagged} == {("Environment", "")}
    assert {(r.tag_key, r.tag_value) for r in dev} == {("Environment", "Dev")}
    assert all(r.estimated is False for r in rows)
    assert {(r.period_start, r.period_end) for r in rows} == {
        (datetime(2017, 9, 1, tzinfo=UTC), datetime(2017, 10, 1, tzinfo=UTC))
    }
    # Exact decimal, never float: the sample's 10-digit amounts survive.
    unblended = sum(r.amount for r in rows if r.metric == "UnblendedCost")
    assert unblended == Decimal("40.3543773134") + Decimal("0.2682364644")


def test_the_real_filter_sample_has_the_shape_our_selector_builds() -> None:
    sample = json.loads(realworld(*FILTER_SAMPLE).read_text())
    built = ServiceSelector(("Amazon Simple Storage Service",), suffixes=()).filter()
    assert built == sample


def test_ungrouped_rows_come_from_total_and_hourly_periods_are_timestamps() -> None:
    response = {
        "ResultsByTime": [
            {
                "TimePeriod": {"Start": "2026-01-05T03:00:00Z", "End": "2026-01-05T04:00:00Z"},
                "Total": {"UnblendedCost": {"Amount": "1.25", "Unit": "USD"}},
                "Groups": [],
                "Estimated": True,
            }
        ]
    }
    [row] = parse_response(response, "q", "HOURLY")
    assert row.group_key_1 is None and row.group_dim_1 is None and row.tag_key is None
    assert row.amount == Decimal("1.25") and row.estimated is True
    assert row.period_start == datetime(2026, 1, 5, 3, tzinfo=UTC)
    assert row.period_end - row.period_start == timedelta(hours=1)


def test_group_definitions_fall_back_to_the_request_when_the_response_has_none() -> None:
    response = {
        "ResultsByTime": [
            {
                "TimePeriod": {"Start": "2026-01-05", "End": "2026-01-06"},
                "Total": {},
                "Groups": [
                    {
                        "Keys": ["Amazon Bedrock", "PipelineID$support-triage"],
                        "Metrics": {"UnblendedCost": {"Amount": "3", "Unit": "USD"}},
                    }
                ],
                "Estimated": True,
            }
        ]
    }
    group_by = (GroupDef("DIMENSION", "SERVICE"), GroupDef("TAG", "PipelineID"))
    [row] = parse_response(response, "q", "DAILY", group_by)
    assert (row.group_dim_2, row.tag_key, row.tag_value) == (
        "TAG:PipelineID",
        "PipelineID",
        "support-triage",
    )


def test_malformed_responses_name_the_place() -> None:
    bad_amount = {
        "ResultsByTime": [
            {
                "TimePeriod": {"Start": "2026-01-05", "End": "2026-01-06"},
                "Groups": [{"Keys": ["S"], "Metrics": {"UnblendedCost": {"Amount": "x"}}}],
            }
        ]
    }
    with pytest.raises(BadCostResponse, match=r"ResultsByTime\[0\].*UnblendedCost"):
        parse_response(bad_amount, "q", "DAILY", (GroupDef("DIMENSION", "SERVICE"),))
    with pytest.raises(BadCostResponse, match="do not match"):
        parse_response(bad_amount, "q", "DAILY", (GroupDef("DIMENSION", "SERVICE"),) * 2)
    with pytest.raises(BadCostResponse, match="TimePeriod"):
        parse_response({"ResultsByTime": [{"Groups": []}]}, "q", "DAILY")


def test_tag_keys() -> None:
    assert parse_tag_key("PipelineID$") == ("PipelineID", "")
    assert parse_tag_key("PipelineID$abc") == ("PipelineID", "abc")
    assert parse_tag_key("PipelineID$a$b") == ("PipelineID", "a$b")
    with pytest.raises(BadCostResponse):
        parse_tag_key("PipelineID")


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        # Mid-month: the 7 days before today, and today.
        (date(2026, 11, 20), [(date(2026, 11, 13), date(2026, 11, 21))]),
        # Until the 5th: the whole previous month too, merged into one period.
        (date(2026, 11, 3), [(date(2026, 10, 1), date(2026, 11, 4))]),
        (date(2026, 11, 5), [(date(2026, 10, 1), date(2026, 11, 6))]),
        (date(2026, 11, 6), [(date(2026, 10, 30), date(2026, 11, 7))]),
        # Across a year boundary.
        (date(2026, 1, 2), [(date(2025, 12, 1), date(2026, 1, 3))]),
    ],
)
def test_windows(today: date, expected: list[tuple[date, date]]) -> None:
    assert windows(today) == expected


def test_windows_are_configurable_and_disjoint_when_apart() -> None:
    assert windows(date(2026, 3, 5), restatement_days=2) == [
        (date(2026, 2, 1), date(2026, 3, 1)),
        (date(2026, 3, 3), date(2026, 3, 6)),
    ]
    assert windows(date(2026, 3, 5), previous_month_until_day=0) == [
        (date(2026, 2, 26), date(2026, 3, 6))
    ]


def test_hourly_and_resource_windows_are_clamped_to_14_days() -> None:
    today = date(2026, 11, 3)
    assert clamp_recent((date(2026, 10, 1), date(2026, 11, 4)), today) == (
        date(2026, 10, 21),
        date(2026, 11, 4),
    )
    assert clamp_recent((date(2026, 9, 1), date(2026, 10, 1)), today) is None


def test_default_requests() -> None:
    ai, tagged = default_queries()
    params = ai.request(date(2026, 1, 1), date(2026, 1, 8), "DAILY", ("UnblendedCost",))
    assert params["TimePeriod"] == {"Start": "2026-01-01", "End": "2026-01-08"}
    assert params["GroupBy"] == [
        {"Type": "DIMENSION", "Key": "SERVICE"},
        {"Type": "DIMENSION", "Key": "USAGE_TYPE"},
    ]
    # CE cannot match a suffix: Marketplace (billing entity) widens the filter.
    assert params["Filter"] == {
        "Or": [
            {
                "Dimensions": {
                    "Key": "SERVICE",
                    "Values": [
                        "Amazon Bedrock",
                        "Amazon SageMaker",
                        "Amazon Elastic Compute Cloud - Compute",
                    ],
                }
            },
            {"Dimensions": {"Key": "BILLING_ENTITY", "Values": ["AWS Marketplace"]}},
        ]
    }
    assert ai.operation == "GetCostAndUsage"
    assert tagged.group_by[1] == GroupDef("TAG", "PipelineID")
    hourly = tagged.request(date(2026, 1, 1), date(2026, 1, 2), "HOURLY", ("UnblendedCost",))
    assert hourly["TimePeriod"] == {"Start": "2026-01-01T00:00:00Z", "End": "2026-01-02T00:00:00Z"}
    assert default_queries(pipeline_tag="team-pipeline")[1].group_by[1].key == "team-pipeline"


def test_resource_query_is_opt_in_daily_and_filtered_by_service() -> None:
    assert len(default_queries()) == 2
    resources = default_queries(resources=True)[2]
    assert resources.operation == "GetCostAndUsageWithResources"
    assert resources.granularity(hourly=True) == "DAILY"
    assert resources.filter() == {"Dimensions": {"Key": "SERVICE", "Values": ["Amazon SageMaker"]}}
    assert resources.group_by[1] == GroupDef("DIMENSION", "RESOURCE_ID")
    assert CostExplorerSettings().queries == default_queries()
    assert CostExplorerSettings().metrics == ("UnblendedCost", "UsageQuantity")


def test_rows_are_kept_by_exact_service_or_bedrock_edition_suffix() -> None:
    selector = ServiceSelector(("Amazon Bedrock",))
    assert selector.keeps("Amazon Bedrock")
    assert selector.keeps(f"Claude 3.5 Sonnet {BEDROCK_EDITION_SUFFIX}")
    assert not selector.keeps("Some Firewall (AWS Marketplace)")
    assert not selector.keeps("Amazon Bedrock Agents")  # exact, not prefix

    query = CeQuery(
        "q",
        (GroupDef("DIMENSION", "USAGE_TYPE"), GroupDef("DIMENSION", "SERVICE")),
        selector,
    )
    response = {
        "ResultsByTime": [
            {
                "TimePeriod": {"Start": "2026-01-05", "End": "2026-01-06"},
                "Groups": [
                    {"Keys": ["u1", "Amazon Bedrock"], "Metrics": _metrics("1", "2")},
                    {"Keys": ["u2", "Acme Firewall"], "Metrics": _metrics("5", "6")},
                    {"Keys": ["u3", f"Llama {BEDROCK_EDITION_SUFFIX}"], "Metrics": _metrics("3")},
                ],
            }
        ]
    }
    kept, dropped = keep_rows(parse_response(response, "q", "DAILY", query.group_by), query)
    assert dropped == 1
    assert {r.group_key_1 for r in kept} == {"u1", "u3"}
    assert len(kept) == 3


def _metrics(cost: str, usage: str | None = None) -> dict:
    metrics = {"UnblendedCost": {"Amount": cost, "Unit": "USD"}}
    if usage is not None:
        metrics["UsageQuantity"] = {"Amount": usage, "Unit": "N/A"}
    return metrics


def test_query_validation() -> None:
    with pytest.raises(ConfigError, match="SERVICE group"):
        CeQuery("q", (GroupDef("DIMENSION", "USAGE_TYPE"),), ServiceSelector(("x",)))
    with pytest.raises(ConfigError, match="at most two"):
        CeQuery("q", (GroupDef("DIMENSION", "SERVICE"),) * 3)
    with pytest.raises(ConfigError, match="duplicate"):
        CostExplorerSettings(queries=default_queries() + default_queries()[:1])


def test_account_query_is_opt_in_and_groups_by_linked_account() -> None:
    names = [q.name for q in default_queries(accounts=True)]
    assert names == [
        "ai_services_by_usage_type",
        "pipeline_tag_by_service",
        "ai_services_by_account",
    ]
    accounts = default_queries(accounts=True)[2]
    assert accounts.group_by == (
        GroupDef("DIMENSION", "SERVICE"),
        GroupDef("DIMENSION", "LINKED_ACCOUNT"),
    )
    assert accounts.filter() == default_queries()[0].filter()
    on = settings_from_env({"SPANCOST_CE_LINKED_ACCOUNTS": "1"})
    assert [q.name for q in on.queries][-1] == "ai_services_by_account"
    assert "ai_services_by_account" not in [q.name for q in settings_from_env({}).queries]


def test_settings_from_env() -> None:
    settings = settings_from_env(
        {
            "SPANCOST_CE_SERVICES": "Amazon Bedrock, Amazon SageMaker",
            "SPANCOST_CE_PIPELINE_TAG": "pipeline",
            "SPANCOST_CE_HOURLY": "1",
            "SPANCOST_CE_RESOURCES": "true",
            "SPANCOST_CE_MIN_INTERVAL_MINUTES": "60",
            "SPANCOST_CE_BACKOFF_BASE_SECONDS": "0.25",
        }
    )
    assert settings.hourly is True
    assert settings.min_interval == timedelta(hours=1)
    assert settings.retry.base_delay_s == 0.25
    assert [q.name for q in settings.queries] == [
        "ai_services_by_usage_type",
        "pipeline_tag_by_service",
        "ai_resources_by_service",
    ]
    assert settings.queries[0].selector.services == ("Amazon Bedrock", "Amazon SageMaker")
    assert settings.queries[1].group_by[1].key == "pipeline"
    assert settings_from_env({}) == CostExplorerSettings()
    with pytest.raises(ConfigError, match="SPANCOST_CE_RESTATEMENT_DAYS"):
        settings_from_env({"SPANCOST_CE_RESTATEMENT_DAYS": "a week"})


def test_backoff_is_exponential_with_full_jitter() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay_s=0.5, max_delay_s=4.0)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0)]:
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        # Full jitter: spread over the whole range, not clustered at the ceiling.
        assert min(delays) < ceiling * 0.1 and max(delays) > ceiling * 0.9
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)


def test_request_summary_drops_tokens_and_secrets() -> None:
    summary = aws_requests.summarize(
        {"TimePeriod": {"Start": "2026-01-01"}, "NextPageToken": "abc", "SecretKey": "s"}
    )
    assert summary == {"TimePeriod": {"Start": "2026-01-01"}}


def test_clients_with_botocore_retries_are_refused() -> None:
    retrying = boto3.client("ce", region_name="us-east-1")
    with pytest.raises(ConfigError, match="client_config"):
        aws_requests.check_client(retrying)
    single = boto3.client("ce", region_name="us-east-1", config=aws_requests.client_config())
    aws_requests.check_client(single)
    assert aws_requests.request_price("ce") == Decimal("0.01")
    assert aws_requests.request_price("pricing") == Decimal(0)
