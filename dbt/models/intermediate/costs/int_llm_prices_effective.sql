with

base_prices as (

    select * from {{ ref('llm_prices') }}

),

seed_overrides as (

    select * from {{ ref('llm_price_overrides') }}

),

var_overrides as (

    {{ llm_price_overrides_from_var() }}

),

overrides as (

    select
        provider,
        model,
        input_usd_per_mtok,
        output_usd_per_mtok,
        cache_read_usd_per_mtok,
        cache_write_usd_per_mtok,
        reasoning_usd_per_mtok,
        batch_factor,
        flex_factor,
        priority_factor,
        long_context_threshold_tokens,
        long_context_input_usd_per_mtok,
        long_context_output_usd_per_mtok,
        long_context_cache_read_usd_per_mtok,
        long_context_cache_write_usd_per_mtok,
        effective_from,
        effective_to,
        source,
        'llm_price_overrides' as price_origin

    from seed_overrides

    union all

    select
        provider,
        model,
        input_usd_per_mtok,
        output_usd_per_mtok,
        cache_read_usd_per_mtok,
        cache_write_usd_per_mtok,
        reasoning_usd_per_mtok,
        batch_factor,
        flex_factor,
        priority_factor,
        long_context_threshold_tokens,
        long_context_input_usd_per_mtok,
        long_context_output_usd_per_mtok,
        long_context_cache_read_usd_per_mtok,
        long_context_cache_write_usd_per_mtok,
        effective_from,
        effective_to,
        source,
        'var:llm_price_overrides' as price_origin

    from var_overrides

),

overridden_times as (

    -- The instants at which each model has an override, as one multirange.
    select
        model,
        range_agg(tstzrange(effective_from, effective_to, '[)')) as overridden_range

    from overrides
    group by model

),

base_remainders as (

    -- A base row keeps only the time no override of its model covers: it is cut
    -- short, split in two around an override, or dropped when fully covered.
    select
        base_prices.provider,
        base_prices.model,
        base_prices.input_usd_per_mtok,
        base_prices.output_usd_per_mtok,
        base_prices.cache_read_usd_per_mtok,
        base_prices.cache_write_usd_per_mtok,
        base_prices.reasoning_usd_per_mtok,
        base_prices.batch_factor,
        base_prices.flex_factor,
        base_prices.priority_factor,
        base_prices.long_context_threshold_tokens,
        base_prices.long_context_input_usd_per_mtok,
        base_prices.long_context_output_usd_per_mtok,
        base_prices.long_context_cache_read_usd_per_mtok,
        base_prices.long_context_cache_write_usd_per_mtok,
        lower(remaining.remaining_range) as effective_from,
        upper(remaining.remaining_range) as effective_to,
        base_prices.source,
        'llm_prices' as price_origin

    from base_prices
    left join overridden_times
        on base_prices.model = overridden_times.model
    cross join lateral unnest(
        tstzmultirange(
            tstzrange(base_prices.effective_from, base_prices.effective_to, '[)')
        )
        - coalesce(overridden_times.overridden_range, '{}'::tstzmultirange)
    ) as remaining (remaining_range)

),

unioned as (

    select * from base_remainders
    union all
    select * from overrides

),

final as (

    select * from unioned

)

select * from final
