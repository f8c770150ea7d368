"""AWS API requests: every attempt logged in ``ops.api_requests``, retried with backoff.

Some AWS APIs bill per request (Cost Explorer: USD 0.01 for each request, each
page being one) or per item requested (CloudWatch GetMetricData: USD 0.01 per
1,000 metrics), so each attempt that is sent gets a row in
``ops.api_requests``: service, operation, a summary of the request without
secrets or page tokens, page number, outcome, HTTP status, attempt number,
duration, the list price of the request, and the pull it belongs to.

The retry loop is ours, not botocore's, so that no attempt goes unlogged: a
client passed to :func:`call` must be made with :func:`client_config` (botocore
retries off); :func:`call` refuses any other.

Usage, for any service::

    client = boto3.client("pricing", config=aws_requests.client_config())
    response = aws_requests.call(
        conn, client, "GetProducts", {"ServiceCode": "AmazonBedrock"},
        policy=RetryPolicy(max_attempts=5), page=1,
    )

Throttling (``ThrottlingException``, ``LimitExceededException``,
``TooManyRequestsException`` and the like, or HTTP 429), 5xx answers and
connection failures are retried with exponential backoff and full jitter, up
to ``policy.max_attempts``. Any other error is raised at once. Errors botocore
raises before sending (bad parameters, no credentials) are not logged. Every error
raised is an :class:`ApiRequestError` that names the service, the operation,
the page, the AWS error code and the attempt count.

The connection must not be inside a transaction: each row commits on its own,
so requests stay logged (and counted) when the work that made them fails.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from botocore import xform_name
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from psycopg.types.json import Jsonb

from spancost.errors import ConfigError, InfrastructureError, SpancostError

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

# List price of one request, in USD, by botocore service name; a service not listed is free.
# Cost Explorer: "$0.01 per paginated API request" (each page is one request).
REQUEST_PRICE_USD: Mapping[str, Decimal] = {"ce": Decimal("0.01")}
# List price of each metric a request asks for, by (service, operation): the length of its
# MetricDataQueries. CloudWatch: "GetMetricData: $0.01 per 1,000 metrics requested".
METRIC_PRICE_USD: Mapping[tuple[str, str], Decimal] = {
    ("cloudwatch", "GetMetricData"): Decimal("0.00001"),
}

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "LimitExceededException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
    }
)

# Raised by botocore before anything is sent: not logged, not billed, not retried.
_NOT_SENT = (ParamValidationError, NoCredentialsError, PartialCredentialsError, NoRegionError)

_SECRETISH = re.compile(r"token|secret|password|credential|authorization", re.IGNORECASE)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter.

    Attempt ``n`` (1-based) that fails with a retryable error waits a random
    time in ``[0, min(max_delay_s, base_delay_s * 2 ** (n - 1))]`` before attempt
    ``n + 1``. ``max_attempts`` counts the first attempt.
    """

    max_attempts: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ConfigError("RetryPolicy delays must not be negative")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        return rng.uniform(0.0, ceiling)


class ApiRequestError(SpancostError, RuntimeError):
    """An AWS request failed for good (not retryable, or out of attempts)."""

    def __init__(
        self,
        message: str,
        *,
        service: str,
        operation: str,
        code: str | None,
        http_status: int | None,
        attempts: int,
    ) -> None:
        super().__init__(message)
        self.service = service
        self.operation = operation
        self.code = code
        self.http_status = http_status
        self.attempts = attempts


class ThrottledError(ApiRequestError):
    """Every attempt was throttled: AWS's request rate limit held for the whole backoff."""


def client_config(**kwargs: Any) -> Config:
    """The botocore ``Config`` for clients passed to :func:`call`: botocore retries off.

    Extra keyword arguments (``connect_timeout``, ``read_timeout``, ...) go to ``Config``.
    """
    return Config(retries={"mode": "standard", "total_max_attempts": 1}, **kwargs)


def check_client(client: Any) -> None:
    """Raise ConfigError unless botocore makes exactly one attempt per call on this client."""
    retries = getattr(client.meta.config, "retries", None) or {}
    if retries.get("total_max_attempts") != 1:
        raise ConfigError(
            f"the {client.meta.service_model.service_name} client retries inside botocore "
            f"(retries={retries!r}), so some billed attempts would go unlogged: create it with "
            "config=spancost.billing.aws_requests.client_config()"
        )


