-- Calls are priced by model name, so two price rows of one model name (under any
-- provider) whose effective ranges overlap would price a call twice. Returns the
-- overlapping pairs, and rows whose range ends before it starts; the test passes
-- when there are none.

with

prices as (

    select * from {{ ref('llm_prices') }}

),

ranges as (

    select
        model,
        provider,
        effective_from,
        effective_to,
        case
            when effective_to is null or effective_to > effective_from
                then tstzrange(effective_from, effective_to, '[)')
        end as effective_range

    from prices

),

overlapping_ranges as (

    select
        earlier.model,
        earlier.provider as earlier_provider,
        later.provider as later_provider,
        earlier.effective_from as earlier_effective_from,
        later.effective_from as later_effective_from

    from ranges as earlier
    inner join ranges as later
        on
            earlier.model = later.model
            and earlier.effective_from <= later.effective_from
            and (earlier.provider, earlier.effective_from)
            <> (later.provider, later.effective_from)
            and earlier.effective_range && later.effective_range

),

inverted_ranges as (

    select
        model,
        provider as earlier_provider,
        provider as later_provider,
        effective_from as earlier_effective_from,
        effective_from as later_effective_from

    from ranges
    where effective_to <= effective_from

),

final as (

    select * from overlapping_ranges
    union all
    select * from inverted_ranges

)

select * from final
