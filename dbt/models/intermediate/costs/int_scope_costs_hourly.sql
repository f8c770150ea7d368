{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='hour',
        on_schema_change='fail',
        indexes=[
            {'columns': ['hour']},
            {'columns': ['scope_type', 'scope_value', 'hour']},
        ],
    )
}}

with

llm_calls as (

    select * from {{ ref('fct_llm_calls') }}
    -- Whole UTC hours: the lookback window, or the vars' range on a backfill.
    where {{ incremental_window('start_time', time_key='hour') }}

),

attributed as (

    select
        date_trunc('hour', start_time, 'UTC') as hour,
        coalesce(pipeline_id, 'unattributed') as pipeline_id,
        coalesce(team, 'unattributed') as team,
        coalesce(feature, 'unattributed') as feature,
        coalesce(estimated_cost_usd, 0) as estimated_cost_usd,
        is_retry

    from llm_calls

),

final as (

    -- Estimated cost per hour for each scope anomalies and budgets are judged on:
    -- a pipeline, a feature within its pipeline, a team.
    select
        hour,
        'pipeline' as scope_type,
        pipeline_id as scope_value,
        pipeline_id,
        count(*) as calls,
        sum(estimated_cost_usd) as cost_usd

    from attributed
    group by
        hour,
        pipeline_id

    union all

    select
        hour,
        'feature' as scope_type,
        feature as scope_value,
        pipeline_id,
        count(*) as calls,
        sum(estimated_cost_usd) as cost_usd

    from attributed
    group by
        hour,
        pipeline_id,
        feature

    union all

    select
        hour,
        'team' as scope_type,
        team as scope_value,
        null as pipeline_id,
        count(*) as calls,
        sum(estimated_cost_usd) as cost_usd

    from attributed
    group by
        hour,
        team

)

select * from final
