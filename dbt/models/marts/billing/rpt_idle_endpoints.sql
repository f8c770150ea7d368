with

endpoint_hours as (

    select * from {{ ref('int_sagemaker_endpoint_hours') }}

),

final as (

    select
        cast(hour at time zone 'UTC' as date) as day,  -- noqa: RF04
        region,
        endpoint_name,
        variant_name,
        max(instance_type) as instance_type,
        max(instance_count) as instance_count,
        count(*) as hours_in_service,
        count(*) filter (where is_used) as hours_with_invocations,
        count(*) filter (where not is_used) as idle_hours,
        max(hourly_price_usd) as hourly_price_usd,
        max(price_source) as price_source,
        sum(cost_usd) as instance_cost_usd,
        coalesce(sum(cost_usd) filter (where not is_used), 0) as idle_cost_usd,
        max(last_invocation_at) as last_invocation_at,
        max(pipeline_tag) as pipeline_tag

    from endpoint_hours
    group by
        cast(hour at time zone 'UTC' as date),
        region,
        endpoint_name,
        variant_name

)

select * from final
