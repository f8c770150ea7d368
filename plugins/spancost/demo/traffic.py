"""Deterministic demo traffic: GenAI traces made with the real OpenTelemetry SDK.

:func:`generate_spans` runs a seeded simulation of four AI pipelines through a
real ``TracerProvider`` (one per service and environment) and collects the
finished :class:`ReadableSpan` objects in memory. Ids come from a seeded
:class:`IdGenerator` and every span has explicit start and end times, so the
same seed and window always give the same spans. Traces are generated hour by
hour from a seed derived from the hour, so a short window holds exactly the
traces that a longer window holding it would.

:func:`build_objects` batches the spans the way a collector with the
awss3exporter (``otlp_json``, gzip) would, and :func:`upload_objects` puts
them into a bucket with the same headers the exporter sets.

What the traffic holds, on purpose, because spancost must handle it:

- attribution (``pipeline.id``, ``team``, ``feature``, ``user.id``) on every
  span, copied from baggage by a span processor;
- multi-agent, single-agent and plain chat traces, with tool spans;
- GenAI usage per the semantic conventions (input tokens include cache reads
  and writes, output tokens include reasoning);
- message content attributes, which must never reach the database;
- LLM calls that fail (``429`` or ``timeout``, no usage) and are retried as a
  sibling, and a few traces whose root ends in an error;
- on request (:class:`RetryLoop`), an incident: for an hour, one feature's agent
  keeps calling a tool that fails and asks its model again each time, so that
  feature's cost several times over, the way a runaway agent loop looks.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from opentelemetry import baggage
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.version import __version__ as SDK_VERSION
from opentelemetry.trace import NoOpTracer, SpanKind, Status, StatusCode

from spancost.demo.otlp_export import (
    UNIQUE_MAX,
    UNIQUE_MIN,
    encode_export_request,
    object_key,
)
from spancost.errors import SpancostError

log = logging.getLogger(__name__)

SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"
AGENT_SCOPE = "spancost.demo.agents"
LLM_SCOPE = "spancost.demo.genai"
SCOPE_VERSION = "1.0.0"
ATTRIBUTION_KEYS = ("pipeline.id", "team", "feature", "user.id")

RETRY_RATE = 0.03  # share of LLM calls whose first attempt fails
ROOT_ERROR_RATE = 0.01  # share of traces whose root ends in an error
NS = 1_000_000_000
MS = 1_000_000


class DemoError(SpancostError, ValueError):
    """The demo generator was asked for something it cannot make."""


# --- what the simulated world looks like ---------------------------------------------


BEDROCK_HAIKU = "us.anthropic.claude-haiku-4-5-20251001-v1:0"


@dataclass(frozen=True)
class Model:
    name: str
    provider: str
    server_address: str
    reasons: bool  # emits reasoning tokens (sometimes)
    cache_writes: bool  # reports cache creation tokens (anthropic)


MODELS: dict[str, Model] = {
    model.name: model
    for model in (
        Model("gpt-5.4", "openai", "api.openai.com", reasons=True, cache_writes=False),
        Model("gpt-5.4-mini", "openai", "api.openai.com", reasons=False, cache_writes=False),
        Model("o4-mini", "openai", "api.openai.com", reasons=True, cache_writes=False),
        Model(
            "claude-sonnet-4.6", "anthropic", "api.anthropic.com", reasons=False, cache_writes=True
        ),
        Model(
            "claude-haiku-4.5", "anthropic", "api.anthropic.com", reasons=False, cache_writes=True
        ),
        # Claude through Amazon Bedrock: a cross-region inference profile id, billed by
        # AWS (Marketplace), so Cost Explorer sees it too.
        Model(
            BEDROCK_HAIKU,
            "aws.bedrock",
            "bedrock-runtime.us-east-1.amazonaws.com",
            reasons=False,
            cache_writes=True,
        ),
        Model(
            "gemini-2.5-pro",
            "gcp.gemini",
            "generativelanguage.googleapis.com",
            reasons=True,
            cache_writes=False,
        ),
    )
}

_FINISH = {
    "openai": {"tool": "tool_calls", "final": "stop", "length": "length"},
    "anthropic": {"tool": "tool_use", "final": "end_turn", "length": "max_tokens"},
    "aws.bedrock": {"tool": "tool_use", "final": "end_turn", "length": "max_tokens"},
    "gcp.gemini": {"tool": "stop", "final": "stop", "length": "max_tokens"},
}


@dataclass(frozen=True)
class Role:
    """An agent (or, in a plain chat pipeline, one step) and how its LLM calls look."""

    name: str
    models: tuple[str, ...]
    calls: tuple[int, int]  # inclusive range of LLM calls
    input_tokens: tuple[int, int]
    output_tokens: tuple[int, int]
    tools: tuple[str, ...] = ()
    run_probability: float = 1.0
    reasoning_probability: float = 0.0


@dataclass(frozen=True)
class Pipeline:
    pipeline_id: str
    team: str
    service_name: str
    region: str
    features: tuple[str, ...]
    shape: Literal["multi_agent", "single_agent", "chat"]
    roles: tuple[Role, ...]  # multi_agent: supervisor first, then the workers
    weight: float
    staging_share: float
    capture_content: bool  # prod captures message content (staging always does)
    route: str = ""
    prompt: str = ""


PIPELINES: tuple[Pipeline, ...] = (
    Pipeline(
        pipeline_id="support-triage",
        team="support",
        service_name="support-triage-api",
        region="us-east-1",
        features=("ticket-triage", "reply-draft"),
        shape="multi_agent",
        roles=(
            Role("supervisor", ("gpt-5.4-mini",), (1, 1), (600, 2500), (20, 200)),
            Role(
                "researcher",
                ("claude-sonnet-4.6",),
                (1, 3),
                (3000, 30000),
                (150, 1200),
                tools=("search_kb", "get_ticket_history"),
            ),
            Role(
                "writer", ("gpt-5.4",), (1, 1), (2000, 9000), (200, 1500), reasoning_probability=0.3
            ),
            Role(
                "critic",
                ("o4-mini",),
                (1, 1),
                (1500, 7000),
                (50, 600),
                run_probability=0.6,
                reasoning_probability=1.0,
            ),
        ),
        weight=0.35,
        staging_share=0.10,
        capture_content=False,
        prompt="Customer {user} writes: invoice INV-{number} was charged twice, please refund.",
    ),
    Pipeline(
        pipeline_id="doc-summarizer",
        team="knowledge",
        service_name="doc-summarizer-worker",
        region="eu-west-1",
        features=("weekly-digest", "pdf-summary"),
        shape="multi_agent",
        roles=(
            Role("supervisor", ("claude-haiku-4.5",), (1, 1), (500, 2000), (20, 150)),
            Role(
                "reader",
                ("gemini-2.5-pro",),
                (1, 2),
                (8000, 60000),
                (300, 2500),
                tools=("fetch_document",),
                reasoning_probability=0.5,
            ),
            Role("writer", ("claude-sonnet-4.6",), (1, 1), (2000, 12000), (300, 2000)),
            Role("critic", ("gpt-5.4-mini",), (1, 1), (1500, 6000), (30, 300), run_probability=0.4),
        ),
        weight=0.20,
        staging_share=0.0,
        capture_content=True,
        prompt="Summarise document DOC-{number} for the weekly digest requested by {user}.",
    ),
    Pipeline(
        pipeline_id="sql-copilot",
        team="data-platform",
        service_name="sql-copilot-api",
        region="us-west-2",
        features=("nl-to-sql", "query-explain"),
        shape="single_agent",
        roles=(
            Role(
                "sql_agent",
                ("gpt-5.4", "o4-mini"),
                (2, 4),
                (1500, 12000),
                (80, 900),
                tools=("get_schema", "run_sql"),
                reasoning_probability=0.5,
            ),
        ),
        weight=0.30,
        staging_share=0.15,
        capture_content=False,
        prompt="How many active accounts signed up in week {number}? asked by {user}",
    ),
    Pipeline(
        pipeline_id="claims-extraction",
        team="claims",
        service_name="claims-extraction-worker",
        region="us-east-1",
        features=("fnol-intake", "invoice-parse"),
        shape="chat",
        roles=(
            Role(
                "extract",
                ("gemini-2.5-pro",),
                (1, 1),
                (2000, 20000),
                (200, 1500),
                reasoning_probability=0.6,
            ),
            Role("validate", (BEDROCK_HAIKU,), (1, 1), (800, 4000), (20, 300)),
        ),
        weight=0.15,
        staging_share=0.0,
        capture_content=False,
        route="/v1/claims/extract",
        prompt="Extract the claim fields from claim CLM-{number} filed by {user}.",
    ),
)


@dataclass(frozen=True)
class RetryLoop:
    """An incident: traces of ``feature`` starting in [start, start + duration) loop.

    Each such trace's agent, before its final answer, calls its last tool ``turns``
    more times; the tool fails every time (``error.type`` ``ToolExecutionError``) and
    the agent asks the model again with a longer context. Only agents with tools loop.
    """

    pipeline_id: str
    feature: str
    start: datetime
    duration: timedelta = timedelta(hours=1)
    turns: int = 6

    def covers(self, pipeline_id: str, feature: str, root_start_ns: int) -> bool:
        low = _ns(self.start)
        high = low + int(self.duration.total_seconds()) * NS
        return (pipeline_id, feature) == (
            self.pipeline_id,
            self.feature,
        ) and low <= root_start_ns < high


# --- SDK plumbing ----------------------------------------------------------------------


class SeededIdGenerator(IdGenerator):
    """Trace and span ids from a seeded PRNG, reseeded per trace."""

    def __init__(self) -> None:
        self._rng = random.Random(0)

    def reseed(self, key: str) -> None:
        self._rng = random.Random(key)

    def generate_span_id(self) -> int:
        span_id = 0
        while span_id == trace_api.INVALID_SPAN_ID:
            span_id = self._rng.getrandbits(64)
        return span_id

    def generate_trace_id(self) -> int:
        trace_id = 0
        while trace_id == trace_api.INVALID_TRACE_ID:
            trace_id = self._rng.getrandbits(128)
        return trace_id

    def is_trace_id_random(self) -> bool:
        return True


class BaggageToAttributes(SpanProcessor):
    """Copies the attribution baggage onto every span as it starts."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for key, value in baggage.get_all(parent_context).items():
            if key in ATTRIBUTION_KEYS:
                span.set_attribute(key, str(value))


