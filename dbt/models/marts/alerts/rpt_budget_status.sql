with

budgets as (

    select * from {{ ref('budgets') }}

),

scope_hours as (

    select * from {{ ref('int_scope_costs_hourly') }}

),

newest as (

    -- Periods are bounded by data time, never by the clock: the end of the newest
    -- hour with spans. A backfill and a rerun give the same status.
    select max(hour) + interval '1 hour' as data_end
    from scope_hours

),

periods as (

    select
        budgets.budget_id,
        budgets.scope_type,
        budgets.scope_value,
        budgets.period,
        budgets.limit_usd,
        coalesce(budgets.warn_pct, 80) as warn_pct,
        newest.data_end,
        case
            when budgets.period = 'rolling_24h' then newest.data_end - interval '24 hours'
            else date_trunc('month', newest.data_end - interval '1 hour', 'UTC')
        end as period_start,
        case
            when budgets.period = 'rolling_24h' then newest.data_end
            else
                date_trunc('month', newest.data_end - interval '1 hour', 'UTC') + interval '1 month'
        end as period_end

    from budgets
    cross join newest
    where newest.data_end is not null

),

final_days as (

    -- Days whose AWS bill is final: every service billed that day says so.
    select day
    from {{ ref('fct_billed_costs_daily') }}
    group by day
    having bool_and(is_final)

),

aws_billed as (

    -- On a final day, what AWS billed a scope replaces what was estimated for it:
    -- the bill as allocated (tag or estimate share), less the estimates of the
    -- Bedrock calls that allocation spread it over. Other providers stay estimated.
    select
        allocated.day,
        coalesce(allocated.pipeline_id, 'unattributed') as pipeline_id,
        coalesce(allocated.team, 'unattributed') as team,
        coalesce(allocated.feature, 'unattributed') as feature,
        allocated.allocated_cost_usd as adjustment_usd

    from {{ ref('fct_allocated_costs_daily') }} as allocated
    inner join final_days
        on allocated.day = final_days.day
    where allocated.allocation_method <> 'unattributed'

    union all

    select
        estimates.day,
        estimates.pipeline_id,
        coalesce(estimates.team, 'unattributed') as team,
        coalesce(estimates.feature, 'unattributed') as feature,
        -estimates.estimated_cost_usd as adjustment_usd

    from {{ ref('int_llm_estimates_daily') }} as estimates
    inner join final_days
        on estimates.day = final_days.day
    where
        estimates.provider = 'aws.bedrock'
        and estimates.pipeline_id is not null
        and estimates.estimated_cost_usd > 0

),

adjustments as (

    select
        day,
        'pipeline' as scope_type,
        pipeline_id as scope_value,
        sum(adjustment_usd) as adjustment_usd
    from aws_billed
    group by day, pipeline_id

    union all

    select
        day,
        'feature' as scope_type,
        feature as scope_value,
        sum(adjustment_usd) as adjustment_usd
    from aws_billed
    group by day, feature

    union all

    select
        day,
        'team' as scope_type,
        team as scope_value,
        sum(adjustment_usd) as adjustment_usd
    from aws_billed
    group by day, team

),

billed as (

    -- Only whole days inside what the period has measured so far count.
    select
        periods.budget_id,
        sum(adjustments.adjustment_usd) as adjustment_usd,
        max(adjustments.day) as billed_through

    from periods
    inner join adjustments
        on
            periods.scope_type = adjustments.scope_type
            and periods.scope_value = adjustments.scope_value
            and periods.period_start <= adjustments.day::timestamp at time zone 'UTC'
            and adjustments.day::timestamp at time zone 'UTC' + interval '1 day'
            <= least(periods.period_end, periods.data_end)
    group by periods.budget_id

),

estimated as (

    select
        periods.budget_id,
        coalesce(sum(scope_hours.cost_usd), 0) as estimated_usd

    from periods
    left join scope_hours
        on
            periods.scope_type = scope_hours.scope_type
            and periods.scope_value = scope_hours.scope_value
            and periods.period_start <= scope_hours.hour
            and scope_hours.hour < least(periods.period_end, periods.data_end)
    group by periods.budget_id

),

spent as (

    select
        estimated.budget_id,
        estimated.estimated_usd,
        coalesce(billed.adjustment_usd, 0) as billed_adjustment_usd,
        billed.billed_through,
        estimated.estimated_usd + coalesce(billed.adjustment_usd, 0) as spent_usd

    from estimated
    left join billed
        on estimated.budget_id = billed.budget_id

),

final as (

    select
        periods.budget_id,
        periods.scope_type,
        periods.scope_value,
        periods.period,
        periods.period_start,
        periods.period_end,
        periods.limit_usd,
        spent.spent_usd,
        case
            when periods.limit_usd > 0 then round(spent.spent_usd / periods.limit_usd * 100, 2)
        end as pct_used,
        case
            when spent.spent_usd >= periods.limit_usd then 'breach'
            when spent.spent_usd >= periods.limit_usd * periods.warn_pct / 100 then 'warn'
            else 'ok'
        end as status,
        periods.warn_pct,
        spent.estimated_usd,
        spent.billed_adjustment_usd,
        spent.billed_through,
        -- Monthly budgets: the month's spend so far, extended linearly to its end.
        -- Reported only; it never changes the status.
        case
            when periods.period = 'month'
                then round(
                    spent.spent_usd
                    * extract(epoch from periods.period_end - periods.period_start)
                    / extract(epoch from periods.data_end - periods.period_start),
                    4
                )
        end as forecast_usd,
        periods.data_end as data_through

    from periods
    inner join spent
        on periods.budget_id = spent.budget_id

)

select * from final
