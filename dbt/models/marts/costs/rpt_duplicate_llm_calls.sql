with

llm_calls as (

    select * from {{ ref('int_llm_calls_counted') }}

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
