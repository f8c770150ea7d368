"""A fake LLM provider on loopback: OpenAI chat completions, Anthropic messages, Bedrock Converse.

The real SDKs (openai, anthropic, boto3) talk to it through their base URL or endpoint
URL, so the instrumentations that wrap them run unmodified. Each answer carries the
usage the test chose for that model, and every request is recorded, so a test knows
how many API calls were really made and what each one should cost.

Routes:

- ``POST /v1/chat/completions``: OpenAI; with ``"stream": true`` an SSE stream whose
  last chunk carries the usage when ``stream_options.include_usage`` is set.
- ``POST /v1/messages``: Anthropic (``input_tokens`` without cache, as the API counts).
- ``POST /model/{modelId}/converse``: Bedrock Converse.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


@dataclass(frozen=True)
class OpenAIUsage:
    prompt_tokens: int  # includes cached_tokens
    completion_tokens: int  # includes reasoning_tokens
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    def body(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }


@dataclass(frozen=True)
class AnthropicUsage:
    input_tokens: int  # without cache reads and writes, as Anthropic's API counts
    output_tokens: int
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    def body(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "service_tier": "standard",
        }


@dataclass(frozen=True)
class BedrockUsage:
    input_tokens: int  # without cache reads and writes, as Converse counts
    output_tokens: int
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0

    def body(self) -> dict[str, Any]:
        return {
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "totalTokens": self.input_tokens
            + self.output_tokens
            + self.cache_read_input_tokens
            + self.cache_write_input_tokens,
            "cacheReadInputTokens": self.cache_read_input_tokens,
            "cacheWriteInputTokens": self.cache_write_input_tokens,
        }


@dataclass(frozen=True)
class Request:
    """One request the provider answered: route, model and whether it streamed."""

    route: str
    model: str
    stream: bool


@dataclass
class FakeProvider:
    """Usage by model, per API; the requests it answered, in order."""

    openai: Mapping[str, OpenAIUsage] = field(default_factory=dict)
    anthropic: Mapping[str, AnthropicUsage] = field(default_factory=dict)
    bedrock: Mapping[str, BedrockUsage] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    provider: FakeProvider

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        payload = json.loads(self.rfile.read(length) or b"{}")
        path = self.path.split("?", 1)[0]
        try:
            if path == "/v1/chat/completions":
                self._openai(payload)
            elif path == "/v1/messages":
                self._anthropic(payload)
            elif path.startswith("/model/") and path.endswith("/converse"):
                self._bedrock(unquote(path[len("/model/") : -len("/converse")]))
            else:
                self._send(404, {"error": {"message": f"no route {path}"}})
        except KeyError as missing:
            self._send(404, {"error": {"message": f"no usage configured for model {missing}"}})

    def _openai(self, payload: dict[str, Any]) -> None:
        model = payload["model"]
        usage = self.provider.openai[model]
        stream = bool(payload.get("stream"))
        self.provider.record(Request("openai.chat", model, stream))
        created = 1_768_212_000
        if not stream:
            self._send(
                200,
                {
                    "id": f"chatcmpl-{len(self.provider.requests)}",
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "ok", "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage.body(),
                    "service_tier": "default",
                    "system_fingerprint": "fp_fake",
                },
            )
            return
        base = {
            "id": f"chatcmpl-{len(self.provider.requests)}",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
        }
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        chunks = [
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": "o"},
                        "finish_reason": None,
                    }
                ],
                **({"usage": None} if include_usage else {}),
            },
            {
                **base,
                "choices": [{"index": 0, "delta": {"content": "k"}, "finish_reason": None}],
                **({"usage": None} if include_usage else {}),
            },
            {
                **base,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                **({"usage": None} if include_usage else {}),
            },
        ]
        if include_usage:
            chunks.append({**base, "choices": [], "usage": usage.body()})
        events = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
        self._send_raw(200, events.encode(), "text/event-stream")

    def _anthropic(self, payload: dict[str, Any]) -> None:
        model = payload["model"]
        usage = self.provider.anthropic[model]
        if payload.get("stream"):
            self._send(400, {"type": "error", "error": {"message": "streaming not faked"}})
            return
        self.provider.record(Request("anthropic.messages", model, False))
        self._send(
            200,
            {
                "id": f"msg_{len(self.provider.requests)}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": "ok"}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": usage.body(),
            },
            {"request-id": f"req_{len(self.provider.requests)}"},
        )

    def _bedrock(self, model_id: str) -> None:
        usage = self.provider.bedrock[model_id]
        self.provider.record(Request("bedrock.converse", model_id, False))
        self._send(
            200,
            {
                "output": {"message": {"role": "assistant", "content": [{"text": "ok"}]}},
                "stopReason": "end_turn",
                "usage": usage.body(),
                "metrics": {"latencyMs": 5},
            },
            {"x-amzn-RequestId": f"fake-{len(self.provider.requests)}"},
        )

    def _send(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(body).encode(), "application/json", headers)

    def _send_raw(
        self,
        status: int,
        data: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def serve(provider: FakeProvider) -> Iterator[FakeProvider]:
    """Runs ``provider`` on 127.0.0.1 at a free port (``provider.url``) until the block ends."""
    handler = type("Handler", (_Handler,), {"provider": provider})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fake-llm-provider", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    provider.url = f"http://{host}:{port}"
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