def request_price(
    service: str, operation: str | None = None, params: Mapping[str, Any] | None = None
) -> Decimal:
    """List price in USD of one request to ``service`` (botocore name, e.g. ``"ce"``).

    With the ``operation`` (API name) and its ``params``, requests billed by the
    metrics they ask for are priced too: ``GetMetricData`` with 500
    ``MetricDataQueries`` costs 500 x USD 0.00001 (:data:`METRIC_PRICE_USD`).
    """
    price = REQUEST_PRICE_USD.get(service, Decimal(0))
    per_metric = METRIC_PRICE_USD.get((service, operation or ""))
    if per_metric is not None:
        price += per_metric * len((params or {}).get("MetricDataQueries") or ())
    return price


def summarize(params: Mapping[str, Any]) -> dict[str, Any]:
    """The request parameters without page tokens or anything that looks like a secret."""
    return {key: value for key, value in params.items() if not _SECRETISH.search(key)}


@dataclass(frozen=True)
class Attempt:
    """One request as sent; one row of ``ops.api_requests``."""

    service: str
    operation: str
    summary: Mapping[str, Any]
    page: int | None
    status: str  # ok | throttled | error
    http_status: int | None
    error_code: str | None
    attempt: int
    duration_ms: int
    cost_usd: Decimal
    pull_id: UUID | None
    aws_request_id: str | None
    requested_at: datetime


