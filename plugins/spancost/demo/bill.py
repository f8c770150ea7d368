"""The demo's AWS side: a Cost Explorer bill consistent with the demo spans, and SageMaker.

What it bills, per demo day:

* the Bedrock calls in the demo spans (provider ``aws.bedrock``), at the
  Marketplace token prices, a few percent above the estimate (drift);
* one SageMaker endpoint that sits idle all day: billed by the hour, used by
  no span, and untagged, so it shows up as unattributed spend.

The results are preset in moto's Cost Explorer through its
``/moto-api/static/ce/cost-and-usage-results`` API, in the order the refresh
asks for them (query by query, window by window).
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from spancost.billing.cost_explorer import CostExplorerSettings, windows

log = logging.getLogger(__name__)

DRIFT = Decimal("1.03")  # the bill runs 3% above the estimate
IDLE_ENDPOINT = "demo-llama-idle"
IDLE_INSTANCE = "ml.g4dn.xlarge"
IDLE_HOURLY_USD = Decimal("0.7364")
PIPELINE_TAG = "PipelineID"
DEMO_ACCOUNT = "123456789012"  # moto's default account
SAGEMAKER = "Amazon SageMaker"

# Bedrock model id in the spans → (Marketplace service name, USD per 1M tokens by kind).
BEDROCK_MODELS: dict[str, tuple[str, dict[str, Decimal]]] = {
    "us.anthropic.claude-haiku-4-5-20251001-v1:0": (
        "Claude Haiku 4.5 (Amazon Bedrock Edition)",
        {
            "InputTokenCount": Decimal("1.00"),
            "OutputTokenCount": Decimal("5.00"),
            "CacheReadInputTokenCount": Decimal("0.10"),
            "CacheWriteInputTokenCount": Decimal("1.25"),
        },
    ),
}


def _day(span: ReadableSpan) -> date:
    assert span.start_time is not None
    return datetime.fromtimestamp(span.start_time / 1e9, UTC).date()


def bedrock_usage(spans: Sequence[ReadableSpan]) -> dict[tuple[date, str, str, str], int]:
    """Tokens billed per (day, model id, pipeline, Marketplace token counter)."""
    usage: dict[tuple[date, str, str, str], int] = defaultdict(int)
    for span in spans:
        attrs = span.attributes or {}
        if attrs.get("gen_ai.provider.name") != "aws.bedrock":
            continue
        model = str(attrs.get("gen_ai.request.model"))
        if model not in BEDROCK_MODELS or "gen_ai.usage.input_tokens" not in attrs:
            continue
        pipeline = str(attrs.get("pipeline.id", ""))
        read = int(attrs.get("gen_ai.usage.cache_read.input_tokens", 0))  # type: ignore[arg-type]
        write = int(attrs.get("gen_ai.usage.cache_creation.input_tokens", 0))  # type: ignore[arg-type]
        inclusive = int(attrs["gen_ai.usage.input_tokens"])  # type: ignore[arg-type]
        day = _day(span)
        usage[(day, model, pipeline, "InputTokenCount")] += inclusive - read - write
        usage[(day, model, pipeline, "CacheReadInputTokenCount")] += read
        usage[(day, model, pipeline, "CacheWriteInputTokenCount")] += write
        usage[(day, model, pipeline, "OutputTokenCount")] += int(
            attrs["gen_ai.usage.output_tokens"]  # type: ignore[arg-type]
        )
    return dict(usage)


def _metrics(amount: Decimal, quantity: Decimal, unit: str) -> dict[str, Any]:
    return {
        "UnblendedCost": {"Amount": str(amount.quantize(Decimal("0.0000000001"))), "Unit": "USD"},
        "UsageQuantity": {"Amount": str(quantity), "Unit": unit},
    }


def daily_groups(
    spans: Sequence[ReadableSpan], days: Sequence[date]
) -> dict[date, dict[str, list[dict[str, Any]]]]:
    """{day: {query name: CE groups}} for the demo days."""
    by_usage: dict[date, dict[tuple[str, str], tuple[Decimal, Decimal, str]]] = defaultdict(dict)
    by_tag: dict[date, dict[tuple[str, str], tuple[Decimal, Decimal, str]]] = defaultdict(dict)

    def add(
        table: dict[tuple[str, str], tuple[Decimal, Decimal, str]],
        keys: tuple[str, str],
        cost: Decimal,
        quantity: Decimal,
        unit: str,
    ) -> None:
        old_cost, old_quantity, _ = table.get(keys, (Decimal(0), Decimal(0), unit))
        table[keys] = (old_cost + cost, old_quantity + quantity, unit)

    for (day, model, pipeline, counter), tokens in bedrock_usage(spans).items():
        service, prices = BEDROCK_MODELS[model]
        cost = Decimal(tokens) * prices[counter] / Decimal(1_000_000) * DRIFT
        usage_type = f"USE1-MP:USE1_{counter}-Units"
        add(by_usage[day], (service, usage_type), cost, Decimal(tokens), "Units")
        add(by_tag[day], (service, f"{PIPELINE_TAG}${pipeline}"), cost, Decimal(tokens), "Units")
    for day in days:
        idle = IDLE_HOURLY_USD * 24
        add(by_usage[day], (SAGEMAKER, f"USE1-Host:{IDLE_INSTANCE}"), idle, Decimal(24), "Hrs")
        add(by_tag[day], (SAGEMAKER, f"{PIPELINE_TAG}$"), idle, Decimal(24), "Hrs")

    def groups(
        table: dict[tuple[str, str], tuple[Decimal, Decimal, str]],
    ) -> list[dict[str, Any]]:
        return [
            {"Keys": list(keys), "Metrics": _metrics(cost, quantity, unit)}
            for keys, (cost, quantity, unit) in sorted(table.items())
        ]

    def by_account(day: date) -> dict[tuple[str, str], tuple[Decimal, Decimal, str]]:
        # One account (moto's) for the demo: each service's whole day under it.
        table: dict[tuple[str, str], tuple[Decimal, Decimal, str]] = {}
        for (service, _), (cost, quantity, unit) in by_usage.get(day, {}).items():
            add(table, (service, DEMO_ACCOUNT), cost, quantity, unit)
        return table

    return {
        day: {
            "ai_services_by_usage_type": groups(by_usage.get(day, {})),
            "pipeline_tag_by_service": groups(by_tag.get(day, {})),
            "ai_services_by_account": groups(by_account(day)),
        }
        for day in set(by_usage) | set(by_tag)
    }


def cost_explorer_results(
    spans: Sequence[ReadableSpan],
    demo_days: Sequence[date],
    today: date,
    settings: CostExplorerSettings | None = None,
) -> list[dict[str, Any]]:
    """One GetCostAndUsage result per (query, window), in the order a refresh requests them."""
    settings = settings or CostExplorerSettings()
    per_day = daily_groups(spans, demo_days)
    results = []
    spans_of_windows = windows(
        today,
        restatement_days=settings.restatement_days,
        previous_month_until_day=settings.previous_month_until_day,
    )
    for query in settings.queries:
        for start, end in spans_of_windows:
            by_time = []
            day = start
            while day < end:
                by_time.append(
                    {
                        "TimePeriod": {
                            "Start": day.isoformat(),
                            "End": (day + timedelta(days=1)).isoformat(),
                        },
                        "Total": {},
                        "Groups": per_day.get(day, {}).get(query.name, []),
                        "Estimated": day >= today - timedelta(days=2),
                    }
                )
                day += timedelta(days=1)
            results.append(
                {
                    "ResultsByTime": by_time,
                    "GroupDefinitions": [
                        {"Type": group.type, "Key": group.key} for group in query.group_by
                    ],
                    "DimensionValueAttributes": [],
                }
            )
    return results


def preset_cost_explorer(endpoint: str, results: Sequence[dict[str, Any]]) -> None:
    """Queue the results in moto's Cost Explorer (moto's own API, on the local endpoint)."""
    request = urllib.request.Request(
        f"{endpoint}/moto-api/static/ce/cost-and-usage-results",
        data=json.dumps({"results": list(results)}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 201:
            raise RuntimeError(f"moto refused the Cost Explorer presets: HTTP {response.status}")


def pricing_catalogue() -> list[dict[str, Any]]:
    """The local Price List endpoint's demo catalogue, plus the idle endpoint's instance."""
    from spancost.local import pricing_server

    return [
        *pricing_server.demo_catalogue(),
        pricing_server.sagemaker_instance(
            "us-east-1", IDLE_INSTANCE, "Hosting", str(IDLE_HOURLY_USD), vCpu="4", gpu="1"
        ),
    ]


def create_idle_endpoint(sagemaker: Any) -> None:
    """An endpoint that exists and bills by the hour, but that no span uses."""
    names = {item["EndpointName"] for item in sagemaker.list_endpoints()["Endpoints"]}
    if IDLE_ENDPOINT in names:
        return
    sagemaker.create_model(
        ModelName=f"{IDLE_ENDPOINT}-model",
        PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/llama:latest"},
        ExecutionRoleArn="arn:aws:iam::123456789012:role/demo-sagemaker",
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{IDLE_ENDPOINT}-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": f"{IDLE_ENDPOINT}-model",
                "InstanceType": IDLE_INSTANCE,
                "InitialInstanceCount": 1,
            }
        ],
    )
    sagemaker.create_endpoint(
        EndpointName=IDLE_ENDPOINT,
        EndpointConfigName=f"{IDLE_ENDPOINT}-config",
        Tags=[{"Key": "team", "Value": "ml-platform"}],
    )
    log.info("created idle SageMaker endpoint %s (%s)", IDLE_ENDPOINT, IDLE_INSTANCE)
