"""The transform benchmark: dbt build of the marts, and BI queries on them, as history grows.

Measured in one run (``python -m bench.run transform``, or ``BENCH_ONLY=transform``):

1. the 15-minute incremental ``dbt build`` (what the transform DAG runs each cycle:
   ``dbt build`` with the DAG's vars, ``start_time`` and ``end_time`` empty, so the
   lookback window applies) after one 15-minute interval of new spans lands, with a
   small history (``BENCH_TRANSFORM_SMALL``, 1M spans) and a large one
   (``BENCH_TRANSFORM_LARGE``, 20M), both at the same spans per day;
2. BI queries on the marts of the large history, ``BENCH_BI_RUNS`` times each;
3. ``dbt build --full-refresh`` of the small history against one hand-written SQL
   query that aggregates the same spans (the floor).

Data: one day of demo traffic (``spancost.demo``, the real OpenTelemetry SDK) is
loaded with the real loader, kept as a template table, and replicated inside
Postgres one whole day at a time: start and end times shift by whole days, and
trace and span ids get the copy's number as a prefix, so every copy is unique and
every trace stays whole. Everything lives in the database
``spancost_bench_transform``, created and dropped by the bench. dbt builds the project
``SPANCOST_DBT_PROJECT_DIR`` names (default ``dbt/``), into a target folder of its own,
so ``dbt/target`` is never touched. ``BENCH_TRANSFORM_MAX_GB`` (default 40) caps the
large history at what the disk budget allows, from the small run's bytes per span.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import psycopg

from bench.data import empty_bucket
from spancost import db, settings
from spancost.db import embedded
from spancost.demo import traffic
from spancost.local import endpoints
from spancost.spans.loader import ensure_partitions
from spancost.spans.normalize import ROW_COLUMNS
from spancost.transform import dbt_build

REPO = Path(__file__).resolve().parents[1]
DB_NAME = os.environ.get("BENCH_TRANSFORM_DB", "spancost_bench_transform")
BUCKET = "spancost-bench-transform"
PREFIX = "bench/transform"
SMALL = int(os.environ.get("BENCH_TRANSFORM_SMALL", "1000000"))
LARGE = int(os.environ.get("BENCH_TRANSFORM_LARGE", "20000000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
BI_RUNS = int(os.environ.get("BENCH_BI_RUNS", "50"))
# Demo traces per hour of the template day (the generator's diurnal curve averages 1.0).
TRACES_PER_HOUR = int(os.environ.get("BENCH_TRACES_PER_HOUR", "520"))
MAX_GB = float(os.environ.get("BENCH_TRANSFORM_MAX_GB", "40"))
KEEP = os.environ.get("BENCH_TRANSFORM_KEEP", "") == "1"  # keep the database (debugging)
# The large history's older days are built as a backfill, this many days per dbt build.
SLICE_DAYS = int(os.environ.get("BENCH_TRANSFORM_SLICE_DAYS", "14"))

TEMPLATE_DAY = date(2025, 1, 1)
# The newest history day; the history holds its traces that start before CUTOFF (an
# hour where the diurnal curve is at its mean), and the 15-minute cycles land after it.
LAST_DAY = date(2026, 6, 30)
CUTOFF = timedelta(hours=9)
INTERVAL = timedelta(minutes=15)
CYCLE_TAG = 60000  # copy numbers of the cycles' intervals; history days use 0, 1, 2, ...

# Every column of raw.otel_spans the copies fill: the loader's row columns, where they
# came from and when they landed.
COLUMNS = ["source_bucket", "source_key", *ROW_COLUMNS, "loaded_at"]
_REWRITTEN = {
    "trace_id": "lpad(to_hex(%(tag)s::integer), 8, '0') || substr(trace_id, 9)",
    "span_id": "lpad(to_hex(%(tag)s::integer), 4, '0') || substr(span_id, 5)",
    "parent_span_id": (
        "case when coalesce(parent_span_id, '') = '' then parent_span_id"
        " else lpad(to_hex(%(tag)s::integer), 4, '0') || substr(parent_span_id, 5) end"
    ),
    "start_time": "start_time + %(shift)s",
    "end_time": "end_time + %(shift)s",
}
COPY_SQL = (
    f"insert into raw.otel_spans ({', '.join(COLUMNS)})\n"
    f"select {', '.join(_REWRITTEN.get(c, c) for c in COLUMNS)}\n"
    "from bench.template_spans\n"
    "where trace_offset >= %(low)s and trace_offset < %(high)s"
)

# (a) cost per pipeline and model over the last 24 hours, from the hourly roll-up the
# README and `spancost report` read; (b) the day's 20 most expensive traces.
BI_PIPELINE_MODEL_24H = """
select
    pipeline_id,
    model,
    sum(calls)::bigint as calls,
    sum(input_tokens)::bigint as input_tokens,
    sum(output_tokens)::bigint as output_tokens,
    sum(estimated_cost_usd) as estimated_cost_usd
