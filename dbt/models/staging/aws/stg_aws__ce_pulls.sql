with

source as (

    select * from {{ source('raw', 'ce_pulls') }}

),

renamed as (

    select
        ----------  ids
        pull_id,
        query_name,

        ---------- request
        operation,
        granularity,
        metrics,
        group_by,
        filter,
        -- The request's TimePeriod (whole UTC days, end exclusive) as instants, so
        -- the session time zone cannot shift them.
        cast(time_period_start as timestamp) at time zone 'UTC' as time_period_start,
        cast(time_period_end as timestamp) at time zone 'UTC' as time_period_end,

        ---------- outcome
        status as pull_status,
        status = 'complete' as is_complete,
        pages,
        restarts,
        row_count,
        dropped_groups,
        error as pull_error,

        ---------- timestamps
        started_at,
        finished_at

    from source

),

final as (

    select * from renamed

)

select * from final
