with

snapshots as (

    select * from {{ ref('stg_aws__sagemaker_endpoint_snapshots') }}
    -- Serverless variants bill per request, not per instance-hour.
    where
        not is_serverless
        and instance_type is not null

),

prices as (

    select * from {{ source('raw', 'aws_price_list') }}
    where
        service_code = 'AmazonSageMaker'
        and normalized_unit = 'hour'
        and (attributes ->> 'component' = 'Hosting' or usage_type ~ '(^|-)Host:')

),

billed as (

    select * from {{ ref('fct_billed_costs_daily') }}
    where
        service = 'Amazon SageMaker'
        and usage_type ~ '(^|-)Host(ing)?:'
        and unit = 'Hrs'
        and usage_quantity > 0

),

invocations as (

    select * from {{ ref('stg_aws__sagemaker_invocations') }}

),

span_hours as (

    select
        hour,
        endpoint_name,
        sum(spans) as spans,
        sum(busy_ms) as busy_ms,
        max(last_span_at) as last_span_at

    from {{ ref('int_sagemaker_span_hours') }}
    group by
        hour,
        endpoint_name

),

lives as (

    -- One life of an endpoint variant: from its creation (or first snapshot) to the
    -- last snapshot that saw it. Recreated under the same name, it is a new life.
    select
        region,
        endpoint_name,
        variant_name,
        creation_time,
        least(min(snapshot_at), min(creation_time)) as service_start,
        max(snapshot_at) as last_seen_at

    from snapshots
    group by
        region,
        endpoint_name,
        variant_name,
        creation_time

),

hours as (

    select
        lives.region,
        lives.endpoint_name,
        lives.variant_name,
        lives.creation_time,
        series.hour

    from lives
    cross join lateral generate_series(
        date_trunc('hour', lives.service_start, 'UTC'),
        date_trunc('hour', lives.last_seen_at, 'UTC'),
        interval '1 hour'
    ) as series (hour)

),

states as (

    -- Instance type, count and tag in each hour: the last snapshot before the hour
    -- ended, else (before the first snapshot) the first one.
    select
        hours.*,
        state.instance_type,
        state.instance_count,
        state.pipeline_tag

    from hours
    cross join lateral (
        select
            snapshots.instance_type,
            snapshots.instance_count,
            snapshots.pipeline_tag
        from snapshots
        where
            snapshots.region = hours.region
            and snapshots.endpoint_name = hours.endpoint_name
            and snapshots.variant_name = hours.variant_name
            and snapshots.creation_time is not distinct from hours.creation_time
        order by
            (snapshots.snapshot_at < hours.hour + interval '1 hour') desc,
            case
                when snapshots.snapshot_at < hours.hour + interval '1 hour'
                    then snapshots.snapshot_at
            end desc,
            snapshots.snapshot_at asc
        limit 1
    ) as state

),

priced as (

    select
        states.*,
        (
            select billed.billed_cost_usd / billed.usage_quantity
            from billed
            where
                billed.day = cast(states.hour at time zone 'UTC' as date)
                and billed.instance_type = states.instance_type
                and billed.region = states.region
            order by billed.usage_type
            limit 1
        ) as billed_hourly_price_usd,
        (
            select prices.usd_per_unit
            from prices
            where
                prices.item_name = states.instance_type
                and prices.region_code = states.region
                and prices.effective_from <= states.hour
                and (prices.effective_to is null or states.hour < prices.effective_to)
            order by prices.effective_from desc, prices.usd_per_unit asc
            limit 1
        ) as list_hourly_price_usd

    from states

),

final as (

    select
        priced.region,
        priced.endpoint_name,
        priced.variant_name,
        priced.hour,
        priced.instance_type,
        priced.instance_count,
        priced.pipeline_tag,
        coalesce(priced.billed_hourly_price_usd, priced.list_hourly_price_usd)
            as hourly_price_usd,
        case
            when priced.billed_hourly_price_usd is not null then 'billed'
            when priced.list_hourly_price_usd is not null then 'price_list'
        end as price_source,
        coalesce(priced.billed_hourly_price_usd, priced.list_hourly_price_usd)
        * priced.instance_count as cost_usd,
        coalesce(invocations.invocations, 0) as cloudwatch_invocations,
        coalesce(span_hours.spans, 0) as spans,
        coalesce(span_hours.busy_ms, 0) as busy_ms,
        coalesce(invocations.invocations, 0) > 0 or coalesce(span_hours.spans, 0) > 0
            as is_used,
        greatest(
            span_hours.last_span_at,
            case when invocations.invocations > 0 then invocations.hour end
        ) as last_invocation_at

    from priced
    left join invocations
        on
            priced.region = invocations.region
            and priced.endpoint_name = invocations.endpoint_name
            and priced.variant_name = invocations.variant_name
            and priced.hour = invocations.hour
    left join span_hours
        on
            priced.endpoint_name = span_hours.endpoint_name
            and priced.hour = span_hours.hour

)

select * from final
