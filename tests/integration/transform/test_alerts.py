"""Alerts: each anomaly and budget change is delivered once, and a failed delivery is retried.

The traffic of test_cost_anomalies, under the demo pipeline `support-triage` (team
`support`), whose shipped budget `support-triage-daily` ($20 per rolling 24 h)
the steady traffic ($3 an hour) breaches. Real HTTP receivers on loopback take
the webhook POSTs and the Slack messages (the Slack provider's notifier, through
an `AIRFLOW_CONN_SPANCOST_SLACK` connection); the first run finds both failing.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

from spancost import alerts
from spancost.airflow_adapter import slack_sender
from spancost.transform import dbt_build, report
from tests.integration.transform import test_cost_anomalies as scenario
from tests.integration.transform.test_llm_marts import ingest

pytestmark = pytest.mark.integration


class Receiver:
    """A webhook endpoint: answers 500 while failing, else ``ok_status``, and keeps what it got.

    Slack's incoming webhooks answer 200 ``ok``; the provider's hook fails on anything
    else. Each answer takes a moment, so concurrent runs overlap.
    """

    def __init__(self, ok_status: int = 204, path: str = "/hook") -> None:
        self.failing = True
        self.received: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(0.05)
                if receiver.failing:
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.received.append(json.loads(body))
                self.send_response(ok_status)
                if ok_status == 200:
                    self.send_header("Content-Length", "2")
                self.end_headers()
                if ok_status == 200:
                    self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_alerts_are_delivered_once_and_a_failed_delivery_is_retried(
    s3, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = Receiver()
    slack = Receiver(ok_status=200, path="/services/T000/B000/XXXX")
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPANCOST_SLACK",
        json.dumps({"conn_type": "slackwebhook", "password": slack.url}),
    )

    def tell() -> alerts.RunResult:
        # What `spancost alerts` and the transform DAG's alerts task run.
        return alerts.run(db_url, webhook_url=receiver.url, slack=slack_sender)

    try:
        s3.create_bucket(Bucket="spans")
        n = 0
        for day in range(scenario.DAYS):
            spans = []
            for hour in range(24):
                at = scenario.START + timedelta(days=day, hours=hour, minutes=5)
                for feature in ("f1", "f2"):
                    spans.append(scenario.span(n, at, feature, pipeline="support-triage"))
                    n += 1
            scenario.put(s3, spans, scenario.START + timedelta(days=day), day)
        ingest(s3, db_url, scenario.START, scenario.START + timedelta(days=scenario.DAYS), "a")
        dbt_build.build(db_url)

        # A budget carries its own period: the report applies no window to it, and
        # its heading does not claim one.
        table = report.table("budgets", db_url, scenario.START, scenario.START + timedelta(days=1))
        assert table.startswith("summed over every row in marts.rpt_budget_status")
        assert "support-triage-daily" in table and "breach" in table

        # Run 1: the budget breach is recorded; the webhook and Slack fail, the log has it.
        first = tell()
        assert first.recorded == 1
        assert first.delivered == {"log": 1, "webhook": 0, "slack": 0}
        assert first.failed == {"log": 0, "webhook": 1, "slack": 1}
        # Run 2: nothing new; the failed deliveries are retried and land, once.
        receiver.failing = slack.failing = False
        second = tell()
        assert second.recorded == 0
        assert second.delivered == {"log": 0, "webhook": 1, "slack": 1}
        [budget] = receiver.received
        assert budget["kind"] == "budget" and budget["status"] == "breach"
        assert budget["alert_key"].startswith("budget:support-triage-daily:ok->breach:")
        assert budget["figures"]["limit_usd"] == "20.00"
        assert "support-triage-daily" in budget["message"] and "$20.00" in budget["message"]
        [slack_budget] = slack.received
        assert slack_budget["text"] == f"{budget['message']} [{budget['alert_key']}]"
        assert slack_budget["blocks"][0]["text"]["text"] == "Budget support-triage-daily: breach"

        # The retry loop lands; the next transform finds it. Two alert runs at once
        # (a retried task beside the next one): each alert is told once per channel.
        loop = [
            scenario.span(
                n + k,
                scenario.LOOP_HOUR + timedelta(minutes=20 + k),
                "f1",
                pipeline="support-triage",
            )
            for k in range(2)
        ]
        scenario.put(s3, loop, scenario.LOOP_HOUR + timedelta(minutes=30), 999)
        ingest(s3, db_url, scenario.LOOP_HOUR, scenario.LOOP_HOUR + timedelta(hours=1), "b")
        dbt_build.build(db_url, dbt_vars={"start_time": "", "end_time": ""})
        with ThreadPoolExecutor(2) as pool:
            both = list(pool.map(lambda _: tell(), "ab"))
        assert sum(r.recorded for r in both) == 2
        for channel in ("log", "webhook", "slack"):
            assert sum(r.delivered[channel] for r in both) == 2, channel
        anomalies = {a["scope_type"]: a for a in receiver.received[1:]}
        assert len(receiver.received) == 3 and set(anomalies) == {"feature", "pipeline"}
        feature = anomalies["feature"]
        assert (feature["scope_value"], feature["pipeline_id"], feature["severity"]) == (
            "f1",
            "support-triage",
            "warn",
        )
        # The loop's three traces of f1 in that hour, costliest first.
        assert len(feature["top_traces"]) == 3
        assert "f1 of pipeline support-triage" in feature["message"]
        assert "Top traces:" in feature["message"]
        assert len(slack.received) == 3
        assert {m["text"] for m in slack.received[1:]} == {
            f"{a['message']} [{a['alert_key']}]" for a in anomalies.values()
        }

        # Run 4 (a rerun, a retry): nothing is told twice.
        fourth = tell()
        assert (fourth.recorded, sum(fourth.delivered.values())) == (0, 0)

        # A backfill lands a loop nine days before the newest data: recorded, not sent.
        old_hour = scenario.START + timedelta(days=5, hours=10)
        old_loop = [
            scenario.span(n + 10 + k, old_hour + timedelta(minutes=20 + k), "f1", "support-triage")
            for k in range(2)
        ]
        scenario.put(s3, old_loop, old_hour + timedelta(minutes=30), 998)
        ingest(s3, db_url, old_hour, old_hour + timedelta(hours=1), "c")
        day = old_hour.replace(hour=0)
        dbt_build.build(
            db_url,
            dbt_vars={
                "start_time": day.isoformat(),
                "end_time": (day + timedelta(days=1)).isoformat(),
            },
        )
        fifth = tell()
        assert (fifth.recorded, sum(fifth.delivered.values())) == (2, 0)
        assert len(receiver.received) == len(slack.received) == 3
        with psycopg.connect(db_url) as conn:
            assert conn.execute(
                "select kind, sendable, count(*), sum(webhook_attempts), sum(slack_attempts),"
                " count(log_delivered_at) from ops.alerts group by kind, sendable"
                " order by kind, sendable"
            ).fetchall() == [
                ("anomaly", False, 2, 0, 0, 0),
                ("anomaly", True, 2, 2, 2, 2),
                ("budget", True, 1, 2, 2, 1),
            ]
            old = conn.execute(
                "select min(period_start) from ops.alerts where not sendable"
            ).fetchone()[0]
            assert old == old_hour
    finally:
        receiver.close()
        slack.close()
