{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='trace_id',
        on_schema_change='fail',
        indexes=[
            {'columns': ['trace_id'], 'unique': true},
            {'columns': ['start_time']},
        ],
    )
}}

with

-- Read twice: not materialized, so each read keeps its own filter (see
-- spancost_trace_rows).
llm_calls as not materialized (

    select * from {{ ref('fct_llm_calls') }}

),

spans as (

    select * from {{ ref('stg_otel__spans') }}

),

touched_traces as (

    -- Traces with a call in the window are replaced whole (macros/trace_window.sql).
    {{ spancost_touched_traces('llm_calls') }}

),

trace_calls as (

    select llm_calls.*
    from {{ spancost_trace_rows('llm_calls', 'touched_traces', 'llm_calls') }}

),

trace_spans as (

    select
        spans.trace_id,
        spans.span_name,
        spans.parent_span_id,
        spans.start_time,
        spans.end_time

    from spans
    where
        {{ spancost_in_traces('spans.trace_id', 'touched_traces') }}
        and {{ spancost_in_trace_context('spans.start_time', 'trace_calls') }}

),

roots as (

    -- The transaction: the span without a parent (the earliest, should a trace
    -- have more than one).
    select
        trace_id,
        span_name as root_span_name,
        row_number() over (partition by trace_id order by start_time, span_name) as root_rank

    from trace_spans
    where parent_span_id is null

),

span_extents as (

    select
        trace_id,
        min(start_time) as start_time,
        max(end_time) as end_time

    from trace_spans
    group by trace_id

),

call_totals as (

    -- Attribution from the trace's calls: the most frequent value (ties: the
    -- smallest), so one stray span cannot relabel a trace.
    select
        trace_id,
        mode() within group (order by pipeline_id) as pipeline_id,
        mode() within group (order by team) as team,
        mode() within group (order by feature) as feature,
        mode() within group (order by environment) as environment,
        min(start_time) as first_call_start_time,
        max(end_time) as last_call_end_time,
        count(*) as llm_calls,
        count(*) filter (where is_error) as error_calls,
        count(*) filter (where is_retry) as retry_calls,
        count(*) filter (where not is_priced) as unpriced_calls,
        -- sum() skips unpriced calls; a trace of only unpriced calls is null.
        sum(estimated_cost_usd) as estimated_cost_usd,
        coalesce(sum(estimated_cost_usd) filter (where is_error), 0) as error_cost_usd,
        coalesce(sum(estimated_cost_usd) filter (where is_retry), 0) as retry_cost_usd,
        sum(reported_cost_usd) as reported_cost_usd,
        cast(coalesce(sum(input_tokens), 0) as bigint) as input_tokens,
        cast(coalesce(sum(output_tokens), 0) as bigint) as output_tokens

    from trace_calls
    group by trace_id

),

final as (

    select
        call_totals.trace_id,
        roots.root_span_name,
        call_totals.pipeline_id,
        call_totals.team,
        call_totals.feature,
        call_totals.environment,
        least(span_extents.start_time, call_totals.first_call_start_time) as start_time,
        greatest(span_extents.end_time, call_totals.last_call_end_time) as end_time,
        cast(
            extract(
                epoch from greatest(span_extents.end_time, call_totals.last_call_end_time)
                - least(span_extents.start_time, call_totals.first_call_start_time)
            ) * 1000 as numeric
        ) as duration_ms,
        call_totals.llm_calls,
        call_totals.error_calls,
        call_totals.retry_calls,
        call_totals.unpriced_calls,
        call_totals.estimated_cost_usd,
        call_totals.error_cost_usd,
        call_totals.retry_cost_usd,
        call_totals.reported_cost_usd,
        call_totals.input_tokens,
        call_totals.output_tokens

    from call_totals
    left join span_extents
        on call_totals.trace_id = span_extents.trace_id
    left join roots
        on
            call_totals.trace_id = roots.trace_id
            and roots.root_rank = 1

)

select * from final
-- Rows in time order, so the start_time index reads the window's pages only.
order by start_time
