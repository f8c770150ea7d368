"""Alerts: anomalies and budget status changes, recorded once and delivered once per channel.

``run`` is what ``spancost alerts`` and the last task of ``spancost_transform`` call:

1. **record** (one transaction, serialised across processes): every row of
   ``marts.fct_cost_anomalies`` not recorded before becomes an ``ops.alerts`` row,
   sendable when its period lies within ``lookback_hours`` of the newest data
   (older ones, from a backfill say, are recorded and never sent); every budget of
   ``marts.rpt_budget_status`` whose status rose since the last run (ok→warn,
   warn→breach, ok→breach; a budget starts as ok) becomes one too.
2. **deliver**: each sendable row not yet delivered on a channel is sent on it, one
   row at a time, each in its own transaction with the row locked (``skip locked``:
   two concurrent runs never send the same row). A failed delivery counts an
   attempt and keeps its error; the next run tries again. Channels: the log
   (always); one JSON POST per alert to ``SPANCOST_ALERT_WEBHOOK_URL`` when set;
   and Slack, through a sender the caller hands in (``airflow_adapter.slack_sender``:
   the Slack provider's ``SlackWebhookNotifier`` on the Airflow connection
   ``spancost_slack``, when it exists). This module never imports Airflow.

Delivery is at least once per channel: a process killed after the receiver
answered and before the row was marked delivered sends it again on the next run.
Every payload carries ``alert_key`` so a receiver can drop a repeat.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from spancost import db

log = logging.getLogger(__name__)

DEFAULT_LOOKBACK_HOURS = 48
CHANNELS = ("log", "webhook", "slack")
RANK = {"ok": 0, "warn": 1, "breach": 2}

# Anomalies, with the three costliest traces of the scope in the period.
ANOMALIES_SQL = """
select
    'anomaly:' || a.grain || ':' || a.scope_type || ':' || a.pipeline_id || ':'
        || a.scope_value || ':' || to_char(a.period_start at time zone 'UTC',
        'YYYY-MM-DD"T"HH24:MI"Z"') as alert_key,
    a.period_start,
    a.period_start >= %(newest)s - make_interval(hours => %(lookback)s) as sendable,
    jsonb_build_object(
        'kind', 'anomaly',
        'scope_type', a.scope_type,
        'scope_value', a.scope_value,
        'pipeline_id', a.pipeline_id,
        'period_start', a.period_start,
        'grain', a.grain,
        'observed_cost_usd', a.observed_cost_usd,
        'baseline_cost_usd', a.baseline_cost_usd,
        'ratio', a.ratio,
        'threshold', a.threshold,
        'severity', a.severity,
        'top_traces', coalesce((
            select jsonb_agg(jsonb_build_object(
                'trace_id', t.trace_id,
                'root_span_name', t.root_span_name,
                'estimated_cost_usd', t.estimated_cost_usd
            ) order by t.estimated_cost_usd desc nulls last, t.trace_id)
            from (
                select trace_id, root_span_name, estimated_cost_usd
                from marts.fct_trace_costs
                where
                    start_time >= a.period_start
                    and start_time < a.period_start
                        + case when a.grain = 'hour' then interval '1 hour'
                          else interval '1 day' end
                    and coalesce(pipeline_id, 'unattributed') = a.pipeline_id
                    and (a.scope_type <> 'feature'
                         or coalesce(feature, 'unattributed') = a.scope_value)
                order by estimated_cost_usd desc nulls last, trace_id
                limit 3
            ) as t
        ), '[]'::jsonb)
    ) as payload
from marts.fct_cost_anomalies as a
"""

BUDGETS_SQL = """
select budget_id, scope_type, scope_value, period, period_start, period_end, limit_usd,
       spent_usd, pct_used, status, forecast_usd, data_through
