{#-
    The whole bill, split (DESIGN.md, "Billed cost and attribution"):

    1. tag: a (day, service) amount carrying the pipeline tag goes to that
       pipeline, spread over its own estimates for that day on the service's
       cost keys, or kept as one row with a null cost_key when it has none;
    2. estimate_share: the untagged rest of the (day, service) is spread over its
       cost keys in proportion to the billed lines; each key's share goes to the
       pipelines with estimated cost for that day and key and no tagged amount in
       the (day, service), in proportion to their estimates;
    3. unattributed: a key's share that no pipeline explains.

    Every split is exact (macros/exact_share.sql): the rows of a (day, service)
    add up to its billed total.
-#}

with

billed as (

    select * from {{ ref('fct_billed_costs_daily') }}

),

cost_and_usage as (

    -- One granularity per day: int_ce_cost_and_usage_daily.
    select * from {{ ref('int_ce_cost_and_usage_daily') }}
    where
        query_name = 'pipeline_tag_by_service'
        and metric = '{{ var("billing_cost_metric") }}'

),

llm_estimates as (

    -- Only what AWS bills counts as estimates here (Bedrock calls, and SageMaker
    -- endpoint hours split over the spans that used them), and only estimates that
    -- name a pipeline can take a share.
    select
        day,
        provider,
        model,
        priced_model,
        pipeline_id,
        team,
        feature,
        environment,
        estimated_cost_usd

    from {{ ref('int_llm_estimates_daily') }}
    where
        provider = 'aws.bedrock'
        and pipeline_id is not null
        and estimated_cost_usd > 0

    union all

    select
        day,
        provider,
        model,
        priced_model,
        pipeline_id,
        team,
        feature,
        environment,
        estimated_cost_usd

    from {{ ref('int_sagemaker_estimates_daily') }}
    where
        pipeline_id is not null
        and estimated_cost_usd > 0

),

service_days as (

    select
        day,
        service,
        sum(billed_cost_usd) as billed_cost_usd,
        bool_and(is_final) as is_final

    from billed
    group by
        day,
        service

),

service_keys as (

    -- Cost keys of a (day, service), null for lines that bill no model or instance.
    select
        day,
        service,
        cost_key,
        sum(billed_cost_usd) as billed_cost_usd

    from billed
    group by
        day,
        service,
        cost_key

),

tagged as (

    -- The pipeline tag's amounts, for services on the bill (an untagged resource
    -- arrives with a null tag_value and is part of the untagged rest).
    select
        cost_and_usage.day,
        cost_and_usage.service,
        cost_and_usage.tag_value as pipeline_id,
        sum(cost_and_usage.amount) as tagged_cost_usd

    from cost_and_usage
    inner join service_days
        on
            cost_and_usage.day = service_days.day
            and cost_and_usage.service = service_days.service
    where cost_and_usage.tag_value is not null
    group by
        cost_and_usage.day,
        cost_and_usage.service,
        cost_and_usage.tag_value

),

---------- 1. tag

tag_estimates as (

    -- A tagged pipeline's own estimates on the service's keys that day.
    select
        tagged.day,
        tagged.service,
        tagged.pipeline_id,
        tagged.tagged_cost_usd,
        llm_estimates.priced_model as cost_key,
        llm_estimates.model,
        llm_estimates.team,
        llm_estimates.feature,
        llm_estimates.environment,
        llm_estimates.estimated_cost_usd

    from tagged
    inner join service_keys
        on
            tagged.day = service_keys.day
            and tagged.service = service_keys.service
    inner join llm_estimates
        on
            tagged.day = llm_estimates.day
            and tagged.pipeline_id = llm_estimates.pipeline_id
            and service_keys.cost_key = llm_estimates.priced_model

),

tag_shares as (

    select
        *,
        {{ spancost_share_columns(
            'tagged_cost_usd', 'estimated_cost_usd',
            'day, service, pipeline_id',
            'cost_key, model, team, feature, environment'
        ) }}

    from tag_estimates

),

tag_rows as (

    select
        day,
        service,
        cost_key,
        model,
        pipeline_id,
        team,
        feature,
        environment,
        'tag' as allocation_method,
        {{ spancost_exact_share('tagged_cost_usd', 'day, service, pipeline_id') }}
            as allocated_cost_usd

    from tag_shares

    union all

    -- A tagged amount with no estimate of its pipeline on the service's keys.
    select
        tagged.day,
        tagged.service,
        null as cost_key,
        null as model,
        tagged.pipeline_id,
        null as team,
        null as feature,
        null as environment,
        'tag' as allocation_method,
        tagged.tagged_cost_usd as allocated_cost_usd

    from tagged
    where not exists (
        select 1 from tag_estimates
        where
            tag_estimates.day = tagged.day
            and tag_estimates.service = tagged.service
            and tag_estimates.pipeline_id = tagged.pipeline_id
    )

),

