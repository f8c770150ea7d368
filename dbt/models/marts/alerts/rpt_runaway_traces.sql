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

trace_costs as (

    select * from {{ ref('fct_trace_costs') }}
    -- The traces fct_trace_costs rebuilt (the lookback window), or the vars' range.
    where
        {{ incremental_window('start_time', time_key='start_time', anchor=ref('fct_trace_costs')) }}

),

agent_costs as (

    select * from {{ ref('fct_agent_costs') }}

),

flagged as (

    select
        *,
        case
            when estimated_cost_usd > 0
                then round(retry_cost_usd / estimated_cost_usd * 100, 2)
        end as retry_share_pct,
        array_remove(
            array[
                case when llm_calls > {{ var('runaway_max_llm_calls') }} then 'llm_calls' end,
                case
                    when estimated_cost_usd > {{ var('runaway_max_cost_usd') }} then 'cost'
                end,
                case
                    when duration_ms > {{ var('runaway_max_duration_minutes') }} * 60000
                        then 'duration'
                end,
                case
                    when
                        estimated_cost_usd > 0
                        and retry_cost_usd / estimated_cost_usd * 100
                        > {{ var('runaway_max_retry_share_pct') }}
                        then 'retries'
                end
            ],
            null
        ) as reasons

    from trace_costs

),

runaway as (

    select * from flagged
    where cardinality(reasons) > 0

),

top_agents as (

    -- The agent that spent the most of the trace on its own calls.
    select distinct on (agent_costs.trace_id)
        agent_costs.trace_id,
        agent_costs.agent_name,
        agent_costs.own_cost_usd

    from agent_costs
    inner join runaway
        on agent_costs.trace_id = runaway.trace_id
    order by
        agent_costs.trace_id asc,
        agent_costs.own_cost_usd desc nulls last,
        agent_costs.agent_span_id asc

),

final as (

    select
        runaway.trace_id,
        runaway.start_time,
        runaway.root_span_name,
        runaway.pipeline_id,
        runaway.team,
        runaway.feature,
        array_to_string(runaway.reasons, ',') as reasons,
        runaway.llm_calls,
        runaway.retry_calls,
        runaway.duration_ms,
        runaway.estimated_cost_usd,
        runaway.retry_cost_usd,
        runaway.retry_share_pct,
        top_agents.agent_name as top_agent_name,
        top_agents.own_cost_usd as top_agent_cost_usd

    from runaway
    left join top_agents
        on runaway.trace_id = top_agents.trace_id

)

select * from final
