{#-
    Time to first token, in milliseconds, from the first attribute of
    `var('ttft_attributes')` that the span carries with a usable value. Each entry
    names the attribute and its unit: `s`, `ms`, `ns`, or `timestamp` (the
    instant the first token arrived, ISO-8601). A value that is not a number (or
    not a timestamp) is skipped, never an error. The caller drops negative results.
-#}
{% macro spancost_ttft_ms(attributes, start_time) -%}
    {%- set entries = var('ttft_attributes', []) or [] -%}
    {%- set factors = {'s': '1000', 'ms': '1', 'ns': '0.000001'} -%}
    {#- Only values Postgres is sure to cast: a bounded number, and an instant whose
        fields are in range (the day is checked against its month below), so one
        odd attribute can never fail the build. -#}
    {%- set number = "'^\\s*[0-9]{1,30}(\\.[0-9]{1,30})?([eE][-+]?[0-9]{1,3})?\\s*$'" -%}
    {%- set instant = "'^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-](0[0-9]|1[0-5])(:?[0-5][0-9])?)$'" -%}
    {%- set cases = [] -%}
    {%- for entry in entries -%}
        {%- if entry is not mapping or 'attribute' not in entry or entry.get('unit') not in ['s', 'ms', 'ns', 'timestamp'] -%}
            {{ exceptions.raise_compiler_error(
                "var 'ttft_attributes' entry " ~ loop.index
                ~ " must be a mapping with 'attribute' and 'unit' (s, ms, ns or timestamp), got: " ~ entry
            ) }}
        {%- endif -%}
        {%- set value = attributes ~ " ->> '" ~ (entry['attribute'] | replace("'", "''")) ~ "'" -%}
        {%- if entry['unit'] == 'timestamp' -%}
            {#- The day must exist in its month (no 2026-02-30); nested cases, since
                Postgres evaluates a case's branches in order but not an and's terms. -#}
            {%- set day_exists = "cast(substr(" ~ value ~ ", 9, 2) as int) <= extract(day from make_date(cast(substr("
                ~ value ~ ", 1, 4) as int), cast(substr(" ~ value ~ ", 6, 2) as int), 1)"
                ~ " + interval '1 month' - interval '1 day')" -%}
            {%- do cases.append(
                "case when " ~ value ~ " ~ " ~ instant ~ " then case when " ~ day_exists
                ~ " then extract(epoch from cast(" ~ value ~ " as timestamptz) - " ~ start_time
                ~ ") * 1000 end end"
            ) -%}
        {%- else -%}
            {%- do cases.append(
                "case when " ~ value ~ " ~ " ~ number ~ " then cast(" ~ value ~ " as numeric) * "
                ~ factors[entry['unit']] ~ " end"
            ) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if cases | length == 0 -%}
        cast(null as numeric)
    {%- else -%}
        coalesce({{ cases | join(', ') }})
    {%- endif -%}
{%- endmacro %}
