{#-
    Rebuild windows for the models that are replaced a whole trace at a time
    (incremental on `trace_id`).

    A trace is rebuilt when any of its rows in `relation` starts inside the
    window of `incremental_window` (the lookback, or the vars' range). All of its
    rows are then read, however old, so a trace that spans two windows is
    replaced whole: it is never counted twice, and never cut in two.
-#}
{% macro spancost_touched_traces(relation, anchor=none) -%}
    select distinct trace_id
    from {{ relation }}
    where {{ incremental_window('start_time', time_key='start_time', anchor=anchor) }}
{%- endmacro %}


{#-
    A pre_hook for a trace-keyed model that can lose a trace's rows (a report of
    some of its rows only): delete the touched traces' rows first, so a trace
    that now has none keeps none. Runs inside the model's transaction; readers
    see the old rows until it commits.
-#}
{% macro spancost_delete_touched_traces(relation, anchor=none) -%}
    {%- if is_incremental() -%}
    delete from {{ this }}
    where trace_id in ({{ spancost_touched_traces(relation, anchor=anchor) }})
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}


{#-
    The rows of `relation` (a table with an index on trace_id) that belong to the
    touched traces, as a FROM item named `alias`: one index lookup per touched
    trace, so the read costs the same at any size of history. `offset 0` keeps
    the lateral subquery from being pulled up into a plain join, which the
    planner would answer with a hash join over a seq scan of the whole table
    (measured in bench/transform.py: the seq scans were what grew with history).
-#}
{% macro spancost_trace_rows(relation, touched_cte, alias) -%}
    {%- if not (is_incremental()
        or spancost_window_timestamp('start_time') is not none
        or spancost_window_timestamp('end_time') is not none) -%}
    {#- A full build: every trace is touched; one scan, no lookups. -#}
    {{ relation }} as {{ alias }}
    {%- else -%}
    {{ touched_cte }}
    cross join lateral (
        select trace_rows.*
        from {{ relation }} as trace_rows
        where trace_rows.trace_id = {{ touched_cte }}.trace_id
        offset 0
    ) as {{ alias }}
    {%- endif -%}
{%- endmacro %}


{#-
    A predicate for the span rows of the touched traces (stg_otel__spans, with a
    time bound that prunes day partitions): a semi-join, which Postgres
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
    Spans are read for trace context (ancestry, root span, agents, the trace's
    extent) from `var('trace_context_hours')` (default 24) before the earliest
    call of the touched traces to as long after their latest call: parents start
    before their children, and the bounds keep the read on the day partitions of
    raw.otel_spans around the window. The upper bound matters on a backfill: the
    window lies in the past, and without it the read ran on through every newer
    partition (18.8M spans read for a 14-day backfill at 20M; bench/transform.py).
-#}
{% macro spancost_trace_context_start(calls_cte) -%}
    coalesce(
        (select min({{ calls_cte }}.start_time) from {{ calls_cte }}),
        'infinity'::timestamptz
    ) - interval '{{ var("trace_context_hours", 24) | int }} hours'
{%- endmacro %}


{% macro spancost_trace_context_end(calls_cte) -%}
    coalesce(
        (select max({{ calls_cte }}.start_time) from {{ calls_cte }}),
        '-infinity'::timestamptz
    ) + interval '{{ var("trace_context_hours", 24) | int }} hours'
{%- endmacro %}


{#- Both bounds, as a predicate on `column`. -#}
{% macro spancost_in_trace_context(column, calls_cte) -%}
    {{ column }} >= {{ spancost_trace_context_start(calls_cte) }}
    and {{ column }} < {{ spancost_trace_context_end(calls_cte) }}
{%- endmacro %}
