-- Finance trusts the allocation only if allocated plus unattributed equals the
-- bill. Returns each (day, service) whose fct_allocated_costs_daily rows do not
-- add up to its fct_billed_costs_daily lines exactly (not merely to the cent),
-- and each unattributed row that names a pipeline; passes when there are none.
{{ config(enabled=var('enable_billing', true)) }}

with

billed as (

    select
        day,
        service,
        sum(billed_cost_usd) as billed_cost_usd

    from {{ ref('fct_billed_costs_daily') }}
    group by
        day,
        service

),

allocated as (

    select
        day,
        service,
        sum(allocated_cost_usd) as allocated_cost_usd,
        count(*) filter (
            where allocation_method = 'unattributed' and pipeline_id is not null
        ) as unattributed_with_pipeline

    from {{ ref('fct_allocated_costs_daily') }}
    group by
        day,
        service

),

final as (

    select
        coalesce(billed.day, allocated.day) as day,  -- noqa: RF04
        coalesce(billed.service, allocated.service) as service,
        billed.billed_cost_usd,
        allocated.allocated_cost_usd,
        allocated.unattributed_with_pipeline

    from billed
    full outer join allocated
        on
            billed.day = allocated.day
            and billed.service = allocated.service
    where
        billed.billed_cost_usd is distinct from allocated.allocated_cost_usd
        and not (billed.billed_cost_usd = 0 and allocated.allocated_cost_usd is null)
        or allocated.unattributed_with_pipeline > 0

)

select * from final
