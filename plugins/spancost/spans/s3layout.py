"""The awss3exporter key layout: which S3 prefixes hold the exports of a time interval.

Keys look like ``[base_prefix/][prefix/]<strftime(partition_format, upload time)>/
<file_prefix>traces_<unique>.json[.gz]``. The partition time is the upload time,
not the span time, so a run lists the partitions of its interval plus a lateness
lookback; the manifest makes listing a partition twice harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from spancost.errors import ConfigError, InfrastructureError
from spancost.settings import SpanSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str
    etag: str
    size: int
    last_modified: datetime | None
    partition_time: datetime


def _step(partition_format: str) -> timedelta:
    """The finest time unit in the partition format."""
    if "%S" in partition_format:
        return timedelta(seconds=1)
    if "%M" in partition_format:
        return timedelta(minutes=1)
    if "%H" in partition_format or "%I" in partition_format:
        return timedelta(hours=1)
    if "%d" in partition_format or "%j" in partition_format:
        return timedelta(days=1)
    raise ConfigError(
        f"partition format {partition_format!r} has no day, hour or minute: "
        "spancost cannot tell which partitions belong to an interval"
    )


def _zone(source: SpanSource) -> ZoneInfo:
    try:
        return ZoneInfo(source.partition_timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"partition timezone {source.partition_timezone!r} is not an IANA zone name"
        ) from exc


def _floor(moment: datetime, step: timedelta) -> datetime:
    seconds = int(step.total_seconds())
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, moment.tzinfo)


def key_prefix(source: SpanSource) -> str:
    parts = [part for part in (source.base_prefix, source.prefix) if part]
    return "/".join(parts)


def partitions(
    source: SpanSource, start: datetime, end: datetime
) -> Iterator[tuple[datetime, str]]:
    """(partition time in UTC, key prefix) for each partition in [start - lateness, end)."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ConfigError("interval bounds must be timezone-aware (UTC)")
    zone = _zone(source)
    step = _step(source.partition_format)
    base = key_prefix(source)
    moment = _floor((start - source.lateness).astimezone(zone), step)
    seen: set[str] = set()
    while moment < end:
        folder = moment.strftime(source.partition_format).strip("/")
        prefix = f"{base}/{folder}/" if base else f"{folder}/"
        if prefix not in seen:
            seen.add(prefix)
            yield moment.astimezone(UTC), prefix
        moment = (moment.astimezone(UTC) + step).astimezone(zone)


def is_trace_export(key: str, source: SpanSource) -> bool:
    name = key.rsplit("/", 1)[-1]
    return name.startswith(f"{source.file_prefix}traces")


def _coarse_format(partition_format: str) -> str:
    """The partition format cut before its finest unit: one listing covers a group."""
    for unit in ("%S", "%M", "%H", "%I", "%d", "%j"):
        index = partition_format.find(unit)
        if index >= 0:
            return partition_format[:index]
    return partition_format


def listing_plan(
    source: SpanSource, start: datetime, end: datetime
) -> list[tuple[str, dict[str, datetime]]]:
    """(prefix to list, {partition prefix: partition time}) pairs covering the interval.

    Partitions sharing everything but their finest unit (the minutes of one hour)
    are listed once with their common prefix, and the keys filtered, so a day of
    minute partitions takes 24 listings rather than 1,440.
    """
    zone = _zone(source)
    coarse = _coarse_format(source.partition_format)
    base = key_prefix(source)
    groups: dict[str, dict[str, datetime]] = {}
    for partition_time, prefix in partitions(source, start, end):
        folder = partition_time.astimezone(zone).strftime(coarse)
        group = f"{base}/{folder}" if base else folder
        groups.setdefault(group, {})[prefix] = partition_time
    plan: list[tuple[str, dict[str, datetime]]] = []
    for group, members in groups.items():
        if len(members) > 2 and group:
            plan.append((group, members))
        else:
            plan.extend((prefix, {prefix: moment}) for prefix, moment in members.items())
    return plan


def _pages(paginator: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    try:
        yield from paginator.paginate(Bucket=bucket, Prefix=prefix)
    except Exception as exc:  # botocore's many error types: all mean the listing failed
        raise InfrastructureError(f"s3://{bucket}/{prefix}: listing failed: {exc}") from exc


def list_objects(s3: Any, source: SpanSource, start: datetime, end: datetime) -> list[S3Object]:
    """Every trace export whose partition falls in [start - lateness, end), in key order."""
    found: list[S3Object] = []
    paginator = s3.get_paginator("list_objects_v2")
    for listed, members in listing_plan(source, start, end):
        lengths = sorted({len(prefix) for prefix in members})
        for page in _pages(paginator, source.bucket, listed):
            for item in page.get("Contents", []):
                object_key = item["Key"]
                partition_time = next(
                    (
                        members[object_key[:length]]
                        for length in lengths
                        if object_key[:length] in members
                    ),
                    None,
                )
                if partition_time is None or not is_trace_export(object_key, source):
                    continue
                found.append(
                    S3Object(
                        bucket=source.bucket,
                        key=object_key,
                        etag=item["ETag"].strip('"'),
                        size=int(item.get("Size", 0)),
                        last_modified=item.get("LastModified"),
                        partition_time=partition_time,
                    )
                )
    log.info(
        "found %d trace exports in s3://%s for [%s, %s)", len(found), source.bucket, start, end
    )
    return sorted(found, key=lambda obj: obj.key)
