{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='hour',
        on_schema_change='fail',
        indexes=[
            {'columns': ['hour']},
        ],
    )
}}

with

spans as (

    select * from {{ ref('stg_otel__spans') }}
    -- Whole UTC hours: the lookback window, or the vars' range on a backfill.
    -- Anchored on the newest SageMaker span already counted here or the newest
    -- priced call, whichever is later: either table can stay empty (a deployment
    -- without SageMaker traffic, or one that calls only SageMaker endpoints), and
    -- an empty anchor bounds nothing (every span of the history would be read
    -- every run).
    where
        {{ incremental_window(
            'start_time', time_key='start_time', anchor=ref('int_llm_calls_priced'),
            newest=spancost_newest_of([
                (this, 'last_span_at'),
                (ref('int_llm_calls_priced'), 'start_time'),
            ]),
        ) }}
        and sagemaker_endpoint is not null

),

final as (

    -- Spans that called a SageMaker endpoint, per endpoint, hour (of the span's
    -- start) and attribution: how many, and how long they kept it busy.
    select
        date_trunc('hour', start_time, 'UTC') as hour,
        sagemaker_endpoint as endpoint_name,
        region,
        pipeline_id,
        team,
        feature,
        environment,
        count(*) as spans,
        sum(greatest(duration_ms, 0)) as busy_ms,
        max(start_time) as last_span_at

    from spans
    group by
        date_trunc('hour', start_time, 'UTC'),
        sagemaker_endpoint,
        region,
        pipeline_id,
        team,
        feature,
        environment

)

select * from final
