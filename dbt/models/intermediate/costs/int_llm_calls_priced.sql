{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['span_key', 'start_time'],
        on_schema_change='fail',
        indexes=[
            {'columns': ['span_key', 'start_time']},
            {'columns': ['trace_id']},
            {'columns': ['start_time']},
        ],
    )
}}

with

spans as (

    select * from {{ ref('stg_otel__spans') }}

),

prices as (

    select * from {{ ref('int_llm_prices_effective') }}

),

model_aliases as (

    select * from {{ ref('model_aliases') }}

),

token_semantics as (

    select * from {{ ref('emitter_token_semantics') }}

),

llm_spans as (

    select
        span_key,
        trace_id,
        span_id,
        parent_span_id,
        start_time,
        end_time,
        scope_name,
        span_name,
        operation,
        is_error,
        service_tier,
        duration_ms,
        agent_name,
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
        reported_cost_usd,
        has_usage,
        {{ spancost_ttft_ms('attributes', 'start_time') }} as reported_ttft_ms,
        -- The HTTP semantic conventions' resend ordinal: > 0 when this request was
        -- sent again (a client-side retry the GenAI layer may not show as a failure).
        case
            when attributes ->> 'http.request.resend_count' ~ '^\s*[0-9]{1,9}\s*$'
                then cast(attributes ->> 'http.request.resend_count' as integer)
        end as resend_count

    from spans
    -- A span with usage is a call. A failed call carries no usage and still counts
    -- as a call: an inference operation, or a span naming a requested model that
    -- is no agent, tool or other named operation.
    where
        (
            has_usage
            or (
                is_error
                and (
                    operation in ('chat', 'text_completion', 'generate_content', 'embeddings')
                    or (operation is null and request_model is not null)
                )
            )
        )
        -- The lookback window, or the vars' range on a backfill.
        and {{ incremental_window('start_time', time_key='start_time') }}

),

semantics_matches as (

    -- The emitter's row for the call: one naming the call's provider wins over
    -- one for every provider of the scope.
    select
        llm_spans.span_key,
        llm_spans.start_time,
        token_semantics.input_includes_cache,
        token_semantics.output_includes_reasoning,
        row_number() over (
            partition by llm_spans.span_key, llm_spans.start_time
            order by token_semantics.provider is null
        ) as semantics_rank

    from llm_spans
    inner join token_semantics
        on
            llm_spans.scope_name = token_semantics.scope_name
            and (
                token_semantics.provider is null
                or llm_spans.provider = token_semantics.provider
            )

),

llm_calls as (

    -- Token counts as the conventions mean them, whatever the emitter meant: input
    -- including cache reads and writes, output including reasoning. Scopes without
    -- a row follow the conventions.
    select
        llm_spans.span_key,
        llm_spans.trace_id,
        llm_spans.span_id,
        llm_spans.parent_span_id,
        llm_spans.start_time,
        llm_spans.end_time,
        llm_spans.scope_name,
        llm_spans.span_name,
        llm_spans.operation,
        llm_spans.is_error,
        llm_spans.service_tier,
        llm_spans.duration_ms,
        llm_spans.agent_name,
        llm_spans.has_usage,
        case when llm_spans.reported_ttft_ms >= 0 then llm_spans.reported_ttft_ms end as ttft_ms,
        llm_spans.resend_count,
        llm_spans.provider,
        llm_spans.model,
        llm_spans.request_model,
        llm_spans.response_model,
        llm_spans.pipeline_id,
        llm_spans.team,
        llm_spans.feature,
        llm_spans.environment,
        llm_spans.user_id_hash,
        llm_spans.region,
        case
            when coalesce(semantics_matches.input_includes_cache, true)
                then llm_spans.input_tokens
            else
                coalesce(llm_spans.input_tokens, 0)
                + coalesce(llm_spans.cache_read_tokens, 0)
                + coalesce(llm_spans.cache_creation_tokens, 0)
        end as input_tokens,
        case
            when coalesce(semantics_matches.output_includes_reasoning, true)
                then llm_spans.output_tokens
            else coalesce(llm_spans.output_tokens, 0) + coalesce(llm_spans.reasoning_tokens, 0)
        end as output_tokens,
        llm_spans.cache_read_tokens,
        llm_spans.cache_creation_tokens,
        llm_spans.reasoning_tokens,
        llm_spans.input_tokens as reported_input_tokens,
        llm_spans.output_tokens as reported_output_tokens,
        coalesce(semantics_matches.input_includes_cache, true) as input_includes_cache,
        coalesce(semantics_matches.output_includes_reasoning, true) as output_includes_reasoning,
        llm_spans.reported_cost_usd

    from llm_spans
    left join semantics_matches
        on
            llm_spans.span_key = semantics_matches.span_key
            and llm_spans.start_time = semantics_matches.start_time
            and semantics_matches.semantics_rank = 1

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
        reasoning_usd_per_mtok,
        batch_factor,
        flex_factor,
        priority_factor,
        long_context_threshold_tokens,
        long_context_input_usd_per_mtok,
        long_context_output_usd_per_mtok,
        long_context_cache_read_usd_per_mtok,
        long_context_cache_write_usd_per_mtok,
        price_origin,
        effective_from as effective_from_at,
        effective_to as effective_to_at

    from prices

),

