"""The bill joined to the telemetry: allocation, unattributed spend, reconciliation (issue 11).

Spans go through the real loader, Cost Explorer results through the real pull
(moto's Cost Explorer on loopback, results preset), and the marts through a real
`dbt build`. Every expected amount is computed here from the bill and the price
seed, independently of the SQL.

One build covers the hand-made cases, one per day:

* day A, all tagged: every Bedrock dollar carries the pipeline tag; an OpenAI
  call the same day is estimated and never billed;
* day B, none tagged: the bill is split over the cost keys and the pipelines'
  estimates; a model no span called (Nova Lite) and an idle SageMaker endpoint
  are unattributed; pipeline p3's tagged amount has no estimate on the service;
* day C, a pipeline with spans but no bill;
* and the first pull is restated by a second one, which wins.
"""

from __future__ import annotations

import gzip
import json
import urllib.request
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import boto3
import psycopg
import pytest

from spancost import db
from spancost.billing import aws_requests
from spancost.billing.cost_explorer import CostExplorerSettings, default_queries, pull
from spancost.transform import dbt_build
from tests.integration.transform.test_llm_call_counting import cost
from tests.integration.transform.test_llm_marts import ingest
from tests.otlp_factory import attr, key

pytestmark = pytest.mark.integration

DAY_A, DAY_B, DAY_C = date(2026, 1, 12), date(2026, 1, 13), date(2026, 1, 14)
HAIKU_ID = "us.anthropic.claude-haiku-4-5-20251001-v1:0"  # priced as claude-haiku-4.5
NOVA_ID = "amazon.nova-pro-v1:0"  # priced as nova-pro
HAIKU_SERVICE = "Claude Haiku 4.5 (Amazon Bedrock Edition)"
BEDROCK = "Amazon Bedrock"
SAGEMAKER = "Amazon SageMaker"
USAGE_QUERY, TAG_QUERY, ACCOUNT_QUERY = default_queries(accounts=True)
QUERIES = (USAGE_QUERY, TAG_QUERY, ACCOUNT_QUERY)
M = Decimal(1_000_000)

# (day, pipeline, team, provider, model id, input tokens, output tokens)
CALLS = [
    (DAY_A, "p1", "t1", "aws.bedrock", HAIKU_ID, 1_000, 500),
    (DAY_A, "p1", "t1", "aws.bedrock", NOVA_ID, 2_000, 100),
    (DAY_A, "p2", "t2", "aws.bedrock", HAIKU_ID, 3_000, 1_000),
    (DAY_A, "p2", "t2", "openai", "gpt-4o-mini", 10_000, 2_000),
    (DAY_B, "p1", "t1", "aws.bedrock", HAIKU_ID, 4_000, 800),
    (DAY_B, "p1", "t1", "aws.bedrock", NOVA_ID, 5_000, 700),
    (DAY_B, "p2", "t2", "aws.bedrock", HAIKU_ID, 1_000, 3_000),
    (DAY_B, "p3", "t3", "openai", "gpt-4o-mini", 1_000, 1_000),
    (DAY_C, "p1", "t1", "aws.bedrock", HAIKU_ID, 2_000, 2_000),
]
PRICED = {HAIKU_ID: "claude-haiku-4.5", NOVA_ID: "nova-pro", "gpt-4o-mini": "gpt-4o-mini"}


def estimate(day: date, pipeline: str | None, model_id: str, provider: str = "aws.bedrock"):
    return sum(
        (
            cost(PRICED[m], uncached=i, output=o)
            for d, p, _, prov, m, i, o in CALLS
            if d == day
            and (pipeline is None or p == pipeline)
            and m == model_id
            and prov == provider
        ),
        Decimal(0),
    )


def line(service: str, usage_type: str, amount: str, quantity: str = "1", unit: str = "Units"):
    return {
        "Keys": [service, usage_type],
        "Metrics": {
            "UnblendedCost": {"Amount": amount, "Unit": "USD"},
            "UsageQuantity": {"Amount": quantity, "Unit": unit},
        },
    }


