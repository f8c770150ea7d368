with

unpublished_pulls as (

    -- Write-audit-publish: hours held by a CloudWatch pull Great Expectations has
    -- not passed yet (pending) or failed (quarantined) are not read.
    select batch_id
    from {{ source('ops', 'unpublished_batches') }}
    where dataset = 'sagemaker_invocations_hourly'

),

source as (

    select * from {{ source('raw', 'sagemaker_invocations_hourly') }}
    where cast(pull_id as text) not in (
        select unpublished_pulls.batch_id from unpublished_pulls
    )

),

final as (

    select
        region,
        endpoint_name,
        variant_name,
        hour,
        invocations,
        loaded_at

    from source

)

select * from final
