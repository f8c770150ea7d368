{#-
    Splitting an amount over weighted rows so that the parts add up to the amount
    exactly, in two steps (a window function cannot nest in another):

    1. `spancost_share_columns(amount, weight, partition_by, order_by)`, in one
       select: `rounded_share`, each row's share rounded to 10 decimals, and
       `share_rank`, 1 for the row with the largest weight (ties by `order_by`).
    2. `spancost_exact_share(amount, partition_by)`, in the next: the rounded
       share, plus on the rank-1 row whatever rounding left over.

    The shares of one partition then sum to `amount` to the last digit, so
    allocated plus unattributed equals the bill to the cent and beyond.
-#}
{% macro spancost_share_columns(amount, weight, partition_by, order_by) -%}
    round(
        {{ amount }} * {{ weight }}
        / nullif(sum({{ weight }}) over (partition by {{ partition_by }}), 0),
        10
    ) as rounded_share,
    row_number() over (
        partition by {{ partition_by }}
        order by {{ weight }} desc, {{ order_by }}
    ) as share_rank
{%- endmacro %}

{% macro spancost_exact_share(amount, partition_by) -%}
    rounded_share
    + case
        when share_rank = 1
            then {{ amount }} - sum(rounded_share) over (partition by {{ partition_by }})
        else 0
    end
{%- endmacro %}
