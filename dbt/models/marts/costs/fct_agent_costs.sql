{#-
    pre_hook, a stop-gap: the planner estimates one row for the ancestry CTEs and
    picks nested loops that ran for minutes at 1M spans (bench/transform.py).
    Hash joins are right for every size here. To go when the joins are rewritten.
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='trace_id',
        on_schema_change='fail',
        pre_hook="set local enable_nestloop = off",
        indexes=[
            {'columns': ['trace_id']},
            {'columns': ['agent_span_key'], 'unique': true},
            {'columns': ['start_time']},
        ],
    )
}}

with recursive

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
    -- The window is anchored on the calls, not on this table: a project without
    -- agent spans leaves it empty, and an empty table anchors nothing (every trace
    -- would be rebuilt every run).
    {{ spancost_touched_traces('llm_calls', anchor=ref('fct_llm_calls')) }}

),

trace_calls as (

    select llm_calls.*
    from {{ spancost_trace_rows('llm_calls', 'touched_traces', 'llm_calls') }}

),

trace_spans as (

    -- Agent spans: stg_otel__spans.is_agent_span.
    select
        spans.span_key,
        spans.trace_id,
        spans.span_id,
        spans.parent_span_id,
        spans.span_name,
        spans.operation,
        spans.start_time,
        spans.end_time,
        spans.pipeline_id,
        coalesce(
            spans.agent_name,
            nullif(substring(spans.span_name from '^invoke_agent (.+)$'), '')
        ) as agent_name,
        spans.is_agent_span as is_agent

    from spans
    where
        {{ spancost_in_traces('spans.trace_id', 'touched_traces') }}
        and {{ spancost_in_trace_context('spans.start_time', 'trace_calls') }}

),

agents as (

    select * from trace_spans
    where is_agent

),

ancestry as (

    -- Every ancestor of every agent span, through spans of any kind. Bounded
    -- against cycles.
    select
        agents.trace_id,
        agents.span_id as agent_span_id,
        agents.parent_span_id as ancestor_span_id,
        1 as hops

    from agents
    where agents.parent_span_id is not null

    union all

    select
        ancestry.trace_id,
        ancestry.agent_span_id,
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

agent_ancestors as (

    -- Agent ancestors only, nearest first.
    select
        ancestry.trace_id,
        ancestry.agent_span_id,
        ancestry.ancestor_span_id as ancestor_agent_span_id,
        row_number() over (
            partition by ancestry.trace_id, ancestry.agent_span_id
            order by ancestry.hops
        ) as nearness

    from ancestry
    inner join agents
        on
            ancestry.trace_id = agents.trace_id
            and ancestry.ancestor_span_id = agents.span_id

),

own_costs as (

    -- Calls whose nearest agent ancestor is the agent.
    select
        trace_id,
        agent_span_id,
        count(*) as llm_calls,
        sum(estimated_cost_usd) as estimated_cost_usd,
        count(*) filter (where not is_priced) as unpriced_calls

    from trace_calls
    where agent_span_id is not null
    group by
        trace_id,
        agent_span_id

),

agent_own as (

    select
        agents.trace_id,
        agents.span_id,
        coalesce(own_costs.llm_calls, 0) as llm_calls,
        coalesce(own_costs.estimated_cost_usd, 0) as own_cost_usd,
        coalesce(own_costs.unpriced_calls, 0) as unpriced_calls

    from agents
    left join own_costs
        on
            agents.trace_id = own_costs.trace_id
            and agents.span_id = own_costs.agent_span_id

),

descendant_totals as (

    -- Every agent below an agent, at any depth.
    select
        agent_ancestors.trace_id,
        agent_ancestors.ancestor_agent_span_id as agent_span_id,
        sum(agent_own.own_cost_usd) as descendant_cost_usd,
        sum(agent_own.llm_calls) as descendant_llm_calls,
        sum(agent_own.unpriced_calls) as descendant_unpriced_calls

    from agent_ancestors
    inner join agent_own
        on
            agent_ancestors.trace_id = agent_own.trace_id
            and agent_ancestors.agent_span_id = agent_own.span_id
    group by
        agent_ancestors.trace_id,
        agent_ancestors.ancestor_agent_span_id

),

depths as (

    select
        trace_id,
        agent_span_id,
        count(*) as depth  -- noqa: RF04

    from agent_ancestors
    group by
        trace_id,
        agent_span_id

),

final as (

    select
        agents.span_key as agent_span_key,
        agents.trace_id,
        agents.span_id as agent_span_id,
        parents.ancestor_agent_span_id as parent_agent_span_id,
        agents.agent_name,
        agents.span_name,
        agents.operation,
        agents.pipeline_id,
        cast(coalesce(depths.depth, 0) as integer) as depth,  -- noqa: RF04
        agents.start_time,
        cast(extract(epoch from agents.end_time - agents.start_time) * 1000 as numeric) as duration_ms,  -- noqa: LT05
        cast(agent_own.llm_calls as bigint) as llm_calls,
        cast(agent_own.llm_calls + coalesce(descendant_totals.descendant_llm_calls, 0) as bigint)
            as subtree_llm_calls,
        cast(
            agent_own.unpriced_calls + coalesce(descendant_totals.descendant_unpriced_calls, 0) as bigint  -- noqa: LT05
        ) as subtree_unpriced_calls,
        agent_own.own_cost_usd,
        agent_own.own_cost_usd + coalesce(descendant_totals.descendant_cost_usd, 0) as subtree_cost_usd  -- noqa: LT05

    from agents
    inner join agent_own
        on
            agents.trace_id = agent_own.trace_id
            and agents.span_id = agent_own.span_id
    left join agent_ancestors as parents
        on
            agents.trace_id = parents.trace_id
            and agents.span_id = parents.agent_span_id
            and parents.nearness = 1
    left join descendant_totals
        on
            agents.trace_id = descendant_totals.trace_id
            and agents.span_id = descendant_totals.agent_span_id
    left join depths
        on
            agents.trace_id = depths.trace_id
            and agents.span_id = depths.agent_span_id

)

select * from final
-- Rows in time order, so the start_time index reads the window's pages only.
order by start_time
