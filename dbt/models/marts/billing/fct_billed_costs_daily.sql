with

cost_and_usage as (

    -- One granularity per day: int_ce_cost_and_usage_daily.
    select * from {{ ref('int_ce_cost_and_usage_daily') }}
    where query_name = 'ai_services_by_usage_type'

),

pulls as (

    select * from {{ ref('stg_aws__ce_pulls') }}

),

usage_types as (

    select * from {{ ref('int_aws_usage_types_parsed') }}

),

lines as (

    select
        cost_and_usage.day,
        cost_and_usage.service,
        cost_and_usage.usage_type,
        sum(cost_and_usage.amount) filter (
            where cost_and_usage.metric = '{{ var("billing_cost_metric") }}'
        ) as billed_cost_usd,
        sum(cost_and_usage.amount) filter (
            where cost_and_usage.metric = 'UsageQuantity'
        ) as usage_quantity,
        max(cost_and_usage.unit) filter (where cost_and_usage.metric = 'UsageQuantity') as unit,
        bool_or(cost_and_usage.is_estimated) as is_estimated,
        max(pulls.finished_at) as pulled_at

    from cost_and_usage
    inner join pulls
        on cost_and_usage.pull_id = pulls.pull_id
    where cost_and_usage.service is not null
    group by
        cost_and_usage.day,
        cost_and_usage.service,
        cost_and_usage.usage_type

),

final as (

    select
        lines.day,
        lines.service,
        coalesce(lines.usage_type, '') as usage_type,
        usage_types.region_code as region,
        usage_types.usage_category,
        usage_types.model,
        usage_types.token_kind,
        usage_types.inference_tier as tier,
        usage_types.inference_scope,
        usage_types.instance_type,
        -- The allocation key: the model for token lines, the instance type for
        -- instance lines, null for anything else.
        coalesce(usage_types.model, usage_types.instance_type) as cost_key,
        coalesce(lines.billed_cost_usd, 0) as billed_cost_usd,
        lines.usage_quantity,
        lines.unit,
        coalesce(lines.is_estimated, false) as is_estimated,
        lines.pulled_at,
        -- Final: CE no longer marks it estimated, and the pull that says so ran
        -- at least billing_final_after_hours after the day ended (data time, not
        -- the clock, so a rerun gives the same answer).
        (
            not coalesce(lines.is_estimated, false)
            and lines.pulled_at
            >= (cast(lines.day as timestamp) at time zone 'UTC')
            + interval '1 day'
            + interval '{{ var("billing_final_after_hours") }} hours'
        ) as is_final

    from lines
    left join usage_types
        on
            lines.service = usage_types.service
            and lines.usage_type = usage_types.usage_type

)

select * from final
