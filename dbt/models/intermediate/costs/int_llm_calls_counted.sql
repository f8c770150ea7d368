{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='trace_id',
        on_schema_change='fail',
        indexes=[
            {'columns': ['trace_id']},
            {'columns': ['start_time']},
        ],
    )
}}

with recursive

-- Read twice: not materialized, so each read keeps its own filter (see
-- spancost_trace_rows).
priced_calls as not materialized (

    select * from {{ ref('int_llm_calls_priced') }}

),

spans as (

    select * from {{ ref('stg_otel__spans') }}

),

touched_traces as (

    -- Traces with a call in the window are rebuilt whole (see macros/trace_window.sql).
    {{ spancost_touched_traces('priced_calls') }}

),

llm_calls as (

    select priced_calls.*
    from {{ spancost_trace_rows('priced_calls', 'touched_traces', 'priced_calls') }}

),

trace_spans as (

    -- Every span of those traces, for ancestry: agent and framework spans lie
    -- between calls (agent spans: stg_otel__spans.is_agent_span).
    select
        spans.trace_id,
        spans.span_id,
        spans.parent_span_id,
        spans.span_name,
        spans.agent_name,
        spans.is_agent_span as is_agent

    from spans
    where
        {{ spancost_in_traces('spans.trace_id', 'touched_traces') }}
        and {{ spancost_in_trace_context('spans.start_time', 'llm_calls') }}

),

multi_call_traces as (

    -- Only a trace with two or more calls can nest or repeat a call.
    select trace_id
    from llm_calls
    group by trace_id
    having count(*) > 1

),

multi_calls as (

    select
        llm_calls.*,
        -- The order in which duplicates are kept: the span with more cache
        -- detail first (fewer of the two cache counts missing), then the earlier
        -- one. An emitter can report one count and not the other: the Anthropic
        -- SDK's own spans name the cache write in a way staging does not read.
        (
            case when llm_calls.cache_read_tokens is null then 1 else 0 end
            + case when llm_calls.cache_creation_tokens is null then 1 else 0 end
        ) as lacks_cache_detail,
        coalesce(llm_calls.priced_model, llm_calls.model) as call_model

    from llm_calls
    inner join multi_call_traces
        on llm_calls.trace_id = multi_call_traces.trace_id

),

ancestry as (

    -- Every ancestor of every call, through spans of any kind. A call span that is
    -- itself an agent span is its own nearest agent (hops 0). Bounded against
    -- cycles.
    select
        llm_calls.trace_id,
        llm_calls.span_key,
        llm_calls.span_id as ancestor_span_id,
        0 as hops

    from llm_calls

    union all

    select
        ancestry.trace_id,
        ancestry.span_key,
        trace_spans.parent_span_id as ancestor_span_id,
        ancestry.hops + 1 as hops

    from ancestry
    inner join trace_spans
        on
            ancestry.trace_id = trace_spans.trace_id
            and ancestry.ancestor_span_id = trace_spans.span_id
    where
        trace_spans.parent_span_id is not null
        and ancestry.hops < 100

),

nearest_agents as (

    select
        ancestry.span_key,
        trace_spans.span_id as agent_span_id,
        trace_spans.agent_name,
        row_number() over (
            partition by ancestry.span_key
            order by ancestry.hops
        ) as agent_rank

    from ancestry
    inner join trace_spans
        on
            ancestry.trace_id = trace_spans.trace_id
            and ancestry.ancestor_span_id = trace_spans.span_id
    where trace_spans.is_agent

),

nested_calls as (

    -- A call with another call below it is a roll-up (a framework or agent span
    -- over the client span): only the innermost is priced. The call kept in its
    -- place is the nearest one below it.
    select
        outer_calls.span_key as dropped_span_key,
        ancestry.span_key as kept_span_key,
        'nested_rollup' as dedupe_rule,
        row_number() over (
            partition by outer_calls.span_key
            order by ancestry.hops, inner_calls.start_time, inner_calls.span_id
        ) as kept_rank

    from ancestry
    inner join multi_calls as outer_calls
        on
            ancestry.trace_id = outer_calls.trace_id
            and ancestry.ancestor_span_id = outer_calls.span_id
    inner join multi_calls as inner_calls
        on ancestry.span_key = inner_calls.span_key
    where ancestry.hops > 0

),

calls_below as (

    select
        dropped_span_key as span_key,
        count(*) as calls_below
    from nested_calls
    group by dropped_span_key

),

