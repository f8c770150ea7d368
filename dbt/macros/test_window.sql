{#-
    Data tests on the span-sized relations check the recent rows only, so the
    15-minute build costs the same at any size of history (bench/transform.py:
    the tests on stg_otel__spans alone grew linearly, 17 s at 1M spans, 85 s at
    5M). Rows outside the window were tested when they were built, and no
    incremental run rewrites them.

    - Which relations: var `test_window_models` (each has a `start_time`).
    - The window: from `lookback_hours` + `trace_context_hours` before the newest
      call in int_llm_calls_priced, as a literal so the filter prunes the day
      partitions of raw.otel_spans under stg_otel__spans; on a backfill, from
      the `start_time` var less the same margin.
    - Everything is tested on `--full-refresh`, or with the var
      `test_full_history: true` (e.g. a nightly `dbt test --vars ...`).

    Overrides dbt's get_where_subquery (the relation a generic test reads) and
    the parent side of `relationships`, which dbt does not filter.
-#}
{% macro spancost_test_window_start(relation) -%}
    {%- if not execute or flags.FULL_REFRESH or var('test_full_history', false) -%}
        {{ return(none) }}
    {%- endif -%}
    {%- if relation.identifier is not defined
        or relation.identifier not in var('test_window_models', []) -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set margin = (var('lookback_hours', 48) | int) + (var('trace_context_hours', 24) | int) -%}
    {%- set start_time = spancost_window_timestamp('start_time') -%}
    {%- if start_time is not none -%}
        {%- set anchor = "cast('" ~ start_time ~ "' as timestamptz)" -%}
    {%- else -%}
        {#- Found through the graph: a test may not ref() a model it does not test.
            (A list, since a variable set inside a Jinja loop does not leave it.) -#}
        {%- set anchors = [] -%}
        {%- for node in graph.nodes.values()
            if node.resource_type == 'model' and node.name == 'int_llm_calls_priced' -%}
            {%- set calls = adapter.get_relation(
                database=node.database, schema=node.schema, identifier=node.alias
            ) -%}
            {%- if calls is not none -%}
                {%- do anchors.append("(select max(start_time) from " ~ calls ~ ")") -%}
            {%- endif -%}
        {%- endfor -%}
        {%- if anchors | length == 0 -%}
            {{ return(none) }}
        {%- endif -%}
        {%- set anchor = anchors[0] -%}
    {%- endif -%}
    {%- set result = run_query(
        "select to_char((" ~ anchor ~ " - interval '" ~ margin ~ " hours') at time zone 'UTC',"
        ~ " 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    ) -%}
    {%- set start = result.columns[0].values()[0] -%}
    {{ return(start) }}
{%- endmacro %}


{% macro default__get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- set window_start = spancost_test_window_start(relation) -%}
    {%- if window_start -%}
        {%- set recent = "start_time >= '" ~ window_start ~ "'::timestamptz" -%}
        {%- set where = recent ~ (" and (" ~ where ~ ")" if where else "") -%}
    {%- endif -%}
    {%- if where -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ where }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}


{% macro default__test_relationships(model, column_name, to, field) %}

{%- set window_start = spancost_test_window_start(to) %}

with child as (
    select {{ column_name }} as from_field
    from {{ model }}
    where {{ column_name }} is not null
),

parent as (
    select {{ field }} as to_field
    from {{ to }}
    {%- if window_start %}
    -- Only the recent parents: a child row in the window has its parent in it,
    -- since the window starts trace_context_hours earlier for the parent.
    where start_time >= '{{ window_start }}'::timestamptz - interval '{{ var("trace_context_hours", 24) | int }} hours'
    {%- endif %}
)

select
    from_field

from child
left join parent
    on child.from_field = parent.to_field

where parent.to_field is null

{% endmacro %}
