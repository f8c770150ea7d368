"""Configuration, read once from environment variables into frozen dataclasses.

In Airflow the same values come from connections and params; the DAGs build
these objects and pass them in. Nothing here is a secret except the salt, which
is never logged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from spancost.errors import ConfigError
from spancost.spans.normalize import (
    DEFAULT_CONTENT_KEYS,
    DEFAULT_MAX_ATTRIBUTES,
    DEFAULT_MAX_SPANS_PER_OBJECT,
)
from spancost.spans.otlp import (
    DEFAULT_MAX_ATTRIBUTE_DEPTH,
    DEFAULT_MAX_COMPRESSION_RATIO,
    MAX_ATTRIBUTE_DEPTH,
)

DEFAULT_PARTITION_FORMAT = "year=%Y/month=%m/day=%d/hour=%H/minute=%M"


@dataclass(frozen=True)
class SpanSource:
    """Where the OpenTelemetry Collector's awss3exporter writes trace exports."""

    bucket: str
    prefix: str = ""
    base_prefix: str = ""
    partition_format: str = DEFAULT_PARTITION_FORMAT
    partition_timezone: str = "UTC"
    file_prefix: str = ""
    lateness: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class Settings:
    """Ingestion settings; :func:`from_env` reads them from ``SPANCOST_*`` variables.

    ``load_workers`` defaults to 0 here (prepare in the loading process) and to
    :func:`default_load_workers` in :func:`from_env`, which the DAG and the CLI use.
    """

    spans: SpanSource
    user_id_salt: str = field(repr=False)
    content_keys: tuple[str, ...] = DEFAULT_CONTENT_KEYS
    max_attribute_bytes: int = 64 * 1024
    max_attribute_depth: int = DEFAULT_MAX_ATTRIBUTE_DEPTH
    max_attributes: int = DEFAULT_MAX_ATTRIBUTES
    max_spans_per_object: int = DEFAULT_MAX_SPANS_PER_OBJECT
    max_decompressed_bytes: int = 1 << 30
    max_compression_ratio: int = DEFAULT_MAX_COMPRESSION_RATIO
    stream_object_bytes: int = 8 << 20
    stream_chunk_bytes: int = 16 << 20
    load_workers: int = 0
    # Exports per mapped span-load task of spancost_ingest (SPANCOST_LOAD_CHUNK_OBJECTS).
    load_chunk_objects: int = 100
    validate: bool = True

    def __post_init__(self) -> None:
        if self.load_chunk_objects < 1:
            raise ConfigError(
                f"SPANCOST_LOAD_CHUNK_OBJECTS must be 1 or more, got {self.load_chunk_objects}"
            )
        # Deeper values are cut before decoding (otlp.MAX_JSON_DEPTH), so a larger
        # limit could no longer see them and would load them cut short.
        if not 1 <= self.max_attribute_depth <= MAX_ATTRIBUTE_DEPTH:
            raise ConfigError(
                f"SPANCOST_MAX_ATTRIBUTE_DEPTH must be between 1 and {MAX_ATTRIBUTE_DEPTH}, "
                f"got {self.max_attribute_depth}"
            )


# Each worker holds ~150 MiB, ~400 MiB once it has imported Great Expectations for the gate.
MAX_DEFAULT_LOAD_WORKERS = 4


def default_load_workers() -> int:
    """As many workers as CPUs, up to MAX_DEFAULT_LOAD_WORKERS (memory grows with each)."""
    return min(os.cpu_count() or 1, MAX_DEFAULT_LOAD_WORKERS)


def utc_time(value: str | datetime, what: str = "time") -> datetime:
    """An ISO 8601 text or a datetime (pendulum included) as a plain ``datetime`` in UTC.

    A naive value is taken as UTC. Airflow hands out pendulum objects, whose
    arithmetic with stdlib timezones can drop the offset, so they are rebuilt
    from their text.
    """
    text = value if isinstance(value, str) else value.isoformat()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"{what}: not an ISO 8601 time: {text!r}") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def home() -> Path:
    """The folder where spancost keeps local state (private Postgres, local AWS, Airflow)."""
    return Path(os.environ.get("SPANCOST_HOME", ".spancost")).resolve()


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from exc


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    bucket = env.get("SPANCOST_SPANS_BUCKET", "")
    if not bucket:
        raise ConfigError(
            "SPANCOST_SPANS_BUCKET is not set: name the bucket the collector writes to"
        )
    salt = env.get("SPANCOST_USER_ID_SALT", "")
    if not salt:
        raise ConfigError("SPANCOST_USER_ID_SALT is not set: user ids are hashed with it")
    extra_content = tuple(
        key.strip() for key in env.get("SPANCOST_CONTENT_ATTRIBUTES", "").split(",") if key.strip()
    )
    return Settings(
        spans=SpanSource(
            bucket=bucket,
            prefix=env.get("SPANCOST_SPANS_PREFIX", "").strip("/"),
            base_prefix=env.get("SPANCOST_SPANS_BASE_PREFIX", "").strip("/"),
            partition_format=env.get("SPANCOST_SPANS_PARTITION_FORMAT", DEFAULT_PARTITION_FORMAT),
            partition_timezone=env.get("SPANCOST_SPANS_PARTITION_TIMEZONE", "UTC"),
            file_prefix=env.get("SPANCOST_SPANS_FILE_PREFIX", ""),
            lateness=timedelta(minutes=_int(env, "SPANCOST_SPANS_LATENESS_MINUTES", 15)),
        ),
        user_id_salt=salt,
        content_keys=DEFAULT_CONTENT_KEYS + extra_content,
        max_attribute_bytes=_int(env, "SPANCOST_MAX_ATTRIBUTE_BYTES", 64 * 1024),
        max_attribute_depth=_int(env, "SPANCOST_MAX_ATTRIBUTE_DEPTH", DEFAULT_MAX_ATTRIBUTE_DEPTH),
        max_attributes=_int(env, "SPANCOST_MAX_ATTRIBUTES", DEFAULT_MAX_ATTRIBUTES),
        max_spans_per_object=_int(
            env, "SPANCOST_MAX_SPANS_PER_OBJECT", DEFAULT_MAX_SPANS_PER_OBJECT
        ),
        max_decompressed_bytes=_int(env, "SPANCOST_MAX_DECOMPRESSED_BYTES", 1 << 30),
        max_compression_ratio=_int(
            env, "SPANCOST_MAX_COMPRESSION_RATIO", DEFAULT_MAX_COMPRESSION_RATIO
        ),
        stream_object_bytes=_int(env, "SPANCOST_STREAM_OBJECT_BYTES", 8 << 20),
        stream_chunk_bytes=_int(env, "SPANCOST_STREAM_CHUNK_BYTES", 16 << 20),
        load_workers=_int(env, "SPANCOST_LOAD_WORKERS", default_load_workers()),
        load_chunk_objects=_int(env, "SPANCOST_LOAD_CHUNK_OBJECTS", 100),
        validate=env.get("SPANCOST_VALIDATE", "1") not in ("0", "false", "no"),
    )
