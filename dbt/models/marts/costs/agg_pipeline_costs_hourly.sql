{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='hour',
        on_schema_change='fail',
    )
}}

with

llm_calls as (

    select * from {{ ref('fct_llm_calls') }}
    -- Whole UTC hours: the lookback window, or the vars' range on a backfill.
    -- Each API call once (fct_llm_calls leaves duplicates and roll-ups out).
    where {{ incremental_window('start_time', time_key='hour') }}

),

attributed as (

    select
        date_trunc('hour', start_time, 'UTC') as hour,
        coalesce(pipeline_id, 'unattributed') as pipeline_id,
        coalesce(team, 'unattributed') as team,
        coalesce(provider, 'unattributed') as provider,
        coalesce(model, 'unattributed') as model,
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cache_creation_tokens,
        reasoning_tokens,
        is_priced,
        estimated_cost_usd

    from llm_calls

),

aggregated as (

    -- provider is grouped, not summed over: a model name served by two
    -- providers breaks the grain test rather than mixing their costs.
    select
        hour,
        pipeline_id,
        team,
        provider,
        model,
        count(*) as calls,
        cast(coalesce(sum(input_tokens), 0) as bigint) as input_tokens,
        cast(coalesce(sum(output_tokens), 0) as bigint) as output_tokens,
        cast(coalesce(sum(cache_read_tokens), 0) as bigint) as cache_read_tokens,
        cast(
            coalesce(sum(cache_creation_tokens), 0) as bigint
        ) as cache_creation_tokens,
        cast(coalesce(sum(reasoning_tokens), 0) as bigint) as reasoning_tokens,
        -- sum() skips unpriced calls and is null when no call is priced.
        sum(estimated_cost_usd) as estimated_cost_usd,
        count(*) filter (where not is_priced) as unpriced_calls

    from attributed
    group by
        hour,
        pipeline_id,
        team,
        provider,
        model

),

final as (

    select * from aggregated

)

select * from final
