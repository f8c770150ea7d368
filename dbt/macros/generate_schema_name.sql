{#-
    Models and seeds land in the schema named by their `+schema` config, as is:
    staging, intermediate, marts, seeds. dbt's default would prefix the target
    schema (public_marts); the BI role and the DAGs expect the bare names.
    Nodes without a `+schema` fall back to the target schema.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema | trim }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
