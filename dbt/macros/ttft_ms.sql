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
    {%- set number = "'^\\s*[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?\\s*$'" -%}
    {%- set instant = "'^\\d{4}-\\d{2}-\\d{2}[T ]\\d{2}:\\d{2}:\\d{2}(\\.\\d+)?(Z|[+-]\\d{2}(:?\\d{2})?)$'" -%}
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
            {%- do cases.append(
                "case when " ~ value ~ " ~ " ~ instant ~ " then extract(epoch from cast(" ~ value
                ~ " as timestamptz) - " ~ start_time ~ ") * 1000 end"
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
