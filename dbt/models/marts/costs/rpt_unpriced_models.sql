{#-
    Counted from the hourly roll-up, whose rows grow with hours, not with calls;
    the first and last call are then looked up in their hour of fct_llm_calls
    (its start_time index), so the report costs the same at any size of history.
-#}

with

unpriced_hours as (

    -- agg_pipeline_costs_hourly counts each API call once, as fct_llm_calls does.
    select
        model,
        provider,
        hour,
        unpriced_calls

    from {{ ref('agg_pipeline_costs_hourly') }}
    where unpriced_calls > 0

),

aggregated as (

    select
        model,
        provider,
        sum(unpriced_calls) as calls,
        min(hour) as first_hour,
        max(hour) as last_hour

    from unpriced_hours
    group by
        model,
        provider

),

llm_calls as not materialized (

    select
        coalesce(model, 'unattributed') as model,
        coalesce(provider, 'unattributed') as provider,
        start_time

    from {{ ref('fct_llm_calls') }}
    where not is_priced

),

final as (

    select
        aggregated.model,
        aggregated.provider,
        cast(aggregated.calls as bigint) as calls,
        (
            select min(llm_calls.start_time)
            from llm_calls
            where
                llm_calls.model = aggregated.model
                and llm_calls.provider = aggregated.provider
                and llm_calls.start_time >= aggregated.first_hour
                and llm_calls.start_time < aggregated.first_hour + interval '1 hour'
        ) as first_seen,
        (
            select max(llm_calls.start_time)
            from llm_calls
            where
                llm_calls.model = aggregated.model
                and llm_calls.provider = aggregated.provider
                and llm_calls.start_time >= aggregated.last_hour
                and llm_calls.start_time < aggregated.last_hour + interval '1 hour'
        ) as last_seen

    from aggregated

)

select * from final
