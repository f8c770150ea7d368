{#-
    Replaced a trace at a time, like the marts it reports on. Its own rows stop at
    the newest span left out, so the window is anchored on int_llm_calls_counted;
    the pre_hook deletes the touched traces first, so a trace that no longer has a
    span left out keeps no row.
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='trace_id',
        on_schema_change='fail',
        pre_hook="{{ spancost_delete_touched_traces(ref('int_llm_calls_counted'), anchor=ref('int_llm_calls_counted')) }}",
        indexes=[
            {'columns': ['trace_id']},
            {'columns': ['start_time']},
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

    {{ spancost_touched_traces('counted_calls', anchor=ref('int_llm_calls_counted')) }}

),

llm_calls as (

    select counted_calls.*
    from {{ spancost_trace_rows('counted_calls', 'touched_traces', 'counted_calls') }}

),

dropped as (

    select * from llm_calls
    where not is_counted

),

kept as (

    select * from llm_calls
    where is_counted

),

final as (

    select
        dropped.trace_id,
        dropped.span_id as dropped_span_id,
        dropped.scope_name as dropped_scope_name,
        kept.span_id as kept_span_id,
        kept.scope_name as kept_scope_name,
        dropped.not_counted_rule as dedupe_rule,
        dropped.start_time,
        dropped.provider,
        dropped.model,
        dropped.pipeline_id,
        dropped.input_tokens,
        dropped.output_tokens,
        dropped.estimated_cost_usd as not_counted_cost_usd

    from dropped
    left join kept
        on dropped.counted_instead_span_key = kept.span_key

)

select * from final
-- Rows in time order, so the start_time index reads the window's pages only.
order by start_time
