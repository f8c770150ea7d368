"""Great Expectations validation of a span batch before it is copied into ``raw.otel_spans``.

The rules live in a suite file (``expectations/otel_spans.json``), so users extend
them without code. Python has already rejected structurally broken spans; this is
the declarative gate on the batch. Each run uses an ephemeral GX context and a
pandas dataframe of the rows, with the COMPLETE result format so that every
failing expectation names the rows that broke it.

Which rows are rejected: the rows listed by an expectation that failed and has
severity ``critical`` (the GX default). An expectation with severity ``warning``
or ``info``, a table-level expectation, or one that passed thanks to ``mostly``
rejects no row; it still shows in the recorded result.

``great_expectations`` and ``pandas`` take seconds to import, so both are imported
inside :func:`validate_rows` only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from spancost.errors import SpancostError

if TYPE_CHECKING:
    import pandas
    from great_expectations import ExpectationSuite

log = logging.getLogger(__name__)

# Expectations with this severity reject the rows they list; others are only recorded.
REJECTING_SEVERITY = "critical"


class SuiteError(SpancostError, ValueError):
    """The suite file cannot be read, or one of its expectations cannot be built or run.

    The message names the suite file and the expectation (position and type).
    """


@dataclass(frozen=True)
class RowFailure:
    """One row of the batch that broke one expectation."""

    index: int
    expectation: str
    column: str
    value: str


@dataclass(frozen=True)
class ValidationOutcome:
    """What a suite said about a batch.

    ``success`` is the GX verdict on the whole batch; ``failures`` are the rows to
    reject (critical expectations only), in row order. ``result`` is a JSON-safe
    summary: per expectation its type, kwargs, severity, success and unexpected count.
    """

    suite: str
    success: bool
    rows_checked: int
    failures: tuple[RowFailure, ...]
    result: dict[str, Any]

    @property
    def failed_indices(self) -> frozenset[int]:
        return frozenset(failure.index for failure in self.failures)

    def reasons_by_row(self) -> dict[int, tuple[str, str, str]]:
        """The first failure of each failing row as (reason, column, value).

        This is the shape of ``spancost.spans.loader.Validator``.
        """
        reasons: dict[int, tuple[str, str, str]] = {}
        for failure in self.failures:
            reasons.setdefault(
                failure.index,
                (f"{self.suite}: {failure.expectation}", failure.column, failure.value),
            )
        return reasons


def default_suite_path() -> Path:
    """``expectations/otel_spans.json`` of the project checkout (beside ``plugins/``)."""
    return Path(__file__).resolve().parents[3] / "expectations" / "otel_spans.json"


def load_suite(path: Path) -> dict[str, Any]:
    """The suite file as a dict (the JSON of ``ExpectationSuite.to_json_dict()``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read the expectation suite: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise SuiteError(f"{path}: line {exc.lineno}: not valid JSON: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: an expectation suite is a JSON object")
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise SuiteError(f"{path}: the suite has no 'name'")
    expectations = data.get("expectations")
    if not isinstance(expectations, list) or not all(isinstance(e, dict) for e in expectations):
        raise SuiteError(f"{path}: 'expectations' is not a list of objects")
    return data


def validate_rows(rows: Sequence[Mapping[str, Any]], suite_path: Path) -> ValidationOutcome:
    """Run the suite at ``suite_path`` on ``rows`` (``raw.otel_spans`` row dicts).

    Raises SuiteError when the suite cannot be built or an expectation cannot be
    evaluated (a misspelt column, a bad regex): a broken gate fails the task
    instead of letting the batch through unchecked.
    """
    suite_dict = load_suite(suite_path)
    name: str = suite_dict["name"]
    if not rows:
        return ValidationOutcome(
            suite=name,
            success=True,
            rows_checked=0,
            failures=(),
            result={"suite": name, "success": True, "rows_checked": 0, "expectations": []},
        )

    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    suite = _build_suite(suite_dict, suite_path)
    frame = _frame(rows, _suite_columns(suite_dict))

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = (
        context.data_sources.add_pandas(name="spancost")
        .add_dataframe_asset(name=name)
        .add_batch_definition_whole_dataframe("batch")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    suite_result = batch.validate(suite, result_format="COMPLETE")

    failures: list[RowFailure] = []
    summaries: list[dict[str, Any]] = []
    for position, item in enumerate(suite_result.results):
        config = item.expectation_config
        if config is None:
            raise SuiteError(f"{suite_path}: GX returned a result without its expectation")
        kind = str(config.type)
        kwargs = {key: value for key, value in config.kwargs.items() if key != "batch_id"}
        problem = _exception_message(item.exception_info)
        if problem is not None:
            raise SuiteError(
                f"{suite_path}: expectation {position} ({kind} {_json_safe(kwargs)}) "
                f"could not be evaluated: {problem}"
            )
        severity_enum = getattr(config, "severity", None) or REJECTING_SEVERITY
        severity = str(getattr(severity_enum, "value", severity_enum))
        details: Mapping[str, Any] = item.result or {}
        summaries.append(
            {
                "type": kind,
                "kwargs": _json_safe(kwargs),
                "severity": severity,
                "success": bool(item.success),
                "unexpected_count": details.get("unexpected_count"),
            }
        )
        if item.success or severity != REJECTING_SEVERITY:
            continue
        columns = _columns(kwargs)
        for index in details.get("unexpected_index_list") or ():
            if not isinstance(index, int):  # a dict when unexpected_index_column_names is set
                continue
            failures.append(
                RowFailure(
                    index=index,
                    expectation=kind,
                    column=",".join(columns),
                    value=_offending(rows[index], columns),
                )
            )

    failures.sort(key=lambda failure: failure.index)  # stable: suite order within a row
    success = bool(suite_result.success)
    outcome = ValidationOutcome(
        suite=name,
        success=success,
        rows_checked=len(rows),
        failures=tuple(failures),
        result={
            "suite": name,
            "success": success,
            "rows_checked": len(rows),
            "statistics": _json_safe(dict(suite_result.statistics)),
            "expectations": summaries,
        },
    )
    level = logging.INFO if success else logging.WARNING
    log.log(
        level,
        "suite %s on %d rows: success=%s, %d rows rejected by %d failures",
        name,
        len(rows),
        success,
        len(outcome.failed_indices),
        len(failures),
    )
    return outcome


def record_outcome(
    conn: psycopg.Connection[Any],
    *,
    run_id: str,
    batch: str,
    outcome: ValidationOutcome,
) -> None:
    """Insert the outcome into ``ops.validation_results``; the caller commits."""
    conn.execute(
        "insert into ops.validation_results"
        " (run_id, suite, batch, success, rows_checked, rows_failed, result)"
        " values (%s, %s, %s, %s, %s, %s, %s)",
        (
            run_id,
            outcome.suite,
            batch,
            outcome.success,
            outcome.rows_checked,
            len(outcome.failed_indices),
            Jsonb(outcome.result),
        ),
    )


def _build_suite(suite_dict: Mapping[str, Any], path: Path) -> ExpectationSuite:
    """A gx.ExpectationSuite from the file's dict, refusing any expectation GX cannot build.

    ExpectationSuite(...) logs and drops an unknown expectation type instead of
    raising, so each configuration is built first, here, where the error can name it.
    """
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    for position, raw in enumerate(suite_dict["expectations"]):
        label = f"expectation {position} ({raw.get('type', '?')})"
        try:
            fields = {
                key: value for key, value in raw.items() if key not in ("id", "rendered_content")
            }
            ExpectationConfiguration(**fields).to_domain_obj()
        except Exception as exc:  # GX raises several unrelated types for a bad config
            raise SuiteError(f"{path}: {label} is not a valid expectation: {exc}") from exc
    known = ("name", "expectations", "suite_parameters", "meta", "notes", "id")
    unknown = sorted(set(suite_dict) - set(known))
    if unknown:
        raise SuiteError(f"{path}: unknown suite keys {unknown}")
    try:
        suite = gx.ExpectationSuite(**{key: suite_dict[key] for key in known if key in suite_dict})
    except Exception as exc:
        raise SuiteError(f"{path}: not a valid expectation suite: {exc}") from exc
    if len(suite.expectations) != len(suite_dict["expectations"]):
        raise SuiteError(f"{path}: GX dropped some expectations of the suite")
    return suite


# Columns that hold timestamps as UTC text in the rows; the frame has them as datetimes.
_TIME_COLUMNS = ("start_time", "end_time")


def _suite_columns(suite_dict: Mapping[str, Any]) -> set[str] | None:
    """The columns the suite's expectations name, or None when one names no column."""
    named: set[str] = set()
    for expectation in suite_dict.get("expectations", []):
        columns = _columns(expectation.get("kwargs", {}))
        if not columns:
            return None  # a table-level expectation: give it every column
        named.update(columns)
    return named


def _frame(rows: Sequence[Mapping[str, Any]], only: set[str] | None = None) -> pandas.DataFrame:
    """The rows as a dataframe indexed 0..n-1, one typed column per key.

    Only the columns in ``only`` are built when it is given: serialising the
    attributes of every row to JSON text costs more than the checks themselves.
    Whole numbers become nullable Int64, timestamps (datetimes, or the loader's
    UTC text) UTC datetimes, dicts and lists JSON text; anything else (text,
    Decimal money) stays as Python objects.
    """
    import pandas as pd

    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    if only is not None:  # a named column missing from the rows stays missing: GX says so
        columns = {name: None for name in columns if name in only}
    data = {}
    for name in columns:
        values = [row.get(name) for row in rows]
        if name in _TIME_COLUMNS and any(isinstance(value, str) for value in values):
            data[name] = pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601")
        else:
            data[name] = _series(pd, values)
    return pd.DataFrame(data, index=pd.RangeIndex(len(rows)))


def _series(pd: Any, values: list[Any]) -> Any:
    present = [value for value in values if value is not None]
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pd.array(values, dtype="Int64")
    if present and all(isinstance(v, datetime) for v in present):
        return pd.to_datetime(pd.Series(values, dtype=object), utc=True)
    if present and all(isinstance(v, (dict, list)) for v in present):
        values = [None if v is None else json.dumps(v, sort_keys=True, default=str) for v in values]
    return pd.Series(values, dtype=object)


def _columns(kwargs: Mapping[str, Any]) -> list[str]:
    """The columns an expectation looks at, from its kwargs."""
    if "column" in kwargs:
        return [str(kwargs["column"])]
    if "column_A" in kwargs and "column_B" in kwargs:
        return [str(kwargs["column_A"]), str(kwargs["column_B"])]
    if "column_list" in kwargs:
        return [str(column) for column in kwargs["column_list"]]
    return []


def _offending(row: Mapping[str, Any], columns: Sequence[str]) -> str:
    """The row's value in the expectation's column, or ``col=value`` pairs for several."""
    if len(columns) == 1:
        return _text(row.get(columns[0]))
    return ", ".join(f"{column}={_text(row.get(column))}" for column in columns)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _exception_message(info: Any) -> str | None:
    """The message of an exception GX caught while evaluating an expectation, if any.

    ``exception_info`` is either one {raised_exception, exception_message, ...} dict
    or a dict of them keyed by metric.
    """
    if not isinstance(info, Mapping):
        return None
    if "raised_exception" in info:
        return str(info.get("exception_message")) if info.get("raised_exception") else None
    for nested in info.values():
        message = _exception_message(nested)
        if message is not None:
            return message
    return None


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
