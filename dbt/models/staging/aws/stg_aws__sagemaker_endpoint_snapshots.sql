with

unpublished_snapshots as (

    -- Write-audit-publish: a snapshot Great Expectations has not passed yet (pending)
    -- or failed (quarantined) is not read. Snapshots taken with validation off have
    -- no batch and are read as they land.
    select batch_id
    from {{ source('ops', 'unpublished_batches') }}
    where dataset = 'sagemaker_endpoint_snapshots'

),

source as (

    select * from {{ source('raw', 'sagemaker_endpoint_snapshots') }}
    where
        batch_id is null
        or batch_id not in (select unpublished_snapshots.batch_id from unpublished_snapshots)

),

renamed as (

    select
        ---------- ids
        region,
        endpoint_name,
        variant_name,
        endpoint_arn,

        ---------- what runs
        endpoint_status,
        instance_type,
        coalesce(current_instance_count, initial_instance_count, 0) as instance_count,
        serverless as is_serverless,
        -- The cost-allocation tag (the CE pipeline tag's key) names the pipeline.
        nullif(tags ->> '{{ var("pipeline_tag_key") }}', '') as pipeline_tag,
        tags,

        ---------- timestamps
        snapshot_at,
        creation_time

    from source

),

final as (

    select * from renamed

)

select * from final
