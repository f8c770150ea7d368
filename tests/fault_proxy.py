"""A loopback HTTP proxy for AWS JSON-protocol endpoints that injects faults.

It forwards every request to an upstream (moto's server) unless a fault rule
answers it first, with an AWS JSON 1.1 error body. boto3 reaches it through
``endpoint_url``, so the code under test makes real HTTP requests and sees real
error responses. It counts what it forwarded, so a test can assert that the
upstream received nothing.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Seen:
    """One request the proxy received."""

    target: str  # the X-Amz-Target header as received
    body: dict
    faulted: bool


# A rule gets (request number from 1, target, parsed body) and returns (status, AWS error
# type, message) to answer with an error, or None to forward the request.
Rule = Callable[[int, str, dict], "tuple[int, str, str] | None"]

_HOP_HEADERS = {"connection", "transfer-encoding", "content-length", "keep-alive", "host"}


def first_n(n: int, status: int, error_type: str, message: str) -> Rule:
    """Answer the first ``n`` requests with an error."""

    def rule(number: int, target: str, body: dict):
        return (status, error_type, message) if number <= n else None

    return rule


def on_page_token(times: int, status: int, error_type: str, message: str) -> Rule:
    """Answer the first ``times`` requests that carry a NextPageToken (page 2 or later)."""
    fired = [0]

    def rule(number: int, target: str, body: dict):
        if "NextPageToken" in body and fired[0] < times:
            fired[0] += 1
            return (status, error_type, message)
        return None

    return rule


class FaultProxy:
    """``with FaultProxy(upstream, rule) as proxy: boto3.client(..., endpoint_url=proxy.url)``.

    ``rewrite_targets`` maps an X-Amz-Target to the one sent upstream (for an
    operation the upstream does not implement but answers the same way).
    """

    def __init__(
        self,
        upstream: str,
        rule: Rule | None = None,
        rewrite_targets: dict[str, str] | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.rule = rule
        self.rewrite_targets = dict(rewrite_targets or {})
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def forwarded(self) -> int:
        with self._lock:
            return sum(1 for seen in self.seen if not seen.faulted)

    @property
    def faulted(self) -> int:
        with self._lock:
            return sum(1 for seen in self.seen if seen.faulted)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                return

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = self.headers.get("X-Amz-Target", "")
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                with proxy._lock:
                    number = len(proxy.seen) + 1
                    fault = proxy.rule(number, target, body) if proxy.rule else None
                    proxy.seen.append(Seen(target, body, fault is not None))
                if fault is not None:
                    status, error_type, message = fault
                    payload = json.dumps({"__type": error_type, "message": message}).encode()
                    self._answer(status, {"Content-Type": "application/x-amz-json-1.1"}, payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                if target in proxy.rewrite_targets:
                    headers["X-Amz-Target"] = proxy.rewrite_targets[target]
                request = urllib.request.Request(
                    proxy.upstream + self.path, data=raw, headers=headers, method="POST"
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        self._answer(response.status, dict(response.headers), response.read())
                except urllib.error.HTTPError as error:
                    self._answer(error.code, dict(error.headers), error.read())

            def _answer(self, status: int, headers: dict[str, str], payload: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in _HOP_HEADERS | {"server", "date"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler
