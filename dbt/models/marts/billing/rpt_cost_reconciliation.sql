with

billed as (

    select * from {{ ref('fct_billed_costs_daily') }}
    where model is not null

),

llm_estimates as (

    select * from {{ ref('int_llm_estimates_daily') }}

),

billed_models as (

    select
        day,
        service,
        model,
        sum(billed_cost_usd) as billed_cost_usd,
        bool_and(is_final) as is_final

    from billed
    group by
        day,
        service,
        model

),

model_services as (

    -- The service a model is billed under (first-party `Amazon Bedrock`, or its
    -- Marketplace service), from the newest day it was billed.
    select distinct on (model)
        model,
        service

    from billed_models
    order by
        model asc,
        day desc,
        billed_cost_usd desc,
        service asc

),

estimated as (

    -- A Bedrock model's estimate counts only the calls AWS bills (provider
    -- aws.bedrock); the same model called directly is its provider's row.
    select
        day,
        coalesce(provider, 'unattributed') as provider,
        priced_model as model,
        sum(estimated_cost_usd) as estimated_cost_usd

    from llm_estimates
    group by
        day,
        coalesce(provider, 'unattributed'),
        priced_model

),

estimated_services as (

    select
        estimated.day,
        estimated.provider,
        estimated.model,
        estimated.estimated_cost_usd,
        case
            when estimated.provider = 'aws.bedrock'
                then coalesce(model_services.service, 'Amazon Bedrock')
            else estimated.provider
        end as service

    from estimated
    left join model_services
        on
            estimated.provider = 'aws.bedrock'
            and estimated.model = model_services.model

),

bedrock_estimates as (

    select * from estimated_services
    where provider = 'aws.bedrock'

),

bedrock_rows as (

    select
        coalesce(billed_models.day, bedrock_estimates.day) as day,  -- noqa: RF04
        coalesce(billed_models.service, bedrock_estimates.service) as service,
        'aws.bedrock' as provider,
        coalesce(billed_models.model, bedrock_estimates.model) as model,
        coalesce(bedrock_estimates.estimated_cost_usd, 0) as estimated_cost_usd,
        coalesce(billed_models.billed_cost_usd, 0) as billed_cost_usd,
        coalesce(billed_models.is_final, false) as is_final

    from billed_models
    full outer join bedrock_estimates
        on
            billed_models.day = bedrock_estimates.day
            and billed_models.service = bedrock_estimates.service
            and billed_models.model = bedrock_estimates.model

),

unbilled_rows as (

    -- Providers AWS does not bill: no bill to hold the estimate against.
    select
        day,
        service,
        provider,
        model,
        estimated_cost_usd,
        cast(null as numeric) as billed_cost_usd,
        cast(null as boolean) as is_final

    from estimated_services
    where provider <> 'aws.bedrock'

),

reconciled as (

    select * from bedrock_rows
    union all
    select * from unbilled_rows

),

final as (

    select
        day,
        service,
        provider,
        model,
        estimated_cost_usd,
        billed_cost_usd,
        billed_cost_usd - estimated_cost_usd as drift_usd,
        case
            when estimated_cost_usd <> 0
                then round((billed_cost_usd - estimated_cost_usd) / estimated_cost_usd * 100, 4)
        end as drift_pct,
        is_final

    from reconciled

)

select * from final