def record(conn: Conn, attempt: Attempt) -> None:
    """Insert one ``ops.api_requests`` row and commit it on its own."""
    try:
        with conn.transaction():
            conn.execute(
                """
                insert into ops.api_requests (
                    service, operation, request_summary, page, status, http_status,
                    error_code, attempt, duration_ms, cost_usd, pull_id, aws_request_id,
                    requested_at
                ) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                """,
                (
                    attempt.service,
                    attempt.operation,
                    Jsonb(dict(attempt.summary), dumps=_dumps),
                    attempt.page,
                    attempt.status,
                    attempt.http_status,
                    attempt.error_code,
                    attempt.attempt,
                    attempt.duration_ms,
                    attempt.cost_usd,
                    attempt.pull_id,
                    attempt.aws_request_id,
                    attempt.requested_at,
                ),
            )
    except psycopg.Error as exc:
        raise InfrastructureError(
            f"could not log {attempt.service}.{attempt.operation} in ops.api_requests: {exc}"
        ) from exc


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def _outcome(exc: Exception) -> tuple[str, bool, int | None, str | None, str | None]:
    """(status, retryable, http status, error code, request id) of a failed attempt."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        code = error.get("Code")
        http = meta.get("HTTPStatusCode")
        request_id = meta.get("RequestId")
        if code in THROTTLING_CODES or http == 429:
            return "throttled", True, http, code, request_id
        return "error", http is not None and http >= 500, http, code, request_id
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        # Connection refused/reset, timeouts: the request may or may not have reached AWS.
        return "error", True, None, type(exc).__name__, None
    # Anything else botocore raises after sending (an unparsable answer): not retried.
    return "error", False, None, type(exc).__name__, None


def call(
    conn: Conn,
    client: Any,
    operation: str,
    params: Mapping[str, Any],
    *,
    policy: RetryPolicy,
    pull_id: UUID | None = None,
    page: int | None = None,
    summary: Mapping[str, Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """Send ``operation`` (API name, e.g. ``"GetCostAndUsage"``) with retries; log each attempt.

    ``summary`` is added to the logged request summary (e.g. the query name).
    ``cost_usd`` of each attempt sent is the list price of the request
    (:func:`request_price` of ``params``); AWS does not say whether throttled or failed
    requests are billed, so they are counted too: the log is an upper bound.
    Returns the parsed response; raises :class:`ApiRequestError` (or
    :class:`ThrottledError`) when the request fails for good.
    """
    check_client(client)
    service = str(client.meta.service_model.service_name)
    method = getattr(client, _snake(operation))
    logged = {**summarize(params), **(summary or {})}
    price = request_price(service, operation, params)
    rng = rng or random.Random()
    for attempt in range(1, policy.max_attempts + 1):
        sent = Attempt(
            service=service,
            operation=operation,
            summary=logged,
            page=page,
            status="ok",
            http_status=None,
            error_code=None,
            attempt=attempt,
            duration_ms=0,
            cost_usd=price,
            pull_id=pull_id,
            aws_request_id=None,
            requested_at=datetime.now(UTC),
        )
        started = time.monotonic()
        try:
            response: dict[str, Any] = method(**params)
        except _NOT_SENT as exc:
            raise ApiRequestError(
                f"{service}.{operation}: not sent: {type(exc).__name__}: {exc}",
                service=service,
                operation=operation,
                code=type(exc).__name__,
                http_status=None,
                attempts=attempt - 1,
            ) from exc
        except (ClientError, BotoConnectionError, HTTPClientError, BotoCoreError) as exc:
            status, retryable, http, code, request_id = _outcome(exc)
            record(conn, _finished(sent, started, status, http, code, request_id))
            where = f"{service}.{operation}" + (f" page {page}" if page is not None else "")
            if retryable and attempt < policy.max_attempts:
                wait = policy.delay(attempt, rng)
                log.warning(
                    "%s attempt %d: %s (%s); retrying in %.3fs", where, attempt, status, code, wait
                )
                sleep(wait)
                continue
            error_type = ThrottledError if status == "throttled" else ApiRequestError
            verdict = "out of attempts" if retryable else "not retryable"
            raise error_type(
                f"{where} failed after {attempt} attempt(s) ({verdict}): {code}: {exc}",
                service=service,
                operation=operation,
                code=code,
                http_status=http,
                attempts=attempt,
            ) from exc
        meta = response.get("ResponseMetadata", {})
        http_ok, request_id_ok = meta.get("HTTPStatusCode"), meta.get("RequestId")
        record(conn, _finished(sent, started, "ok", http_ok, None, request_id_ok))
        return response
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


def _finished(
    sent: Attempt,
    started: float,
    status: str,
    http_status: int | None,
    error_code: str | None,
    aws_request_id: str | None,
) -> Attempt:
    return replace(
        sent,
        status=status,
        http_status=http_status,
        error_code=error_code,
        aws_request_id=aws_request_id,
        duration_ms=int(round((time.monotonic() - started) * 1000)),
    )


def _snake(operation: str) -> str:
    return str(xform_name(operation))


class RequestLogger:
    """Logs every attempt a boto3 client sends, botocore's own retries included.

    For clients whose callers use botocore's paginators and retries rather than
    :func:`call` (the Price List, SageMaker). It hooks botocore's
    ``before-send`` and ``response-received`` events and writes one
    ``ops.api_requests`` row per attempt, on its own autocommit connection, so
    the rows stay when the work that made the requests fails. Use as a context
    manager around the client's work.
    """

    def __init__(self, url: str, client: Any) -> None:
        self._url = url
        self._client = client
        self._service = str(client.meta.service_model.service_name)
        self._conn: Conn | None = None
        self._sent: tuple[float, datetime, dict[str, Any]] | None = None  # the attempt in flight
        self.count = 0

    def __enter__(self) -> RequestLogger:
        self._conn = psycopg.connect(self._url, autocommit=True)
        events = self._client.meta.events
        events.register("before-send", self._before_send, unique_id=f"spancost-{id(self)}-b")
        events.register("response-received", self._received, unique_id=f"spancost-{id(self)}-r")
        return self

    def __exit__(self, *exc: object) -> None:
        events = self._client.meta.events
        events.unregister("before-send", unique_id=f"spancost-{id(self)}-b")
        events.unregister("response-received", unique_id=f"spancost-{id(self)}-r")
        if self._conn is not None:
            self._conn.close()

    def _before_send(self, request: Any, **_: Any) -> None:
        summary: dict[str, Any] = {}
        body = getattr(request, "body", None)
        if isinstance(body, bytes | str) and body[:1] in (b"{", "{"):
            try:
                summary = summarize(json.loads(body))
            except ValueError:
                summary = {}
        self._sent = (time.monotonic(), datetime.now(UTC), summary)

    def _received(
        self,
        *,
        response_dict: Mapping[str, Any] | None,
        parsed_response: Mapping[str, Any] | None,
        context: Mapping[str, Any],
        exception: Exception | None,
        event_name: str,
        **_: Any,
    ) -> None:
        if self._conn is None:
            return
        started, requested_at, summary = self._sent or (time.monotonic(), datetime.now(UTC), {})
        self._sent = None
        http_status = int(response_dict["status_code"]) if response_dict else None
        error = (parsed_response or {}).get("Error", {}) if parsed_response else {}
        code = str(error.get("Code")) if error.get("Code") else None
        if exception is None and http_status is not None and http_status < 400:
            status = "ok"
        elif http_status == 429 or (code is not None and code in THROTTLING_CODES):
            status = "throttled"
        else:
            status = "error"
            code = code or (type(exception).__name__ if exception else None)
        headers = (response_dict or {}).get("headers") or {}
        operation = event_name.rsplit(".", 1)[-1]
        self.count += 1
        record(
            self._conn,
            Attempt(
                service=self._service,
                operation=operation,
                summary=summary,
                page=None,
                status=status,
                http_status=http_status,
                error_code=code,
                attempt=int((context.get("retries") or {}).get("attempt", 1)),
                duration_ms=int((time.monotonic() - started) * 1000),
                cost_usd=request_price(self._service, operation, summary),
                pull_id=None,
                aws_request_id=headers.get("x-amzn-requestid") or headers.get("x-amz-request-id"),
                requested_at=requested_at,
            ),
        )
