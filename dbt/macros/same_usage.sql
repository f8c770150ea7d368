{#-
    How two spans of one API call compare their usage (int_llm_calls_counted).

    spancost_input_matches(a, b): a's input is b's, or b's plus a's cache counts
    (b's emitter counted input without the cache, which a reports).
    spancost_same_usage_rule(a, b): the dedupe rule that matched: `same_usage` when
    the inputs are equal, else `same_usage_but_cache`.
-#}
{% macro spancost_input_matches(a, b) -%}
    (
        coalesce({{ a }}.input_tokens, -1) = coalesce({{ b }}.input_tokens, -1)
        or {{ a }}.input_tokens = {{ b }}.input_tokens
        + coalesce({{ a }}.cache_read_tokens, 0)
        + coalesce({{ a }}.cache_creation_tokens, 0)
    )
{%- endmacro %}


{% macro spancost_same_usage_rule(a, b) -%}
    case
        when coalesce({{ a }}.input_tokens, -1) = coalesce({{ b }}.input_tokens, -1)
            then 'same_usage'
        else 'same_usage_but_cache'
    end
{%- endmacro %}
