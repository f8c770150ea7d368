{#-
    Model-id normalisation, shared by the pricing join and its tests. Each macro
    returns a SQL expression over `model_id` (a column or expression).

    spancost_model_key: the id with what does not change the price removed.
      1. lower case, trimmed;
      2. a `models/` prefix (Gemini REST names) removed;
      3. a Bedrock inference-profile prefix removed: `us.`, `eu.`, `apac.`,
         `global.`, `us-gov.`, `jp.`, `au.`, `ca.`;
      4. a Bedrock provider prefix removed: `anthropic.`, `amazon.`, `meta.`,
         `mistral.`, `cohere.`, `ai21.`, `deepseek.`, `openai.`, `qwen.`, `writer.`;
      5. a Bedrock version suffix removed: `-v1:0`, `-v2:0`, `:0`, and a context
         variant after it (`-v1:0:200k`);
      6. a dot between two digits written as a hyphen, so `claude-sonnet-4.5`
         and `claude-sonnet-4-5` (or `gpt-4.1` and `gpt-4-1`) get one key.

    spancost_model_family_key: the model key without a snapshot suffix, so a
    dated snapshot maps to its family: `-2024-08-06` (OpenAI), `-20250929`
    (Anthropic), `@20241022` with an optional `-v2` before it (Vertex AI),
    `-0613` (OpenAI MMDD), `-001` (Gemini stable versions) and `-latest`.
-#}
{% macro spancost_model_key(model_id) -%}
    regexp_replace(
        regexp_replace(
            regexp_replace(
                regexp_replace(
                    regexp_replace(
                        lower(trim({{ model_id }})),
                        '^models/', ''
                    ),
                    '^(us-gov|us|eu|apac|global|jp|au|ca)\.', ''
                ),
                '^(anthropic|amazon|meta|mistral|cohere|ai21|deepseek|openai|qwen|writer)\.', ''
            ),
            '(-v[0-9]+)?:[0-9]+(:[0-9]+k)?$', ''
        ),
        '([0-9])\.([0-9])', '\1-\2', 'g'
    )
{%- endmacro %}


{% macro spancost_model_family_key(model_id) -%}
    regexp_replace(
        {{ spancost_model_key(model_id) }},
        '(-20[0-9]{2}-[0-9]{2}-[0-9]{2}|-20[0-9]{6}|(-v[0-9]+)?@20[0-9]{6}|-(0[1-9]|1[0-2])[0-9]{2}|-0[0-9]{2}|-latest)$',
        ''
    )
{%- endmacro %}
