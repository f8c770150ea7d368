"""From decoded OTLP requests to rows of ``raw.otel_spans``: aliases, typed columns, privacy, rules.

Every attribute alias is mapped here, once. The GenAI conventions are followed:
input tokens include cached tokens, and output tokens include reasoning tokens.

This is the hot loop of ingestion, so it walks the decoded structs once per
span: each attribute key is classified once per object (kept, message content,
user id, or the source of a typed column) and the answer is looked up after
that, so a span costs one dictionary lookup per attribute.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from spancost.errors import BadExport
from spancost.spans.otlp import (
    DEFAULT_MAX_ATTRIBUTE_DEPTH,
    DEFAULT_MAX_DECOMPRESSED,
    SPAN_KINDS,
    STATUS_CODES,
    ExportRequest,
    KeyValue,
    Span,
    TooDeep,
    any_value,
    decode_object,
    enum_value,
    nanos,
    normalize_id,
)

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
        # The Anthropic Python SDK's own tracing (anthropic 2.16, _tracing.py).
        "gen_ai.usage.cache_write.input_tokens",
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
DEFAULT_MAX_ATTRIBUTES = 1024  # per attribute list: span, resource, event or link
DEFAULT_MAX_SPANS_PER_OBJECT = 1_000_000
ZERO_PARENT_SPAN_ID = "zero_parent_span_id"  # counted in changes: read as "no parent"
_ZERO_IDS = {"0" * 32, "0" * 16}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class NormalizeSettings:
    """What normalisation needs from configuration."""

    user_id_salt: str
    content_keys: tuple[str, ...] = DEFAULT_CONTENT_KEYS
    max_attribute_bytes: int = 64 * 1024
    max_attribute_depth: int = DEFAULT_MAX_ATTRIBUTE_DEPTH
    max_attributes: int = DEFAULT_MAX_ATTRIBUTES
    max_spans_per_object: int = DEFAULT_MAX_SPANS_PER_OBJECT
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


@dataclass
class Normalized:
    """The rows and the rejected spans of one object, in the order of the export, and
    the values changed on the way (counted by kind: ``invalid_utf8``, ``nul_replaced``…)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    changes: Counter[str] = field(default_factory=Counter)


def too_many_spans(where: str, most: int) -> BadExport:
    """The error that quarantines an object of more than ``most`` spans."""
    return BadExport(
        f"{where}: more than {most} spans in one object (SPANCOST_MAX_SPANS_PER_OBJECT)",
        error_type="TooManySpans",
    )


def is_content_key(key: str, content_keys: tuple[str, ...]) -> bool:
    return key in content_keys or key.startswith(_prefixes(content_keys))


