-- The newest whole day of each pipeline against its trailing days: what the
-- Great Expectations checkpoint `pipeline_cost_profile` checks after each build.

with

daily_costs as (

    select * from {{ ref('agg_pipeline_costs_daily') }}

),

newest as (

    -- The newest whole day: the day before the newest day with calls, which is
    -- still filling.
    select max(daily_costs.day) - 1 as day  -- noqa: RF04
    from daily_costs

),

recent as (

    select
        daily_costs.day,
        daily_costs.pipeline_id,
        coalesce(sum(daily_costs.estimated_cost_usd), 0) as estimated_cost_usd,
        cast(sum(daily_costs.calls) as bigint) as calls

    from daily_costs
    inner join newest
        on
            daily_costs.day >= newest.day - {{ var('profile_trailing_days', 14) }}
            and daily_costs.day <= newest.day
    group by
        daily_costs.day,
        daily_costs.pipeline_id

),

trailing_days as (

    select cast(series.day as date) as day  -- noqa: RF04
    from newest
    cross join lateral generate_series(
        newest.day - {{ var('profile_trailing_days', 14) }},
        newest.day - 1,
        interval '1 day'
    ) as series (day)

),

pipelines as (

    select distinct recent.pipeline_id
    from recent

),

trailing_stats as (

    -- A trailing day without calls counts as $0 and 0 calls.
    select
        pipelines.pipeline_id,
        count(recent.day) as trailing_days_with_calls,
        avg(coalesce(recent.estimated_cost_usd, 0)) as trailing_mean_cost_usd,
        stddev_samp(coalesce(recent.estimated_cost_usd, 0)) as trailing_stddev_cost_usd,
        avg(coalesce(recent.calls, 0)) as trailing_mean_calls

    from pipelines
    cross join trailing_days
    left join recent
        on
            pipelines.pipeline_id = recent.pipeline_id
            and trailing_days.day = recent.day
    group by pipelines.pipeline_id

),

final as (

    select
        newest.day,
        trailing_stats.pipeline_id,
        coalesce(today.estimated_cost_usd, 0) as estimated_cost_usd,
        coalesce(today.calls, 0) as calls,
        trailing_stats.trailing_days_with_calls,
        trailing_stats.trailing_mean_cost_usd,
        trailing_stats.trailing_stddev_cost_usd,
        trailing_stats.trailing_mean_calls,
        case
            when
                trailing_stats.trailing_days_with_calls >= 3
                and trailing_stats.trailing_stddev_cost_usd > 0
                then
                    (coalesce(today.estimated_cost_usd, 0) - trailing_stats.trailing_mean_cost_usd)
                    / trailing_stats.trailing_stddev_cost_usd
        end as cost_z_score,
        case
            when
                trailing_stats.trailing_days_with_calls >= 3
                and trailing_stats.trailing_mean_calls > 0
                then coalesce(today.calls, 0) / trailing_stats.trailing_mean_calls
        end as calls_ratio

    from trailing_stats
    cross join newest
    left join recent as today
        on
            trailing_stats.pipeline_id = today.pipeline_id
            and newest.day = today.day

)

select * from final
