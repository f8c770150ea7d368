with

cost_and_usage as (

    -- The opt-in SERVICE x LINKED_ACCOUNT query (SPANCOST_CE_LINKED_ACCOUNTS=1), one
    -- granularity per day (int_ce_cost_and_usage_daily).
    select * from {{ ref('int_ce_cost_and_usage_daily') }}
    where
        query_name = 'ai_services_by_account'
        and metric = '{{ var("billing_cost_metric") }}'

),

final as (

    select
        day,
        linked_account as account_id,
        service,
        sum(amount) as billed_cost_usd,
        bool_or(is_estimated) as is_estimated

    from cost_and_usage
    where
        service is not null
        and linked_account is not null
    group by
        day,
        linked_account,
        service

)

select * from final
