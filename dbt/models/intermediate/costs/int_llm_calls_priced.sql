with

spans as (

    select * from {{ ref('stg_otel__spans') }}

),

prices as (

    select * from {{ ref('llm_prices') }}

),

llm_calls as (

    select
        span_key,
        trace_id,
        span_id,
        start_time,
        provider,
        coalesce(request_model, response_model) as model,
        request_model,
        response_model,
        pipeline_id,
        team,
        feature,
        environment,
        user_id_hash,
        region,
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cache_creation_tokens,
        reasoning_tokens,
        reported_cost_usd

    from spans
    where has_usage

),

price_periods as (

    -- Price days are UTC days; turn them into instants so the session time zone
    -- cannot shift them.
    select
        model,
        input_usd_per_mtok,
        output_usd_per_mtok,
        cache_read_usd_per_mtok,
        cache_write_usd_per_mtok,
        cast(effective_from as timestamp) at time zone 'UTC' as effective_from_at,
        cast(effective_to as timestamp) at time zone 'UTC' as effective_to_at

    from prices

),

priced as (

    select
        llm_calls.*,
        price_periods.input_usd_per_mtok,
        price_periods.output_usd_per_mtok,
        price_periods.cache_read_usd_per_mtok,
        price_periods.cache_write_usd_per_mtok,
        price_periods.model is not null as is_priced,
        -- input_tokens includes cached tokens (GenAI conventions); a missing
        -- count counts as 0.
        coalesce(llm_calls.input_tokens, 0)
        - coalesce(llm_calls.cache_read_tokens, 0)
        - coalesce(llm_calls.cache_creation_tokens, 0) as uncached_input_tokens

    from llm_calls
    left join price_periods
        on
            llm_calls.model = price_periods.model
            and llm_calls.start_time >= price_periods.effective_from_at
            and (
                price_periods.effective_to_at is null
                or llm_calls.start_time < price_periods.effective_to_at
            )

),

costed as (

    select
        *,
        -- Null when the model has no price: never 0. trim_scale drops the
        -- trailing zeros numeric division pads, without changing the value.
        trim_scale(
            (
                uncached_input_tokens * input_usd_per_mtok
                + coalesce(cache_read_tokens, 0) * cache_read_usd_per_mtok
                + coalesce(cache_creation_tokens, 0) * cache_write_usd_per_mtok
                + coalesce(output_tokens, 0) * output_usd_per_mtok
            ) / cast(1000000 as numeric)
        ) as estimated_cost_usd

    from priced

),

final as (

    select
        span_key,
        trace_id,
        span_id,
        start_time,
        provider,
        model,
        request_model,
        response_model,
        pipeline_id,
        team,
        feature,
        environment,
        user_id_hash,
        region,
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cache_creation_tokens,
        reasoning_tokens,
        uncached_input_tokens,
        input_usd_per_mtok,
        output_usd_per_mtok,
        cache_read_usd_per_mtok,
        cache_write_usd_per_mtok,
        is_priced,
        estimated_cost_usd,
        reported_cost_usd

    from costed

)

select * from final
