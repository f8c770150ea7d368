with

endpoint_hours as (

    select * from {{ ref('int_sagemaker_endpoint_hours') }}
    where
        is_used
        and cost_usd is not null

),

span_hours as (

    select * from {{ ref('int_sagemaker_span_hours') }}

),

weighted as (

    -- A used hour's instance cost goes to the spans that used the endpoint in that
    -- hour, in proportion to their busy time (by count when none lasted any time).
    select
        endpoint_hours.hour,
        endpoint_hours.endpoint_name,
        endpoint_hours.instance_type,
        endpoint_hours.cost_usd,
        span_hours.pipeline_id,
        span_hours.team,
        span_hours.feature,
        span_hours.environment,
        case
            when sum(span_hours.busy_ms) over endpoint_hour > 0
                then span_hours.busy_ms / sum(span_hours.busy_ms) over endpoint_hour
            else span_hours.spans * 1.0 / sum(span_hours.spans) over endpoint_hour
        end as busy_share

    from endpoint_hours
    inner join span_hours
        on
            endpoint_hours.endpoint_name = span_hours.endpoint_name
            and endpoint_hours.hour = span_hours.hour
            and endpoint_hours.region = coalesce(span_hours.region, endpoint_hours.region)
    window endpoint_hour as (
        partition by
            endpoint_hours.region,
            endpoint_hours.endpoint_name,
            endpoint_hours.variant_name,
            endpoint_hours.hour
    )

),

final as (

    -- Shaped like int_llm_estimates_daily: the instance type is the cost key.
    select
        cast(hour at time zone 'UTC' as date) as day,  -- noqa: RF04
        'aws.sagemaker' as provider,
        endpoint_name as model,
        instance_type as priced_model,
        pipeline_id,
        team,
        feature,
        environment,
        sum(cost_usd * busy_share) as estimated_cost_usd

    from weighted
    group by
        cast(hour at time zone 'UTC' as date),
        endpoint_name,
        instance_type,
        pipeline_id,
        team,
        feature,
        environment

)

select * from final
