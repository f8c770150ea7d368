{#-
    Rebuild windows for the models that are replaced a whole trace at a time
    (incremental on `trace_id`).

    A trace is rebuilt when any of its rows in `relation` starts inside the
    window of `incremental_window` (the lookback, or the vars' range). All of its
    rows are then read, however old, so a trace that spans two windows is
    replaced whole: it is never counted twice, and never cut in two.
-#}
{% macro spancost_touched_traces(relation) -%}
    select distinct trace_id
    from {{ relation }}
    where {{ incremental_window('start_time', time_key='start_time') }}
{%- endmacro %}


{#-
    A predicate for the rows of the touched traces. `= any(array(...))` lets the
    planner look each trace up in the trace_id index instead of scanning the
    history, so a 15-minute run costs the same at any size of history.
-#}
{% macro spancost_in_traces(column, touched_cte) -%}
    {{ column }} = any(array(select {{ touched_cte }}.trace_id from {{ touched_cte }}))
{%- endmacro %}


{#-
    Spans are read for trace context (ancestry, root span, agents) from
    `var('trace_context_hours')` (default 24) before the earliest call of the
    touched traces: parents start before their children, and the bound keeps the
    read on the recent day partitions of raw.otel_spans.
-#}
{% macro spancost_trace_context_start(calls_cte) -%}
    coalesce(
        (select min({{ calls_cte }}.start_time) from {{ calls_cte }}),
        'infinity'::timestamptz
    ) - interval '{{ var("trace_context_hours", 24) | int }} hours'
{%- endmacro %}


{#-
    The whole-UTC-day window of a daily incremental model, as a predicate on
    `column` (a timestamptz): like `incremental_window`, widened to whole days,
    and on an incremental run starting `lookback_hours` before the newest `day`
    (a date) already in the target.
-#}
{% macro incremental_day_window(column, time_key='day') -%}
    {%- set start_time = spancost_window_timestamp('start_time') -%}
    {%- set end_time = spancost_window_timestamp('end_time') -%}
    {%- set lookback_hours = var('lookback_hours', 48) | int -%}
    {%- set bounds = [] -%}
    {%- if start_time is not none -%}
        {%- do bounds.append(
            column ~ " >= date_trunc('day', cast('" ~ start_time ~ "' as timestamptz), 'UTC')"
        ) -%}
    {%- elif is_incremental() -%}
        {%- do bounds.append(
            column ~ " >= coalesce(date_trunc('day', (select cast(max(" ~ time_key ~ ") as timestamp) from "
            ~ this ~ ") at time zone 'UTC' - interval '" ~ lookback_hours
            ~ " hours', 'UTC'), '-infinity'::timestamptz)"
        ) -%}
    {%- endif -%}
    {%- if end_time is not none -%}
        {%- do bounds.append(
            column ~ " < date_trunc('day', cast('" ~ end_time ~ "' as timestamptz)"
            ~ " + interval '1 day' - interval '1 microsecond', 'UTC')"
        ) -%}
    {%- endif -%}
    {%- if bounds | length == 0 -%}
        true
    {%- else -%}
        {{ bounds | join(' and ') }}
    {%- endif -%}
{%- endmacro %}
