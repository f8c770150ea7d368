with

unpublished_pulls as (

    -- Write-audit-publish: pulls Great Expectations has not passed yet (pending)
    -- or failed (quarantined) are not read; a period falls back to the newest
    -- published pull that covers it.
    select batch_id
    from {{ source('ops', 'unpublished_batches') }}
    where dataset = 'ce_cost_and_usage'

),

source as (

    select * from {{ source('raw', 'ce_pulls') }}
    where cast(pull_id as text) not in (
        select unpublished_pulls.batch_id from unpublished_pulls
    )

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