from marts.agg_pipeline_costs_hourly
where hour >= %(now)s::timestamptz - interval '24 hours' and hour < %(now)s
group by pipeline_id, model
order by estimated_cost_usd desc nulls last, pipeline_id, model
"""
BI_TOP_TRACES = """
select
    trace_id,
    root_span_name,
    pipeline_id,
    team,
    start_time,
    llm_calls,
    estimated_cost_usd
from marts.fct_trace_costs
where start_time >= %(day)s::timestamptz and start_time < %(day)s::timestamptz + interval '1 day'
order by estimated_cost_usd desc nulls last, trace_id
limit 20
"""

# The floor: estimated cost per day, pipeline and model straight from the raw spans and
# the price seed, in one statement (no dedupe, no nesting, no aliases, no tiers).
FLOOR_SQL = """
create table bench.floor_daily as
with calls as (
    select
        cast(date_trunc('day', start_time, 'UTC') at time zone 'UTC' as date) as day,
        coalesce(pipeline_id, 'unattributed') as pipeline_id,
        coalesce(response_model, request_model) as model,
        start_time,
        coalesce(input_tokens, 0) as input_tokens,
        coalesce(output_tokens, 0) as output_tokens,
        coalesce(cache_read_tokens, 0) as cache_read_tokens,
        coalesce(cache_creation_tokens, 0) as cache_creation_tokens
    from raw.otel_spans
    where input_tokens is not null or output_tokens is not null
)
select
    calls.day,
    calls.pipeline_id,
    calls.model,
    count(*) as calls,
    sum(calls.input_tokens) as input_tokens,
    sum(calls.output_tokens) as output_tokens,
    sum(
        (
            (calls.input_tokens - calls.cache_read_tokens - calls.cache_creation_tokens)
            * prices.input_usd_per_mtok
            + calls.cache_read_tokens * coalesce(prices.cache_read_usd_per_mtok, 0)
            + calls.cache_creation_tokens * coalesce(prices.cache_write_usd_per_mtok, 0)
            + calls.output_tokens * prices.output_usd_per_mtok
        ) / 1000000
    ) as estimated_cost_usd
from calls
left join seeds.llm_prices as prices
    on
        prices.model = calls.model
        and calls.start_time >= prices.effective_from
        and (prices.effective_to is null or calls.start_time < prices.effective_to)
