{#-
    A SQL timestamptz for a literal instant written by a user (a price var), in
    UTC whatever the session's time zone: `'2026-03-01'` is that day's midnight
    UTC, `'2026-03-10 17:00'` is 17:00 UTC, and an instant with its offset
    (`'2026-03-10T09:00:00-08:00'`, `'...Z'`) keeps it. `quoted` is the literal,
    already quoted for SQL.
-#}
{% macro spancost_utc_instant(quoted) -%}
    {%- set text = quoted | trim("'") -%}
    {%- if modules.re.search('(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)$', text)
        and modules.re.search('[0-9]{2}:[0-9]{2}', text) -%}
        cast({{ quoted }} as timestamptz)
    {%- else -%}
        (cast({{ quoted }} as timestamp) at time zone 'UTC')
    {%- endif -%}
{%- endmacro %}
