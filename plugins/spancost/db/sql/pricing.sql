-- AWS Price List (GetProducts) prices, effective-dated, and SageMaker endpoint snapshots.
-- Idempotent: applied by db.apply_schema after schema.sql.

-- One row per price dimension of one on-demand term of one product, per price period.
-- A refresh adds a row only when the published price or unit of
-- (sku, offer_term_code, rate_code) changed, and closes the previous row, so history
-- is kept and a backfill can reprice. The price in effect at t has
-- effective_from <= t and (effective_to is null or t < effective_to).
create table if not exists raw.aws_price_list (
    id                  bigint generated always as identity primary key,
    service_code        text        not null,
    sku                 text        not null,
    term_type           text        not null,
    offer_term_code     text        not null,
    rate_code           text        not null,
    region_code         text,
    usage_type          text,
    operation           text,
    product_family      text,
    -- what is priced: the model (Bedrock) or the instance type (SageMaker, EC2)
    item_name           text,
    -- input, output, cache_read or cache_write for token prices
    token_kind          text,
    attributes          jsonb       not null,
    description         text,
    -- as published
    unit                text        not null,
    price_usd           numeric     not null,
    -- normalised: 'token' (price of one token) or 'hour' (one instance-hour); null otherwise
    normalized_unit     text,
    usd_per_unit        numeric,
    begin_range         numeric,
    end_range           numeric,    -- null = "Inf"
    effective_from      timestamptz not null,
    effective_to        timestamptz,
    publication_date    timestamptz,
    version             text,
    pull_id             bigint      not null,   -- the pull that inserted the row
    last_seen_pull_id   bigint      not null,   -- the last successful pull that confirmed it
    fetched_at          timestamptz not null,
    last_seen_at        timestamptz not null,
    -- true when the latest pull of this price's query failed: still the price in use
    stale               boolean     not null default false,
    check (normalized_unit is null or normalized_unit in ('token', 'hour')),
    check ((normalized_unit is null) = (usd_per_unit is null)),
    check (effective_to is null or effective_to >= effective_from)
);
create unique index if not exists aws_price_list_open_idx
    on raw.aws_price_list (sku, offer_term_code, rate_code) where effective_to is null;
create index if not exists aws_price_list_lookup_idx
    on raw.aws_price_list (service_code, region_code, item_name, effective_from);

-- One row per GetProducts pull of one query (to the last page, or failed).
create table if not exists raw.aws_price_list_pulls (
    pull_id         bigint generated always as identity primary key,
    query_name      text        not null,
    service_code    text        not null,
    filters         jsonb       not null,
    status          text        not null check (status in ('running', 'succeeded', 'failed')),
    pages           integer     not null default 0,
    items           integer     not null default 0,
    rows_seen       integer     not null default 0,
    rows_inserted   integer     not null default 0,
    rows_closed     integer     not null default 0,
    started_at      timestamptz not null,
    finished_at     timestamptz,
    error           text
);
create index if not exists aws_price_list_pulls_query_idx
    on raw.aws_price_list_pulls (query_name, status, started_at);

-- SageMaker endpoints as seen at snapshot_at: one row per production variant.
-- instance_type and initial_instance_count come from the endpoint config;
-- current/desired counts from DescribeEndpoint. A snapshot is one transaction.
create table if not exists raw.sagemaker_endpoint_snapshots (
    snapshot_at             timestamptz not null,
    region                  text        not null,
    endpoint_name           text        not null,
    endpoint_arn            text        not null,
    endpoint_status         text        not null,
    endpoint_config_name    text,
    variant_name            text        not null,
    model_name              text,
    instance_type           text,
    initial_instance_count  integer,
    current_instance_count  integer,
    desired_instance_count  integer,
    serverless              boolean     not null default false,
    creation_time           timestamptz,
    last_modified_time      timestamptz,
    raw                     jsonb       not null,
    primary key (snapshot_at, region, endpoint_name, variant_name)
);
-- The endpoint's tags (ListTags) as {key: value}: the cost-allocation tag names the
-- pipeline an endpoint serves. Added after the first release; older rows have {}.
alter table raw.sagemaker_endpoint_snapshots
    add column if not exists tags jsonb not null default '{}'::jsonb;

-- Write-audit-publish of the Price List (spancost.validation): with validation on, a
-- pull's rows land here first, as they were parsed (duplicates included), under the
-- pull's id. Great Expectations audits them (ops.audit_aws_price_list); a pull that
-- passes is merged into raw.aws_price_list in the audit's own transaction and its rows
-- here are deleted; a quarantined pull's rows stay here, and raw.aws_price_list keeps
-- the last good prices (marked stale), so no effective-dated row is ever closed by
-- prices that failed their audit.
create table if not exists raw.aws_price_list_landed (
    pull_id             bigint      not null,
    service_code        text        not null,
    sku                 text        not null,
    term_type           text        not null,
    offer_term_code     text        not null,
    rate_code           text        not null,
    region_code         text,
    usage_type          text,
    operation           text,
    product_family      text,
    item_name           text,
    token_kind          text,
    attributes          jsonb       not null,
    description         text,
    unit                text        not null,
    price_usd           numeric     not null,
    normalized_unit     text,
    usd_per_unit        numeric,
    begin_range         numeric,
    end_range           numeric,
    effective_from      timestamptz not null,
    publication_date    timestamptz,
    version             text,
    fetched_at          timestamptz not null
);
create index if not exists aws_price_list_landed_pull_idx on raw.aws_price_list_landed (pull_id);

-- A pull is 'landed' while its audit is pending and 'quarantined' when it failed it.
alter table raw.aws_price_list_pulls drop constraint if exists aws_price_list_pulls_status_check;
alter table raw.aws_price_list_pulls add constraint aws_price_list_pulls_status_check
    check (status in ('running', 'landed', 'succeeded', 'quarantined', 'failed'));

-- The write-audit-publish batch a snapshot landed in; null when it was taken with
-- validation off (or before), which is read as it lands.
alter table raw.sagemaker_endpoint_snapshots add column if not exists batch_id text;
create index if not exists sagemaker_endpoint_snapshots_batch_idx
    on raw.sagemaker_endpoint_snapshots (batch_id);