@functools.cache
def _prefixes(content_keys: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{key}." for key in content_keys)


def hash_user_id(user_id: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{user_id}".encode()).hexdigest()


def _text(value: Any) -> str | None:
    if value is None or value.__class__ is str:
        return value  # type: ignore[no-any-return]
    return json.dumps(value)


_SECONDS: dict[int, str] = {}


def _time(nanos_: int) -> str:
    """A UTC timestamp as text Postgres reads for timestamptz, to the microsecond.

    Rows carry times as text: formatting a datetime costs microseconds on each
    of millions of rows, so the text of each second is made once and cached.
    """
    seconds, rest = divmod(nanos_, 1_000_000_000)
    text = _SECONDS.get(seconds)
    if text is None:
        if len(_SECONDS) > 100_000:
            _SECONDS.clear()
        text = _SECONDS[seconds] = f"{_EPOCH + timedelta(seconds=seconds):%Y-%m-%d %H:%M:%S}"
    return f"{text}.{rest // 1000:06d}+00:00"


class _Reject(Exception):
    def __init__(self, reason: str, field: str, value: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.value = value


def _tokens(name: str, key: str, raw: Any) -> int:
    number: int | None = None
    if raw.__class__ is int:
        number = raw
    elif isinstance(raw, bool):
        raise _Reject(f"{name} is not a number", key, raw)
    elif isinstance(raw, float) and raw.is_integer():
        number = int(raw)
    elif isinstance(raw, str) and raw.strip().removeprefix("-").isdigit():
        number = int(raw)
    if number is None:
        raise _Reject(f"{name} is not a whole number", key, raw)
    if number < 0:
        raise _Reject(f"{name} is negative", key, raw)
    if number > MAX_TOKENS:
        raise _Reject(f"{name} is implausibly large", key, raw)
    return number


def _cost(key: str, raw: Any) -> Decimal:
    try:
        value = Decimal(str(raw))
    except InvalidOperation as exc:
        raise _Reject("reported cost is not a number", key, raw) from exc
    if not value.is_finite() or value < 0:
        raise _Reject("reported cost is negative or not finite", key, raw)
    return value


# Typed-column slots: the ALIASES columns, then the token columns, then cost and user.
_ALIAS_COLUMNS = tuple(ALIASES)
_TOKEN_COLUMNS = tuple(TOKEN_ALIASES)
_FIRST_TOKEN = len(_ALIAS_COLUMNS)
_COST_SLOT = _FIRST_TOKEN + len(_TOKEN_COLUMNS)
_USER_SLOT = _COST_SLOT + 1
_SOURCES: dict[str, tuple[int, int]] = {
    **{
        key: (slot, rank)
        for slot, names in enumerate(ALIASES.values())
        for rank, key in enumerate(names)
    },
    **{
        key: (_FIRST_TOKEN + slot, rank)
        for slot, names in enumerate(TOKEN_ALIASES.values())
        for rank, key in enumerate(names)
    },
    **{key: (_COST_SLOT, rank) for rank, key in enumerate(COST_ALIASES)},
    **{key: (_USER_SLOT, rank) for rank, key in enumerate(USER_ID_KEYS)},
}
# What to do with an attribute: keep it, drop it (content), or keep it and feed a slot.
_KEEP = (0, 0, 0)
_DROP = (1, 0, 0)
_MAX_CACHED_KEYS = 50_000


# The best-ranked non-empty value seen for each typed slot: slot -> (rank, key, value).
_Found = dict[int, tuple[int, str, Any]]


class _Resource:
    """A resource's stripped attributes and the typed values it provides, built once."""

    __slots__ = ("attributes", "problem", "service_name", "template", "typed", "user")

    def __init__(
        self,
        attributes: dict[str, Any],
        found: _Found | None,
        problem: tuple[str, str, Any] | None = None,
    ) -> None:
        self.attributes = attributes
        self.problem = problem  # breaks a rule: every span of the resource is rejected
        self.service_name = _text(attributes.get("service.name"))
        values = found or {}
        self.typed: list[str | None] = [
            _text(values[slot][2]) if slot in values else None
            for slot in range(len(_ALIAS_COLUMNS))
        ]
        self.user: str | None = _text(values[_USER_SLOT][2]) if _USER_SLOT in values else None
        # A row of this resource before its span's values are set over a copy of it:
        # what the resource gives its spans is set once, the keys in ROW_COLUMNS order.
        self.template: dict[str, Any] = dict.fromkeys(ROW_COLUMNS)
        self.template.update(zip(_ALIAS_COLUMNS, self.typed, strict=True))
        self.template["service_name"] = self.service_name
        self.template["user_id_hash"] = self.user
        self.template["resource_attributes"] = attributes


class Normalizer:
    """Turns decoded export requests into rows and rejections, one pass per span."""

    def __init__(self, settings: NormalizeSettings) -> None:
        self.settings = settings
        self.latest_ns = int((settings.now + MAX_FUTURE).timestamp()) * 1_000_000_000
        self._salt = settings.user_id_salt
        self._limit = settings.max_attribute_bytes
        self._depth = settings.max_attribute_depth
        self._count = settings.max_attributes
        self.changes: Counter[str] = Counter()
        self._actions: dict[str, tuple[int, int, int]] = {}
        self._users: dict[str, str] = {}

    def _user_hash(self, user: Any) -> str:
        """The salted hash of a user id; users recur, so each is hashed once per object."""
        if user.__class__ is not str:  # a number, or a list, which cannot key a dict
            return hash_user_id(str(user), self._salt)
        hashed = self._users.get(user)
        if hashed is None:
            hashed = hash_user_id(user, self._salt)
            if len(self._users) < _MAX_CACHED_KEYS:
                self._users[user] = hashed
        return hashed

    def _classify(self, key: str) -> tuple[int, int, int]:
        if is_content_key(key, self.settings.content_keys):
            action = _DROP
        elif key in _SOURCES:
            slot, rank = _SOURCES[key]
            action = (2, slot, rank)
        else:
            action = _KEEP
        if len(self._actions) < _MAX_CACHED_KEYS:
            self._actions[key] = action
        return action

    def _attributes(
        self, items: list[KeyValue], found: _Found | None
    ) -> tuple[dict[str, Any], tuple[str, str, Any] | None]:
        """Stripped attributes (content dropped, user ids hashed) and the first problem.

        Typed-column sources are offered to ``found`` when it is given. The
        problem is (field, reason, value) for a value that cannot be converted
        or is over the size limit.
        """
        actions = self._actions
        limit = self._limit
        out: dict[str, Any] = {}
        problem: tuple[str, str, Any] | None = None
        if len(items) > self._count:
            problem = (
                "attributes",
                f"{len(items)} attributes, over the limit of {self._count}",
                str(len(items)),
            )
            items = items[: self._count]  # the span is rejected: the rest is not kept
        for kv in items:
            key = kv.key
            action = actions.get(key) or self._classify(key)
            if action is _DROP:
                continue
            raw = kv.value
            if raw is None:
                value: Any = None
            else:
                value = raw.string_value
                if value is None:
                    try:
                        # An int or a finite double: what any_value gives, without the call.
                        number = raw.int_value
                        if raw.bool_value is not None:
                            value = any_value(raw, self._depth, self.changes)
                        elif number is not None:
                            value = int(number)
                        elif raw.double_value is not None:
                            value = float(raw.double_value)
                            if not math.isfinite(value):  # kept as text, and counted
                                value = any_value(raw, self._depth, self.changes)
                        else:
                            value = any_value(raw, self._depth, self.changes)
                    except TooDeep as exc:
                        if problem is None:
                            problem = (key, str(exc), "")
                        value = f"<dropped: {exc}>"
                    except (ValueError, TypeError) as exc:
                        if problem is None:
                            problem = (key, f"bad attribute value: {exc}", "")
                        value = msgspec.json.encode(raw).decode()[:200]  # kept as sent
                    else:
                        size = _size(value) if value.__class__ in _SIZED else 0
                        if size > limit:
                            if problem is None:
                                problem = (key, f"attribute value is over {limit} bytes", "")
                            value = f"<dropped: {size} bytes, over the {limit}-byte limit>"
                elif len(value) > limit:
                    if problem is None:
                        problem = (key, f"attribute value is over {limit} bytes", value[:200] + "…")
                    value = f"<dropped: {len(value)} characters, over the {limit}-byte limit>"
            if action is not _KEEP and value is not None and value != "":
                slot = action[1]
                if slot == _USER_SLOT:
                    value = self._user_hash(value)
                if found is not None:
                    current = found.get(slot)
                    if current is None or action[2] < current[0]:
                        found[slot] = (action[2], key, value)
            out[key] = value
        return out, problem

    def resource(self, items: list[KeyValue]) -> _Resource:
        found: _Found = {}
        attributes, problem = self._attributes(items, found)
        if problem is not None:
            problem = (f"resource.{problem[0]}", *problem[1:])
        return _Resource(attributes, found, problem)

    def normalize(self, requests: Iterable[ExportRequest], where: str = "") -> Normalized:
        """Rows and rejections of every span in ``requests``.

        Raises BadExport when the requests hold more spans than
        ``max_spans_per_object``: the object is quarantined whole.
        """
        result = Normalized(changes=self.changes)
        rows = result.rows
        rejections = result.rejections
        most = self.settings.max_spans_per_object
        for request in requests:
            for resource_spans in request.resource_spans:
                resource = self.resource(
                    resource_spans.resource.attributes if resource_spans.resource else []
                )
                for scope_spans in resource_spans.scope_spans:
                    scope = scope_spans.scope
                    scope_name = (scope.name or None) if scope else None
                    scope_version = (scope.version or None) if scope else None
                    if len(rows) + len(rejections) + len(scope_spans.spans) > most:
                        raise too_many_spans(where, most)
                    for span in scope_spans.spans:
                        row = self.row(span, resource, scope_name, scope_version)
                        if row.__class__ is dict:
                            rows.append(row)  # type: ignore[arg-type]
                        else:
                            rejections.append(row)  # type: ignore[arg-type]
        return result

    def row(
        self,
        span: Span,
        resource: _Resource,
        scope_name: str | None = None,
        scope_version: str | None = None,
    ) -> dict[str, Any] | Rejection:
        """The ``raw.otel_spans`` row of a span, or the Rejection saying which rule it broke."""
        found: _Found = {}
        attrs, problem = self._attributes(span.attributes, found)
        trace_id: str | None = span.trace_id
        span_id: str | None = span.span_id
        try:
            trace_id = _valid_id(span.trace_id, 16, "traceId", "trace id")
            span_id = _valid_id(span.span_id, 8, "spanId", "span id")
            row = self._row(span, attrs, problem, found, resource, trace_id, span_id)
        except _Reject as bad:
            return Rejection(
                trace_id=trace_id or None,
                span_id=span_id or None,
                reason=bad.reason,
                field=bad.field,
                value=_text(bad.value) or "",
                span={
                    "name": span.name,
                    "start_time_unix_nano": span.start_time_unix_nano,
                    "end_time_unix_nano": span.end_time_unix_nano,
                    "attributes": attrs,
                    "resource_attributes": resource.attributes,
                },
            )
        if scope_name is not None or scope_version is not None:
            row["scope_name"] = scope_name
            row["scope_version"] = scope_version
        return row

    def _row(
        self,
        span: Span,
        attrs: dict[str, Any],
        problem: tuple[str, str, Any] | None,
        found: _Found,
        resource: _Resource,
        trace_id: str | None,
        span_id: str | None,
    ) -> dict[str, Any]:
        parent_span_id = (
            _id(span.parent_span_id, 8, "parentSpanId") if span.parent_span_id else None
        )
        if parent_span_id in _ZERO_IDS:  # some converters write it for a root span
            parent_span_id = None
            self.changes[ZERO_PARENT_SPAN_ID] += 1
        kind = _enum(span.kind, SPAN_KINDS, "kind")
        status = span.status
        status_code = _enum(status.code, STATUS_CODES, "status.code") if status else 0
        start_ns = _nanos(span.start_time_unix_nano, "startTimeUnixNano")
        end_ns = _nanos(span.end_time_unix_nano, "endTimeUnixNano")
        if problem is not None:
            raise _Reject(problem[1], problem[0], problem[2])
        if resource.problem is not None:
            raise _Reject(resource.problem[1], resource.problem[0], resource.problem[2])
        events = self._events(span) if span.events else None
        links = self._links(span) if span.links else None
        if not trace_id:
            raise _Reject("span has no valid trace id", "traceId", trace_id)
        if not span_id:
            raise _Reject("span has no valid span id", "spanId", span_id)
        latest = self.latest_ns
        for name, value in (("startTimeUnixNano", start_ns), ("endTimeUnixNano", end_ns)):
            if value is None:
                raise _Reject("span has no timestamp", name, value)
            if value < MIN_TIME_NS:
                raise _Reject("timestamp is before 2000-01-01", name, value)
            if value > latest:
                raise _Reject("timestamp is more than a day in the future", name, value)
        assert start_ns is not None and end_ns is not None
        if end_ns < start_ns:
            raise _Reject("span ends before it starts", "endTimeUnixNano", end_ns)

        # The resource's template holds its typed values, the scope is set by row();
        # the span's own values go over a copy (its typed attributes over the resource's).
        row = resource.template.copy()
        row["trace_id"] = trace_id
        row["span_id"] = span_id
        row["parent_span_id"] = parent_span_id
        row["name"] = span.name
        row["kind"] = kind
        row["start_time"] = _time(start_ns)
        row["end_time"] = _time(end_ns)
        row["status_code"] = status_code
        if status is not None and status.message:
            row["status_message"] = status.message
        for slot, (_, key, value) in found.items():
            if slot < _FIRST_TOKEN:
                row[_ALIAS_COLUMNS[slot]] = value if value.__class__ is str else _text(value)
            elif slot < _COST_SLOT:
                column = _TOKEN_COLUMNS[slot - _FIRST_TOKEN]
                row[column] = _tokens(column, key, value)
            elif slot == _COST_SLOT:
                row["reported_cost_usd"] = _cost(key, value)
            else:
                row["user_id_hash"] = _text(value)
        if events is not None:
            row["events"] = events
        if links is not None:
            row["links"] = links
        row["attributes"] = attrs
        return row

    def _nested_attributes(self, items: list[KeyValue], where: str) -> dict[str, Any]:
        """An event's or a link's attributes; a broken rule rejects the span, naming them."""
        attributes, problem = self._attributes(items, None)
        if problem is not None:
            raise _Reject(problem[1], f"{where}.{problem[0]}", problem[2])
        return attributes

    def _events(self, span: Span) -> list[dict[str, Any]]:
        return [
            {
                "name": event.name,
                "time_unix_nano": str(event.time_unix_nano or ""),
                "attributes": self._nested_attributes(event.attributes, f"events[{index}]"),
            }
            for index, event in enumerate(span.events)
        ]

    def _links(self, span: Span) -> list[dict[str, Any]]:
        links = []
        for index, link in enumerate(span.links):
            try:
                trace_id = normalize_id(link.trace_id, 16)
                span_id = normalize_id(link.span_id, 8)
            except ValueError:
                trace_id, span_id = link.trace_id, link.span_id  # kept as sent: a link is context
            links.append(
                {
                    "trace_id": trace_id,
                    "span_id": span_id,
                    "attributes": self._nested_attributes(link.attributes, f"links[{index}]"),
                }
            )
        return links


def _id(raw: str, size: int, field: str) -> str | None:
    """A span or trace id as lowercase hex, or the rejection naming the field."""
    if len(raw) == size * 2:  # hex, as nearly always: normalize_id's first case, inline
        try:
            bytes.fromhex(raw)
        except ValueError:
            pass
        else:
            return raw.lower()
    try:
        return normalize_id(raw, size)
    except ValueError as exc:
        raise _Reject(str(exc), field, raw) from exc


def _valid_id(raw: str, size: int, field: str, name: str) -> str | None:
    """Like :func:`_id`, and an all-zero id, which OTLP defines as invalid, is rejected."""
    value = _id(raw, size, field)
    if value in _ZERO_IDS:
        raise _Reject(f"{name} is all zeros, which OTLP defines as invalid", field, raw)
    return value


_SIZED = frozenset((str, list, dict))  # value types that can pass the size limit


def _size(value: str | list[Any] | dict[str, Any]) -> int:
    """The stored size of an attribute value: its length, or its JSON for arrays and maps."""
    return len(value) if value.__class__ is str else len(msgspec.json.encode(value))


def _enum(value: int | str | None, names: dict[str, int], field: str) -> int:
    if value.__class__ is int:
        return value  # type: ignore[return-value]
    try:
        return enum_value(value, names, field)
    except ValueError as exc:
        raise _Reject(str(exc), field, value) from exc


def _nanos(value: int | str | None, field: str) -> int | None:
    try:
        return nanos(value)
    except ValueError as exc:
        raise _Reject("timestamp is not an integer", field, value) from exc


# The keys of a row, in order: the loader COPYs them under these column names.
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
    "events",
    "links",
    "attributes",
    "resource_attributes",
)


def normalize_object(
    key: str,
    data: bytes,
    settings: NormalizeSettings,
    *,
    limit: int = DEFAULT_MAX_DECOMPRESSED,
) -> Normalized:
    """Decode one S3 object and normalise its spans; raises BadExport naming the object."""
    normalizer = Normalizer(settings)
    requests = decode_object(key, data, limit=limit, changes=normalizer.changes)
    return normalizer.normalize(requests, where=key)
