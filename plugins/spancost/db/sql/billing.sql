-- Billing sources: the AWS API request log and Cost Explorer results (spancost.billing.cost_explorer).
-- Idempotent; applied after schema.sql by db.apply_schema.

-- One row per AWS request attempt as sent (retries and throttled attempts included).
-- cost_usd is the list price of the request (Cost Explorer: 0.01 per request, each page
-- being one; CloudWatch GetMetricData: 0.00001 per metric query in the request; Pricing and
-- SageMaker: 0). request_summary holds the request parameters without page tokens or
-- secrets. pull_id ties Cost Explorer requests to raw.ce_pulls and CloudWatch requests to
-- raw.cloudwatch_pulls; it is not a foreign key because requests are logged (and
-- committed) before their pull is.
create table if not exists ops.api_requests (
    id              bigint      generated always as identity primary key,
    service         text        not null,
    operation       text        not null,
    request_summary jsonb       not null,
    page            integer,
    status          text        not null check (status in ('ok', 'throttled', 'error')),
    http_status     integer,
    error_code      text,
    attempt         integer     not null check (attempt >= 1),
    duration_ms     integer     not null,
    cost_usd        numeric     not null default 0,
    pull_id         uuid,
    aws_request_id  text,
    requested_at    timestamptz not null
);

create index if not exists api_requests_service_time_idx
    on ops.api_requests (service, requested_at);
create index if not exists api_requests_pull_idx on ops.api_requests (pull_id);

-- One row per Cost Explorer pull: one query over one time period, all pages.
-- A pull row is written once, at the end: 'complete' in the same transaction as all its
-- rows in raw.ce_cost_and_usage, or 'failed' with the error and no rows. Nothing is ever
-- overwritten; a kill mid-pull leaves no pull row (its requests stay in ops.api_requests).
-- time_period_start/end are the request's TimePeriod (end exclusive), whole UTC days.
create table if not exists raw.ce_pulls (
    pull_id             uuid        primary key,
    query_name          text        not null,
    operation           text        not null,
    granularity         text        not null check (granularity in ('DAILY', 'HOURLY', 'MONTHLY')),
    metrics             text[]      not null,
    group_by            jsonb       not null,
    filter              jsonb,
    time_period_start   date        not null,
    time_period_end     date        not null,
    status              text        not null check (status in ('complete', 'failed')),
    pages               integer     not null default 0,
    restarts            integer     not null default 0,
    row_count           integer     not null default 0,
    dropped_groups      integer     not null default 0,
    started_at          timestamptz not null,
    finished_at         timestamptz not null,
    error               text,
    check (time_period_end > time_period_start)
);

create index if not exists ce_pulls_query_status_idx
    on raw.ce_pulls (query_name, status, finished_at desc);

-- Cost Explorer results, one row per (pull, period, group, metric). Every pull is kept.
-- period_start/period_end are timestamptz for every granularity (UTC midnight for DAILY and
-- MONTHLY, the hour for HOURLY; end exclusive), so one column type serves all of them.
-- group_dim_N is the GroupBy definition: a dimension name (SERVICE, USAGE_TYPE, RESOURCE_ID)
-- or 'TAG:<key>' / 'COST_CATEGORY:<name>'; group_key_N is the key exactly as AWS returned it
-- (for tags 'PipelineID$abc'). tag_key/tag_value are parsed from the first TAG group:
-- 'PipelineID$' gives tag_value '' (the resource is untagged), 'PipelineID$abc' gives 'abc'.
-- For a query without GroupBy the rows come from Total and the group columns are null.
-- Staging should take, for each query and period, the rows of the newest complete pull whose
-- time period covers that period (not per group: a group that vanished in a restatement must
-- vanish from staging too).
create table if not exists raw.ce_cost_and_usage (
    pull_id         uuid        not null references raw.ce_pulls (pull_id),
    query_name      text        not null,
    period_start    timestamptz not null,
    period_end      timestamptz not null,
    granularity     text        not null,
    group_dim_1     text,
    group_key_1     text,
    group_dim_2     text,
    group_key_2     text,
    tag_key         text,
    tag_value       text,
    metric          text        not null,
    amount          numeric     not null,
    unit            text,
    estimated       boolean     not null,
    loaded_at       timestamptz not null default now()
);

create index if not exists ce_cost_and_usage_pull_idx on raw.ce_cost_and_usage (pull_id);
create index if not exists ce_cost_and_usage_query_period_idx
    on raw.ce_cost_and_usage (query_name, period_start);