priced_models as (

    select distinct
        model,
        {{ spancost_model_key('model') }} as model_key

    from prices

),

model_ids as (

    -- A call offers up to two ids to price by: the requested model first, then
    -- the model that answered.
    select
        span_key,
        start_time,
        1 as model_id_rank,
        request_model as model_id

    from llm_calls
    where request_model is not null

    union all

    select
        span_key,
        start_time,
        2 as model_id_rank,
        response_model as model_id

    from llm_calls
    where response_model is not null

),

model_id_keys as (

    select
        *,
        {{ spancost_model_key('model_id') }} as model_key,
        {{ spancost_model_family_key('model_id') }} as family_key

    from model_ids

),

candidate_models as (

    -- Every priced model an id could mean, with the rule that found it. Rules in
    -- order: the id itself; a model_aliases row; the normalised id (Bedrock
    -- prefixes and version suffix removed, version dots as hyphens); the
    -- normalised id without its snapshot date (the model family).
    select
        span_key,
        start_time,
        model_id_rank,
        1 as rule_rank,
        'exact' as match_rule,
        model_id as priced_model

    from model_id_keys

    union all

    select
        model_id_keys.span_key,
        model_id_keys.start_time,
        model_id_keys.model_id_rank,
        2 as rule_rank,
        'alias' as match_rule,
        model_aliases.model as priced_model

    from model_id_keys
    inner join model_aliases
        on model_id_keys.model_key = {{ spancost_model_key('model_aliases.alias') }}

    union all

    select
        model_id_keys.span_key,
        model_id_keys.start_time,
        model_id_keys.model_id_rank,
        3 as rule_rank,
        'normalised' as match_rule,
        priced_models.model as priced_model

    from model_id_keys
    inner join priced_models
        on model_id_keys.model_key = priced_models.model_key

    union all

    select
        model_id_keys.span_key,
        model_id_keys.start_time,
        model_id_keys.model_id_rank,
        4 as rule_rank,
        'snapshot_family' as match_rule,
        priced_models.model as priced_model

    from model_id_keys
    inner join priced_models
        on model_id_keys.family_key = priced_models.model_key

),

matched_prices as (

    -- A candidate counts only when its price row was in effect at the span's
    -- start; otherwise the next rule gets its turn.
    select
        candidate_models.span_key,
        candidate_models.start_time,
        candidate_models.priced_model,
        candidate_models.match_rule,
        price_periods.input_usd_per_mtok,
        price_periods.output_usd_per_mtok,
        price_periods.cache_read_usd_per_mtok,
        price_periods.cache_write_usd_per_mtok,
        price_periods.reasoning_usd_per_mtok,
        price_periods.batch_factor,
        price_periods.flex_factor,
        price_periods.priority_factor,
        price_periods.long_context_threshold_tokens,
        price_periods.long_context_input_usd_per_mtok,
        price_periods.long_context_output_usd_per_mtok,
        price_periods.long_context_cache_read_usd_per_mtok,
        price_periods.long_context_cache_write_usd_per_mtok,
        price_periods.price_origin,
        row_number() over (
            partition by candidate_models.span_key, candidate_models.start_time
            order by
                candidate_models.rule_rank,
                candidate_models.model_id_rank,
                candidate_models.priced_model
        ) as match_rank

    from candidate_models
    inner join price_periods
        on
            candidate_models.priced_model = price_periods.model
            and candidate_models.start_time >= price_periods.effective_from_at
            and (
                price_periods.effective_to_at is null
                or candidate_models.start_time < price_periods.effective_to_at
            )

),

best_matches as (

    select * from matched_prices
    where match_rank = 1

),

