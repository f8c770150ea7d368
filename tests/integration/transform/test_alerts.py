"""Alerts: each anomaly and budget change is delivered once, and a failed delivery is retried.

The traffic of test_cost_anomalies, under the demo pipeline `support-triage` (team
`support`), whose shipped budget `support-triage-daily` ($20 per rolling 24 h)
the steady traffic ($3 an hour) breaches. A real HTTP receiver on loopback takes
the webhook POSTs; the first run finds it failing.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

from spancost import alerts
from spancost.transform import dbt_build, report
from tests.integration.transform import test_cost_anomalies as scenario
from tests.integration.transform.test_llm_marts import ingest

pytestmark = pytest.mark.integration


class Receiver:
    """A webhook endpoint: answers 500 while failing, else 204, and keeps what it got."""

    def __init__(self) -> None:
        self.failing = True
        self.received: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.failing:
                    self.send_response(500)
                else:
                    receiver.received.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_alerts_are_delivered_once_and_a_failed_delivery_is_retried(s3, db_url: str) -> None:
    receiver = Receiver()
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

        # Run 1: the budget breach is recorded; the webhook fails, the log has it.
        first = alerts.run(db_url, webhook_url=receiver.url)
        assert first.recorded == 1
        assert first.delivered == {"log": 1, "webhook": 0}
        assert first.failed == {"log": 0, "webhook": 1}
        # Run 2: nothing new; the failed delivery is retried and lands, once.
        receiver.failing = False
        second = alerts.run(db_url, webhook_url=receiver.url)
        assert (second.recorded, second.delivered["webhook"]) == (0, 1)
        [budget] = receiver.received
        assert budget["kind"] == "budget" and budget["status"] == "breach"
        assert budget["alert_key"].startswith("budget:support-triage-daily:ok->breach:")
        assert budget["figures"]["limit_usd"] == "20.00"
        assert "support-triage-daily" in budget["message"] and "$20.00" in budget["message"]

        # The retry loop lands; the next transform finds it and the next run tells it.
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
        third = alerts.run(db_url, webhook_url=receiver.url)
        assert (third.recorded, third.delivered["webhook"]) == (2, 2)
        anomalies = {a["scope_type"]: a for a in receiver.received[1:]}
        assert set(anomalies) == {"feature", "pipeline"}
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

        # Run 4 (a rerun, a retry): nothing is told twice.
        fourth = alerts.run(db_url, webhook_url=receiver.url)
        assert (fourth.recorded, fourth.delivered) == (0, {"log": 0, "webhook": 0})
        assert len(receiver.received) == 3
        with psycopg.connect(db_url) as conn:
            assert conn.execute(
                "select kind, count(*), sum(webhook_attempts) from ops.alerts"
                " where webhook_delivered_at is not null group by kind order by kind"
            ).fetchall() == [("anomaly", 2, 2), ("budget", 1, 2)]
    finally:
        receiver.close()
