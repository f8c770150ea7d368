with

source as (

    select * from {{ source('raw', 'ce_cost_and_usage') }}

),

unpublished_pulls as (

    -- Write-audit-publish: pulls Great Expectations has not passed yet (pending)
    -- or failed (quarantined) are not read; a period falls back to the newest
    -- published pull that covers it.
    select batch_id
    from {{ source('ops', 'unpublished_batches') }}
    where dataset = 'ce_cost_and_usage'

),

pulls as (

    select * from {{ source('raw', 'ce_pulls') }}
    where cast(pull_id as text) not in (
        select unpublished_pulls.batch_id from unpublished_pulls
    )

),

periods as (

    -- Every (query, granularity, period) any pull returned.
    select distinct
        query_name,
        granularity,
        period_start,
        period_end

    from source

),

covering_pulls as (

    -- Cost Explorer restates results for days after the fact, and every pull is
    -- kept. A period takes the newest complete pull of its query whose request
    -- covered the period, whether or not that pull returned rows for it: a group
    -- that vanished in a restatement vanishes here too (choosing per group would
    -- keep its stale amount).
    select
        periods.query_name,
        periods.granularity,
        periods.period_start,
        pulls.pull_id,
        row_number() over (
            partition by periods.query_name, periods.granularity, periods.period_start
            order by pulls.finished_at desc, pulls.pull_id desc
        ) as pull_rank

    from periods
    inner join pulls
        on
            periods.query_name = pulls.query_name
            and periods.granularity = pulls.granularity
            and periods.period_start
            >= cast(pulls.time_period_start as timestamp) at time zone 'UTC'
            and periods.period_end
            <= cast(pulls.time_period_end as timestamp) at time zone 'UTC'
    where pulls.status = 'complete'

),

newest_pulls as (

    select * from covering_pulls
    where pull_rank = 1

),

current_rows as (

    select source.*
    from source
    inner join newest_pulls
        on
            source.pull_id = newest_pulls.pull_id
            and source.query_name = newest_pulls.query_name
            and source.granularity = newest_pulls.granularity
            and source.period_start = newest_pulls.period_start

),

renamed as (

    select
        ----------  ids
        pull_id,
        query_name,

        ---------- period
        granularity,
        period_start,
        period_end,

        ---------- groups, as returned
        group_dim_1,
        group_key_1,
        group_dim_2,
        group_key_2,

        ---------- groups, by dimension
        case
            when group_dim_1 = 'SERVICE' then group_key_1
            when group_dim_2 = 'SERVICE' then group_key_2
        end as service,
        case
            when group_dim_1 = 'USAGE_TYPE' then group_key_1
            when group_dim_2 = 'USAGE_TYPE' then group_key_2
        end as usage_type,
        case
            when group_dim_1 = 'RESOURCE_ID' then group_key_1
            when group_dim_2 = 'RESOURCE_ID' then group_key_2
        end as resource_id,
        case
            when group_dim_1 = 'LINKED_ACCOUNT' then group_key_1
            when group_dim_2 = 'LINKED_ACCOUNT' then group_key_2
        end as linked_account,
        tag_key,
        -- `PipelineID$` (an untagged resource) arrives as ''.
        nullif(tag_value, '') as tag_value,

        ---------- measure
        metric,
        cast(amount as numeric) as amount,
        unit,
        estimated as is_estimated,

        ---------- timestamps
        loaded_at

    from current_rows

),

final as (

    select * from renamed

)

select * from final
