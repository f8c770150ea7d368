with

source as (

    select * from {{ source('raw', 's3_objects') }}

),

renamed as (

    select
        ----------  ids
        's3://' || bucket || '/' || key as object_id,
        bucket,
        key as object_key,
        etag,

        ---------- properties
        size_bytes,
        status as load_status,
        status = 'loaded' as is_loaded,
        reason as quarantine_reason,
        span_count,
        rejected_count,

        ---------- timestamps
        last_modified,
        partition_time,
        loaded_at

    from source

),

final as (

    select * from renamed

)

select * from final
