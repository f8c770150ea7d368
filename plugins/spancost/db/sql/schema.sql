-- spancost landing schema. Idempotent: applied by `spancost db init` and before every load.
create schema if not exists raw;
create schema if not exists ops;

-- The S3 object manifest. Written in the same transaction as the spans of the object,
-- so an object is loaded exactly once (see DESIGN.md, "Exactly once").
create table if not exists raw.s3_objects (
    bucket          text        not null,
    key             text        not null,
    etag            text        not null,
    size_bytes      bigint,
    last_modified   timestamptz,
    partition_time  timestamptz,
    status          text        not null check (status in ('loaded', 'quarantined')),
    reason          text,
    span_count      integer     not null default 0,
    rejected_count  integer     not null default 0,
    loaded_at       timestamptz not null default now(),
    primary key (bucket, key)
);

-- Landed spans, one row per span, partitioned by day of start_time (UTC).
-- Cost-relevant fields are typed columns; everything else stays in jsonb.
-- Message content attributes never reach this table.
create table if not exists raw.otel_spans (
    source_bucket           text        not null,
    source_key              text        not null,
    trace_id                text        not null,
    span_id                 text        not null,
    parent_span_id          text,
    name                    text        not null,
    kind                    smallint    not null,
    start_time              timestamptz not null,
    end_time                timestamptz not null,
    status_code             smallint    not null,
    status_message          text,
    service_name            text,
    scope_name              text,
    scope_version           text,
    provider                text,
    operation               text,
    request_model           text,
    response_model          text,
    input_tokens            bigint,
    output_tokens           bigint,
    cache_read_tokens       bigint,
    cache_creation_tokens   bigint,
    reasoning_tokens        bigint,
    pipeline_id             text,
    team                    text,
    feature                 text,
    environment             text,
    user_id_hash            text,
    agent_name              text,
    agent_id                text,
    conversation_id         text,
    region                  text,
    sagemaker_endpoint      text,
    bedrock_model_id        text,
    host_type               text,
    reported_cost_usd       numeric,
    events                  jsonb,
    links                   jsonb,
    attributes              jsonb       not null,
    resource_attributes     jsonb       not null,
    loaded_at               timestamptz not null default now()
) partition by range (start_time);

-- Added after the first release: span events (exceptions, GenAI events) and links,
-- content stripped like the attributes; null when the span has none.
alter table raw.otel_spans add column if not exists events jsonb;
alter table raw.otel_spans add column if not exists links jsonb;

create index if not exists otel_spans_source_idx on raw.otel_spans (source_bucket, source_key);

-- Added with hostile-input handling: why an object was quarantined (the error type and
-- its line, column or JSON path), the spans it repeats (same trace and span id), and
-- the values changed on the way in, by kind, e.g. {"nul_replaced": 2, "invalid_utf8": 1}.
alter table raw.s3_objects add column if not exists error_type text;
alter table raw.s3_objects add column if not exists error_location text;
alter table raw.s3_objects add column if not exists duplicate_count integer not null default 0;
alter table raw.s3_objects add column if not exists changed_count integer not null default 0;
alter table raw.s3_objects add column if not exists changes jsonb;

-- The spans an object repeats: each (trace id, span id) that lands more than once from
-- the same object, with its number of copies. dbt's staging reads each span once.
create or replace view ops.duplicate_spans as
select
    source_bucket,
    source_key,
    trace_id,
    span_id,
    count(*)::integer as copies
from raw.otel_spans
where (source_bucket, source_key) in (
    select bucket, key from raw.s3_objects where duplicate_count > 0
)
group by source_bucket, source_key, trace_id, span_id
having count(*) > 1;

-- Objects that could not be decoded have a manifest row with status 'quarantined'.
-- Rows that break a row-level rule land here, with the reason and the offending values.
create table if not exists ops.rejected_spans (
    id              bigint generated always as identity primary key,
    source_bucket   text        not null,
    source_key      text        not null,
    trace_id        text,
    span_id         text,
    reason          text        not null,
    field           text,
    value           text,
    span            jsonb,
    rejected_at     timestamptz not null default now()
);
create index if not exists rejected_spans_source_idx on ops.rejected_spans (source_bucket, source_key);

-- One row per Great Expectations validation of a batch.
create table if not exists ops.validation_results (
    id              bigint generated always as identity primary key,
    run_id          text        not null,
    suite           text        not null,
    batch           text        not null,
    success         boolean     not null,
    rows_checked    bigint      not null,
    rows_failed     bigint      not null,
    result          jsonb       not null,
    validated_at    timestamptz not null default now()
);
