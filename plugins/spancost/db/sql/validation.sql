-- Write-audit-publish (spancost.validation). Idempotent; applied after the other files.
--
-- Every load with validation on lands as a batch: spans are written to raw.otel_spans
-- (their objects' manifest rows name the batch), a Cost Explorer pull to
-- raw.ce_cost_and_usage and a CloudWatch pull to raw.sagemaker_invocations_hourly (the
-- batch is the pull), a Price List pull to raw.aws_price_list_landed (merged into
-- raw.aws_price_list when it is published) and a SageMaker snapshot of one region to
-- raw.sagemaker_endpoint_snapshots. Until Great Expectations has audited
-- the batch it is 'pending', and dbt's staging does not read it. A batch that passes
-- (or only warns) is 'published'; one that fails a critical expectation is
-- 'quarantined': it stays in raw, staging keeps it out, and the reason names the suite
-- and the expectations. Loads with validation off write no batch and are read at once.

create table if not exists ops.load_batches (
    batch_id        text        primary key,
    dataset         text        not null,   -- the raw table it landed in
    run_id          text        not null,   -- the Airflow run (or CLI run) that loaded it
    status          text        not null default 'pending'
                                check (status in ('pending', 'published', 'quarantined')),
    flagged         boolean     not null default false,  -- published with failed warnings
    row_count       bigint,                 -- rows the audit saw
    reason          text,                   -- the failed expectations, suite first
    created_at      timestamptz not null default now(),
    audited_at      timestamptz
);
create index if not exists load_batches_open_idx
    on ops.load_batches (dataset, created_at) where status <> 'published';
create index if not exists load_batches_run_idx on ops.load_batches (run_id);

-- The batch each span export landed in; null for objects loaded with validation off
-- (or before write-audit-publish), which are published as they land.
alter table raw.s3_objects add column if not exists batch_id text;
create index if not exists s3_objects_batch_idx on raw.s3_objects (batch_id);

-- What dbt must not read yet (pending) or ever (quarantined), one row per batch.
create or replace view ops.unpublished_batches as
select
    batch_id,
    dataset,
    status
from ops.load_batches
where status <> 'published';

-- The span exports of those batches: stg_otel__spans filters their spans out.
create or replace view ops.unpublished_s3_objects as
select
    objects.bucket,
    objects.key,
    batches.batch_id,
    batches.status
from ops.load_batches as batches
inner join raw.s3_objects as objects on objects.batch_id = batches.batch_id
where batches.status <> 'published';

-- Which batch each dataset's audit view shows. The audit of a dataset holds an
-- advisory lock while it sets its row and runs the checkpoint, so one audit at a time.
create table if not exists ops.audit_targets (
    dataset         text        primary key,
    batch_id        text        not null
);

-- The span exports of the spans batch under audit, copied here (and analysed) by the
-- audit once it holds the batch: with their number known, the planner reads a
-- 15-minute batch through the source index and a million-span batch with one hash
-- join (the same view over a join to raw.s3_objects was planned blind, and a big
-- batch took 5x longer).
create table if not exists ops.audit_objects (
    bucket          text        not null,
    key             text        not null,
    primary key (bucket, key)
);

-- The rows Great Expectations validates: the target batch of each dataset, read in
-- place (expectations/great_expectations.yml names these views as its table assets).
create or replace view ops.audit_otel_spans as
select spans.*
from raw.otel_spans as spans
where (spans.source_bucket, spans.source_key) in (
    select objects.bucket, objects.key
    from ops.audit_objects as objects
);

create or replace view ops.audit_ce_cost_and_usage as
select costs.*
from raw.ce_cost_and_usage as costs
where costs.pull_id in (
    select cast(targets.batch_id as uuid)
    from ops.audit_targets as targets
    where targets.dataset = 'ce_cost_and_usage'
);

-- A CloudWatch pull's hours that still hold its value (a newer pull overwrites an hour).
create or replace view ops.audit_sagemaker_invocations_hourly as
select invocations.*
from raw.sagemaker_invocations_hourly as invocations
where invocations.pull_id in (
    select cast(targets.batch_id as uuid)
    from ops.audit_targets as targets
    where targets.dataset = 'sagemaker_invocations_hourly'
);

-- A Price List pull's landed rows (raw.aws_price_list_landed), before they are merged.
create or replace view ops.audit_aws_price_list as
select landed.*
from raw.aws_price_list_landed as landed
where landed.pull_id in (
    select cast(targets.batch_id as bigint)
    from ops.audit_targets as targets
    where targets.dataset = 'aws_price_list'
);

-- One region's SageMaker endpoint snapshot.
create or replace view ops.audit_sagemaker_endpoint_snapshots as
select snapshots.*
from raw.sagemaker_endpoint_snapshots as snapshots
where snapshots.batch_id in (
    select targets.batch_id
    from ops.audit_targets as targets
    where targets.dataset = 'sagemaker_endpoint_snapshots'
);

-- One row per expectation evaluated on a batch (and a volume warning for a run that
-- landed nothing while the trailing day had traffic). Rows from before
-- write-audit-publish have one row per suite and a null expectation.
alter table ops.validation_results add column if not exists dataset text;
alter table ops.validation_results add column if not exists batch_id text;
alter table ops.validation_results add column if not exists expectation text;
alter table ops.validation_results add column if not exists severity text;
alter table ops.validation_results add column if not exists kwargs jsonb;
alter table ops.validation_results add column if not exists observed_value jsonb;
create index if not exists validation_results_batch_idx on ops.validation_results (batch_id);