def bill(restated: bool) -> dict[str, dict[date, list[dict]]]:
    """The CE groups per query and day; the restatement changes day A and day B."""
    h_in, h_out = ("0.0061", "0.0145") if restated else ("0.0050", "0.0100")
    b_h = "0.0330" if restated else "0.0300"
    return {
        USAGE_QUERY.name: {
            DAY_A: [
                line(HAIKU_SERVICE, "USE1-MP:USE1_InputTokenCount-Units", h_in, "4000"),
                line(HAIKU_SERVICE, "USE1-MP:USE1_OutputTokenCount-Units", h_out, "1500"),
                line(BEDROCK, "USE1-NovaPro-input-tokens", "0.0017", "2000"),
                line(BEDROCK, "USE1-NovaPro-output-tokens", "0.0004", "100"),
            ],
            DAY_B: [
                line(HAIKU_SERVICE, "USE1-MP:USE1_InputTokenCount-Units", "0.0060", "5000"),
                line(HAIKU_SERVICE, "USE1-MP:USE1_OutputTokenCount-Units", b_h, "3800"),
                line(BEDROCK, "USE1-NovaPro-input-tokens", "0.0041", "5000"),
                line(BEDROCK, "USE1-NovaPro-output-tokens", "0.0023", "700"),
                line(BEDROCK, "USE1-NovaLite-input-tokens", "0.0500", "800000"),
                line(SAGEMAKER, "USE1-Host:ml.g4dn.xlarge", "17.6736", "24", "Hrs"),
            ],
            DAY_C: [],
        },
        TAG_QUERY.name: {
            DAY_A: [
                line(HAIKU_SERVICE, "PipelineID$p1", "0.0040" if restated else "0.0035"),
                line(HAIKU_SERVICE, "PipelineID$p2", "0.0166" if restated else "0.0115"),
                line(BEDROCK, "PipelineID$p1", "0.0021"),
            ],
            DAY_B: [
                line(HAIKU_SERVICE, "PipelineID$", "0.0290" if restated else "0.0260"),
                line(HAIKU_SERVICE, "PipelineID$p3", "0.0100"),
                line(BEDROCK, "PipelineID$", "0.0564"),
                line(SAGEMAKER, "PipelineID$", "17.6736"),
            ],
            DAY_C: [],
        },
        ACCOUNT_QUERY.name: {
            DAY_A: [],
            DAY_B: [
                line(BEDROCK, "111111111111", "0.0400"),
                line(BEDROCK, "222222222222", "0.0164"),
                line(SAGEMAKER, "111111111111", "17.6736"),
            ],
            DAY_C: [],
        },
    }


def response(groups: dict[date, list[dict]], group_by) -> dict:
    return {
        "ResultsByTime": [
            {
                "TimePeriod": {
                    "Start": day.isoformat(),
                    "End": (day + timedelta(days=1)).isoformat(),
                },
                "Total": {},
                "Groups": groups[day],
                "Estimated": False,
            }
            for day in (DAY_A, DAY_B, DAY_C)
        ],
        "GroupDefinitions": [{"Type": g.type, "Key": g.key} for g in group_by],
        "DimensionValueAttributes": [],
    }


