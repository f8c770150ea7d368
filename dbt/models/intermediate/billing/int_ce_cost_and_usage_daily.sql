with

cost_and_usage as (

    -- Staging holds the newest complete pull per query and period already.
    select * from {{ ref('stg_aws__cost_and_usage') }}
    where granularity in ('DAILY', 'HOURLY')

),

dated as (

    select
        pull_id,
        query_name,
        granularity,
        period_start,
        period_end,
        cast(period_start at time zone 'UTC' as date) as day,  -- noqa: RF04
        service,
        usage_type,
        resource_id,
        linked_account,
        tag_key,
        tag_value,
        metric,
        amount,
        unit,
        is_estimated,
        bool_or(granularity = 'DAILY') over (
            partition by query_name, cast(period_start at time zone 'UTC' as date)
        ) as day_has_daily

    from cost_and_usage

),

final as (

    -- A query's day comes from its DAILY results, or from its HOURLY ones where no
    -- DAILY pull covers the day (SPANCOST_CE_HOURLY), never from both.
    select * from dated
    where granularity = 'DAILY' or not day_has_daily

)

select * from final