group by calls.day, calls.pipeline_id, calls.model
"""

log = logging.getLogger(__name__)


def say(message: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


@dataclass
class Build:
    seconds: float
    dbt_elapsed: float
    nodes: list[tuple[str, float]]  # (unique_id, execution seconds), slowest first

    def top(self, count: int = 6) -> str:
        return ", ".join(
            f"{name.split('.', 2)[-1]} {secs:.1f}s" for name, secs in self.nodes[:count]
        )


@dataclass
class Stage:
    label: str
    spans: int = 0
    days: int = 0
    load_seconds: float = 0.0
    full: list[Build] = field(default_factory=list)
    slices: list[Build] = field(default_factory=list)
    cycles: list[Build] = field(default_factory=list)
    cycle_spans: list[int] = field(default_factory=list)
    raw_bytes: int = 0
    db_bytes: int = 0

    def cycle_median(self) -> float:
        return statistics.median(build.seconds for build in self.cycles)

    def cycle_node_median(self) -> float:
        return statistics.median(sum(s for _, s in build.nodes) for build in self.cycles)


@dataclass
class Results:
    template_spans: int = 0
    template_traces: int = 0
    bytes_per_span: float = 0.0
    small: Stage = field(default_factory=lambda: Stage("small"))
    large: Stage = field(default_factory=lambda: Stage("large"))
    floor_seconds: list[float] = field(default_factory=list)
    floor_rows: int = 0
    floor_cost: float = 0.0
    mart_cost: float = 0.0
    bi: dict[str, list[float]] = field(default_factory=dict)
    bi_rows: dict[str, int] = field(default_factory=dict)
    bi_plans: dict[str, str] = field(default_factory=dict)
    large_capped: str = ""
    server: str = ""
    project: str = field(default_factory=lambda: str(dbt_build.project_dir()))


# --- database -------------------------------------------------------------------------------


def _admin(server_url: str) -> str:
    return urlsplit(server_url)._replace(path="/postgres").geturl()


def create_database(server_url: str) -> str:
    drop_database(server_url)
    embedded.create_database(_admin(server_url), DB_NAME)
    url = urlsplit(server_url)._replace(path=f"/{DB_NAME}").geturl()
    with db.connect(url) as conn:
        db.apply_schema(conn)
    return url


def drop_database(server_url: str) -> None:
    with psycopg.connect(_admin(server_url), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{DB_NAME}" with (force)')


def scalar(conn: Any, sql: str, params: Any = None) -> Any:
    return conn.execute(sql, params).fetchone()[0]


def raw_bytes(conn: Any) -> int:
    return int(
        scalar(
            conn,
            "select coalesce(sum(pg_total_relation_size(relid)), 0)"
            " from pg_partition_tree('raw.otel_spans')",
        )
    )


def database_bytes(conn: Any) -> int:
    return int(scalar(conn, "select pg_database_size(current_database())"))


# --- data -----------------------------------------------------------------------------------


def load_template(url: str, home: Path) -> tuple[int, int]:
    """One day of demo traffic through the real loader, kept as bench.template_spans."""
    from spancost import pipeline

    endpoint = endpoints.start(endpoints.LocalAws(home / "bench"))
    endpoints.use(endpoint)
    s3 = boto3.client("s3")
    empty_bucket(s3, BUCKET)
    start = datetime(TEMPLATE_DAY.year, TEMPLATE_DAY.month, TEMPLATE_DAY.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    spans = traffic.generate_spans(start, end, seed=11, traces_per_hour=TRACES_PER_HOUR)
    objects = traffic.build_objects(spans, prefix=PREFIX, seed=11)
    traffic.upload_objects(s3, BUCKET, objects)
    say(f"template: {len(spans):,} demo spans in {len(objects)} objects, loading")
    report = pipeline.ingest_spans(
        settings.Settings(
            spans=settings.SpanSource(bucket=BUCKET, prefix=PREFIX),
            user_id_salt="bench",
            validate=False,
            load_workers=settings.default_load_workers(),
        ),
        s3,
        start,
        end + timedelta(minutes=15),
        url=url,
        run_id=f"bench-{uuid.uuid4()}",
    )
    say(f"template ingest: {report.summary()}")
    with db.connect(url, autocommit=True) as conn:
        conn.execute("create schema if not exists bench")
        conn.execute(
            "create table bench.template_spans as"
            " select spans.*, min(start_time) over (partition by trace_id)"
            f" - timestamptz '{start.isoformat()}' as trace_offset"
            " from raw.otel_spans as spans"
        )
        conn.execute("create index on bench.template_spans (trace_offset)")
        # The template's own rows leave raw.otel_spans; its manifest rows stay, so
        # every copy's source object exists.
        for (name,) in conn.execute(
            "select relid::regclass::text from pg_partition_tree('raw.otel_spans') where isleaf"
        ).fetchall():
            conn.execute(f"drop table {name}")
        conn.execute("analyze bench.template_spans")
        count, traces = conn.execute(
            "select count(*), count(distinct trace_id) from bench.template_spans"
        ).fetchone()
    return int(count), int(traces)


def _shift(day: date) -> timedelta:
    return timedelta(days=(day - TEMPLATE_DAY).days)


def copy_days(conn: Any, first: int, last: int) -> int:
    """History copies number first..last-1: copy k is the day LAST_DAY - k (copy 0 cut at
    CUTOFF). Returns the rows inserted."""
    days = [LAST_DAY - timedelta(days=k) for k in range(first, last)]
    ensure_partitions(conn, [d + timedelta(days=offset) for d in days for offset in (0, 1)])
    inserted = 0
    started = time.perf_counter()
    for index, k in enumerate(range(first, last)):
        high = CUTOFF if k == 0 else timedelta(days=2)
        with conn.transaction():
            cur = conn.execute(
                COPY_SQL,
                {"tag": k, "shift": _shift(days[index]), "low": timedelta(0), "high": high},
            )
        inserted += cur.rowcount
        if (index + 1) % 20 == 0:
            rate = inserted / (time.perf_counter() - started)
            say(f"  {index + 1}/{len(days)} days, {inserted:,} spans ({rate:,.0f} spans/s)")
    return inserted


def land_interval(conn: Any, cycle: int) -> int:
    """The traces starting in the cycle's 15 minutes after CUTOFF on LAST_DAY."""
    low = CUTOFF + cycle * INTERVAL
    with conn.transaction():
        cur = conn.execute(
            COPY_SQL,
            {
                "tag": CYCLE_TAG + cycle,
                "shift": _shift(LAST_DAY),
                "low": low,
                "high": low + INTERVAL,
            },
        )
    return int(cur.rowcount)


