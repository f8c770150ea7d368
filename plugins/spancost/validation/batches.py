"""Batches of write-audit-publish: which landed rows dbt may read.

A load with validation on opens a *pending* batch for its run and dataset and
writes its rows under it (span exports name it in their manifest row, in the
object's own transaction). The audit (:mod:`spancost.validation.audit`) then
publishes or quarantines each pending batch. Nothing here imports Great
Expectations.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from spancost.errors import SpancostError

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

SPANS = "otel_spans"
COST_EXPLORER = "ce_cost_and_usage"
INVOCATIONS = "sagemaker_invocations_hourly"
PRICES = "aws_price_list"
ENDPOINTS = "sagemaker_endpoint_snapshots"
DATASETS = (SPANS, COST_EXPLORER, INVOCATIONS, PRICES, ENDPOINTS)

# A pending batch of another run is audited once nothing has landed in it for this long:
# its run died (the load tasks have execution timeouts far below it).
DEFAULT_ABANDONED_AFTER = timedelta(hours=2)


class BatchClosed(SpancostError, RuntimeError):
    """A load tried to add rows to a batch that was already audited.

    The task fails; its retry opens a new pending batch for the rest.
    """


@dataclass(frozen=True)
class Batch:
    batch_id: str
    dataset: str
    run_id: str
    created_at: datetime


def open_batch(conn: Conn, dataset: str, run_id: str) -> str:
    """The pending batch of ``run_id`` for ``dataset``, created when it has none.

    Mapped load tasks and retries of one run share it; once audited, the run's
    next load gets a new one (``<dataset>/<run_id>/<n>``).
    """
    with conn.transaction():
        conn.execute(
            "select pg_advisory_xact_lock(hashtextextended(%s, 0))",
            [f"spancost.batch/{dataset}/{run_id}"],
        )
        rows = conn.execute(
            "select batch_id, status from ops.load_batches where dataset = %s and run_id = %s",
            [dataset, run_id],
        ).fetchall()
        for batch_id, status in rows:
            if status == "pending":
                return str(batch_id)
        batch_id = f"{dataset}/{run_id}/{len(rows) + 1}"
        conn.execute(
            "insert into ops.load_batches (batch_id, dataset, run_id) values (%s, %s, %s)",
            [batch_id, dataset, run_id],
        )
    log.info("opened batch %s", batch_id)
    return batch_id


def register_pending(conn: Conn, dataset: str, batch_id: str, run_id: str) -> None:
    """A batch whose rows the caller writes in the same transaction (a pull, a snapshot)."""
    conn.execute(
        "insert into ops.load_batches (batch_id, dataset, run_id) values (%s, %s, %s)",
        [batch_id, dataset, run_id],
    )


def claim_for_write(conn: Conn, batch_id: str) -> None:
    """Inside a load's transaction: hold the batch open until the transaction ends.

    A shared row lock: loads into one batch go on side by side, while an audit
    (which locks the row for update) waits for them and they wait for it. Raises
    BatchClosed when the batch was audited meanwhile.
    """
    row = conn.execute(
        "select status from ops.load_batches where batch_id = %s for share", [batch_id]
    ).fetchone()
    if row is None or row[0] != "pending":
        state = "missing" if row is None else row[0]
        raise BatchClosed(f"batch {batch_id} is {state}: a retry opens a new batch for the rest")


def pending_batches(
    conn: Conn,
    dataset: str,
    run_id: str | None,
    *,
    now: datetime,
    abandoned_after: timedelta = DEFAULT_ABANDONED_AFTER,
) -> list[Batch]:
    """The batches an audit for ``run_id`` should look at, oldest first.

    Its own run's pending batches, and any other run's whose newest row landed
    (or which was opened, if nothing landed) ``abandoned_after`` ago. With
    ``run_id`` None, every pending batch of the dataset.
    """
    last_write = (
        "(select max(objects.loaded_at) from raw.s3_objects as objects"
        " where objects.batch_id = batches.batch_id)"
        if dataset == SPANS
        else "null::timestamptz"
    )
    rows = conn.execute(
        f"""
        select batch_id, dataset, run_id, created_at
        from ops.load_batches as batches
        where dataset = %(dataset)s and status = 'pending'
          and (
              %(run_id)s::text is null
              or run_id = %(run_id)s
              or coalesce({last_write}, created_at) < %(cutoff)s
          )
        order by created_at, batch_id
        """,
        {"dataset": dataset, "run_id": run_id, "cutoff": now - abandoned_after},
    ).fetchall()
    return [Batch(str(r[0]), str(r[1]), str(r[2]), r[3]) for r in rows]
