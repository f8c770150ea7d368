{#-
    fct_cost_anomalies' window: whole UTC days of the lookback before the newest
    hour of int_scope_costs_hourly (or the vars' range). Anchored on that table, not on this
    one: anomalies are rare, an empty table anchors nothing, and every run would
    judge the whole history again.
-#}
{% macro spancost_judged_window(column) -%}
    {{ incremental_window(
        column, time_key='hour', grain='day', anchor=ref('int_scope_costs_hourly')
    ) }}
{%- endmacro %}

{#-
    fct_cost_anomalies' pre_hook: on an incremental run, delete the verdicts of the
    window it judges again (a period that no longer qualifies keeps none).
-#}
{% macro spancost_delete_judged_periods() -%}
    {%- if is_incremental() -%}
    delete from {{ this }} where {{ spancost_judged_window('period_start') }}
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}
