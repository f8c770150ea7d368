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
    -- Anchored on the priced calls' newest start, not on this table: without
    -- SageMaker traffic it stays empty, and an empty table anchors nothing (every
    -- span of the history would be read every run).
    where
        {{ incremental_window(
            'start_time', time_key='start_time', anchor=ref('int_llm_calls_priced')
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
