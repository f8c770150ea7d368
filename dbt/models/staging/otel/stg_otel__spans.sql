with

source as (

    select * from {{ source('raw', 'otel_spans') }}

),

unpublished_objects as (

    -- Write-audit-publish: exports whose batch Great Expectations has not passed yet
    -- (pending) or failed (quarantined). Few rows, so a hashed anti-join.
    select
        bucket,
        key
    from {{ source('ops', 'unpublished_s3_objects') }}

),

published as (

    select * from source
    where (source_bucket, source_key) not in (
        select
            unpublished_objects.bucket,
            unpublished_objects.key
        from unpublished_objects
    )

),

renamed as (

    select
        ----------  ids
        trace_id || ':' || span_id as span_key,
        trace_id,
        span_id,
        parent_span_id,
        's3://' || source_bucket || '/' || source_key as source_object_id,
        source_bucket,
        source_key,

        ---------- span
        name as span_name,
        kind as span_kind,
        status_code,
        status_message,
        -- OTLP status ERROR (2), or the conventions' error.type without a status.
        (status_code = 2 or attributes ? 'error.type') as is_error,
        service_name,
        scope_name,
        scope_version,

        ---------- gen_ai
        provider,
        operation,
        request_model,
        response_model,
        agent_name,
        agent_id,
        conversation_id,
        -- An agent span: an `invoke_agent`/`create_agent` operation, or a span named
        -- `invoke_agent ...` where the emitter sets no operation. A chat span that
        -- merely carries gen_ai.agent.name is not an agent.
        coalesce(
            operation in ('invoke_agent', 'create_agent')
            or (operation is null and name like 'invoke\_agent %'),
            false
        ) as is_agent_span,
        -- The response's tier (what was served) before the request's.
        lower(coalesce(
            attributes ->> 'openai.response.service_tier',
            attributes ->> 'gen_ai.openai.response.service_tier',
            attributes ->> 'gen_ai.response.service_tier',
            attributes ->> 'openai.request.service_tier',
            attributes ->> 'gen_ai.openai.request.service_tier',
            attributes ->> 'gen_ai.request.service_tier',
            attributes ->> 'aws.bedrock.service_tier'
        )) as reported_service_tier,

        ---------- usage
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cache_creation_tokens,
        reasoning_tokens,
        cast(reported_cost_usd as numeric) as reported_cost_usd,
        coalesce(
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_creation_tokens,
            reasoning_tokens
        ) is not null as has_usage,

        ---------- attribution
        pipeline_id,
        team,
        feature,
        environment,
        user_id_hash,
        region,

        ---------- resources
        sagemaker_endpoint,
        bedrock_model_id,
        host_type,

        ---------- everything else
        attributes,
        resource_attributes,

        ---------- timestamps
        start_time,
        end_time,
        extract(epoch from end_time - start_time) * 1000 as duration_ms,
        loaded_at

    from published

),

ranked as (

    -- The same span can land from two export objects (collector retries).
    -- Keep the copy loaded last. start_time is part of the span's identity and
    -- of the partition key, which lets a time filter from downstream models
    -- reach the raw table's day partitions through this view.
    select
        *,
        row_number() over (
            partition by trace_id, span_id, start_time
            order by loaded_at desc, source_object_id desc
        ) as copy_rank

    from renamed

),

deduplicated as (

    select * from ranked
    where copy_rank = 1

),

final as (

    select
        span_key,
        trace_id,
        span_id,
        parent_span_id,
        source_object_id,
        source_bucket,
        source_key,
        span_name,
        span_kind,
        status_code,
        status_message,
        is_error,
        service_name,
        scope_name,
        scope_version,
        provider,
        operation,
        request_model,
        response_model,
        agent_name,
        agent_id,
        conversation_id,
        is_agent_span,
        case
            when reported_service_tier in ('batch', 'flex', 'priority') then reported_service_tier
            else 'standard'
        end as service_tier,
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cache_creation_tokens,
        reasoning_tokens,
        reported_cost_usd,
        has_usage,
        pipeline_id,
        team,
        feature,
        environment,
        user_id_hash,
        region,
        sagemaker_endpoint,
        bedrock_model_id,
        host_type,
        attributes,
        resource_attributes,
        start_time,
        end_time,
        duration_ms,
        loaded_at

    from deduplicated

)

select * from final
