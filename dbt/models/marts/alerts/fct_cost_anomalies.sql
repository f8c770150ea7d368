{#-
    pre_hook: each run judges whole days of the window again (macros/anomaly_window.sql);
    their old verdicts go first, so a period that no longer qualifies (late spans, a
    price correction) keeps none.
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='period_start',
        on_schema_change='fail',
        pre_hook="{{ spancost_delete_judged_periods() }}",
        indexes=[
            {'columns': ['period_start']},
        ],
    )
}}

with

scope_hours as (

    select * from {{ ref('int_scope_costs_hourly') }}
    where scope_type in ('pipeline', 'feature')

),

pipelines as (

    select * from {{ ref('pipelines') }}

),

judged_hours as (

    -- The hours judged this run: whole days of the window (see
    -- spancost_judged_window below), or of the vars' range.
    select * from scope_hours
    where {{ spancost_judged_window('hour') }}

),

recent_hours as (

    -- What the judged periods are compared with: from 15 days before the first
    -- judged day on (14 days of baseline, whole days), not the whole history, so
    -- a run costs the same however long the history is.
    select scope_hours.*
    from scope_hours
    where
        scope_hours.hour >= (
            select date_trunc('day', min(judged_hours.hour), 'UTC') - interval '15 days'
            from judged_hours
        )

),

scope_days as (

    select
        date_trunc('day', hour, 'UTC') as day_start,
        scope_type,
        scope_value,
        pipeline_id,
        sum(cost_usd) as cost_usd

    from recent_hours
    group by
        date_trunc('day', hour, 'UTC'),
        scope_type,
        scope_value,
        pipeline_id

),

scope_first_days as (

    -- Over the whole history: the scope's first day with a row.
    select
        scope_type,
        scope_value,
        pipeline_id,
        min(date_trunc('day', hour, 'UTC')) as first_day

    from scope_hours
    group by
        scope_type,
        scope_value,
        pipeline_id

),

candidates as (

    -- The periods judged this run: whole days of the lookback window (or of the
    -- vars' range), both grains, only those that cost enough to matter.
    select
        hour as period_start,
        'hour' as grain,
        scope_type,
        scope_value,
        pipeline_id,
        cost_usd

    from judged_hours
    where cost_usd >= {{ var('anomaly_min_cost_usd') }}

    union all

    select
        day_start as period_start,
        'day' as grain,
        scope_type,
        scope_value,
        pipeline_id,
        cost_usd

    from scope_days
    where
        {{ spancost_judged_window('day_start') }}
        and cost_usd >= {{ var('anomaly_min_cost_usd') }}

),

judged as (

    -- The baseline: the median of the 14 days before, at the same hour of day for
    -- the hourly grain; a missing hour or day counts as $0, from the scope's first
    -- day with cost on (the days before it existed are not $0 days of it). History:
    -- the days with any cost for the scope among those 14.
    select
        candidates.*,
        (
            select
                percentile_cont(0.5) within group (
                    order by coalesce(
                        case when candidates.grain = 'hour' then past_hours.cost_usd end,
                        case when candidates.grain = 'day' then past_days.cost_usd end,
                        0
                    )
                )
            from
                generate_series(
                    1,
                    least(
                        14,
                        extract(
                            day from date_trunc('day', candidates.period_start, 'UTC')
                            - scope_first_days.first_day
                        )::integer
                    )
                ) as back (days)
            left join recent_hours as past_hours
                on
                    candidates.grain = 'hour'
                    and past_hours.scope_type = candidates.scope_type
                    and past_hours.scope_value = candidates.scope_value
                    and past_hours.pipeline_id = candidates.pipeline_id
                    and past_hours.hour = candidates.period_start - back.days * interval '1 day'
            left join scope_days as past_days
                on
                    candidates.grain = 'day'
                    and past_days.scope_type = candidates.scope_type
                    and past_days.scope_value = candidates.scope_value
                    and past_days.pipeline_id = candidates.pipeline_id
                    and past_days.day_start
                    = candidates.period_start - back.days * interval '1 day'
        ) as baseline_cost_usd,
        (
            select count(*)
            from scope_days as history
            where
                history.scope_type = candidates.scope_type
                and history.scope_value = candidates.scope_value
                and history.pipeline_id = candidates.pipeline_id
                and history.cost_usd > 0
                and history.day_start
                >= date_trunc('day', candidates.period_start, 'UTC') - interval '14 days'
                and history.day_start < date_trunc('day', candidates.period_start, 'UTC')
        ) as history_days,
        case
            when pipelines.kind = 'batch' then {{ var('anomaly_threshold_batch') }}
            else {{ var('anomaly_threshold_realtime') }}
        end as threshold

    from candidates
    inner join scope_first_days
        on
            candidates.scope_type = scope_first_days.scope_type
            and candidates.scope_value = scope_first_days.scope_value
            and candidates.pipeline_id = scope_first_days.pipeline_id
    left join pipelines
        on candidates.pipeline_id = pipelines.pipeline_id

),

final as (

    select
        period_start,
        grain,
        scope_type,
        scope_value,
        pipeline_id,
        cost_usd as observed_cost_usd,
        baseline_cost_usd::numeric as baseline_cost_usd,
        round(cost_usd / baseline_cost_usd::numeric, 4) as ratio,
        threshold::numeric as threshold,
        case
            when cost_usd >= 2 * threshold * baseline_cost_usd then 'critical'
            else 'warn'
        end as severity,
        history_days

    from judged
    -- A zero baseline (a new scope, or an hour it is usually idle in; missing hours
    -- count as $0) judges nothing: any spend would be infinitely many times it.
    where
        history_days >= {{ var('anomaly_min_history_days') }}
        and baseline_cost_usd > 0
        and cost_usd >= threshold * baseline_cost_usd

)

select * from final