def preset(endpoint: str, results: list[dict]) -> None:
    reset = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset).close()
    request = urllib.request.Request(
        f"{endpoint}/moto-api/static/ce/cost-and-usage-results",
        data=json.dumps({"results": results}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request).close()


def land_bill(endpoint: str, db_url: str) -> None:
    client = boto3.client(
        "ce", region_name="us-east-1", endpoint_url=endpoint, config=aws_requests.client_config()
    )
    settings = CostExplorerSettings(queries=QUERIES)
    window = (DAY_A, DAY_C + timedelta(days=1))
    with db.connect(db_url) as conn:
        db.apply_schema(conn)
        for restated in (False, True):
            groups = bill(restated)
            preset(
                endpoint,
                [response(groups[q.name], q.group_by) for q in QUERIES],
            )
            for query in QUERIES:
                result = pull(conn, client, query, window, settings)
                assert result.status == "complete", result


def land_spans(s3, db_url: str) -> None:
    s3.create_bucket(Bucket="spans")
    for n, (day, pipeline, team, provider, model, inp, out) in enumerate(CALLS):
        start = datetime(day.year, day.month, day.day, 10, tzinfo=UTC) + timedelta(minutes=n)
        ns = int(start.timestamp()) * 10**9
        attributes = {
            "pipeline.id": pipeline,
            "team": team,
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": inp,
            "gen_ai.usage.output_tokens": out,
        }
        request = {
            "resourceSpans": [
                {
                    "resource": {"attributes": [attr("service.name", "svc")]},
                    "scopeSpans": [
                        {
                            "scope": {"name": "test"},
                            "spans": [
                                {
                                    "traceId": f"{n + 1:032x}",
                                    "spanId": f"{n + 1:016x}",
                                    "name": f"chat {model}",
                                    "kind": 3,
                                    "startTimeUnixNano": str(ns),
                                    "endTimeUnixNano": str(ns + 10**9),
                                    "attributes": [attr(k, v) for k, v in attributes.items()],
                                }
                            ],
                        }
                    ],
                }
            ]
        }
        s3.put_object(
            Bucket="spans",
            Key=key("otel", start, n),
            Body=gzip.compress(json.dumps(request).encode(), mtime=0),
        )
    ingest(
        s3,
        db_url,
        datetime(2026, 1, 12, tzinfo=UTC),
        datetime(2026, 1, 15, tzinfo=UTC),
        "allocation",
    )


def rows(db_url: str, sql: str) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(sql).fetchall()


def test_the_bill_is_allocated_whole_and_reconciled(s3, aws_endpoint, db_url) -> None:
    land_spans(s3, db_url)
    land_bill(aws_endpoint, db_url)
    dbt_build.build(db_url)

    billed = bill(restated=True)[USAGE_QUERY.name]
    bill_of: dict[tuple[date, str], Decimal] = {}
    for day, groups in billed.items():
        for g in groups:
            amount = Decimal(g["Metrics"]["UnblendedCost"]["Amount"])
            bill_of[(day, g["Keys"][0])] = bill_of.get((day, g["Keys"][0]), Decimal(0)) + amount

    # The restated pull wins: its lines, not the first pull's.
    assert (
        dict(
            ((d, s), c)
            for d, s, c in rows(
                db_url,
                "select day, service, sum(billed_cost_usd) from marts.fct_billed_costs_daily"
                " group by day, service",
            )
        )
        == bill_of
    )
    assert rows(
        db_url,
        "select model, token_kind, tier, cost_key from marts.fct_billed_costs_daily"
        " where day = date '2026-01-13' order by usage_type collate \"C\"",
    ) == [
        (None, None, None, "ml.g4dn.xlarge"),
        ("claude-haiku-4.5", "input", "standard", "claude-haiku-4.5"),
        ("claude-haiku-4.5", "output", "standard", "claude-haiku-4.5"),
        ("nova-lite", "input", "standard", "nova-lite"),
        ("nova-pro", "input", "standard", "nova-pro"),
        ("nova-pro", "output", "standard", "nova-pro"),
    ]

    # Allocated plus unattributed is the bill, exactly, per day and service.
    allocated = {
        (d, s): c
        for d, s, c in rows(
            db_url,
            "select day, service, sum(allocated_cost_usd) from marts.fct_allocated_costs_daily"
            " group by day, service",
        )
    }
    assert allocated == bill_of
    got = {
        (d, s, k, p, t, m): c
        for d, s, k, p, t, m, c in rows(
            db_url,
            "select day, service, cost_key, pipeline_id, team, allocation_method,"
            " sum(allocated_cost_usd) from marts.fct_allocated_costs_daily"
            " group by 1, 2, 3, 4, 5, 6",
        )
    }

    # Day A, all tagged: each pipeline's tag on its own key; nothing unattributed.
    haiku = "claude-haiku-4.5"
    expected = {
        (DAY_A, HAIKU_SERVICE, haiku, "p1", "t1", "tag"): Decimal("0.0040"),
        (DAY_A, HAIKU_SERVICE, haiku, "p2", "t2", "tag"): Decimal("0.0166"),
        (DAY_A, BEDROCK, "nova-pro", "p1", "t1", "tag"): Decimal("0.0021"),
    }
    # Day B: the untagged Haiku rest (bill minus p3's tag) to p1 and p2 by estimate;
    # p3 has no Bedrock estimate, so its tag stays whole with no key.
    rest = bill_of[(DAY_B, HAIKU_SERVICE)] - Decimal("0.0100")
    e1, e2 = estimate(DAY_B, "p1", HAIKU_ID), estimate(DAY_B, "p2", HAIKU_ID)
    expected |= {
        (DAY_B, HAIKU_SERVICE, haiku, "p1", "t1", "estimate_share"): rest * e1 / (e1 + e2),
        (DAY_B, HAIKU_SERVICE, haiku, "p2", "t2", "estimate_share"): rest * e2 / (e1 + e2),
        (DAY_B, HAIKU_SERVICE, None, "p3", None, "tag"): Decimal("0.0100"),
        # Nova Pro's lines go to p1 (the only estimate); Nova Lite has no span.
        (DAY_B, BEDROCK, "nova-pro", "p1", "t1", "estimate_share"): Decimal("0.0064"),
        (DAY_B, BEDROCK, "nova-lite", None, None, "unattributed"): Decimal("0.0500"),
        (DAY_B, SAGEMAKER, "ml.g4dn.xlarge", None, None, "unattributed"): Decimal("17.6736"),
    }
    assert got.keys() == expected.keys()
    for k, value in expected.items():
        assert abs(got[k] - value) < Decimal("1e-9"), (k, got[k], value)

    # Unattributed spend, with its share of the day's service bill.
    assert rows(
        db_url,
        "select day, service, cost_key, unattributed_cost_usd, billed_cost_usd,"
        " unattributed_pct from marts.rpt_unattributed_spend order by service",
    ) == [
        (
            DAY_B,
            BEDROCK,
            "nova-lite",
            Decimal("0.0500"),
            Decimal("0.0564"),
            round(Decimal("0.0500") / Decimal("0.0564") * 100, 4),
        ),
        (
            DAY_B,
            SAGEMAKER,
            "ml.g4dn.xlarge",
            Decimal("17.6736"),
            Decimal("17.6736"),
            Decimal("100.0000"),
        ),
    ]

    # The daily mart carries the bill allocated to its calls.
    assert rows(
        db_url,
        "select pipeline_id, model, billed_allocated_cost_usd"
        " from marts.agg_pipeline_costs_daily where day = date '2026-01-13'"
        " order by pipeline_id, model",
    ) == [
        ("p1", NOVA_ID, Decimal("0.0064")),
        ("p1", HAIKU_ID, got[(DAY_B, HAIKU_SERVICE, haiku, "p1", "t1", "estimate_share")]),
        ("p2", HAIKU_ID, got[(DAY_B, HAIKU_SERVICE, haiku, "p2", "t2", "estimate_share")]),
        ("p3", "gpt-4o-mini", None),
    ]

    # Reconciliation: Bedrock estimates against the bill; OpenAI has no bill and no
    # drift; day C has spans and no bill.
    recon = {
        (d, s, m): (e, b, dr, pct, final)
        for d, s, m, e, b, dr, pct, final in rows(
            db_url,
            "select day, service, model, estimated_cost_usd, billed_cost_usd, drift_usd,"
            " drift_pct, is_final from marts.rpt_cost_reconciliation",
        )
    }
    est_a = estimate(DAY_A, None, HAIKU_ID)
    billed_a = bill_of[(DAY_A, HAIKU_SERVICE)]
    e, b, dr, pct, final = recon[(DAY_A, HAIKU_SERVICE, haiku)]
    assert (e, b, dr) == (est_a, billed_a, billed_a - est_a)
    assert abs(pct - (billed_a - est_a) / est_a * 100) < Decimal("0.0001")
    assert final is True  # not estimated, pulled long after the day
    e, b, dr, pct, final = recon[(DAY_A, "openai", "gpt-4o-mini")]
    assert (b, dr, pct, final) == (None, None, None, None)
    assert e == estimate(DAY_A, None, "gpt-4o-mini", "openai")
    assert recon[(DAY_B, BEDROCK, "nova-lite")][:2] == (Decimal(0), Decimal("0.0500"))
    est_c = estimate(DAY_C, None, HAIKU_ID)
    assert recon[(DAY_C, HAIKU_SERVICE, haiku)] == (
        est_c,
        Decimal(0),
        -est_c,
        Decimal("-100.0000"),
        False,
    )

    # The per-account query, for multi-account organisations.
    assert rows(
        db_url,
        "select day, account_id, service, billed_cost_usd from marts.agg_account_costs_daily"
        " order by account_id, service",
    ) == [
        (DAY_B, "111111111111", BEDROCK, Decimal("0.0400")),
        (DAY_B, "111111111111", SAGEMAKER, Decimal("17.6736")),
        (DAY_B, "222222222222", BEDROCK, Decimal("0.0164")),
    ]

    # FOCUS 1.2: every mandatory column the issue lists, under its spec name, and the
    # same money as the allocation.
    focus_columns = [
        name
        for (name,) in rows(
            db_url,
            "select column_name from information_schema.columns"
            " where table_schema = 'marts' and table_name = 'focus_costs'",
        )
    ]
    assert set(FOCUS_MANDATORY) <= set(focus_columns)
    assert all(c in FOCUS_MANDATORY or c.startswith("x_") for c in focus_columns)
    focus = {
        (d, s): c
        for d, s, c in rows(
            db_url,
            'select x_day, "ServiceName", sum("BilledCost") from marts.focus_costs group by 1, 2',
        )
    }
    assert focus == allocated
    assert rows(
        db_url,
        'select distinct "BillingCurrency", "ProviderName", "ChargeCategory",'
        ' "BillingPeriodStart" from marts.focus_costs',
    ) == [("USD", "AWS", "Usage", datetime(2026, 1, 1, tzinfo=UTC))]


# FinOps FOCUS 1.2 columns (focus.finops.org, "Column Library"): the mandatory ones the
# issue lists, plus BillingAccountType, ChargeFrequency, PricingCurrency and
# ServiceSubcategory.
FOCUS_MANDATORY = (
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingAccountType",
    "ChargeFrequency",
    "PricingCurrency",
    "ServiceSubcategory",
    "BillingCurrency",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "ServiceCategory",
    "ServiceName",
)
