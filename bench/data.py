"""Benchmark exports: realistic GenAI spans from the demo, replicated to any size.

A few thousand spans come from the real OpenTelemetry SDK (``spancost.demo``);
copies get fresh trace and span ids so every span is distinct. Objects are
gzip-compressed OTLP/JSON in the awss3exporter layout, uploaded to S3.
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from spancost.demo import traffic

START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
PREFIX = "bench/traces"


@dataclass(frozen=True)
class BenchObject:
    key: str
    body: bytes
    spans: int
    raw_bytes: int


def _template_requests(seed: int) -> list[dict[str, Any]]:
    spans = traffic.generate_spans(
        START, START + timedelta(hours=1), seed=seed, traces_per_hour=120
    )
    objects = traffic.build_objects(spans, prefix=PREFIX, seed=seed)
    return [msgspec.json.decode(gzip.decompress(obj.body)) for obj in objects]


def _retag(request: dict[str, Any], rng: random.Random) -> int:
    """Give every trace and span in the request new random ids; returns the span count."""
    traces: dict[str, str] = {}
    spans: dict[str, str] = {}
    count = 0
    for resource_spans in request["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                count += 1
                span["traceId"] = traces.setdefault(span["traceId"], f"{rng.getrandbits(128):032x}")
                span["spanId"] = spans.setdefault(span["spanId"], f"{rng.getrandbits(64):016x}")
                if span.get("parentSpanId"):
                    parent = span["parentSpanId"]
                    span["parentSpanId"] = spans.setdefault(parent, f"{rng.getrandbits(64):016x}")
    return count


def objects(
    total_spans: int, *, spans_per_object: int = 2000, seed: int = 3
) -> Iterator[BenchObject]:
    """Objects holding ``total_spans`` spans in all, about ``spans_per_object`` each."""
    rng = random.Random(seed)
    templates = _template_requests(seed)
    made = 0
    index = 0
    minute = 0
    while made < total_spans:
        batch: list[dict[str, Any]] = []
        count = 0
        while count < spans_per_object and made + count < total_spans:
            request = msgspec.json.decode(msgspec.json.encode(rng.choice(templates)))
            count += _retag(request, rng)
            batch.append(request)
        merged = {"resourceSpans": [rs for request in batch for rs in request["resourceSpans"]]}
        raw = msgspec.json.encode(merged)
        upload = START + timedelta(minutes=minute)
        key = (
            f"{PREFIX}/{upload:year=%Y/month=%m/day=%d/hour=%H/minute=%M}/"
            f"traces_{100000000 + index}.json.gz"
        )
        yield BenchObject(
            key=key,
            body=gzip.compress(raw, compresslevel=1, mtime=0),
            spans=count,
            raw_bytes=len(raw),
        )
        made += count
        index += 1
        if index % 20 == 0:
            minute += 1


def empty_bucket(s3: Any, bucket: str) -> None:
    """Make `bucket` exist and hold nothing, so a run lists only what it uploads."""
    if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=bucket)
        return
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])
