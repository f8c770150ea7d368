"""Make real SDK calls under real instrumentations and write their spans as OTLP/protobuf.

Run in a child process by the test, once per wrapping order: instrumentations patch
the SDK classes for the whole process, and OpenLLMetry's openai instrumentor does not
undo its patch when another wrapper sits on top of it, so one process cannot trace in
both orders, nor leave the test process as it found it.

    python -m tests.integration.instrumentation.emit_spans URL ORDER OUT

ORDER is ``v2-outer`` (OpenLLMetry's openai instrumentor applied first, so openai-v2
wraps it), ``openllmetry-outer``, or ``sdk-only`` (no instrumentation library; the
Anthropic SDK traces itself). OUT receives one ExportTraceServiceRequest.
"""

from __future__ import annotations

import sys
from pathlib import Path

from opentelemetry import baggage, context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

PIPELINE = "instrumented-p1"
SONNET = "claude-sonnet-4-5-20250929"
HAIKU_BEDROCK = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
# The calls each order makes: (API, model, streamed).
CALLS = {
    "v2-outer": [
        ("anthropic", SONNET, False),
        ("openai", "gpt-5.4", False),
        ("openai", "gpt-4.1-mini", True),
        ("bedrock", HAIKU_BEDROCK, False),
    ],
    "openllmetry-outer": [("openai", "gpt-5.4-mini", False)],
    # No instrumentation library: the Anthropic SDK's own spans alone.
    "sdk-only": [("anthropic", SONNET, False)],
}


class BaggageAttributes(SpanProcessor):
    """Copies `pipeline.id` from baggage onto every span as it starts.

    The models read attribution from each call span itself, so an application puts
    it on every span, as the contrib BaggageSpanProcessor does.
    """

    def on_start(self, span, parent_context=None) -> None:
        value = baggage.get_baggage("pipeline.id", parent_context)
        if value is not None:
            span.set_attribute("pipeline.id", str(value))


def instrument(order: str, tracer_provider: TracerProvider) -> None:
    if order == "sdk-only":
        return
    from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as OpenAIV2Instrumentor

    AnthropicInstrumentor().instrument(tracer_provider=tracer_provider)
    BotocoreInstrumentor().instrument(tracer_provider=tracer_provider)
    # The instrumentor applied last wraps the others: its span is the parent.
    openai_instrumentors = [OpenAIInstrumentor(), OpenAIV2Instrumentor()]
    if order == "openllmetry-outer":
        openai_instrumentors.reverse()
    for instrumentor in openai_instrumentors:
        instrumentor.instrument(tracer_provider=tracer_provider)


def call(api: str, model: str, streamed: bool, url: str, tracer_provider: TracerProvider) -> None:
    import anthropic
    import boto3
    import openai

    message = [{"role": "user", "content": "hi"}]
    if api == "anthropic":
        client = anthropic.Anthropic(
            base_url=url,
            api_key="test-key",
            max_retries=0,
            # The SDK's own tracing, next to OpenLLMetry's.
            open_telemetry={"tracer_provider": tracer_provider},
        )
        client.messages.create(model=model, max_tokens=64, messages=message)
    elif api == "openai":
        gpt = openai.OpenAI(base_url=f"{url}/v1", api_key="test-key", max_retries=0)
        if streamed:
            stream = gpt.chat.completions.create(
                model=model, messages=message, stream=True, stream_options={"include_usage": True}
            )
            for _ in stream:
                pass
        else:
            gpt.chat.completions.create(model=model, messages=message)
    elif api == "bedrock":
        bedrock = boto3.client(
            "bedrock-runtime",
            region_name="us-east-1",
            endpoint_url=url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        bedrock.converse(modelId=model, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    else:
        raise ValueError(f"unknown API {api!r}")


def emit(url: str, order: str) -> bytes:
    """The OTLP/protobuf request of one pipeline run's spans, traced in ``order``."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BaggageAttributes())
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument(order, tracer_provider)
    tracer = tracer_provider.get_tracer("tests.pipeline")
    token = context.attach(baggage.set_baggage("pipeline.id", PIPELINE))
    try:
        with tracer.start_as_current_span("pipeline run", attributes={"pipeline.id": PIPELINE}):
            for api, model, streamed in CALLS[order]:
                call(api, model, streamed, url, tracer_provider)
    finally:
        context.detach(token)
    tracer_provider.force_flush()
    return encode_spans(exporter.get_finished_spans()).SerializeToString()


if __name__ == "__main__":
    url, order, out = sys.argv[1:]
    Path(out).write_bytes(emit(url, order))
