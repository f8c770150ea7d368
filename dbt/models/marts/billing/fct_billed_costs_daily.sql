with

cost_and_usage as (

    select * from {{ ref('stg_aws__cost_and_usage') }}
    where query_name = 'ai_services_by_usage_type'

),

pulls as (

    select * from {{ ref('stg_aws__ce_pulls') }}

),

usage_types as (

    select * from {{ ref('int_aws_usage_types_parsed') }}

),

dated as (

    -- Staging holds the newest complete pull per period already (CE restates).
    -- A day comes from DAILY results, or from HOURLY ones where no DAILY pull
    -- covers it (SPANCOST_CE_HOURLY), never from both.
    select
        cost_and_usage.*,
        cast(cost_and_usage.period_start at time zone 'UTC' as date) as day,  -- noqa: RF04
        bool_or(cost_and_usage.granularity = 'DAILY') over (
            partition by cast(cost_and_usage.period_start at time zone 'UTC' as date)
        ) as day_has_daily

    from cost_and_usage
    where cost_and_usage.granularity in ('DAILY', 'HOURLY')

),

lines as (

    select
        dated.day,
        dated.service,
        dated.usage_type,
        sum(dated.amount) filter (
            where dated.metric = '{{ var("billing_cost_metric") }}'
        ) as billed_cost_usd,
        sum(dated.amount) filter (where dated.metric = 'UsageQuantity') as usage_quantity,
        max(dated.unit) filter (where dated.metric = 'UsageQuantity') as unit,
        bool_or(dated.is_estimated) as is_estimated,
        max(pulls.finished_at) as pulled_at

    from dated
    inner join pulls
        on dated.pull_id = pulls.pull_id
    where
        dated.service is not null
        and (dated.granularity = 'DAILY' or not dated.day_has_daily)
    group by
        dated.day,
        dated.service,
        dated.usage_type

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
