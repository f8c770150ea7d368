with

allocated as (

    select * from {{ ref('fct_allocated_costs_daily') }}

),

final as (

    -- FinOps FOCUS 1.2 rows: one per allocated row. Cost Explorer's cost metric
    -- (the billing_cost_metric var, UnblendedCost) is the only cost spancost pulls,
    -- so list, contracted and effective cost all carry it.
    select
        allocated.allocated_cost_usd as "BilledCost",
        '{{ var("focus_billing_account_id") }}' as "BillingAccountId",
        '{{ var("focus_billing_account_name") }}' as "BillingAccountName",
        'Billing Account' as "BillingAccountType",
        'USD' as "BillingCurrency",
        cast(date_trunc('month', allocated.day) as timestamp) at time zone 'UTC'
            as "BillingPeriodStart",
        cast(date_trunc('month', allocated.day) + interval '1 month' as timestamp) at time zone 'UTC'  -- noqa: LT05
            as "BillingPeriodEnd",
        case when allocated.allocated_cost_usd < 0 then 'Credit' else 'Usage' end
            as "ChargeCategory",
        cast(null as text) as "ChargeClass",
        'Usage-Based' as "ChargeFrequency",
        concat_ws(
            ' ',
            allocated.service,
            allocated.cost_key,
            case allocated.allocation_method
                when 'tag' then 'allocated by tag to ' || allocated.pipeline_id
                when 'estimate_share'
                    then 'allocated by estimate share to ' || allocated.pipeline_id
                else 'unattributed'
            end
        ) as "ChargeDescription",
        cast(allocated.day as timestamp) at time zone 'UTC' as "ChargePeriodStart",
        cast(allocated.day + 1 as timestamp) at time zone 'UTC' as "ChargePeriodEnd",
        allocated.allocated_cost_usd as "ContractedCost",
        allocated.allocated_cost_usd as "EffectiveCost",
        'Amazon Web Services, Inc.' as "InvoiceIssuerName",
        allocated.allocated_cost_usd as "ListCost",
        cast(null as numeric) as "PricingQuantity",
        cast(null as text) as "PricingUnit",
        'USD' as "PricingCurrency",
        'AWS' as "ProviderName",
        case
            when
                allocated.service like '%(Amazon Bedrock Edition)'
                and allocated.cost_key like 'claude%'
                then 'Anthropic'
            when allocated.service like '%(Amazon Bedrock Edition)' then 'AWS Marketplace'
            else 'Amazon Web Services'
        end as "PublisherName",
        case
            when
                allocated.service in ('Amazon Bedrock', 'Amazon SageMaker')
                or allocated.service like '%(Amazon Bedrock Edition)'
                then 'AI and Machine Learning'
            when allocated.service like 'Amazon Elastic Compute Cloud%' then 'Compute'
            else 'Other'
        end as "ServiceCategory",
        allocated.service as "ServiceName",
        case
            when
                allocated.service = 'Amazon Bedrock'
                or allocated.service like '%(Amazon Bedrock Edition)'
                then 'Generative AI'
            when allocated.service = 'Amazon SageMaker' then 'Machine Learning'
            when allocated.service like 'Amazon Elastic Compute Cloud%' then 'Virtual Machines'
            else 'Other (Other)'
        end as "ServiceSubcategory",

        ---------- spancost's dimensions
        allocated.day as x_day,
        allocated.cost_key as x_cost_key,
        allocated.model as x_model,
        allocated.pipeline_id as x_pipeline_id,
        allocated.team as x_team,
        allocated.feature as x_feature,
        allocated.environment as x_environment,
        allocated.allocation_method as x_allocation_method,
        allocated.is_final as x_is_final

    from allocated

)

select * from final
