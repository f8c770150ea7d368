with

llm_calls as (

    select * from {{ ref('int_llm_calls_counted') }}
    where is_counted

),

unpriced_calls as (

    select
        coalesce(model, 'unattributed') as model,
        coalesce(provider, 'unattributed') as provider,
        start_time

    from llm_calls
    where not is_priced

),

aggregated as (

    select
        model,
        provider,
        count(*) as calls,
        min(start_time) as first_seen,
        max(start_time) as last_seen

    from unpriced_calls
    group by
        model,
        provider

),

final as (

    select * from aggregated

)

select * from final
