with

source as (

    select * from {{ source('raw', 'sagemaker_invocations_hourly') }}

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
