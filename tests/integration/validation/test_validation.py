"""The Great Expectations gate on span batches: which rows fail, and the record in Postgres.

GX takes seconds to import, so each batch is validated once per module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from spancost import db
from spancost.validation.gx_gate import (
    SuiteError,
    ValidationOutcome,
    default_suite_path,
    load_suite,
    record_outcome,
    validate_rows,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SUITE = REPO / "expectations" / "otel_spans.json"
T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)

REGEX = "expect_column_values_to_match_regex"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
NOT_NULL = "expect_column_values_to_not_be_null"
PAIR = "expect_column_pair_values_a_to_be_greater_than_b"


def span_row(n: int, **overrides: Any) -> dict[str, Any]:
    """A ``raw.otel_spans`` row as the loader builds it (before source_bucket/key)."""
    start = T0 + timedelta(seconds=n)
    row: dict[str, Any] = {
        "trace_id": f"{n:032x}",
        "span_id": f"{n + 1:016x}",
        "parent_span_id": f"{n + 2:016x}",
        "name": "chat claude-sonnet-4",
        "kind": 3,
        "start_time": start,
        "end_time": start + timedelta(milliseconds=850),
        "status_code": 0,
        "status_message": None,
        "service_name": "support-bot",
        "scope_name": "opentelemetry.instrumentation.anthropic",
        "scope_version": "0.40.0",
        "provider": "anthropic",
        "operation": "chat",
        "request_model": "claude-sonnet-4",
        "response_model": "claude-sonnet-4-20250514",
        "input_tokens": 1200,
        "output_tokens": 300,
        "cache_read_tokens": 800,
        "cache_creation_tokens": 0,
        "reasoning_tokens": None,
        "pipeline_id": "support",
        "team": "cx",
        "feature": "triage",
        "environment": "prod",
        "user_id_hash": "9f2c",
        "agent_name": None,
        "agent_id": None,
        "conversation_id": None,
        "region": "us-east-1",
        "sagemaker_endpoint": None,
        "bedrock_model_id": None,
        "host_type": None,
        "reported_cost_usd": Decimal("0.0123"),
        "attributes": {"gen_ai.request.model": "claude-sonnet-4", "n": n},
        "resource_attributes": {"service.name": "support-bot"},
    }
    row.update(overrides)
    return row


# Index -> the row; comments say what each row breaks, if anything.
MIXED_ROWS: list[dict[str, Any]] = [
    span_row(0),
    # A root span without usage or cost: optional fields are null.
    span_row(
        1,
        parent_span_id=None,
        input_tokens=None,
        output_tokens=None,
        cache_read_tokens=None,
        cache_creation_tokens=None,
        reported_cost_usd=None,
        provider=None,
    ),
    span_row(2, trace_id="A" * 32),  # uppercase hex
    span_row(3, trace_id="a" * 32 + "\n"),  # `$` would accept the trailing newline
    span_row(4, output_tokens=10_000_001),  # over the limit
    # Exclusive input count (Anthropic API): cache reads above input_tokens are legitimate.
    span_row(5, input_tokens=40, cache_read_tokens=50_000, cache_creation_tokens=1_000),
    span_row(6, kind=7),
    span_row(7, status_code=3, span_id="xyz"),  # two failures on one row
    span_row(8, end_time=T0 + timedelta(seconds=7)),  # ends a second before it starts
    span_row(9, reported_cost_usd=Decimal("-0.01")),
    span_row(10, trace_id=None),  # not null fails; the regex skips nulls
    span_row(11, input_tokens=10_000_000, output_tokens=0, reasoning_tokens=0),  # the bounds
    span_row(12, parent_span_id="ZZ"),
]

EXPECTED_FAILURES = {
    (2, REGEX, "trace_id"),
    (3, REGEX, "trace_id"),
    (4, BETWEEN, "output_tokens"),
    (6, IN_SET, "kind"),
    (7, REGEX, "span_id"),
    (7, IN_SET, "status_code"),
    (8, PAIR, "end_time,start_time"),
    (9, BETWEEN, "reported_cost_usd"),
    (10, NOT_NULL, "trace_id"),
    (12, REGEX, "parent_span_id"),
}


@pytest.fixture(scope="module")
def mixed() -> ValidationOutcome:
    return validate_rows(MIXED_ROWS, SUITE)


@pytest.fixture(scope="module")
def valid() -> ValidationOutcome:
    rows = [span_row(n, reported_cost_usd=None) for n in range(20)]
    return validate_rows(rows, SUITE)


@pytest.fixture
def scratch_url(db_url: str) -> str:
    """A fresh database (from conftest) with the landing schema."""
    with db.connect(db_url) as conn:
        db.apply_schema(conn)
    return db_url


def test_failing_rows_and_expectations_are_exactly_the_broken_ones(
    mixed: ValidationOutcome,
) -> None:
    found = {(f.index, f.expectation, f.column) for f in mixed.failures}
    assert found == EXPECTED_FAILURES
    assert mixed.failed_indices == frozenset({2, 3, 4, 6, 7, 8, 9, 10, 12})
    assert not mixed.success
    assert mixed.rows_checked == len(MIXED_ROWS)
    assert [f.index for f in mixed.failures] == sorted(f.index for f in mixed.failures)


def test_failures_carry_the_offending_values(mixed: ValidationOutcome) -> None:
    values = {(f.index, f.column): f.value for f in mixed.failures}
    assert values[(2, "trace_id")] == "A" * 32
    assert values[(4, "output_tokens")] == "10000001"
    assert values[(6, "kind")] == "7"
    assert values[(9, "reported_cost_usd")] == "-0.01"
    assert values[(10, "trace_id")] == ""
    assert values[(8, "end_time,start_time")] == (
        "end_time=2026-01-05T10:00:07+00:00, start_time=2026-01-05T10:00:08+00:00"
    )
    reasons = mixed.reasons_by_row()
    assert set(reasons) == mixed.failed_indices
    assert reasons[4] == (f"otel_spans: {BETWEEN}", "output_tokens", "10000001")


def test_result_summary_is_json_and_covers_every_expectation(mixed: ValidationOutcome) -> None:
    summary = json.loads(json.dumps(mixed.result))
    assert summary["suite"] == "otel_spans"
    assert summary["success"] is False
    expectations = summary["expectations"]
    assert len(expectations) == len(load_suite(SUITE)["expectations"])
    regex = [e for e in expectations if e["type"] == REGEX and e["kwargs"]["column"] == "trace_id"]
    assert regex == [
        {
            "type": REGEX,
            "kwargs": {"column": "trace_id", "regex": "^[0-9a-f]{32}\\Z"},
            "severity": "critical",
            "success": False,
            "unexpected_count": 2,
        }
    ]


def test_valid_batch_passes(valid: ValidationOutcome) -> None:
    assert valid.success
    assert valid.failures == ()
    assert valid.failed_indices == frozenset()
    assert valid.rows_checked == 20
    assert all(e["success"] for e in valid.result["expectations"])


def test_empty_batch_passes_without_importing_great_expectations() -> None:
    script = (
        "import sys, pathlib\n"
        "from spancost.validation.gx_gate import validate_rows\n"
        f"outcome = validate_rows([], pathlib.Path({str(SUITE)!r}))\n"
        "assert outcome.success and outcome.rows_checked == 0 and outcome.failures == ()\n"
        "assert 'great_expectations' not in sys.modules, 'imported GX'\n"
        "assert 'pandas' not in sys.modules, 'imported pandas'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def test_suite_file_round_trips_through_gx() -> None:
    import great_expectations as gx

    data = load_suite(SUITE)
    assert data["name"] == "otel_spans"
    assert gx.ExpectationSuite(**data).to_json_dict() == data
    assert default_suite_path() == SUITE


def test_suite_with_unknown_expectation_type_is_refused(tmp_path: Path) -> None:
    data = load_suite(SUITE)
    data["expectations"].append({"type": "expect_spans_to_be_cheap", "kwargs": {}})
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SuiteError, match=r"expectation 19 \(expect_spans_to_be_cheap\)"):
        validate_rows(MIXED_ROWS[:1], path)


def test_expectation_on_a_missing_column_fails_loudly(tmp_path: Path) -> None:
    path = tmp_path / "suite.json"
    path.write_text(
        json.dumps(
            {
                "name": "typo",
                "expectations": [
                    {"type": NOT_NULL, "kwargs": {"column": "trace_idd"}},
                ],
            }
        )
    )
    with pytest.raises(SuiteError, match="trace_idd"):
        validate_rows(MIXED_ROWS[:1], path)


def test_only_critical_expectations_reject_rows(tmp_path: Path) -> None:
    path = tmp_path / "suite.json"
    path.write_text(
        json.dumps(
            {
                "name": "severities",
                "expectations": [
                    {
                        "type": REGEX,
                        "kwargs": {"column": "trace_id", "regex": "^[0-9a-f]{32}\\Z"},
                        "severity": "warning",
                    },
                    {
                        "type": BETWEEN,
                        "kwargs": {
                            "column": "cache_read_tokens",
                            "max_value": 1_000,
                            "mostly": 0.5,
                        },
                        "severity": "critical",
                    },
                    {
                        "type": BETWEEN,
                        "kwargs": {"column": "output_tokens", "max_value": 1_000_000},
                    },
                ],
            }
        )
    )
    outcome = validate_rows(MIXED_ROWS, path)
    assert not outcome.success
    # The warning and the expectation that passed thanks to `mostly` reject nothing.
    assert {(f.index, f.column) for f in outcome.failures} == {(4, "output_tokens")}
    summary = outcome.result["expectations"]
    assert [(e["severity"], e["success"], e["unexpected_count"]) for e in summary] == [
        ("warning", False, 2),
        ("critical", True, 1),
        ("critical", False, 1),
    ]


def test_record_outcome_writes_one_row(scratch_url: str, mixed: ValidationOutcome) -> None:
    with db.connect(scratch_url) as conn:
        record_outcome(conn, run_id="run-1", batch="2026-01-05T10:00/10:15", outcome=mixed)
        conn.rollback()  # record_outcome does not commit: the caller owns the transaction
        assert conn.execute("select count(*) from ops.validation_results").fetchone() == (0,)
        record_outcome(conn, run_id="run-1", batch="2026-01-05T10:00/10:15", outcome=mixed)
        conn.commit()
    with psycopg.connect(scratch_url) as conn:
        rows = conn.execute(
            "select run_id, suite, batch, success, rows_checked, rows_failed, result"
            " from ops.validation_results"
        ).fetchall()
    assert len(rows) == 1
    run_id, suite, batch, success, rows_checked, rows_failed, result = rows[0]
    assert (run_id, suite, batch) == ("run-1", "otel_spans", "2026-01-05T10:00/10:15")
    assert (success, rows_checked, rows_failed) == (False, 13, 9)
    assert result == mixed.result
