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

attributed as (

    select
        cast(date_trunc('day', start_time, 'UTC') at time zone 'UTC' as date) as day,  -- noqa: RF04
        coalesce(pipeline_id, 'unattributed') as pipeline_id,
        coalesce(team, 'unattributed') as team,
        coalesce(feature, 'unattributed') as feature,
        coalesce(environment, 'unattributed') as environment,
        coalesce(provider, 'unattributed') as provider,
        coalesce(model, 'unattributed') as model,
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cache_creation_tokens,
        reasoning_tokens,
        is_priced,
        is_error,
        is_retry,
        estimated_cost_usd,
        duration_ms,
        ttft_ms

    from llm_calls

),

aggregated as (

    select
        day,
        pipeline_id,
        team,
        feature,
        environment,
        provider,
        model,
        count(*) as calls,
        count(*) filter (where is_error) as error_calls,
        count(*) filter (where is_retry) as retry_calls,
        cast(coalesce(sum(input_tokens), 0) as bigint) as input_tokens,
        cast(coalesce(sum(output_tokens), 0) as bigint) as output_tokens,
        cast(coalesce(sum(cache_read_tokens), 0) as bigint) as cache_read_tokens,
        cast(coalesce(sum(cache_creation_tokens), 0) as bigint) as cache_creation_tokens,
        cast(coalesce(sum(reasoning_tokens), 0) as bigint) as reasoning_tokens,
        -- sum() skips unpriced calls and is null when no call is priced.
        sum(estimated_cost_usd) as estimated_cost_usd,
        count(*) filter (where not is_priced) as unpriced_calls,
        coalesce(sum(estimated_cost_usd) filter (where is_error), 0) as error_cost_usd,
        coalesce(sum(estimated_cost_usd) filter (where is_retry), 0) as retry_cost_usd,
        -- Continuous percentiles of the call latency (span duration) and of time
        -- to first token, in milliseconds; ttft is null when no call carried it.
        cast(percentile_cont(0.5) within group (order by duration_ms) as numeric) as p50_ms,
        cast(percentile_cont(0.95) within group (order by duration_ms) as numeric) as p95_ms,
        cast(percentile_cont(0.99) within group (order by duration_ms) as numeric) as p99_ms,
        cast(percentile_cont(0.5) within group (order by ttft_ms) as numeric) as ttft_p50_ms,
        cast(percentile_cont(0.95) within group (order by ttft_ms) as numeric) as ttft_p95_ms

    from attributed
    group by
        day,
        pipeline_id,
        team,
        feature,
        environment,
        provider,
        model

),

final as (

    select * from aggregated

)

select * from final
