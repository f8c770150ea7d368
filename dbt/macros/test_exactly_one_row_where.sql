{#-
    Generic test: exactly one row of the model satisfies `condition` (a SQL
    boolean expression). Fails with one row carrying the count otherwise.
-#}
{% test exactly_one_row_where(model, condition) %}

    with

    matching as (

        select count(*) as n_rows
        from {{ model }}
        where {{ condition }}

    ),

    final as (

        select * from matching
        where n_rows <> 1

    )

    select * from final

{% endtest %}
