-- CloudWatch metrics (spancost.billing.cloudwatch): hourly SageMaker endpoint invocations.
-- Idempotent; applied after schema.sql by db.apply_schema.

-- One row per CloudWatch pull: one region's endpoints over one window of whole UTC hours
-- (window_end exclusive), every GetMetricData request and page of it. A pull row is written
-- once, at the end: 'complete' in the same transaction as its rows in
-- raw.sagemaker_invocations_hourly, or 'failed' with the error and no rows. Its requests
-- are in ops.api_requests with the same pull_id. bad_datapoints counts the datapoints
-- CloudWatch returned that could not be stored (not a number, not on an hour, outside the
-- window); each one is logged with its endpoint, variant and timestamp.
create table if not exists raw.cloudwatch_pulls (
    pull_id         uuid        primary key,
    region          text        not null,
    namespace       text        not null,
    metric_name     text        not null,
    window_start    timestamptz not null,
    window_end      timestamptz not null,
    period_seconds  int         not null,
    status          text        not null check (status in ('complete', 'failed')),
    endpoints       int,
    rows            int,
    requests        int,
    bad_datapoints  int         not null default 0,
    error           text,
    started_at      timestamptz not null,
    finished_at     timestamptz not null,
    check (window_end > window_start),
    check (period_seconds > 0)
);

create index if not exists cloudwatch_pulls_region_window_idx
    on raw.cloudwatch_pulls (region, window_start, window_end);

-- Invocations of each SageMaker endpoint variant per UTC hour: the CloudWatch Sum of
-- AWS/SageMaker Invocations (dimensions EndpointName, VariantName, Period 3600), hour being
-- the start of the hour. An hour with no datapoint has no row: no invocations.
-- CloudWatch data arrives late, so windows overlap and hours are pulled again: the newest
-- pull (by started_at) overwrites the value and pull_id, and an older pull that commits
-- later leaves it alone. One row per key, whatever the retries and overlaps.
create table if not exists raw.sagemaker_invocations_hourly (
    region          text        not null,
    endpoint_name   text        not null,
    variant_name    text        not null,
    hour            timestamptz not null,
    invocations     numeric     not null,
    pull_id         uuid        not null references raw.cloudwatch_pulls (pull_id),
    loaded_at       timestamptz not null default now(),
    primary key (region, endpoint_name, variant_name, hour)
);

create index if not exists sagemaker_invocations_hourly_hour_idx
    on raw.sagemaker_invocations_hourly (hour);
create index if not exists sagemaker_invocations_hourly_pull_idx
    on raw.sagemaker_invocations_hourly (pull_id);