nested_duplicates as (

    -- Two instrumentations that wrap the same SDK method report one API call as
    -- parent and child (the one applied last is the parent). When the roll-up has
    -- exactly that one call below it, reporting the same usage as it does (as in
    -- duplicate_pairs) with less cache detail, the outer span is the better report
    -- of the call: it is counted, and the inner one is the duplicate. Otherwise
    -- the innermost is counted, as for any roll-up.
    select
        inner_calls.span_key as dropped_span_key,
        outer_calls.span_key as kept_span_key,
        {{ spancost_same_usage_rule('outer_calls', 'inner_calls') }} as dedupe_rule,
        1 as kept_rank

    from nested_calls
    inner join calls_below
        on
            nested_calls.dropped_span_key = calls_below.span_key
            and calls_below.calls_below = 1
    inner join multi_calls as outer_calls
        on nested_calls.dropped_span_key = outer_calls.span_key
    inner join multi_calls as inner_calls
        on nested_calls.kept_span_key = inner_calls.span_key
    where
        outer_calls.call_model = inner_calls.call_model
        and coalesce(outer_calls.output_tokens, -1) = coalesce(inner_calls.output_tokens, -1)
        and coalesce(outer_calls.scope_name, '') != coalesce(inner_calls.scope_name, '')
        and outer_calls.lacks_cache_detail < inner_calls.lacks_cache_detail
        and {{ spancost_input_matches('outer_calls', 'inner_calls') }}

),

rollups as (

    select
        nested_calls.dropped_span_key,
        nested_calls.kept_span_key,
        nested_calls.dedupe_rule,
        nested_calls.kept_rank

    from nested_calls
    left join nested_duplicates
        on nested_calls.dropped_span_key = nested_duplicates.kept_span_key
    where nested_duplicates.kept_span_key is null

    union all

    select
        dropped_span_key,
        kept_span_key,
        dedupe_rule,
        kept_rank
    from nested_duplicates

),

innermost as (

    select multi_calls.*
    from multi_calls
    left join rollups
        on multi_calls.span_key = rollups.dropped_span_key
    where rollups.dropped_span_key is null

),

duplicate_pairs as (

    -- The same API call reported by two instrumentations: two spans of different
    -- scopes under the same parent, same model, same output tokens, overlapping
    -- in time, and the same input tokens (`same_usage`) or inputs that differ by
    -- exactly the cache tokens one of them reports (`same_usage_but_cache`: one
    -- emitter counted input without cache and has no row in
    -- emitter_token_semantics).
    select
        second_call.span_key as dropped_span_key,
        first_call.span_key as kept_span_key,
        {{ spancost_same_usage_rule('first_call', 'second_call') }} as dedupe_rule,
        row_number() over (
            partition by second_call.span_key
            order by first_call.lacks_cache_detail, first_call.start_time, first_call.span_id
        ) as kept_rank

    from innermost as first_call
    inner join innermost as second_call
        on
            first_call.trace_id = second_call.trace_id
            and coalesce(first_call.parent_span_id, '') = coalesce(second_call.parent_span_id, '')
            and first_call.call_model = second_call.call_model
            and coalesce(first_call.output_tokens, -1) = coalesce(second_call.output_tokens, -1)
            and coalesce(first_call.scope_name, '') != coalesce(second_call.scope_name, '')
            and first_call.start_time <= second_call.end_time
            and second_call.start_time <= first_call.end_time
            -- first_call comes first in the keeping order
            and (
                first_call.lacks_cache_detail < second_call.lacks_cache_detail
                or (
                    first_call.lacks_cache_detail = second_call.lacks_cache_detail
                    and (
                        first_call.start_time < second_call.start_time
                        or (
                            first_call.start_time = second_call.start_time
                            and first_call.span_id < second_call.span_id
                        )
                    )
                )
            )
    where
        {{ spancost_input_matches('first_call', 'second_call') }}
        or {{ spancost_input_matches('second_call', 'first_call') }}

),

not_counted as (

    select
        dropped_span_key,
        kept_span_key,
        dedupe_rule
    from rollups
    where kept_rank = 1

    union all

    select
        dropped_span_key,
        kept_span_key,
        dedupe_rule
    from duplicate_pairs
    where kept_rank = 1

),

final as (

    select
        llm_calls.*,
        nearest_agents.agent_span_id,
        coalesce(nearest_agents.agent_name, llm_calls.agent_name) as call_agent_name,
        not_counted.dropped_span_key is null as is_counted,
        not_counted.dedupe_rule as not_counted_rule,
        not_counted.kept_span_key as counted_instead_span_key

    from llm_calls
    left join not_counted
        on llm_calls.span_key = not_counted.dropped_span_key
    left join nearest_agents
        on
            llm_calls.span_key = nearest_agents.span_key
            and nearest_agents.agent_rank = 1

)

select * from final  -- noqa: AM04
-- Rows in time order, so the start_time index reads the window's pages only.
order by start_time
