{#-
    Generic test: the effective ranges [effective_from, effective_to) of rows
    that share `key_columns` do not overlap, and no range ends before it starts.
    An empty effective_to is open-ended. Fails with one row per offending pair
    (or per inverted row).
-#}
{% test effective_ranges_do_not_overlap(
    model, key_columns, from_column='effective_from', to_column='effective_to'
) %}

    {%- set join_keys = [] -%}
    {%- for column in key_columns -%}
        {%- do join_keys.append('earlier.' ~ column ~ ' = later.' ~ column) -%}
    {%- endfor %}

    with

    rows_with_ids as (

        select
            *,
            row_number() over (order by {{ from_column }}) as row_id

        from {{ model }}

    ),

    ranges as (

        select
            *,
            case
                when {{ to_column }} is null or {{ to_column }} > {{ from_column }}
                    then tstzrange({{ from_column }}, {{ to_column }}, '[)')
            end as effective_range

        from rows_with_ids

    ),

    overlapping_ranges as (

        select
            {% for column in key_columns -%}
            earlier.{{ column }},
            {% endfor -%}
            earlier.{{ from_column }} as earlier_effective_from,
            later.{{ from_column }} as later_effective_from

        from ranges as earlier
        inner join ranges as later
            on
                {{ join_keys | join(' and ') }}
                and earlier.row_id < later.row_id
                and earlier.effective_range && later.effective_range

    ),

    inverted_ranges as (

        select
            {% for column in key_columns -%}
            {{ column }},
            {% endfor -%}
            {{ from_column }} as earlier_effective_from,
            {{ from_column }} as later_effective_from

        from ranges
        where {{ to_column }} <= {{ from_column }}

    ),

    final as (

        select * from overlapping_ranges
        union all
        select * from inverted_ranges

    )

    select * from final

{% endtest %}
