with recursive

llm_calls as (

    select * from {{ ref('int_llm_calls_priced') }}

),

spans as (

    select * from {{ ref('stg_otel__spans') }}

),

multi_call_traces as (

    -- Only a trace with two or more usage-carrying spans can nest or repeat a call.
    select trace_id
    from llm_calls
    group by trace_id
    having count(*) > 1

),

trace_spans as (

    select
        spans.trace_id,
        spans.span_id,
        spans.parent_span_id

    from spans
    inner join multi_call_traces
        on spans.trace_id = multi_call_traces.trace_id

),

multi_calls as (

    select
        llm_calls.*,
        -- The order in which duplicates are kept: the span with cache detail
        -- first, then the earlier one.
        (
            llm_calls.cache_read_tokens is null
            and llm_calls.cache_creation_tokens is null
        ) as lacks_cache_detail,
        coalesce(llm_calls.priced_model, llm_calls.model) as call_model

    from llm_calls
    inner join multi_call_traces
        on llm_calls.trace_id = multi_call_traces.trace_id

),

ancestry as (

    -- Every ancestor of every call in those traces, through spans of any kind
    -- (agent and framework spans between them). Bounded against cycles.
    select
        multi_calls.trace_id,
        multi_calls.span_key,
        trace_spans.parent_span_id as ancestor_span_id,
        1 as hops

    from multi_calls
    inner join trace_spans
        on
            multi_calls.trace_id = trace_spans.trace_id
            and multi_calls.span_id = trace_spans.span_id
    where trace_spans.parent_span_id is not null

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

rollups as (

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
        case
            when
                coalesce(first_call.input_tokens, -1) = coalesce(second_call.input_tokens, -1)
                then 'same_usage'
            else 'same_usage_but_cache'
        end as dedupe_rule,
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
        coalesce(first_call.input_tokens, -1) = coalesce(second_call.input_tokens, -1)
        or first_call.input_tokens = second_call.input_tokens
        + coalesce(first_call.cache_read_tokens, 0)
        + coalesce(first_call.cache_creation_tokens, 0)
        or second_call.input_tokens = first_call.input_tokens
        + coalesce(second_call.cache_read_tokens, 0)
        + coalesce(second_call.cache_creation_tokens, 0)

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
        llm_calls.span_key,
        llm_calls.trace_id,
        llm_calls.span_id,
        llm_calls.parent_span_id,
        llm_calls.start_time,
        llm_calls.end_time,
        llm_calls.scope_name,
        llm_calls.provider,
        llm_calls.model,
        llm_calls.request_model,
        llm_calls.response_model,
        llm_calls.priced_model,
        llm_calls.match_rule,
        llm_calls.price_origin,
        llm_calls.pipeline_id,
        llm_calls.team,
        llm_calls.feature,
        llm_calls.environment,
        llm_calls.user_id_hash,
        llm_calls.region,
        llm_calls.input_tokens,
        llm_calls.output_tokens,
        llm_calls.cache_read_tokens,
        llm_calls.cache_creation_tokens,
        llm_calls.reasoning_tokens,
        llm_calls.reported_input_tokens,
        llm_calls.reported_output_tokens,
        llm_calls.input_includes_cache,
        llm_calls.output_includes_reasoning,
        llm_calls.uncached_input_tokens,
        llm_calls.input_usd_per_mtok,
        llm_calls.output_usd_per_mtok,
        llm_calls.cache_read_usd_per_mtok,
        llm_calls.cache_write_usd_per_mtok,
        llm_calls.reasoning_usd_per_mtok,
        llm_calls.is_priced,
        llm_calls.estimated_cost_usd,
        llm_calls.reported_cost_usd,
        not_counted.dropped_span_key is null as is_counted,
        not_counted.dedupe_rule as not_counted_rule,
        not_counted.kept_span_key as counted_instead_span_key

    from llm_calls
    left join not_counted
        on llm_calls.span_key = not_counted.dropped_span_key

)

select * from final
