"""SageMaker endpoint snapshots: boto3 → moto's SageMaker → raw.sagemaker_endpoint_snapshots.

moto validates InstanceType against an older list (no ml.g5.*), hence ml.g4dn here.
"""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import psycopg
import pytest
from botocore.config import Config

from spancost.billing import sagemaker as sm
from spancost.errors import InfrastructureError

pytestmark = pytest.mark.integration

SNAPSHOT = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
ROLE = "arn:aws:iam::123456789012:role/sagemaker"


@pytest.fixture
def sagemaker(aws_endpoint: str) -> Any:
    request = urllib.request.Request(f"{aws_endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(request).close()
    return boto3.client("sagemaker", region_name="us-east-1")


def _model(client: Any, name: str) -> None:
    client.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/llm:latest"},
    )


def _endpoint(client: Any, name: str, variants: list[tuple[str, str, str, int]]) -> None:
    """variants: (variant name, model name, instance type, initial instance count)."""
    for _, model, _, _ in variants:
        _model(client, model)
    client.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=[
            {
                "VariantName": variant,
                "ModelName": model,
                "InstanceType": instance,
                "InitialInstanceCount": count,
                "InitialVariantWeight": 1.0,
            }
            for variant, model, instance, count in variants
        ],
    )
    client.create_endpoint(
        EndpointName=name,
        EndpointConfigName=f"{name}-config",
        Tags=[{"Key": "PipelineID", "Value": f"{name}-pipeline"}] if name == "rerank" else [],
    )


def _rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        """
        select snapshot_at, region, endpoint_name, endpoint_status, endpoint_config_name,
               variant_name, model_name, instance_type, initial_instance_count,
               current_instance_count, desired_instance_count
        from raw.sagemaker_endpoint_snapshots
        order by snapshot_at, endpoint_name, variant_name
        """
    ).fetchall()


def test_snapshot_has_one_row_per_variant_with_config_instance_types(
    sagemaker: Any, conn: psycopg.Connection[Any]
) -> None:
    _endpoint(sagemaker, "support-llm", [("AllTraffic", "llama-70b", "ml.g4dn.2xlarge", 2)])
    _endpoint(
        sagemaker,
        "rerank",
        [
            ("blue", "rerank-v1", "ml.g4dn.xlarge", 1),
            ("green", "rerank-v2", "ml.m5.xlarge", 3),
        ],
    )

    result = sm.snapshot_endpoints(conn, sagemaker, snapshot_at=SNAPSHOT, page_size=1)

    assert (result.endpoints, result.rows, result.vanished) == (2, 3, ())
    # 2 ListEndpoints pages (page size 1) + 2 DescribeEndpoint + 2 DescribeEndpointConfig
    # + 2 ListTags.
    assert result.requests == 8
    assert _rows(conn) == [
        (SNAPSHOT, "us-east-1", "rerank", "InService", "rerank-config", "blue", "rerank-v1",
         "ml.g4dn.xlarge", 1, 1, 1),
        (SNAPSHOT, "us-east-1", "rerank", "InService", "rerank-config", "green", "rerank-v2",
         "ml.m5.xlarge", 3, 3, 3),
        (SNAPSHOT, "us-east-1", "support-llm", "InService", "support-llm-config", "AllTraffic",
         "llama-70b", "ml.g4dn.2xlarge", 2, 2, 2),
    ]  # fmt: skip
    arn, created, modified, raw = conn.execute(
        "select endpoint_arn, creation_time, last_modified_time, raw "
        "from raw.sagemaker_endpoint_snapshots where variant_name = 'green'"
    ).fetchone()
    described = sagemaker.describe_endpoint(EndpointName="rerank")
    assert arn == described["EndpointArn"]
    assert created == described["CreationTime"] and created.tzinfo is not None
    assert modified == described["LastModifiedTime"]
    assert raw["config_variant"]["InstanceType"] == "ml.m5.xlarge"
    assert raw["variant"]["VariantName"] == "green"
    assert "ResponseMetadata" not in raw["endpoint"]
    # The tags (the cost-allocation tag names the pipeline), {} for an untagged endpoint.
    assert dict(
        conn.execute(
            "select distinct endpoint_name, tags from raw.sagemaker_endpoint_snapshots"
        ).fetchall()
    ) == {"rerank": {"PipelineID": "rerank-pipeline"}, "support-llm": {}}


def test_snapshots_accumulate_and_retaking_one_replaces_it(
    sagemaker: Any, conn: psycopg.Connection[Any]
) -> None:
    _endpoint(sagemaker, "support-llm", [("AllTraffic", "llama-70b", "ml.g4dn.2xlarge", 2)])
    sm.snapshot_endpoints(conn, sagemaker, snapshot_at=SNAPSHOT)
    _endpoint(sagemaker, "batch-embed", [("AllTraffic", "embed", "ml.g4dn.xlarge", 1)])
    # Retaking the same snapshot (a task retry) replaces it rather than doubling it.
    again = sm.snapshot_endpoints(conn, sagemaker, snapshot_at=SNAPSHOT)
    later = sm.snapshot_endpoints(conn, sagemaker, snapshot_at=SNAPSHOT + timedelta(hours=1))
    assert (again.rows, later.rows) == (2, 2)
    counts = conn.execute(
        "select snapshot_at, count(*) from raw.sagemaker_endpoint_snapshots "
        "group by snapshot_at order by snapshot_at"
    ).fetchall()
    assert counts == [(SNAPSHOT, 2), (SNAPSHOT + timedelta(hours=1), 2)]


def test_an_endpoint_whose_config_was_deleted_keeps_its_counts(
    sagemaker: Any, conn: psycopg.Connection[Any]
) -> None:
    _endpoint(sagemaker, "orphan", [("AllTraffic", "m", "ml.g4dn.xlarge", 4)])
    sagemaker.delete_endpoint_config(EndpointConfigName="orphan-config")
    result = sm.snapshot_endpoints(conn, sagemaker, snapshot_at=SNAPSHOT)
    assert result.rows == 1
    assert _rows(conn) == [
        (SNAPSHOT, "us-east-1", "orphan", "InService", "orphan-config", "AllTraffic", None, None,
         None, 4, 4),
    ]  # fmt: skip


def test_no_endpoints_writes_an_empty_snapshot(
    sagemaker: Any, conn: psycopg.Connection[Any]
) -> None:
    result = sm.snapshot_endpoints(conn, sagemaker, snapshot_at=SNAPSHOT)
    assert (result.endpoints, result.rows) == (0, 0)
    assert _rows(conn) == []


def test_api_failure_raises_and_writes_nothing(conn: psycopg.Connection[Any]) -> None:
    client = boto3.client(
        "sagemaker",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(InfrastructureError, match="us-east-1"):
        sm.snapshot_endpoints(conn, client, snapshot_at=SNAPSHOT)
    assert _rows(conn) == []
