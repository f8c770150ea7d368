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

spent as (

    select
        periods.budget_id,
        coalesce(sum(scope_hours.cost_usd), 0) as spent_usd

    from periods
    left join scope_hours
        on
            periods.scope_type = scope_hours.scope_type
            and periods.scope_value = scope_hours.scope_value
            and periods.period_start <= scope_hours.hour
            and scope_hours.hour < least(periods.period_end, periods.data_end)
    group by periods.budget_id

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
