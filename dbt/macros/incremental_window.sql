{#-
    The time window an incremental model (re)builds, as a SQL predicate on `column`,
    in whole `grain`s (`hour` or `day`, UTC).

    - `var('start_time')` / `var('end_time')` (ISO-8601 strings) set the window
      explicitly, so Airflow can backfill a range. Each bound is widened to whole
      grains (start floored, end ceiled): a `delete+insert` on the hour or day key
      replaces whole hours or days, so it must also read them whole.
    - Otherwise, on an incremental run, the window starts `var('lookback_hours')`
      before the newest `time_key` already in the target (a timestamptz, or a date
      for the day grain), floored to the grain, and is open-ended. The start is
      read from the target when the model runs and written into the SQL as a
      literal; an empty target gives no bound.
    - `anchor` (a relation) takes the newest `time_key` from the model read
      instead of the target, with `trace_context_hours` more lookback: for a model
      whose own rows may stop short of its input's (rpt_duplicate_llm_calls holds
      only the spans left out).
    - `newest` (a SQL expression) replaces the `max(time_key)` read from the
      anchor or the target, for a model anchored on more than one relation.
    - Otherwise (first run, `--full-refresh`) there is no bound.

    The bounds never depend on "now", so a rerun over the same data gives the
    same rows.
-#}
{% macro incremental_window(column, time_key='hour', grain='hour', anchor=none, newest=none) -%}
    {%- if grain not in ['hour', 'day'] -%}
        {{ exceptions.raise_compiler_error("incremental_window: grain must be hour or day, got " ~ grain) }}
    {%- endif -%}
    {%- set start_time = spancost_window_timestamp('start_time') -%}
    {%- set end_time = spancost_window_timestamp('end_time') -%}
    {%- set lookback_hours = var('lookback_hours', 48) | int -%}
    {%- if anchor is not none -%}
        {#- Anchored on the model it reads: also the trace context, as margin for
            the time that model advanced since this one last ran. -#}
        {%- set lookback_hours = lookback_hours + (var('trace_context_hours', 24) | int) -%}
    {%- endif -%}
    {%- set newest_from = anchor if anchor is not none else this -%}
    {%- if newest is none -%}
        {%- set newest = "(select max(" ~ time_key ~ ") from " ~ newest_from ~ ")" -%}
    {%- else -%}
        {%- set newest = "(" ~ newest ~ ")" -%}
    {%- endif -%}
    {%- if grain == 'day' -%}
        {#- A date key: its midnight in UTC, whatever the session's time zone. -#}
        {%- set newest = "(cast(" ~ newest ~ " as timestamp) at time zone 'UTC')" -%}
    {%- endif -%}
    {%- set bounds = [] -%}
    {%- if start_time is not none -%}
        {%- do bounds.append(
            column ~ " >= date_trunc('" ~ grain ~ "', cast('" ~ start_time ~ "' as timestamptz), 'UTC')"
        ) -%}
    {%- elif is_incremental() -%}
        {%- set window_start = "date_trunc('" ~ grain ~ "', " ~ newest
            ~ " - interval '" ~ lookback_hours ~ " hours', 'UTC')" -%}
        {%- if execute and newest_from is not string and not newest_from.is_cte -%}
            {#- A literal, read when the model runs: the planner then estimates the
                window's rows from the column's statistics and prunes day partitions
                while planning. (A subquery here is planned as a parameter that
                matches a third of any table: seq scans over the whole history.)
                A relation that is a CTE of the statement itself (dbt unit tests
                give `this` as one) cannot be read first: it stays a subquery. -#}
            {%- set found = run_query(
                "select to_char(" ~ window_start ~ " at time zone 'UTC',"
                ~ " 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
            ).columns[0].values()[0] -%}
            {%- if found is not none -%}
                {%- do bounds.append(column ~ " >= '" ~ found ~ "'::timestamptz") -%}
            {%- endif -%}
        {%- else -%}
            {%- do bounds.append(
                column ~ " >= coalesce(" ~ window_start ~ ", '-infinity'::timestamptz)"
            ) -%}
        {%- endif -%}
    {%- endif -%}
    {%- if end_time is not none -%}
        {%- do bounds.append(
            column ~ " < date_trunc('" ~ grain ~ "', cast('" ~ end_time ~ "' as timestamptz)"
            ~ " + interval '1 " ~ grain ~ "' - interval '1 microsecond', 'UTC')"
        ) -%}
    {%- endif -%}
    {%- if bounds | length == 0 -%}
        true
    {%- else -%}
        {{ bounds | join(' and ') }}
    {%- endif -%}
{%- endmacro %}


{#- The value of an optional ISO-8601 timestamp var, or none. Anything else is a compile error. -#}
{% macro spancost_window_timestamp(name) -%}
    {%- set value = var(name, none) -%}
    {%- if value is none or value | string | trim == '' -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set value = value | string | trim -%}
    {%- set iso = '^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?$' -%}
    {%- if not modules.re.match(iso, value) -%}
        {{ exceptions.raise_compiler_error(
            "var '" ~ name ~ "' must be an ISO-8601 timestamp such as 2026-01-01T00:00:00Z, got '" ~ value ~ "'"
        ) }}
    {%- endif -%}
    {{ return(value) }}
{%- endmacro %}


{#-
    The latest of several relations' newest times, as a SQL expression for
    `incremental_window(newest=...)`: `pairs` is a list of (relation, column).
    `greatest` skips nulls, so an empty relation is ignored; null only when all are.
-#}
{% macro spancost_newest_of(pairs) -%}
    greatest(
    {%- for relation, column in pairs %}
        (select max({{ column }}) from {{ relation }}){{ "," if not loop.last }}
    {%- endfor %}
    )
{%- endmacro %}
