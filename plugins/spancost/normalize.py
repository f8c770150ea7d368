"""From a decoded span to a row of ``raw.otel_spans``: aliases, typed columns, privacy, rules.

Every attribute alias is mapped here, once. The GenAI conventions are followed:
input tokens include cached tokens, and output tokens include reasoning tokens.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from spancost.otlp import DecodedSpan

# Each typed column and the attribute names it is read from, first match wins.
ALIASES: dict[str, tuple[str, ...]] = {
    "provider": ("gen_ai.provider.name", "gen_ai.system"),
    "operation": ("gen_ai.operation.name",),
    "request_model": ("gen_ai.request.model", "llm.request.model", "llm.model_name"),
    "response_model": ("gen_ai.response.model", "llm.response.model"),
    "pipeline_id": ("pipeline.id",),
    "team": ("team", "team.name"),
    "feature": ("feature", "feature.name"),
    "environment": ("deployment.environment.name", "deployment.environment"),
    "agent_name": ("gen_ai.agent.name",),
    "agent_id": ("gen_ai.agent.id",),
    "conversation_id": ("gen_ai.conversation.id",),
    "region": ("cloud.region", "aws.region"),
    "sagemaker_endpoint": ("aws.sagemaker.endpoint.name", "sagemaker.endpoint.name"),
    "bedrock_model_id": ("aws.bedrock.model_id", "gen_ai.request.model.bedrock"),
    "host_type": ("host.type",),
}
TOKEN_ALIASES: dict[str, tuple[str, ...]] = {
    "input_tokens": (
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.prompt_tokens",
        "llm.usage.prompt_tokens",  # OpenLLMetry
        "llm.token_count.prompt",  # OpenInference
    ),
    "output_tokens": (
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.usage.completion_tokens",
        "llm.token_count.completion",
    ),
    "cache_read_tokens": (
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
    ),
    "cache_creation_tokens": (
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
    ),
    "reasoning_tokens": (
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.usage.reasoning_tokens",
    ),
}
COST_ALIASES = ("gen_ai.usage.cost", "cost.usd")
USER_ID_KEYS = ("user.id", "enduser.id", "gen_ai.user.id")

# Message content never reaches the database: exact keys and key prefixes.
DEFAULT_CONTENT_KEYS: tuple[str, ...] = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.prompt",
    "gen_ai.completion",
    "llm.prompts",
    "llm.completions",
    "llm.input_messages",
    "llm.output_messages",
    "traceloop.entity.input",
    "traceloop.entity.output",
)

MIN_TIME_NS = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000_000
MAX_FUTURE = timedelta(days=1)
MAX_TOKENS = 10**10


@dataclass(frozen=True)
class NormalizeSettings:
    """What normalisation needs from configuration."""

    user_id_salt: str
    content_keys: tuple[str, ...] = DEFAULT_CONTENT_KEYS
    max_attribute_bytes: int = 64 * 1024
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class Rejection:
    """A span row that broke a rule: kept aside in ops.rejected_spans with the reason."""

    trace_id: str | None
    span_id: str | None
    reason: str
    field: str
    value: str
    span: dict[str, Any]


def is_content_key(key: str, content_keys: tuple[str, ...]) -> bool:
    return key in content_keys or key.startswith(_prefixes(content_keys))


@functools.cache
def _prefixes(content_keys: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{key}." for key in content_keys)


def hash_user_id(user_id: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{user_id}".encode()).hexdigest()


def _lookup(names: tuple[str, ...], *layers: Mapping[str, Any]) -> Any:
    for layer in layers:
        for name in names:
            value = layer.get(name)
            if value is not None and value != "":
                return value
    return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _ns_to_datetime(nanos: int) -> datetime:
    return datetime.fromtimestamp(nanos // 1_000_000_000, UTC) + timedelta(
        microseconds=(nanos % 1_000_000_000) // 1000
    )


def _strip(attrs: Mapping[str, Any], settings: NormalizeSettings) -> dict[str, Any]:
    """The attributes without message content, with user ids hashed."""
    exact = settings.content_keys
    prefixes = _prefixes(exact)
    kept = {
        key: value
        for key, value in attrs.items()
        if key not in exact and not key.startswith(prefixes)
    }
    for key in USER_ID_KEYS:
        value = kept.get(key)
        if value is not None:
            kept[key] = hash_user_id(str(value), settings.user_id_salt)
    return kept


class _Reject(Exception):
    def __init__(self, reason: str, field: str, value: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.value = value


def _tokens(name: str, names: tuple[str, ...], attrs: Mapping[str, Any]) -> int | None:
    raw = _lookup(names, attrs)
    if raw is None:
        return None
    if isinstance(raw, bool):
        raise _Reject(f"{name} is not a number", names[0], raw)
    number: int | None = None
    if isinstance(raw, int):
        number = raw
    elif isinstance(raw, float) and raw.is_integer():
        number = int(raw)
    elif isinstance(raw, str) and raw.strip().removeprefix("-").isdigit():
        number = int(raw)
    if number is None:
        raise _Reject(f"{name} is not a whole number", names[0], raw)
    if number < 0:
        raise _Reject(f"{name} is negative", names[0], raw)
    if number > MAX_TOKENS:
        raise _Reject(f"{name} is implausibly large", names[0], raw)
    return number


def _cost(attrs: Mapping[str, Any]) -> Decimal | None:
    raw = _lookup(COST_ALIASES, attrs)
    if raw is None:
        return None
    try:
        value = Decimal(str(raw))
    except InvalidOperation as exc:
        raise _Reject("reported cost is not a number", COST_ALIASES[0], raw) from exc
    if not value.is_finite() or value < 0:
        raise _Reject("reported cost is negative or not finite", COST_ALIASES[0], raw)
    return value


class Normalizer:
    """Turns decoded spans into rows; resource-level work is done once per resource."""

    def __init__(self, settings: NormalizeSettings) -> None:
        self.settings = settings
        self.latest_ns = int((settings.now + MAX_FUTURE).timestamp()) * 1_000_000_000
        self._resources: dict[int, tuple[Mapping[str, Any], dict[str, Any], dict[str, Any]]] = {}

    def _resource(self, attrs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(stripped resource attributes, typed values found in them), cached per resource."""
        cached = self._resources.get(id(attrs))
        if cached is not None and cached[0] is attrs:
            return cached[1], cached[2]
        stripped = _strip(attrs, self.settings)
        typed = {name: _lookup(names, stripped) for name, names in ALIASES.items()}
        typed["user"] = _lookup(USER_ID_KEYS, stripped)
        if len(self._resources) > 10_000:
            self._resources.clear()
        self._resources[id(attrs)] = (attrs, stripped, typed)
        return stripped, typed

    def row(self, span: DecodedSpan) -> dict[str, Any] | Rejection:
        """The ``raw.otel_spans`` row of a span, or the Rejection saying which rule it broke."""
        attrs = _strip(span.attributes, self.settings)
        resource, resource_typed = self._resource(span.resource_attributes)
        try:
            return self._row(span, attrs, resource, resource_typed)
        except _Reject as bad:
            return Rejection(
                trace_id=span.trace_id,
                span_id=span.span_id,
                reason=bad.reason,
                field=bad.field,
                value=_text(bad.value) or "",
                span={
                    "name": span.name,
                    "start_time_unix_nano": span.start_time_unix_nano,
                    "end_time_unix_nano": span.end_time_unix_nano,
                    "attributes": attrs,
                    "resource_attributes": resource,
                },
            )

    def _row(
        self,
        span: DecodedSpan,
        attrs: dict[str, Any],
        resource: dict[str, Any],
        resource_typed: dict[str, Any],
    ) -> dict[str, Any]:
        settings = self.settings
        for problem_field, message in span.problems:
            raise _Reject(message, problem_field, "")
        if not span.trace_id or len(span.trace_id) != 32:
            raise _Reject("span has no valid trace id", "traceId", span.trace_id)
        if not span.span_id or len(span.span_id) != 16:
            raise _Reject("span has no valid span id", "spanId", span.span_id)
        start_ns, end_ns = span.start_time_unix_nano, span.end_time_unix_nano
        for name, nanos in (("startTimeUnixNano", start_ns), ("endTimeUnixNano", end_ns)):
            if nanos is None:
                raise _Reject("span has no timestamp", name, nanos)
            if nanos < MIN_TIME_NS:
                raise _Reject("timestamp is before 2000-01-01", name, nanos)
            if nanos > self.latest_ns:
                raise _Reject("timestamp is more than a day in the future", name, nanos)
        assert start_ns is not None and end_ns is not None
        if end_ns < start_ns:
            raise _Reject("span ends before it starts", "endTimeUnixNano", end_ns)
        limit = settings.max_attribute_bytes
        for key, value in attrs.items():
            if isinstance(value, str) and len(value) > limit:
                raise _Reject(f"attribute value is over {limit} bytes", key, value[:200] + "…")

        if _USAGE_KEYS.isdisjoint(attrs):
            tokens: dict[str, int | None] = dict.fromkeys(TOKEN_ALIASES)
        else:
            tokens = {name: _tokens(name, names, attrs) for name, names in TOKEN_ALIASES.items()}
        typed = dict(resource_typed)
        del typed["user"]
        hits = _ALIAS_KEYS.intersection(attrs)
        if hits:
            # The best-ranked alias present on the span wins over the resource's value.
            best: dict[str, tuple[int, Any]] = {}
            for key in hits:
                value = attrs[key]
                if value is None or value == "":
                    continue
                column, rank = _ALIAS_INDEX[key]
                if column not in best or rank < best[column][0]:
                    best[column] = (rank, value)
            for column, (_, value) in best.items():
                typed[column] = value
        typed = {name: _text(value) for name, value in typed.items()}
        user = _lookup(USER_ID_KEYS, attrs) or resource_typed["user"]  # hashed by _strip
        return {
            "trace_id": span.trace_id,
            "span_id": span.span_id,
            "parent_span_id": span.parent_span_id,
            "name": span.name,
            "kind": span.kind,
            "start_time": _ns_to_datetime(start_ns),
            "end_time": _ns_to_datetime(end_ns),
            "status_code": span.status_code,
            "status_message": span.status_message,
            "service_name": _text(resource.get("service.name")),
            "scope_name": span.scope_name,
            "scope_version": span.scope_version,
            **typed,
            **tokens,
            "user_id_hash": _text(user),
            "reported_cost_usd": None if _COST_KEYS.isdisjoint(attrs) else _cost(attrs),
            "attributes": attrs,
            "resource_attributes": resource,
        }


# The keys of a row, in order: the loader COPYs ``row.values()`` under these column names.
ROW_COLUMNS: tuple[str, ...] = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "start_time",
    "end_time",
    "status_code",
    "status_message",
    "service_name",
    "scope_name",
    "scope_version",
    *ALIASES,
    *TOKEN_ALIASES,
    "user_id_hash",
    "reported_cost_usd",
    "attributes",
    "resource_attributes",
)
_ALIAS_INDEX: dict[str, tuple[str, int]] = {
    key: (column, rank) for column, names in ALIASES.items() for rank, key in enumerate(names)
}
_ALIAS_KEYS = frozenset(_ALIAS_INDEX)
_USAGE_KEYS = frozenset(name for names in TOKEN_ALIASES.values() for name in names)
_COST_KEYS = frozenset(COST_ALIASES)


def to_row(span: DecodedSpan, settings: NormalizeSettings) -> dict[str, Any] | Rejection:
    """The row of one span (see :class:`Normalizer`, which is faster for many spans)."""
    return Normalizer(settings).row(span)
