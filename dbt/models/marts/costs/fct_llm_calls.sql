{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='trace_id',
        on_schema_change='fail',
        indexes=[
            {'columns': ['trace_id']},
            {'columns': ['start_time']},
            {'columns': ['agent_span_id']},
        ],
    )
}}

with

-- Read twice: not materialized, so each read keeps its own filter (see
-- spancost_trace_rows).
counted_calls as not materialized (

    select * from {{ ref('int_llm_calls_counted') }}

),

-- Unused on a full build, which reads every trace (spancost_trace_rows).
touched_traces as (  -- noqa: ST03

    -- Traces with a call in the window are replaced whole (macros/trace_window.sql).
    {{ spancost_touched_traces('counted_calls') }}

),

calls as (

    -- Each API call once: duplicates and roll-ups are left out.
    select counted_calls.*
    from {{ spancost_trace_rows('counted_calls', 'touched_traces', 'counted_calls') }}
    where counted_calls.is_counted

),

sequenced as (

    -- A retry follows a failed call in the same trace, under the same parent,
    -- to the same model, or says it was sent again (http.request.resend_count).
    select
        *,
        coalesce(
            lag(is_error) over (
                partition by trace_id, parent_span_id, coalesce(priced_model, model)
                order by start_time, span_id
            ),
            false
        )
        or coalesce(resend_count > 0, false) as is_retry

    from calls

),

final as (

    select
        span_key,
        trace_id,
        span_id,
        parent_span_id,
        start_time,
        end_time,
        cast(duration_ms as numeric) as duration_ms,
        cast(ttft_ms as numeric) as ttft_ms,
        resend_count,
        span_name,
        operation,
        scope_name,
        provider,
        model,
        request_model,
        response_model,
        priced_model,
        match_rule,
        price_origin,
        pipeline_id,
        team,
        feature,
        environment,
        user_id_hash,
        region,
        call_agent_name as agent_name,
        agent_span_id,
        service_tier,
        cast(input_tokens as bigint) as input_tokens,
        cast(output_tokens as bigint) as output_tokens,
        cast(cache_read_tokens as bigint) as cache_read_tokens,
        cast(cache_creation_tokens as bigint) as cache_creation_tokens,
        cast(reasoning_tokens as bigint) as reasoning_tokens,
        cast(uncached_input_tokens as bigint) as uncached_input_tokens,
        is_long_context,
        service_tier_factor,
        is_priced,
        estimated_cost_usd,
        input_cost_usd,
        output_cost_usd,
        reported_cost_usd,
        has_usage,
        is_error,
        is_retry

    from sequenced

)

select * from final
-- Rows in time order, so the start_time index reads the window's pages only.
order by start_time