from marts.rpt_budget_status
order by budget_id
"""


# A channel's delivery of one alert: (alert_key, kind, payload); raises when not sent.
Sender = Callable[[str, str, dict[str, Any]], None]


@dataclass(frozen=True)
class RunResult:
    recorded: int
    delivered: dict[str, int]
    failed: dict[str, int]

    def summary(self) -> dict[str, Any]:
        return {"recorded": self.recorded, "delivered": self.delivered, "failed": self.failed}


def _json(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


def newest_data(conn: psycopg.Connection[Any]) -> datetime | None:
    """The end of the newest hour with spans: the data time alerts are judged by."""
    row = conn.execute(
        "select max(hour) + interval '1 hour' from marts.agg_pipeline_costs_hourly"
    ).fetchone()
    return row[0] if row else None


def record(conn: psycopg.Connection[Any], lookback_hours: int = DEFAULT_LOOKBACK_HOURS) -> int:
    """Record new anomalies and budget status rises in ``ops.alerts``; returns how many."""
    recorded = 0
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('spancost.alerts'))")
        newest = newest_data(conn)
        if newest is None:
            return 0
        cur = conn.execute(
            "insert into ops.alerts (alert_key, kind, payload, period_start, sendable)"
            " select alert_key, 'anomaly', payload, period_start, sendable"
            f" from ({ANOMALIES_SQL}) as new_anomalies"
            " on conflict (alert_key) do nothing",
            {"newest": newest, "lookback": lookback_hours},
        )
        recorded += cur.rowcount
        states = dict(conn.execute("select budget_id, status from ops.budget_states").fetchall())
        with conn.cursor(row_factory=dict_row) as budgets:
            for budget in budgets.execute(BUDGETS_SQL).fetchall():
                old = states.get(budget["budget_id"], "ok")
                new = budget["status"]
                if new != old:
                    conn.execute(
                        "insert into ops.budget_states (budget_id, status, changed_at)"
                        " values (%s, %s, now()) on conflict (budget_id)"
                        " do update set status = excluded.status, changed_at = now()",
                        (budget["budget_id"], new),
                    )
                if RANK[new] <= RANK[old]:
                    continue
                through = budget["data_through"].isoformat()
                key = f"budget:{budget['budget_id']}:{old}->{new}:{through}"
                payload = {"kind": "budget", "previous_status": old, **budget}
                cur = conn.execute(
                    "insert into ops.alerts (alert_key, kind, payload, period_start, sendable)"
                    " values (%s, 'budget', %s, %s, true) on conflict (alert_key) do nothing",
                    (key, json.dumps(payload, default=_json), budget["period_start"]),
                )
                recorded += cur.rowcount
    return recorded


def _usd(value: Any) -> str:
    return f"{Decimal(str(value or 0)):,.2f}"


def message(payload: dict[str, Any]) -> str:
    """What, where, how much against what, and where to look."""
    if payload["kind"] == "budget":
        return (
            f"Budget {payload['budget_id']} ({payload['scope_type']} {payload['scope_value']},"
            f" {payload['period']} from {payload['period_start']}):"
            f" {payload['previous_status']} -> {payload['status']}, spent"
            f" ${_usd(payload['spent_usd'])} of ${_usd(payload['limit_usd'])}"
            f" ({payload['pct_used']}%)"
        )
    traces = ", ".join(
        f"{t['trace_id']} (${_usd(t['estimated_cost_usd'])})"
        for t in payload.get("top_traces") or []
    )
    where = f"pipeline {payload['pipeline_id']}"
    if payload["scope_type"] != "pipeline":
        where = f"{payload['scope_type']} {payload['scope_value']} of {where}"
    return (
        f"{str(payload['severity']).upper()} cost anomaly: {where} cost"
        f" ${_usd(payload['observed_cost_usd'])} in the {payload['grain']} from"
        f" {payload['period_start']}, {payload['ratio']}x its baseline (the median of"
        f" the trailing 14 days) of"
        f" ${_usd(payload['baseline_cost_usd'])} (threshold {payload['threshold']}x)."
        + (f" Top traces: {traces}." if traces else "")
    )


def _webhook_body(alert_key: str, kind: str, payload: dict[str, Any]) -> bytes:
    body = {
        "alert_key": alert_key,
        "kind": kind,
        "scope_type": payload.get("scope_type"),
        "scope_value": payload.get("scope_value"),
        "pipeline_id": payload.get("pipeline_id"),
        "period_start": payload.get("period_start"),
        "severity": payload.get("severity"),
        "status": payload.get("status"),
        "figures": {
            k: payload.get(k)
            for k in (
                "observed_cost_usd",
                "baseline_cost_usd",
                "ratio",
                "threshold",
                "limit_usd",
                "spent_usd",
                "pct_used",
                "forecast_usd",
            )
            if k in payload
        },
        "message": message(payload),
        "top_traces": payload.get("top_traces", []),
    }
    return json.dumps(body, default=_json).encode()


def post_webhook(url: str, body: bytes, timeout: float = 10.0) -> None:
    """One JSON POST; raises on anything but a 2xx answer."""
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if not 200 <= response.status < 300:
            raise urllib.error.HTTPError(url, response.status, "not 2xx", response.headers, None)


def _pending(conn: psycopg.Connection[Any], channel: str, lookback_hours: int) -> list[str]:
    """What a channel still owes, oldest first.

    The log owes every sendable alert. Another channel owes a failed delivery however
    old, and whatever was recorded within the lookback: so a channel configured later
    is not flooded with every alert the log was told months before.
    """
    owed = (
        "true"
        if channel == "log"
        else f"{channel}_attempts > 0 or created_at >= now() - make_interval(hours => %s)"
    )
    return [
        key
        for (key,) in conn.execute(
            f"select alert_key from ops.alerts where sendable and {channel}_delivered_at is null"
            f" and ({owed}) order by created_at, alert_key",
            () if channel == "log" else (lookback_hours,),
        ).fetchall()
    ]


def slack_blocks(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """A Block Kit message: the headline, the figures, and the traces to look at."""
    if payload["kind"] == "budget":
        title = f"Budget {payload['budget_id']}: {payload['status']}"
    else:
        title = (
            f"{str(payload['severity']).capitalize()} cost anomaly:"
            f" {payload['scope_type']} {payload['scope_value']}"
        )
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": message(payload)[:3000]}},
    ]
    traces = payload.get("top_traces") or []
    if traces:
        lines = [
            f"`{t['trace_id']}` {t.get('root_span_name') or ''} ${_usd(t['estimated_cost_usd'])}"
            for t in traces
        ]
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "\n".join(lines)}]}
        )
    return blocks


def _log_line(key: str, payload: dict[str, Any]) -> None:
    log.warning("spancost alert %s: %s", key, message(payload))


def deliver(
    conn: psycopg.Connection[Any],
    webhook_url: str | None,
    slack: Sender | None = None,
    lookback_hours: int = DEFAULT_LOOKBACK_HOURS,
) -> tuple[dict[str, int], dict[str, int]]:
    """Send what each channel has not delivered yet; returns (delivered, failed) per channel."""
    senders: dict[str, Sender] = {"log": lambda key, kind, payload: _log_line(key, payload)}
    if webhook_url:
        senders["webhook"] = lambda key, kind, payload: post_webhook(
            webhook_url, _webhook_body(key, kind, payload)
        )
    if slack is not None:
        senders["slack"] = slack
    delivered = dict.fromkeys(CHANNELS, 0)
    failed = dict.fromkeys(CHANNELS, 0)
    for channel, send in senders.items():
        for key in _pending(conn, channel, lookback_hours):
            with conn.transaction():
                row = conn.execute(
                    f"select kind, payload from ops.alerts where alert_key = %s"
                    f" and {channel}_delivered_at is null for update skip locked",
                    (key,),
                ).fetchone()
                if row is None:
                    continue  # another run has it, or sent it
                kind, payload = row
                if channel == "log":
                    send(key, kind, payload)
                    conn.execute(
                        "update ops.alerts set log_delivered_at = now() where alert_key = %s",
                        (key,),
                    )
                    delivered[channel] += 1
                    continue
                try:
                    send(key, kind, payload)
                except Exception as exc:  # noqa: BLE001 - any failure is retried next run
                    failed[channel] += 1
                    conn.execute(
                        f"update ops.alerts set {channel}_attempts = {channel}_attempts + 1,"
                        f" {channel}_last_error = %s where alert_key = %s",
                        (f"{type(exc).__name__}: {exc}"[:500], key),
                    )
                    log.warning("spancost alert %s: %s delivery failed: %s", key, channel, exc)
                    continue
                conn.execute(
                    f"update ops.alerts set {channel}_delivered_at = now(),"
                    f" {channel}_attempts = {channel}_attempts + 1, {channel}_last_error = null"
                    " where alert_key = %s",
                    (key,),
                )
                delivered[channel] += 1
    return delivered, failed


def run(
    url: str,
    *,
    lookback_hours: int | None = None,
    webhook_url: str | None = None,
    slack: Callable[[], Sender | None] | None = None,
) -> RunResult:
    """Record, then deliver.

    The webhook is ``SPANCOST_ALERT_WEBHOOK_URL`` unless given. ``slack`` makes the
    Slack sender, or returns None when there is no Slack to send to; it is called only
    when Slack has something to be told (``airflow_adapter.slack_sender``, which
    imports Airflow).
    """
    hours = lookback_hours or int(
        os.environ.get("SPANCOST_ALERT_LOOKBACK_HOURS", DEFAULT_LOOKBACK_HOURS)
    )
    webhook = webhook_url or os.environ.get("SPANCOST_ALERT_WEBHOOK_URL") or None
    with db.connect(url) as conn:
        db.apply_schema(conn)
        recorded = record(conn, hours)
        sender = slack() if slack is not None and _pending(conn, "slack", hours) else None
        delivered, failed = deliver(conn, webhook, sender, hours)
    return RunResult(recorded, delivered, failed)
