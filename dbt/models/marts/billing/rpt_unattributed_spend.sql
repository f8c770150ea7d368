with

allocated as (

    select * from {{ ref('fct_allocated_costs_daily') }}

),

final as (

    select
        day,
        service,
        cost_key,
        sum(allocated_cost_usd) as unattributed_cost_usd,
        max(service_billed_cost_usd) as billed_cost_usd,
        case
            when max(service_billed_cost_usd) <> 0
                then round(sum(allocated_cost_usd) / max(service_billed_cost_usd) * 100, 4)
        end as unattributed_pct,
        bool_and(is_final) as is_final

    from allocated
    where allocation_method = 'unattributed'
    group by
        day,
        service,
        cost_key

)

select * from final
