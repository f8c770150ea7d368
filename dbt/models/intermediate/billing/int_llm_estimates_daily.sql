{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='day',
        on_schema_change='fail',
        indexes=[
            {'columns': ['day']},
        ],
    )
}}

with

llm_calls as (

    select * from {{ ref('fct_llm_calls') }}
    -- Whole UTC days: the lookback window, or the vars' range on a backfill.
    where {{ incremental_window('start_time', time_key='day', grain='day') }}

),

dated as (

    select
        cast(date_trunc('day', start_time, 'UTC') at time zone 'UTC' as date) as day,  -- noqa: RF04
        provider,
        model,
        priced_model,
        pipeline_id,
        team,
        feature,
        environment,
        estimated_cost_usd

    from llm_calls
    where is_priced

),

final as (

    -- Estimated cost per day and priced model, down to the attribution the
    -- allocation spreads the bill over. Pipeline, team, feature and environment
    -- stay null where the spans named none.
    select
        day,
        provider,
        model,
        priced_model,
        pipeline_id,
        team,
        feature,
        environment,
        count(*) as calls,
        sum(estimated_cost_usd) as estimated_cost_usd

    from dated
    group by
        day,
        provider,
        model,
        priced_model,
        pipeline_id,
        team,
        feature,
        environment

)

select * from final