def analyze_models(url: str) -> None:
    """Statistics for the tables dbt just built, as autovacuum would soon gather them."""
    with db.connect(url, autocommit=True) as conn:
        for (name,) in conn.execute(
            "select format('%I.%I', schemaname, tablename) from pg_tables"
            " where schemaname in ('intermediate', 'marts')"
        ).fetchall():
            conn.execute(f"analyze {name}")


def vacuum_analyze(url: str) -> float:
    started = time.perf_counter()
    with db.connect(url, autocommit=True) as conn:
        conn.execute("vacuum (analyze) raw.otel_spans")
    return time.perf_counter() - started


# --- dbt ------------------------------------------------------------------------------------


def target_dir() -> Path:
    # The bench's own dbt target and logs, so it never overwrites dbt/target.
    path = Path(tempfile.gettempdir()) / f"spancost-bench-dbt-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def dbt_run(
    url: str, *, full_refresh: bool, window: tuple[date, date] | None = None, tests: bool = True
) -> Build:
    os.environ["DBT_TARGET_PATH"] = str(target_dir() / "target")
    os.environ["DBT_LOG_PATH"] = str(target_dir() / "logs")
    started = time.perf_counter()
    # The DAG passes its params start_time and end_time, empty on a scheduled run and
    # the run's range on a backfill.
    start, end = (f"{day.isoformat()}T00:00:00Z" for day in window) if window else ("", "")
    command = ["build" if tests else "run"] + (["--full-refresh"] if full_refresh else [])
    dbt_build.run_dbt(url, command, dbt_vars={"start_time": start, "end_time": end})
    seconds = time.perf_counter() - started
    results = json.loads((target_dir() / "target" / "run_results.json").read_text())
    nodes = sorted(
        ((r["unique_id"], float(r["execution_time"])) for r in results["results"]),
        key=lambda item: -item[1],
    )
    kind = "full" if full_refresh else "window" if window else "incremental"
    (target_dir() / f"run_results_{kind}_{int(time.time())}.json").write_text(json.dumps(results))
    return Build(seconds, float(results.get("elapsed_time", 0.0)), nodes)


def build_in_slices(url: str, stage: Stage, first: date, end: date) -> None:
    """Days first..end-1 built as a backfill: one ``dbt run`` with vars ``start_time`` and
    ``end_time`` per SLICE_DAYS days, oldest first. A full refresh of 20M spans would
    spill about 50 GB of temporary files (int_llm_calls_counted's whole-history joins);
    a backfill's windows keep each build the size of its slice. No data tests: they
    check the slice's window (85-97 s each for the span tests of 14 days at 20M), and
    the timed cycles that follow run them all."""
    day = first
    while day < end:
        until = min(day + timedelta(days=SLICE_DAYS), end)
        build = dbt_run(url, full_refresh=False, window=(day, until), tests=False)
        stage.slices.append(build)
        say(
            f"{stage.label} backfill {day}..{until}: {build.seconds:.1f} s; slowest: {build.top(4)}"
        )
        day = until


