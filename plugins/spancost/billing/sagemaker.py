"""SageMaker endpoint inventory: what ran, on which instances, at a snapshot time.

``ListEndpoints`` (paged), then ``DescribeEndpoint``, ``DescribeEndpointConfig``
and ``ListTags`` per endpoint. DescribeEndpoint gives the current and
desired instance counts per production variant; the endpoint config gives the
instance type and initial count; the tags carry the cost-allocation tag (the
pipeline an endpoint serves). One row per variant lands in
``raw.sagemaker_endpoint_snapshots``; one snapshot is one transaction, and
taking the same snapshot again replaces it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import botocore.exceptions
import psycopg

from spancost.errors import InfrastructureError

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class EndpointVariant:
    """One production variant of one endpoint, as seen at ``snapshot_at``."""

    snapshot_at: datetime
    region: str
    endpoint_name: str
    endpoint_arn: str
    endpoint_status: str
    endpoint_config_name: str | None
    variant_name: str
    model_name: str | None
    instance_type: str | None
    initial_instance_count: int | None
    current_instance_count: int | None
    desired_instance_count: int | None
    serverless: bool
    creation_time: datetime | None
    last_modified_time: datetime | None
    raw: Mapping[str, Any]
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SnapshotResult:
    """What a snapshot saw. ``requests`` counts the SageMaker API calls made."""

    snapshot_at: datetime
    region: str
    endpoints: int
    rows: int
    vanished: tuple[str, ...]
    requests: int
    batch_id: str | None = None  # the pending batch (write-audit-publish), if any


_COLUMNS: tuple[str, ...] = (
    "snapshot_at",
    "region",
    "endpoint_name",
    "endpoint_arn",
    "endpoint_status",
    "endpoint_config_name",
    "variant_name",
    "model_name",
    "instance_type",
    "initial_instance_count",
    "current_instance_count",
    "desired_instance_count",
    "serverless",
    "creation_time",
    "last_modified_time",
    "raw",
    "tags",
)


def _not_found(exc: botocore.exceptions.ClientError) -> bool:
    error = exc.response.get("Error", {})
    return error.get("Code") == "ValidationException" and "Could not find" in str(
        error.get("Message", "")
    )


def _without_metadata(response: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in response.items() if key != "ResponseMetadata"}


def _utc(value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def variants_of(
    endpoint: Mapping[str, Any],
    config: Mapping[str, Any] | None,
    *,
    snapshot_at: datetime,
    region: str,
    tags: Mapping[str, str] | None = None,
) -> list[EndpointVariant]:
    """Rows for one endpoint: DescribeEndpoint's variants joined by name to its config's.

    A variant only in the config (not yet deployed) is kept with no current count;
    a missing config (deleted after the endpoint was created) leaves the
    instance type empty.
    """
    deployed = {v["VariantName"]: v for v in endpoint.get("ProductionVariants", [])}
    configured = {v["VariantName"]: v for v in (config or {}).get("ProductionVariants", [])}
    rows: list[EndpointVariant] = []
    for name in [*deployed, *(n for n in configured if n not in deployed)]:
        live = deployed.get(name, {})
        spec = configured.get(name, {})
        rows.append(
            EndpointVariant(
                snapshot_at=snapshot_at,
                region=region,
                endpoint_name=str(endpoint["EndpointName"]),
                endpoint_arn=str(endpoint["EndpointArn"]),
                endpoint_status=str(endpoint.get("EndpointStatus", "Unknown")),
                endpoint_config_name=endpoint.get("EndpointConfigName"),
                variant_name=name,
                model_name=spec.get("ModelName"),
                instance_type=spec.get("InstanceType"),
                initial_instance_count=spec.get("InitialInstanceCount"),
                current_instance_count=live.get("CurrentInstanceCount"),
                desired_instance_count=live.get("DesiredInstanceCount"),
                serverless=bool(
                    spec.get("ServerlessConfig") or live.get("CurrentServerlessConfig")
                ),
                creation_time=_utc(endpoint.get("CreationTime")),
                last_modified_time=_utc(endpoint.get("LastModifiedTime")),
                raw={"variant": live, "config_variant": spec, "endpoint": endpoint},
                tags=dict(tags or {}),
            )
        )
    return rows


def collect(
    client: Any, *, snapshot_at: datetime, page_size: int | None = None
) -> tuple[list[EndpointVariant], int, tuple[str, ...], int]:
    """Describe every endpoint in the client's region.

    Returns (rows, endpoints seen, endpoints that vanished while listing, API calls).
    """
    region = str(client.meta.region_name)
    paginator = client.get_paginator("list_endpoints")
    config: dict[str, Any] = {"PageSize": page_size} if page_size else {}
    rows: list[EndpointVariant] = []
    vanished: list[str] = []
    requests = 0
    names: list[str] = []
    for page in paginator.paginate(PaginationConfig=config):
        requests += 1
        names += [summary["EndpointName"] for summary in page.get("Endpoints", [])]
    for name in names:
        try:
            requests += 1
            endpoint = _without_metadata(client.describe_endpoint(EndpointName=name))
        except botocore.exceptions.ClientError as exc:
            if _not_found(exc):
                log.info("sagemaker endpoint %s was deleted while listing; skipped", name)
                vanished.append(name)
                continue
            raise
        config_name = endpoint.get("EndpointConfigName")
        endpoint_config: dict[str, Any] | None = None
        if config_name:
            try:
                requests += 1
                endpoint_config = _without_metadata(
                    client.describe_endpoint_config(EndpointConfigName=config_name)
                )
            except botocore.exceptions.ClientError as exc:
                if not _not_found(exc):
                    raise
                log.warning(
                    "sagemaker endpoint %s: config %s no longer exists; instance type unknown",
                    name,
                    config_name,
                )
        tags: dict[str, str] = {}
        try:
            for page in client.get_paginator("list_tags").paginate(
                ResourceArn=endpoint["EndpointArn"]
            ):
                requests += 1
                tags.update({tag["Key"]: tag["Value"] for tag in page.get("Tags", [])})
        except botocore.exceptions.ClientError as exc:
            if not _not_found(exc):
                raise
        rows += variants_of(
            endpoint, endpoint_config, snapshot_at=snapshot_at, region=region, tags=tags
        )
    return rows, len(names) - len(vanished), tuple(vanished), requests


def _copy_row(row: EndpointVariant) -> tuple[object, ...]:
    values: list[object] = []
    for name in _COLUMNS:
        value = getattr(row, name)
        if name in ("raw", "tags"):
            value = json.dumps(value, default=str, sort_keys=True)
        values.append(value)
    return tuple(values)


def store(
    conn: Conn,
    rows: Sequence[EndpointVariant],
    *,
    snapshot_at: datetime,
    region: str,
    batch_run_id: str | None = None,
) -> str | None:
    """Write one snapshot in one transaction, replacing an earlier one of the same time.

    With ``batch_run_id`` (write-audit-publish) the snapshot is a pending batch of
    that run, whose id is returned: staging reads it once Great Expectations passed
    it. A snapshot with no endpoints is a batch only when the region's previous one
    had some (so the audit can warn that they all went); otherwise None.
    """
    batch_id: str | None = None
    with conn.transaction():
        conn.execute(
            "delete from raw.sagemaker_endpoint_snapshots where snapshot_at = %s and region = %s",
            (snapshot_at, region),
        )
        if batch_run_id is not None and (rows or _had_endpoints(conn, region, snapshot_at)):
            from spancost.validation import batches

            batch_id = f"{region}/{snapshot_at.isoformat()}/{uuid.uuid4().hex[:12]}"
            batches.register_pending(conn, batches.ENDPOINTS, batch_id, batch_run_id)
        with conn.cursor() as cur:
            columns = ", ".join(_COLUMNS)
            with cur.copy(
                f"copy raw.sagemaker_endpoint_snapshots ({columns}, batch_id) from stdin"
            ) as copy:
                for row in rows:
                    copy.write_row((*_copy_row(row), batch_id))
    return batch_id


def _had_endpoints(conn: Conn, region: str, before: datetime) -> bool:
    found = conn.execute(
        """
        select exists (
            select 1 from raw.sagemaker_endpoint_snapshots
            where region = %s
              and snapshot_at = (
                  select max(snapshot_at) from raw.sagemaker_endpoint_snapshots
                  where region = %s and snapshot_at < %s
              )
        )
        """,
        (region, region, before),
    ).fetchone()
    return bool(found and found[0])


def snapshot_endpoints(
    conn: Conn,
    client: Any,
    *,
    snapshot_at: datetime,
    page_size: int | None = None,
    batch_run_id: str | None = None,
) -> SnapshotResult:
    """Snapshot every endpoint of the client's region into ``raw.sagemaker_endpoint_snapshots``.

    API errors other than an endpoint vanishing mid-listing raise
    :class:`InfrastructureError` and write nothing. With ``batch_run_id`` the
    snapshot lands as a pending batch of that run (see :func:`store`).
    """
    if snapshot_at.tzinfo is None:
        raise ValueError("snapshot_at must be timezone-aware (UTC)")
    region = str(client.meta.region_name)
    try:
        rows, endpoints, vanished, requests = collect(
            client, snapshot_at=snapshot_at, page_size=page_size
        )
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise InfrastructureError(f"sagemaker endpoint snapshot in {region} failed: {exc}") from exc
    batch_id = store(conn, rows, snapshot_at=snapshot_at, region=region, batch_run_id=batch_run_id)
    log.info(
        "sagemaker snapshot %s in %s: %d endpoints, %d variant rows",
        snapshot_at.isoformat(),
        region,
        endpoints,
        len(rows),
    )
    return SnapshotResult(
        snapshot_at=snapshot_at,
        region=region,
        endpoints=endpoints,
        rows=len(rows),
        vanished=vanished,
        requests=requests,
        batch_id=batch_id,
    )
