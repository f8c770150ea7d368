with

cost_and_usage as (

    -- The opt-in SERVICE x LINKED_ACCOUNT query (SPANCOST_CE_LINKED_ACCOUNTS=1).
    select * from {{ ref('stg_aws__cost_and_usage') }}
    where
        query_name = 'ai_services_by_account'
        and metric = '{{ var("billing_cost_metric") }}'
        and granularity in ('DAILY', 'HOURLY')

),

dated as (

    -- As in fct_billed_costs_daily: DAILY results, or HOURLY ones summed where no
    -- DAILY pull covers the day.
    select
        *,
        cast(period_start at time zone 'UTC' as date) as day,  -- noqa: RF04
        bool_or(granularity = 'DAILY') over (
            partition by cast(period_start at time zone 'UTC' as date)
        ) as day_has_daily

    from cost_and_usage

),

final as (

    select
        day,
        linked_account as account_id,
        service,
        sum(amount) as billed_cost_usd,
        bool_or(is_estimated) as is_estimated

    from dated
    where
        (granularity = 'DAILY' or not day_has_daily)
        and service is not null
        and linked_account is not null
    group by
        day,
        linked_account,
        service

)

select * from final