def floor(url: str) -> tuple[float, int, float]:
    with db.connect(url, autocommit=True) as conn:
        conn.execute("drop table if exists bench.floor_daily")
        started = time.perf_counter()
        conn.execute(FLOOR_SQL)
        seconds = time.perf_counter() - started
        rows = int(scalar(conn, "select count(*) from bench.floor_daily"))
        cost = float(
            scalar(conn, "select coalesce(sum(estimated_cost_usd), 0) from bench.floor_daily")
        )
    return seconds, rows, cost


def bi_queries(url: str, results: Results) -> None:
    with db.connect(url, autocommit=True) as conn:
        newest = scalar(conn, "select max(hour) from marts.agg_pipeline_costs_hourly")
        now = newest + timedelta(hours=1)
        day = datetime(LAST_DAY.year, LAST_DAY.month, LAST_DAY.day, tzinfo=UTC) - timedelta(days=1)
        for name, sql, params in (
            ("pipeline_model_24h", BI_PIPELINE_MODEL_24H, {"now": now}),
            ("top_traces_day", BI_TOP_TRACES, {"day": day}),
        ):
            timings = []
            rows = 0
            for _ in range(BI_RUNS):
                started = time.perf_counter()
                rows = len(conn.execute(sql, params).fetchall())
                timings.append(time.perf_counter() - started)
            plan = "\n".join(
                row[0]
                for row in conn.execute(
                    f"explain (analyze, buffers) {sql}",  # type: ignore[arg-type]
                    params,
                ).fetchall()
            )
            results.bi[name] = timings
            results.bi_rows[name] = rows
            results.bi_plans[name] = plan
            say(
                f"BI {name}: {rows} rows, p50 {percentile(timings, 50) * 1000:.1f} ms, "
                f"p95 {percentile(timings, 95) * 1000:.1f} ms (first {timings[0] * 1000:.1f} ms)"
            )
            say(plan)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --- the run --------------------------------------------------------------------------------


