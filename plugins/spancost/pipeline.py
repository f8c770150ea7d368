"""The jobs behind the CLI and the DAG tasks: each a few calls into the modules."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from spancost import db
from spancost.loader import LoadReport, Validator, load_objects
from spancost.normalize import NormalizeSettings
from spancost.s3layout import list_objects
from spancost.settings import Settings

log = logging.getLogger(__name__)


def gx_validator(run_id: str, batch: str, url: str) -> Validator:
    """A validator that runs the Great Expectations suite and records the outcome."""

    def validate(rows: Any) -> dict[int, tuple[str, str, str]]:
        from spancost import validation  # imports great_expectations: slow, so only here

        outcome = validation.validate_rows(rows, validation.default_suite_path())
        with db.connect(url) as conn:
            validation.record_outcome(conn, run_id=run_id, batch=batch, outcome=outcome)
        return outcome.reasons_by_row()

    return validate


def ingest_spans(
    settings: Settings,
    s3: Any,
    start: datetime,
    end: datetime,
    *,
    url: str,
    run_id: str,
) -> LoadReport:
    """Load every trace export whose partition falls in [start, end) (plus lateness)."""
    objects = list_objects(s3, settings.spans, start, end)
    validator = (
        gx_validator(run_id, f"{start.isoformat()}/{end.isoformat()}", url)
        if settings.validate
        else None
    )
    with db.connect(url) as conn:
        db.apply_schema(conn)
        return load_objects(
            conn,
            s3,
            objects,
            NormalizeSettings(
                user_id_salt=settings.user_id_salt,
                content_keys=settings.content_keys,
                max_attribute_bytes=settings.max_attribute_bytes,
            ),
            max_decompressed=settings.max_decompressed_bytes,
            validator=validator,
        )
