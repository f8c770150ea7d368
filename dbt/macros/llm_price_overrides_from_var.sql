{#-
    The rows of the `llm_price_overrides` var as a SQL query with the columns of
    the llm_price_overrides seed, so prices can be overridden without a file:

        dbt build --vars '{llm_price_overrides: [{provider: openai, model: gpt-4o,
            input_usd_per_mtok: 2.00, output_usd_per_mtok: 8.00,
            cache_read_usd_per_mtok: 1.00, cache_write_usd_per_mtok: 2.00,
            effective_from: "2026-01-01"}]}'

    Each entry is a mapping. provider, model, the four *_usd_per_mtok prices and
    effective_from are required; effective_to, reasoning_usd_per_mtok,
    batch_factor, flex_factor, priority_factor, the long_context_* columns and
    source are optional. An unknown or missing key
    is a compile error that names the entry, so a typo cannot silently drop a
    price. With no var (the default, an empty list) the query returns no rows.
-#}
{% macro llm_price_overrides_from_var() -%}
    {%- set columns = {
        'provider': 'text',
        'model': 'text',
        'input_usd_per_mtok': 'numeric',
        'output_usd_per_mtok': 'numeric',
        'cache_read_usd_per_mtok': 'numeric',
        'cache_write_usd_per_mtok': 'numeric',
        'effective_from': 'timestamptz',
        'effective_to': 'timestamptz',
        'reasoning_usd_per_mtok': 'numeric',
        'batch_factor': 'numeric',
        'flex_factor': 'numeric',
        'priority_factor': 'numeric',
        'long_context_threshold_tokens': 'bigint',
        'long_context_input_usd_per_mtok': 'numeric',
        'long_context_output_usd_per_mtok': 'numeric',
        'long_context_cache_read_usd_per_mtok': 'numeric',
        'long_context_cache_write_usd_per_mtok': 'numeric',
        'source': 'text',
    } -%}
    {%- set required = [
        'provider', 'model', 'input_usd_per_mtok', 'output_usd_per_mtok',
        'cache_read_usd_per_mtok', 'cache_write_usd_per_mtok', 'effective_from',
    ] -%}
    {%- set entries = var('llm_price_overrides', []) or [] -%}
    {%- if entries is string or entries is mapping -%}
        {{ exceptions.raise_compiler_error(
            "var 'llm_price_overrides' must be a list of mappings, got: " ~ entries
        ) }}
    {%- endif -%}
    {%- set selects = [] -%}
    {%- for entry in entries -%}
        {%- set where = "var 'llm_price_overrides' entry " ~ loop.index -%}
        {%- if entry is not mapping -%}
            {{ exceptions.raise_compiler_error(where ~ " must be a mapping, got: " ~ entry) }}
        {%- endif -%}
        {%- for key in entry -%}
            {%- if key not in columns -%}
                {{ exceptions.raise_compiler_error(
                    where ~ " has unknown key '" ~ key ~ "'; allowed: " ~ (columns.keys() | list | join(', '))
                ) }}
            {%- endif -%}
        {%- endfor -%}
        {%- set values = [] -%}
        {%- for column, data_type in columns.items() -%}
            {%- set value = entry.get(column) -%}
            {%- if value is none or value | string | trim == '' -%}
                {%- if column in required -%}
                    {{ exceptions.raise_compiler_error(where ~ " has no value for '" ~ column ~ "'") }}
                {%- endif -%}
                {%- do values.append('cast(null as ' ~ data_type ~ ') as ' ~ column) -%}
            {%- else -%}
                {%- set quoted = "'" ~ (value | string | trim | replace("'", "''")) ~ "'" -%}
                {%- if data_type == 'timestamptz' -%}
                    {%- do values.append(spancost_utc_instant(quoted) ~ ' as ' ~ column) -%}
                {%- else -%}
                    {%- do values.append('cast(' ~ quoted ~ ' as ' ~ data_type ~ ') as ' ~ column) -%}
                {%- endif -%}
            {%- endif -%}
        {%- endfor -%}
        {%- do selects.append('select ' ~ (values | join(', '))) -%}
    {%- endfor -%}
    {%- if selects | length == 0 -%}
        {%- set values = [] -%}
        {%- for column, data_type in columns.items() -%}
            {%- do values.append('cast(null as ' ~ data_type ~ ') as ' ~ column) -%}
        {%- endfor -%}
        select {{ values | join(', ') }} where false
    {%- else -%}
        {{ selects | join('\nunion all\n') }}
    {%- endif -%}
{%- endmacro %}
