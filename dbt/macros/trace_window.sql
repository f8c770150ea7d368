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
    A predicate for the rows of the touched traces: a semi-join, which Postgres
    hashes or answers from the trace_id index. (`= any(array(...))` was tried and
    is quadratic: an array built at run time is never hashed, and its row count is
    misestimated, so the planner chose nested loops; measured in bench/transform.py.)
    The CTEs it filters must be `not materialized`, or Postgres copies the whole
    table into the CTE before filtering it.
-#}
{% macro spancost_in_traces(column, touched_cte) -%}
    {{ column }} in (select {{ touched_cte }}.trace_id from {{ touched_cte }})
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

