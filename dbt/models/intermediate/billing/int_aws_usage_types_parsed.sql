with

cost_and_usage as (

    select * from {{ ref('stg_aws__cost_and_usage') }}

),

billing_regions as (

    select * from {{ ref('aws_billing_regions') }}

),

billing_models as (

    select * from {{ ref('aws_bedrock_billing_models') }}

),

prices as (

    select * from {{ ref('int_llm_prices_effective') }}

),

priced_models as (

    select distinct
        model,
        {{ spancost_model_key('model') }} as model_key

    from prices

),

usage_types as (

    -- Marketplace usage types (Bedrock's third-party models) are shared by every
    -- model; only the service names the model. Hence the grain.
    select distinct
        service,
        usage_type

    from cost_and_usage
    where usage_type is not null

),

unprefixed_region as (

    select region_code from billing_regions
    where is_unprefixed_default

),

located as (

    -- `USE1-BoxUsage:p4d.24xlarge` is in us-east-1; `BoxUsage:g5.xlarge` has no
    -- prefix and is in the default region (us-east-1). `DataTransfer-Out-Bytes`
    -- has no prefix either: its first part is not a billing code.
    select
        usage_types.service,
        usage_types.usage_type,
        billing_regions.billing_prefix,
        coalesce(
            billing_regions.region_code, unprefixed_region.region_code
        ) as region_code,
        case
            when billing_regions.billing_prefix is null then usage_types.usage_type
            else substr(usage_types.usage_type, length(billing_regions.billing_prefix) + 2)
        end as usage_detail

    from usage_types
    left join billing_regions
        on
            strpos(usage_types.usage_type, '-') > 0
            and split_part(usage_types.usage_type, '-', 1) = billing_regions.billing_prefix
    left join unprefixed_region
        on true

),

split as (

    -- `Hosting:ml.g5.xlarge` -> family `Hosting`, operand `ml.g5.xlarge`.
    select
        *,
        split_part(usage_detail, ':', 1) as usage_family,
        case
            when strpos(usage_detail, ':') > 0
                then substr(usage_detail, strpos(usage_detail, ':') + 1)
        end as usage_operand

    from located

),

categorised as (

    select
        *,
        case
            when usage_detail ~* '(tokencount|-tokens?($|-))' then 'bedrock_tokens'
            when usage_operand ~ '^ml\.' then 'sagemaker_instance'
            when
                usage_family in (
                    'BoxUsage', 'SpotUsage', 'DedicatedUsage', 'HostBoxUsage',
                    'UnusedBox', 'UnusedDed'
                )
                and usage_operand is not null
                then 'ec2_instance'
            else 'other'
        end as usage_category

    from split

),

parsed as (

    select
        service,
        usage_type,
        billing_prefix,
        region_code,
        usage_detail,
        usage_category,
        usage_family,

        ---------- Bedrock
        case
            when usage_category = 'bedrock_tokens'
                then coalesce(
                    -- First-party models name themselves: `NovaPro-output-tokens-batch`.
                    nullif(
                        regexp_replace(
                            usage_detail,
                            '-(cache-?(read|write)-)?(input|output)-tokens?(-.*)?$',
                            '',
                            'i'
                        ),
                        usage_detail
                    ),
                    -- Marketplace models (`MP:USE1_InputTokenCount-Units`) are named
                    -- by the service: `Claude Sonnet 4.5 (Amazon Bedrock Edition)`.
                    nullif(
                        regexp_replace(service, '\s*\(Amazon Bedrock Edition\)\s*$', '', 'i'),
                        service
                    )
                )
        end as bedrock_model,
        case
            when usage_category <> 'bedrock_tokens' then null
            when usage_detail ~* 'cache-?read' then 'cache_read'
            when usage_detail ~* 'cache-?write' then 'cache_write'
            when usage_detail ~* 'input' then 'input'
            when usage_detail ~* 'output' then 'output'
        end as token_kind,
        case
            when usage_category <> 'bedrock_tokens' then null
            when usage_detail ~* '(^|[-_:])batch($|[-_])' then 'batch'
            when usage_detail ~* '(^|[-_:])flex($|[-_])' then 'flex'
            when usage_detail ~* '(^|[-_:])priority($|[-_])' then 'priority'
            when usage_detail ~* 'latency-?optimi[sz]ed' then 'latency_optimized'
            else 'standard'
        end as inference_tier,
        case
            when usage_category <> 'bedrock_tokens' then null
            when usage_detail ~* '[-_]global($|[-_])' then 'global'
            when usage_detail ~* 'cross-?region' then 'cross_region'
            else 'in_region'
        end as inference_scope,

        ---------- instances
        case
            when usage_category = 'sagemaker_instance'
                then substring(usage_operand from '^(ml\.[a-z0-9-]+\.[a-z0-9]+)')
            when usage_category = 'ec2_instance'
                then substring(usage_operand from '^([a-z0-9-]+\.[a-z0-9]+)')
        end as instance_type,
        case
            when usage_category <> 'sagemaker_instance' then null
            when usage_family in ('Host', 'Hosting') then 'hosting'
            when usage_family = 'AsyncInf' then 'async_inference'
            when usage_family like 'Train%' then 'training'
            when usage_family = 'Processing' then 'processing'
            when usage_family like 'Notebk%' or usage_family like 'Studio%' then 'notebook'
            when usage_family like 'Tsform%' then 'batch_transform'
            else 'other'
        end as sagemaker_component,
        case
            when usage_category <> 'ec2_instance' then null
            when usage_family = 'BoxUsage' then 'on_demand'
            when usage_family = 'SpotUsage' then 'spot'
            when usage_family in ('DedicatedUsage', 'HostBoxUsage') then 'dedicated'
            else 'unused_reservation'
        end as ec2_purchase_option

    from categorised

),

named as (

    -- A billing name in camel case or with spaces, as a model id: `NovaPro` ->
    -- `nova-pro`, `Claude Sonnet 4.5` -> `claude-sonnet-4.5`.
    select
        *,
        lower(
            regexp_replace(
                regexp_replace(trim(bedrock_model), '\s+', '-', 'g'),
                '([a-z])([A-Z0-9])', '\1-\2', 'g'
            )
        ) as normalised_model

    from parsed

),

final as (

    -- The priced model id, as in the price seeds: the `aws_bedrock_billing_models`
    -- row, else the priced model with the same normalised key, else the
    -- normalised billing name (an unpriced model keeps a stable key).
    select
        named.service,
        named.usage_type,
        named.billing_prefix,
        named.region_code,
        named.usage_detail,
        named.usage_category,
        named.usage_family,
        named.bedrock_model,
        case
            when named.bedrock_model is not null
                then coalesce(billing_models.model, priced_models.model, named.normalised_model)
        end as model,
        named.token_kind,
        named.inference_tier,
        named.inference_scope,
        named.instance_type,
        named.sagemaker_component,
        named.ec2_purchase_option

    from named
    left join billing_models
        on named.bedrock_model = billing_models.billing_model
    left join priced_models
        on {{ spancost_model_key('named.normalised_model') }} = priced_models.model_key

)

select * from final
