{{
    config(
        indexes=[
            {'columns': ['day']},
        ],
    )
}}

with

pipeline_costs as (

    -- Incremental by day (int_pipeline_costs_daily); this table adds the bill,
    -- which AWS restates for days after the fact, so it is rebuilt whole.
    select * from {{ ref('int_pipeline_costs_daily') }}

),

billed_allocated as (

    -- The billed cost allocated to the calls of each row (fct_allocated_costs_daily
    -- rows that name the calls' model); only calls AWS bills get any. Empty when
    -- the var enable_billing is false.
    {% if var('enable_billing', true) -%}
        select
            day,
            pipeline_id,
            coalesce(team, 'unattributed') as team,
            coalesce(feature, 'unattributed') as feature,
            coalesce(environment, 'unattributed') as environment,
            model,
            sum(allocated_cost_usd) as billed_allocated_cost_usd

        from {{ ref('fct_allocated_costs_daily') }}
        where model is not null
        group by
            day,
            pipeline_id,
            coalesce(team, 'unattributed'),
            coalesce(feature, 'unattributed'),
            coalesce(environment, 'unattributed'),
            model
    {%- else -%}
        select
            cast(null as date) as day,
            cast(null as text) as pipeline_id,
            cast(null as text) as team,
            cast(null as text) as feature,
            cast(null as text) as environment,
            cast(null as text) as model,
            cast(null as numeric) as billed_allocated_cost_usd
        where false
    {%- endif %}

),

final as (

    select
        pipeline_costs.day,
        pipeline_costs.pipeline_id,
        pipeline_costs.team,
        pipeline_costs.feature,
        pipeline_costs.environment,
        pipeline_costs.provider,
        pipeline_costs.model,
        pipeline_costs.calls,
        pipeline_costs.error_calls,
        pipeline_costs.retry_calls,
        pipeline_costs.input_tokens,
        pipeline_costs.output_tokens,
        pipeline_costs.cache_read_tokens,
        pipeline_costs.cache_creation_tokens,
        pipeline_costs.reasoning_tokens,
        pipeline_costs.estimated_cost_usd,
        pipeline_costs.unpriced_calls,
        pipeline_costs.error_cost_usd,
        pipeline_costs.retry_cost_usd,
        pipeline_costs.p50_ms,
        pipeline_costs.p95_ms,
        pipeline_costs.p99_ms,
        pipeline_costs.ttft_p50_ms,
        pipeline_costs.ttft_p95_ms,
        billed_allocated.billed_allocated_cost_usd

    from pipeline_costs
    left join billed_allocated
        on
            pipeline_costs.provider = 'aws.bedrock'
            and pipeline_costs.day = billed_allocated.day
            and pipeline_costs.pipeline_id = billed_allocated.pipeline_id
            and pipeline_costs.team = billed_allocated.team
            and pipeline_costs.feature = billed_allocated.feature
            and pipeline_costs.environment = billed_allocated.environment
            and pipeline_costs.model = billed_allocated.model

)

select * from final