tiered as (

    select
        llm_calls.*,
        best_matches.priced_model,
        best_matches.match_rule,
        best_matches.price_origin,
        best_matches.priced_model is not null as is_priced,
        -- Above the model's threshold (input with cache) every token of the call is
        -- priced at the long-context rate of its kind, where the model has one.
        coalesce(
            llm_calls.input_tokens > best_matches.long_context_threshold_tokens, false
        ) as is_long_context,
        best_matches.input_usd_per_mtok as standard_input_usd_per_mtok,
        best_matches.output_usd_per_mtok as standard_output_usd_per_mtok,
        best_matches.cache_read_usd_per_mtok as standard_cache_read_usd_per_mtok,
        best_matches.cache_write_usd_per_mtok as standard_cache_write_usd_per_mtok,
        best_matches.long_context_input_usd_per_mtok,
        best_matches.long_context_output_usd_per_mtok,
        best_matches.long_context_cache_read_usd_per_mtok,
        best_matches.long_context_cache_write_usd_per_mtok,
        best_matches.reasoning_usd_per_mtok,
        -- The service tier's factor on the whole cost; 1 for the standard tier and
        -- where the model has no factor for the tier.
        case llm_calls.service_tier
            when 'batch' then coalesce(best_matches.batch_factor, 1)
            when 'flex' then coalesce(best_matches.flex_factor, 1)
            when 'priority' then coalesce(best_matches.priority_factor, 1)
            else 1
        end as service_tier_factor,
        -- input_tokens includes cached tokens (GenAI conventions); a missing
        -- count counts as 0.
        coalesce(llm_calls.input_tokens, 0)
        - coalesce(llm_calls.cache_read_tokens, 0)
        - coalesce(llm_calls.cache_creation_tokens, 0) as uncached_input_tokens

    from llm_calls
    left join best_matches
        on
            llm_calls.span_key = best_matches.span_key
            and llm_calls.start_time = best_matches.start_time

),

priced as (

    select
        *,
        case
            when is_long_context
                then coalesce(long_context_input_usd_per_mtok, standard_input_usd_per_mtok)
            else standard_input_usd_per_mtok
        end as input_usd_per_mtok,
        case
            when is_long_context
                then coalesce(long_context_output_usd_per_mtok, standard_output_usd_per_mtok)
            else standard_output_usd_per_mtok
        end as output_usd_per_mtok,
        case
            when is_long_context
                then coalesce(long_context_cache_read_usd_per_mtok, standard_cache_read_usd_per_mtok)  -- noqa: LT05
            else standard_cache_read_usd_per_mtok
        end as cache_read_usd_per_mtok,
        case
            when is_long_context
                then coalesce(long_context_cache_write_usd_per_mtok, standard_cache_write_usd_per_mtok)  -- noqa: LT05
            else standard_cache_write_usd_per_mtok
        end as cache_write_usd_per_mtok

    from tiered

),

costed as (

    select
        *,
        -- Null when the model has no price: never 0. Output tokens include
        -- reasoning tokens: all are priced as output, and reasoning tokens get
        -- the difference to their own price where the model has one. The service
        -- tier's factor applies to the whole. A failed call without usage costs 0.
        -- trim_scale drops the trailing zeros numeric division pads, without
        -- changing the value.
        trim_scale(
            (
                uncached_input_tokens * input_usd_per_mtok
                + coalesce(cache_read_tokens, 0) * cache_read_usd_per_mtok
                + coalesce(cache_creation_tokens, 0) * cache_write_usd_per_mtok
                + coalesce(output_tokens, 0) * output_usd_per_mtok
                + coalesce(reasoning_tokens, 0)
                * (coalesce(reasoning_usd_per_mtok, output_usd_per_mtok) - output_usd_per_mtok)
            )
            * service_tier_factor
            / cast(1000000 as numeric)
        ) as estimated_cost_usd,
        -- The same cost split: what the prompt cost (uncached input, cache reads and
        -- writes) and what the answer cost (output, reasoning at its own price).
        -- input_cost_usd + output_cost_usd = estimated_cost_usd, exactly.
        trim_scale(
            (
                uncached_input_tokens * input_usd_per_mtok
                + coalesce(cache_read_tokens, 0) * cache_read_usd_per_mtok
                + coalesce(cache_creation_tokens, 0) * cache_write_usd_per_mtok
            )
            * service_tier_factor
            / cast(1000000 as numeric)
        ) as input_cost_usd,
        trim_scale(
            (
                coalesce(output_tokens, 0) * output_usd_per_mtok
                + coalesce(reasoning_tokens, 0)
                * (coalesce(reasoning_usd_per_mtok, output_usd_per_mtok) - output_usd_per_mtok)
            )
            * service_tier_factor
            / cast(1000000 as numeric)
        ) as output_cost_usd

    from priced

),

final as (

    select
        span_key,
        trace_id,
        span_id,
        parent_span_id,
        start_time,
        end_time,
        scope_name,
        span_name,
        operation,
        is_error,
        has_usage,
        service_tier,
        duration_ms,
        ttft_ms,
        resend_count,
        agent_name,
        provider,
        model,
        request_model,
        response_model,
        priced_model,
        match_rule,
        price_origin,
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
        reported_input_tokens,
        reported_output_tokens,
        input_includes_cache,
        output_includes_reasoning,
        uncached_input_tokens,
        input_usd_per_mtok,
        output_usd_per_mtok,
        cache_read_usd_per_mtok,
        cache_write_usd_per_mtok,
        reasoning_usd_per_mtok,
        is_long_context,
        service_tier_factor,
        is_priced,
        estimated_cost_usd,
        input_cost_usd,
        output_cost_usd,
        reported_cost_usd

    from costed

)

select * from final
-- Rows in time order, so the start_time index reads the window's pages only.
order by start_time