@dataclass(frozen=True)
class _Tracers:
    agents: trace_api.Tracer
    llm: trace_api.Tracer


def _limits() -> SpanLimits:
    # explicit limits, so OTEL_* environment variables cannot change the output
    return SpanLimits(
        max_attributes=128,
        max_events=128,
        max_links=128,
        max_span_attributes=128,
        max_event_attributes=128,
        max_link_attributes=128,
        max_attribute_length=SpanLimits.UNSET,
        max_span_attribute_length=SpanLimits.UNSET,
    )


def _resource(pipeline: Pipeline, environment: str) -> Resource:
    return Resource(
        {
            "service.name": pipeline.service_name,
            "service.version": "2.3.1",
            "deployment.environment.name": environment,
            "cloud.provider": "aws",
            "cloud.region": pipeline.region,
            "telemetry.sdk.language": "python",
            "telemetry.sdk.name": "opentelemetry",
            "telemetry.sdk.version": SDK_VERSION,
        },
        schema_url=SCHEMA_URL,
    )


# --- the simulation ----------------------------------------------------------------------


def _ns(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise DemoError(f"{moment!r} must be timezone-aware (UTC)")
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * NS + delta.microseconds * 1000


def _from_ns(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value // 1000)


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))


def _token(rng: random.Random, length: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(rng.choice(alphabet) for _ in range(length))


class _Abort(Exception):
    """Ends a trace early; the root records it as its error."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class _Trace:
    """One trace, built span by span on a simulated clock."""

    def __init__(
        self,
        rng: random.Random,
        tracers: _Tracers,
        pipeline: Pipeline,
        environment: str,
        user: str,
        start_ns: int,
        loop_turns: int = 0,
    ) -> None:
        self.rng = rng
        self.loop_turns = loop_turns
        self.tracers = tracers
        self.pipeline = pipeline
        self.user = user
        self.now = start_ns
        self.conversation_id = f"conv_{rng.getrandbits(96):024x}"
        self.capture_content = environment == "staging" or pipeline.capture_content
        self.successful_calls = 0
        self.abort_after = rng.randint(1, 3) if rng.random() < ROOT_ERROR_RATE else None
        self.number = rng.randint(1000, 99999)

    # clock -------------------------------------------------------------------------

    def _advance(self, low_ms: int, high_ms: int) -> int:
        self.now += self.rng.randint(low_ms, high_ms) * MS
        return self.now

    def _check_abort(self, where: str) -> None:
        if self.abort_after is not None and self.successful_calls >= self.abort_after:
            raise _Abort("MaxTurnsExceeded", f"agent gave up before {where}: max turns exceeded")

    # spans ------------------------------------------------------------------------

    def _agent_attributes(self, role: Role, model: Model) -> dict[str, Any]:
        digest = hashlib.sha256(f"{self.pipeline.pipeline_id}/{role.name}".encode()).hexdigest()
        return {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.provider.name": model.provider,
            "gen_ai.agent.name": role.name,
            "gen_ai.agent.id": f"asst_{digest[:24]}",
            "gen_ai.conversation.id": self.conversation_id,
        }

    def _messages(self, finish: str) -> dict[str, str]:
        prompt = self.pipeline.prompt.format(user=self.user, number=self.number)
        answer = f"Done: handled request {self.number} for {self.user}."
        return {
            "gen_ai.input.messages": json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
            ),
            "gen_ai.output.messages": json.dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": answer}],
                        "finish_reason": finish,
                    }
                ]
            ),
        }

    def _request_attributes(self, model: Model) -> dict[str, Any]:
        temperature = 1.0 if model.name == "o4-mini" else self.rng.choice((0.0, 0.2, 0.3, 0.7))
        return {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": model.provider,
            "gen_ai.request.model": model.name,
            "gen_ai.request.temperature": temperature,
            "gen_ai.request.max_tokens": self.rng.choice((4096, 8192, 16384)),
            "gen_ai.conversation.id": self.conversation_id,
            "server.address": model.server_address,
            "server.port": 443,
        }

    def _failed_call(self, parent: Context, model: Model) -> None:
        error_type, message = self.rng.choice(
            (("429", "Rate limit reached for requests"), ("timeout", "Request timed out"))
        )
        attributes = self._request_attributes(model)
        attributes["error.type"] = error_type
        start = self._advance(5, 40)
        span = self.tracers.llm.start_span(
            f"chat {model.name}", parent, SpanKind.CLIENT, attributes, start_time=start
        )
        if error_type == "429":
            self._advance(60, 400)
        else:
            self._advance(30_000, 30_250)
        span.set_status(Status(StatusCode.ERROR, message))
        span.end(end_time=self.now)
        self._advance(500, 4000)  # back-off before the retry

    def _call(self, parent: Context, role: Role, model: Model, turn: int, then_tool: bool) -> None:
        self._check_abort(f"LLM call {turn + 1} of {role.name}")
        rng = self.rng
        if rng.random() < RETRY_RATE:
            self._failed_call(parent, model)
        growth = 1.0 + 0.4 * turn  # the context grows turn by turn
        input_tokens = int(_log_uniform(rng, *role.input_tokens) * growth)
        cache_read = 0
        if input_tokens >= 1024 and rng.random() < 0.6:
            cache_read = int(input_tokens * rng.uniform(0.3, 0.9))
            if model.provider == "openai":
                cache_read = cache_read // 128 * 128  # OpenAI caches in 128-token steps
        cache_creation = 0
        if model.cache_writes and rng.random() < 0.35:
            cache_creation = int((input_tokens - cache_read) * rng.uniform(0.2, 0.8))
        output_tokens = _log_uniform(rng, *role.output_tokens)
        reasoning = 0
        if model.reasons and rng.random() < role.reasoning_probability:
            reasoning = _log_uniform(rng, 64, 4000)
            output_tokens += reasoning
        finish_kind = "tool" if then_tool else ("length" if rng.random() < 0.02 else "final")
        finish = _FINISH[model.provider][finish_kind]

        attributes = self._request_attributes(model)
        response_id = {
            "openai": "chatcmpl-" + _token(rng, 29),
            "anthropic": "msg_01" + _token(rng, 22),
        }.get(model.provider, _token(rng, 27))
        attributes.update(
            {
                "gen_ai.response.model": model.name,
                "gen_ai.response.id": response_id,
                "gen_ai.response.finish_reasons": (finish,),
                "gen_ai.usage.input_tokens": input_tokens,
                "gen_ai.usage.output_tokens": output_tokens,
                "gen_ai.usage.cache_read.input_tokens": cache_read,
            }
        )
        if model.cache_writes:
            attributes["gen_ai.usage.cache_creation.input_tokens"] = cache_creation
        if reasoning:
            attributes["gen_ai.usage.reasoning.output_tokens"] = reasoning
        if self.capture_content:
            attributes.update(self._messages(finish))

        start = self._advance(5, 40)
        span = self.tracers.llm.start_span(
            f"chat {model.name}", parent, SpanKind.CLIENT, attributes, start_time=start
        )
        tokens_per_second = rng.uniform(60.0, 160.0)
        first_token_ms = rng.randint(250, 1200) + input_tokens // 200
        # Streamed responses say when the first token arrived, in seconds.
        span.set_attribute("gen_ai.response.time_to_first_chunk", first_token_ms / 1000)
        self.now += first_token_ms * MS + int(output_tokens / tokens_per_second * NS)
        span.end(end_time=self.now)
        self.successful_calls += 1

    def _tool(self, parent: Context, tool: str, fails: bool = False) -> None:
        start = self._advance(2, 20)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.type": "function",
            "gen_ai.tool.call.id": "call_" + _token(self.rng, 24),
        }
        span = self.tracers.agents.start_span(
            f"execute_tool {tool}", parent, SpanKind.INTERNAL, attributes, start_time=start
        )
        self._advance(30, 2500)
        if fails:  # the agent is looping: the tool fails, the agent asks again
            span.set_attribute("error.type", "ToolExecutionError")
            span.set_status(Status(StatusCode.ERROR, f"{tool} failed: invalid arguments"))
        failing = self.abort_after is not None and self.successful_calls >= self.abort_after
        if failing:
            span.set_attribute("error.type", "ToolExecutionError")
            span.set_status(Status(StatusCode.ERROR, f"{tool} failed: upstream returned 503"))
        span.end(end_time=self.now)
        if failing:
            raise _Abort("ToolExecutionError", f"tool {tool} failed: upstream returned 503")

    def _role_calls(self, parent: Context, role: Role, model: Model) -> None:
        calls = self.rng.randint(*role.calls)
        for turn in range(calls):
            if turn == calls - 1 and role.tools:
                for loop in range(self.loop_turns):  # a runaway loop before the answer
                    self._call(parent, role, model, turn + loop, then_tool=True)
                    self._tool(parent, role.tools[-1], fails=True)
                turn += self.loop_turns
            then_tool = bool(role.tools) and turn < calls - 1
            self._call(parent, role, model, turn, then_tool)
            if then_tool:
                self._tool(parent, role.tools[turn % len(role.tools)])

    def _agent(self, parent: Context, role: Role) -> None:
        model = MODELS[self.rng.choice(role.models)]
        start = self._advance(1, 15)
        span = self.tracers.agents.start_span(
            f"invoke_agent {role.name}",
            parent,
            SpanKind.INTERNAL,
            self._agent_attributes(role, model),
            start_time=start,
        )
        try:
            self._role_calls(trace_api.set_span_in_context(span, parent), role, model)
        except _Abort as abort:
            span.set_attribute("error.type", abort.error_type)
            span.set_status(Status(StatusCode.ERROR, abort.message))
            raise
        finally:
            span.end(end_time=self._advance(1, 10))

    # whole traces -----------------------------------------------------------------

    def run(self, context: Context) -> None:
        pipeline = self.pipeline
        root_role = pipeline.roles[0]
        root_model = MODELS[self.rng.choice(root_role.models)]
        if pipeline.shape == "chat":
            root_name = f"POST {pipeline.route}"
            kind = SpanKind.SERVER
            root_attributes: dict[str, Any] = {
                "http.request.method": "POST",
                "http.route": pipeline.route,
                "url.scheme": "https",
            }
        else:
            root_name = f"invoke_agent {root_role.name}"
            kind = SpanKind.INTERNAL
            root_attributes = self._agent_attributes(root_role, root_model)
        root = self.tracers.agents.start_span(
            root_name, context, kind, root_attributes, start_time=self.now
        )
        inside = trace_api.set_span_in_context(root, context)
        try:
            if pipeline.shape == "multi_agent":
                supervisor = pipeline.roles[0]
                self._call(inside, supervisor, root_model, 0, then_tool=False)
                for worker in pipeline.roles[1:]:
                    if self.rng.random() < worker.run_probability:
                        self._agent(inside, worker)
                self._call(inside, supervisor, root_model, 1, then_tool=False)
            elif pipeline.shape == "single_agent":
                self._role_calls(inside, pipeline.roles[0], root_model)
            else:
                self._role_calls(inside, root_role, root_model)
                for step in pipeline.roles[1:]:
                    self._role_calls(inside, step, MODELS[self.rng.choice(step.models)])
            if kind == SpanKind.SERVER:
                root.set_attribute("http.response.status_code", 200)
        except _Abort as abort:
            end = self._advance(1, 10)
            root.add_event(
                "exception",
                {"exception.type": abort.error_type, "exception.message": abort.message},
                timestamp=end,
            )
            root.set_attribute("error.type", abort.error_type)
            if kind == SpanKind.SERVER:
                root.set_attribute("http.response.status_code", 500)
            root.set_status(Status(StatusCode.ERROR, abort.message))
        root.end(end_time=self._advance(1, 20))


def _diurnal(hour: int) -> float:
    """Traffic by hour of day (UTC): busiest mid-afternoon, averages 1.0 over a day."""
    return 1.0 + 0.5 * math.sin(2 * math.pi * (hour - 9) / 24)


def _user(rng: random.Random) -> str:
    return f"user-{int(300 * rng.random() ** 2):04d}"  # a few heavy users, a long tail


def generate_spans(
    start: datetime,
    end: datetime,
    *,
    seed: int = 7,
    traces_per_hour: int = 40,
    retry_loops: Sequence[RetryLoop] = (),
) -> list[ReadableSpan]:
    """Finished spans of the traces whose root starts in [start, end), in end order.

    ``retry_loops`` change only the traces they cover; every other trace is the same
    with or without them.
    """
    start_ns, end_ns = _ns(start), _ns(end)
    if end_ns <= start_ns:
        raise DemoError(
            f"empty window: end {end.isoformat()} is not after start {start.isoformat()}"
        )
    if traces_per_hour < 0:
        raise DemoError(f"traces_per_hour must be zero or more, got {traces_per_hour}")

    ids = SeededIdGenerator()
    exporter = InMemorySpanExporter()
    collect = SimpleSpanProcessor(exporter)
    copy_baggage = BaggageToAttributes()
    tracers: dict[tuple[str, str], _Tracers] = {}

    def tracers_for(pipeline: Pipeline, environment: str) -> _Tracers:
        key = (pipeline.pipeline_id, environment)
        if key not in tracers:
            provider = TracerProvider(
                sampler=ALWAYS_ON,
                resource=_resource(pipeline, environment),
                shutdown_on_exit=False,
                id_generator=ids,
                span_limits=_limits(),
            )
            provider.add_span_processor(copy_baggage)
            provider.add_span_processor(collect)
            pair = _Tracers(
                agents=provider.get_tracer(AGENT_SCOPE, SCOPE_VERSION, schema_url=SCHEMA_URL),
                llm=provider.get_tracer(LLM_SCOPE, SCOPE_VERSION, schema_url=SCHEMA_URL),
            )
            if isinstance(pair.agents, NoOpTracer):
                raise DemoError("the OpenTelemetry SDK is disabled (OTEL_SDK_DISABLED=true)")
            tracers[key] = pair
        return tracers[key]

    weights = [pipeline.weight for pipeline in PIPELINES]
    hour_ns = 3600 * NS
    traces = 0
    for hour_start in range(start_ns - start_ns % hour_ns, end_ns, hour_ns):
        hour_rng = random.Random(f"spancost-demo:{seed}:{hour_start}")
        count = round(traces_per_hour * _diurnal(_from_ns(hour_start).hour))
        offsets = sorted(hour_rng.randrange(hour_ns) for _ in range(count))
        for index, offset in enumerate(offsets):
            root_start = hour_start + offset
            if not start_ns <= root_start < end_ns:
                continue
            trace_key = f"spancost-demo:{seed}:{hour_start}:{index}"
            rng = random.Random(trace_key)
            ids.reseed(trace_key + ":ids")
            pipeline = rng.choices(PIPELINES, weights)[0]
            environment = "staging" if rng.random() < pipeline.staging_share else "prod"
            user = _user(rng)
            context = Context()
            feature = rng.choice(pipeline.features)
            for key, value in (
                ("pipeline.id", pipeline.pipeline_id),
                ("team", pipeline.team),
                ("feature", feature),
                ("user.id", user),
            ):
                context = baggage.set_baggage(key, value, context)
            loop_turns = sum(
                loop.turns
                for loop in retry_loops
                if loop.covers(pipeline.pipeline_id, feature, root_start)
            )
            _Trace(
                rng,
                tracers_for(pipeline, environment),
                pipeline,
                environment,
                user,
                root_start,
                loop_turns,
            ).run(context)
            traces += 1
    spans = list(exporter.get_finished_spans())
    log.info("generated %d spans in %d traces for [%s, %s)", len(spans), traces, start, end)
    return spans


# --- S3 objects ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoObject:
    key: str
    body: bytes
    span_count: int
    upload_time: datetime


def build_objects(spans: Sequence[ReadableSpan], *, prefix: str, seed: int = 7) -> list[DemoObject]:
    """Export batches as the awss3exporter would write them, one per minute of span end time.

    The upload time is a few seconds after the last span of the batch ended, kept
    inside that minute so each batch lands in the partition of its spans' minute.
    """
    minute_ns = 60 * NS
    batches: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        if span.end_time is None:
            raise DemoError(f"span {span.name!r} has not ended: only finished spans are exported")
        batches.setdefault(span.end_time - span.end_time % minute_ns, []).append(span)

    objects: list[DemoObject] = []
    for minute, batch in sorted(batches.items()):
        rng = random.Random(f"spancost-demo-upload:{seed}:{minute}")
        last_end = max(span.end_time or 0 for span in batch)
        last_second = -(-last_end // NS) * NS  # rounded up to a whole second
        upload_ns = min(last_second + rng.randint(1, 5) * NS, minute + 59 * NS)
        upload_time = _from_ns(upload_ns)
        key = object_key(prefix, upload_time, rng.randrange(UNIQUE_MIN, UNIQUE_MAX))
        body = gzip.compress(encode_export_request(batch), mtime=0)
        objects.append(
            DemoObject(key=key, body=body, span_count=len(batch), upload_time=upload_time)
        )
    log.info("built %d export objects from %d spans", len(objects), len(spans))
    return objects


def upload_objects(s3_client: Any, bucket: str, objects: Sequence[DemoObject]) -> None:
    """PUT each object with the headers the awss3exporter sets. The bucket must exist."""
    for obj in objects:
        extra = {"ContentEncoding": "gzip"} if obj.body[:2] == b"\x1f\x8b" else {}
        s3_client.put_object(
            Bucket=bucket,
            Key=obj.key,
            Body=obj.body,
            ContentType="application/json",
            **extra,
        )
    log.info("uploaded %d objects to s3://%s", len(objects), bucket)
