-- Span model ids are matched to priced models by a normalised key as well as by
-- name (see the spancost_model_key macro), so two differently spelt models with
-- one key (`claude-sonnet-4.5` and `claude-sonnet-4-5`) whose effective ranges
-- overlap would make the match ambiguous. Returns such pairs from the effective
-- price table (base prices with overrides applied); passes when there are none.

with

prices as (

    select * from {{ ref('int_llm_prices_effective') }}

),

keyed as (

    select
        model,
        {{ spancost_model_key('model') }} as model_key,
        tstzrange(effective_from, effective_to, '[)') as effective_range

    from prices

),

final as (

    select
        earlier.model_key,
        earlier.model as earlier_model,
        later.model as later_model

    from keyed as earlier
    inner join keyed as later
        on
            earlier.model_key = later.model_key
            and earlier.model < later.model
            and earlier.effective_range && later.effective_range

)

select * from final