---------- 2. estimate_share

untagged_rest as (

    select
        service_days.day,
        service_days.service,
        service_days.billed_cost_usd,
        service_days.billed_cost_usd - coalesce(sum(tagged.tagged_cost_usd), 0) as rest_cost_usd

    from service_days
    left join tagged
        on
            service_days.day = tagged.day
            and service_days.service = tagged.service
    group by
        service_days.day,
        service_days.service,
        service_days.billed_cost_usd

),

key_weights as (

    -- Keys weigh what their billed lines do; when the lines sum to nothing (all
    -- zero, or credits cancelling charges) the whole rest stays on one null key.
    -- A fully tagged (day, service) has no rest to split.
    select
        untagged_rest.day,
        untagged_rest.service,
        untagged_rest.rest_cost_usd,
        service_keys.cost_key,
        service_keys.billed_cost_usd as weight

    from untagged_rest
    inner join service_keys
        on
            untagged_rest.day = service_keys.day
            and untagged_rest.service = service_keys.service
    where
        untagged_rest.rest_cost_usd <> 0
        and untagged_rest.billed_cost_usd <> 0

    union all

    select
        day,
        service,
        rest_cost_usd,
        null as cost_key,
        1 as weight

    from untagged_rest
    where
        rest_cost_usd <> 0
        and billed_cost_usd = 0

),

key_shares_ranked as (

    select
        *,
        {{ spancost_share_columns('rest_cost_usd', 'weight', 'day, service', 'cost_key') }}

    from key_weights

),

key_shares as (

    select
        day,
        service,
        cost_key,
        {{ spancost_exact_share('rest_cost_usd', 'day, service') }} as key_cost_usd

    from key_shares_ranked

),

share_estimates as (

    -- Pipelines with estimates on the key that day and no tagged amount in the
    -- (day, service).
    select
        key_shares.day,
        key_shares.service,
        key_shares.cost_key,
        key_shares.key_cost_usd,
        llm_estimates.model,
        llm_estimates.pipeline_id,
        llm_estimates.team,
        llm_estimates.feature,
        llm_estimates.environment,
        llm_estimates.estimated_cost_usd

    from key_shares
    inner join llm_estimates
        on
            key_shares.day = llm_estimates.day
            and key_shares.cost_key = llm_estimates.priced_model
    where not exists (
        select 1 from tagged
        where
            tagged.day = key_shares.day
            and tagged.service = key_shares.service
            and tagged.pipeline_id = llm_estimates.pipeline_id
    )

),

estimate_shares as (

    select
        *,
        {{ spancost_share_columns(
            'key_cost_usd', 'estimated_cost_usd',
            'day, service, cost_key',
            'pipeline_id, model, team, feature, environment'
        ) }}

    from share_estimates

),

estimate_rows as (

    select
        day,
        service,
        cost_key,
        model,
        pipeline_id,
        team,
        feature,
        environment,
        'estimate_share' as allocation_method,
        {{ spancost_exact_share('key_cost_usd', 'day, service, cost_key') }}
            as allocated_cost_usd

    from estimate_shares

),

---------- 3. unattributed

unattributed_rows as (

    select
        key_shares.day,
        key_shares.service,
        key_shares.cost_key,
        null as model,
        null as pipeline_id,
        null as team,
        null as feature,
        null as environment,
        'unattributed' as allocation_method,
        key_shares.key_cost_usd as allocated_cost_usd

    from key_shares
    where not exists (
        select 1 from share_estimates
        where
            share_estimates.day = key_shares.day
            and share_estimates.service = key_shares.service
            and share_estimates.cost_key is not distinct from key_shares.cost_key
    )

),

allocated as (

    select * from tag_rows
    union all
    select * from estimate_rows
    union all
    select * from unattributed_rows

),

final as (

    select
        allocated.day,
        allocated.service,
        allocated.cost_key,
        allocated.model,
        allocated.pipeline_id,
        allocated.team,
        allocated.feature,
        allocated.environment,
        allocated.allocation_method,
        allocated.allocated_cost_usd,
        service_days.billed_cost_usd as service_billed_cost_usd,
        service_days.is_final

    from allocated
    inner join service_days
        on
            allocated.day = service_days.day
            and allocated.service = service_days.service

)

select * from final
