"""Small OTLP/JSON exports written by hand for tests (independent of spancost's demo code)."""

from __future__ import annotations

import gzip
import json
import random
from datetime import datetime
from typing import Any


def attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": str(value)}}


def llm_span(
    rng: random.Random,
    start: datetime,
    *,
    model: str = "gpt-5.4",
    input_tokens: int = 1000,
    output_tokens: int = 100,
    cache_read: int = 0,
    pipeline: str = "p1",
    trace_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    start_ns = int(start.timestamp()) * 10**9
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
        "gen_ai.usage.cache_read.input_tokens": cache_read,
        "pipeline.id": pipeline,
        "team": "t1",
        **(extra or {}),
    }
    return {
        "traceId": trace_id or f"{rng.getrandbits(128):032x}",
        "spanId": f"{rng.getrandbits(64):016x}",
        "name": f"chat {model}",
        "kind": 3,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(start_ns + 1_500_000_000),
        "attributes": [attr(key, value) for key, value in attributes.items()],
        "status": {},
    }


def export(spans: list[dict[str, Any]], *, service: str = "svc") -> bytes:
    request = {
        "resourceSpans": [
            {
                "resource": {"attributes": [attr("service.name", service)]},
                "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}],
            }
        ]
    }
    return gzip.compress(json.dumps(request).encode(), mtime=0)


def key(prefix: str, upload: datetime, unique: int) -> str:
    return f"{prefix}/{upload:year=%Y/month=%m/day=%d/hour=%H/minute=%M}/traces_{unique}.json.gz"