def run_cycles(url: str, stage: Stage, first_cycle: int) -> None:
    for index in range(REPEATS):
        with db.connect(url, autocommit=True) as conn:
            landed = land_interval(conn, first_cycle + index)
        build = dbt_run(url, full_refresh=False)
        stage.cycles.append(build)
        stage.cycle_spans.append(landed)
        say(
            f"{stage.label} incremental #{index + 1}: {landed:,} new spans, "
            f"dbt build {build.seconds:.1f} s (nodes {sum(s for _, s in build.nodes):.1f} s); "
            f"slowest: {build.top()}"
        )


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    home = settings.home()
    server_url = db.database_url()
    results = Results(server=db.redact(server_url).rsplit("@", 1)[-1])
    url = create_database(server_url)
    try:
        started = time.perf_counter()
        results.template_spans, results.template_traces = load_template(url, home)
        per_day = results.template_spans  # spans per day (copy 0 is cut at CUTOFF)
        small_days = max(2, round(SMALL / per_day) + 1)
        say(
            f"template: {per_day:,} spans/day in {results.template_traces:,} traces; "
            f"{small_days} days of history for the small run"
        )

        with db.connect(url, autocommit=True) as conn:
            small = results.small
            small.spans = copy_days(conn, 0, small_days)
            small.days = small_days
        small.load_seconds = time.perf_counter() - started
        say(f"small history: {small.spans:,} spans; vacuum analyze {vacuum_analyze(url):.0f} s")
        with db.connect(url, autocommit=True) as conn:
            small.raw_bytes = raw_bytes(conn)
            results.bytes_per_span = small.raw_bytes / small.spans
        say(f"raw.otel_spans: {results.bytes_per_span:,.0f} bytes/span")

        for attempt in range(REPEATS):
            build = dbt_run(url, full_refresh=True)
            small.full.append(build)
            say(f"small full build #{attempt + 1}: {build.seconds:.1f} s; slowest: {build.top()}")
            seconds, results.floor_rows, results.floor_cost = floor(url)
            results.floor_seconds.append(seconds)
            say(f"hand-written SQL #{attempt + 1}: {seconds:.2f} s ({results.floor_rows} rows)")
        with db.connect(url) as conn:
            results.mart_cost = float(
                scalar(conn, "select coalesce(sum(estimated_cost_usd), 0) from marts.fct_llm_calls")
            )
            small.db_bytes = database_bytes(conn)
        analyze_models(url)
        run_cycles(url, small, 0)
        write_results(results)

        # The whole database (spans, intermediate tables, marts) per span of history.
        per_span = small.db_bytes / small.spans
        large_target = LARGE
        if per_span * LARGE / 1e9 > MAX_GB:
            large_target = int(MAX_GB * 1e9 / per_span)
            results.large_capped = (
                f"{LARGE:,} spans would take ~{per_span * LARGE / 1e9:.0f} GB at "
                f"{per_span:,.0f} bytes per span (spans, intermediate tables and marts); "
                f"the limit `BENCH_TRANSFORM_MAX_GB` is {MAX_GB:.0f} GB, so the large history "
                f"is capped at {large_target:,}"
            )
            say(results.large_capped)
        large_days = max(small_days + 1, -(-large_target // per_day) + 1)
        if large_target > small.spans:
            large = results.large
            started = time.perf_counter()
            with db.connect(url, autocommit=True) as conn:
                copy_days(conn, small_days, large_days)
                large.spans = int(scalar(conn, "select count(*) from raw.otel_spans"))
            large.days = large_days
            say(f"large history: {large.spans:,} spans; vacuum analyze {vacuum_analyze(url):.0f} s")
            large.load_seconds = time.perf_counter() - started
            # The small history's days are built; the older ones are built as a backfill.
            build_in_slices(
                url,
                large,
                LAST_DAY - timedelta(days=large_days - 1),
                LAST_DAY - timedelta(days=small_days - 1),
            )
            analyze_models(url)
            with db.connect(url) as conn:
                large.raw_bytes = raw_bytes(conn)
                large.db_bytes = database_bytes(conn)
            run_cycles(url, large, REPEATS)
            bi_queries(url, results)
        write_results(results)
    finally:
        if not KEEP:
            drop_database(server_url)


# --- RESULTS.md -----------------------------------------------------------------------------

HEADING = "## Transform: dbt build and BI queries"


def replace_section(text: str, section: str) -> str:
    """``text`` with its transform section (to the next ``## `` heading) replaced by
    ``section``; the sections after it stay."""
    head, _, rest = text.partition(HEADING)
    head = head.rstrip("\n")
    tail = rest.split("\n## ", 1)[1] if "\n## " in rest else ""
    body = f"{head}\n\n{section}" if head else section
    return f"{body.rstrip()}\n\n## {tail}" if tail else body


def existing_section(path: Path) -> str:
    if not path.exists():
        return ""
    text = path.read_text()
    return HEADING + text.split(HEADING, 1)[1] if HEADING in text else ""


def _ms(value: float) -> str:
    return f"{value * 1000:,.1f}"


def write_results(results: Results) -> None:
    import platform

    small, large = results.small, results.large
    lines = [
        HEADING,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python -m bench.run transform` "
        f"on {platform.machine()} with {os.cpu_count()} cores (a shared machine: quote "
        "the ratios), PostgreSQL from "
        f"`{results.server}` (the private server `spancost env` points at), dbt with 2 "
        f"threads, dbt project `{results.project}`. Medians of {REPEATS} runs unless said "
        "otherwise.",
        "",
        f"Data: one day of demo traffic ({results.template_spans:,} spans in "
        f"{results.template_traces:,} traces, the real OpenTelemetry SDK) loaded by the real "
        "loader, then replicated inside Postgres one whole day at a time (times shifted by "
        "whole days, trace and span ids prefixed with the copy's number, traces whole): "
        f"{results.template_spans:,} spans per day. raw.otel_spans takes "
        f"{results.bytes_per_span:,.0f} bytes per span with its index.",
        "",
    ]
    if small.cycles:
        lines += [
            "### 1. The 15-minute incremental build",
            "",
            "| history | spans | days | database | `dbt build` wall s | dbt node s (sum) "
            "| new spans per cycle |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for stage in (small, large):
            if stage.cycles:
                lines.append(
                    f"| {stage.label} | {stage.spans:,} | {stage.days} | "
                    f"{stage.db_bytes / 1e9:,.1f} GB | {stage.cycle_median():.1f} | "
                    f"{stage.cycle_node_median():.1f} | "
                    f"{', '.join(f'{n:,}' for n in stage.cycle_spans)} |"
                )
        if large.cycles:
            lines += [
                "",
                f"**Ratio large ÷ small: {large.cycle_median() / small.cycle_median():.2f}** "
                f"(wall), {large.cycle_node_median() / small.cycle_node_median():.2f} (sum of "
                "dbt node times). Target ≤ 1.2.",
            ]
        if results.large_capped:
            lines += ["", f"Disk: {results.large_capped}."]
        lines += [
            "",
            "Each cycle: the traces starting in the next 15 minutes after the history's newest "
            "span land (INSERT … SELECT from the template, not timed), then one `dbt build` "
            "with the transform DAG's vars (`start_time` and `end_time` empty, so every "
            "incremental model reprocesses its 48-hour lookback) is timed as a child process, "
            "dbt start-up and parsing, seeds, every model and every data test included. The "
            "DAG runs the same nodes as one Cosmos task each; Airflow's own per-task overhead "
            "is not in these figures.",
            "",
            "Slowest nodes of the last cycle (dbt `run_results.json` execution times):",
            "",
        ]
        for stage in (small, large):
            if stage.cycles:
                lines.append(f"* {stage.label}: {stage.cycles[-1].top(8)}")
        lines.append("")
    if results.bi:
        lines += [
            f"### 2. BI queries on the marts of the large history ({large.spans:,} spans)",
            "",
            f"{BI_RUNS} runs each on one connection, timed from send to the last row fetched.",
            "",
            "| query | rows | p50 ms | p95 ms | first run ms |",
            "|---|---:|---:|---:|---:|",
        ]
        names = {
            "pipeline_model_24h": "(a) cost per pipeline and model, last 24 h, "
            "`marts.agg_pipeline_costs_hourly`",
            "top_traces_day": "(b) top 20 traces of a day by estimated_cost_usd, "
            "`marts.fct_trace_costs`",
        }
        for name, timings in results.bi.items():
            lines.append(
                f"| {names[name]} | {results.bi_rows[name]} | {_ms(percentile(timings, 50))} | "
                f"{_ms(percentile(timings, 95))} | {_ms(timings[0])} |"
            )
        lines += ["", "Target: p95 < 50 ms. The queries are in `bench/transform.py`.", ""]
    if small.full:
        full = statistics.median(build.seconds for build in small.full)
        floor_s = statistics.median(results.floor_seconds)
        lines += [
            f"### 3. Full build of the small history ({small.spans:,} spans) against the floor",
            "",
            "| what | s | ÷ floor |",
            "|---|---:|---:|",
            f"| `dbt build --full-refresh` (seeds, every model, every data test) | {full:.1f} | "
            f"{full / floor_s:.1f} |",
            f"| one hand-written `create table as select`: cost per day, pipeline and model "
            f"from raw.otel_spans joined with the price seed | {floor_s:.2f} | 1.0 |",
        ]
        if large.slices:
            lines.append(
                f"| the large history's {large.days - small.days} older days built as a "
                f"backfill on top of the small one, {len(large.slices)} `dbt run`s of "
                f"{SLICE_DAYS} days (vars `start_time`/`end_time`) | "
                f"{sum(build.seconds for build in large.slices):.1f} | – |"
            )
        lines += [
            "",
            "The floor does far less than the marts: no duplicate or roll-up removal, no "
            "aliases, tiers, long context or emitter semantics, no trace or agent marts, no "
            f"tests. It gives ${results.floor_cost:,.2f} over {results.floor_rows} rows, the "
            f"marts ${results.mart_cost:,.2f} (fct_llm_calls); it bounds what the SQL costs.",
            "",
            f"Slowest nodes of the small full build: {small.full[-1].top(8)}",
            "",
        ]
    lines += [
        "Reproduce: `python -m bench.run transform` (or `BENCH_ONLY=transform make bench`); "
        "`BENCH_TRANSFORM_SMALL`, `BENCH_TRANSFORM_LARGE`, `BENCH_TRACES_PER_HOUR`, "
        "`BENCH_REPEATS`, `BENCH_BI_RUNS` change the sizes.",
        "",
    ]
    path = REPO / "bench" / "RESULTS.md"
    text = path.read_text() if path.exists() else ""
    path.write_text(replace_section(text, "\n".join(lines)))
    say(f"wrote the transform section of {path}")


if __name__ == "__main__":
    main()
