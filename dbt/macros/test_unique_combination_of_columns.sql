{#-
    Generic test: the combination of `combination_of_columns` is unique in the
    model (a composite primary key). Nulls count as values, so two rows that
    differ only by a null still collide, as they would for a grain.
    Fails with one row per duplicated key, carrying the count.
-#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

    {%- set key_columns = combination_of_columns | join(', ') %}

    with

    grouped as (

        select
            {{ key_columns }},
            count(*) as n_rows

        from {{ model }}
        group by {{ key_columns }}

    ),

    final as (

        select * from grouped
        where n_rows > 1

    )

    select * from final

{% endtest %}
