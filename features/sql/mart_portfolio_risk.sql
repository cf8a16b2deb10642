-- Portfolio credit risk as of $as_of, one long table: one row per (dimension, dimension_value)
-- for dimension in portfolio (the total, value 'all'), sector, region, rfm_segment,
-- delinquency_class and bureau_rating; customers with no value fall in '(unknown)'.
-- Concentration inside each group: top10_exposure_share (the ten largest exposures over the
-- group's exposure) and herfindahl_index (sum of squared exposure shares; 1 = one customer).
-- dso_days (countback) is given for the portfolio row.
-- finance_unknown_reason (marts.finance_status): why exposure, overdue, expected loss, DSO and
-- their shares are NULL (no payment known by $as_of); NULL when they are known.
with risk as (
    select * from marts.customer_risk
),

status as (
    select finance_unknown_reason from marts.finance_status
),

accounts as (
    select customer_id, sector, region from staging.accounts
),

rfm as (
    select customer_id, rfm_segment from models.rfm_scores
),

customer_dimensions as (
    select
        r.customer_id,
        r.open_exposure,
        r.overdue,
        r.overdue_over_60,
        r.expected_loss,
        r.delinquency_probability,
        r.over_credit_limit,
        r.clv_12m,
        r.risk_adjusted_clv,
        'all' as portfolio,
        coalesce(a.sector, '(unknown)') as sector,
        coalesce(a.region, '(unknown)') as region,
        coalesce(f.rfm_segment, 'No purchase yet') as rfm_segment,
        coalesce(r.delinquency_class, '(unscored)') as delinquency_class,
        coalesce(r.bureau_rating_class, '(no report)') as bureau_rating
    from risk as r
    left join accounts as a using (customer_id)
    left join rfm as f using (customer_id)
),

long as (
    unpivot customer_dimensions
    on portfolio, sector, region, rfm_segment, delinquency_class, bureau_rating
    into name dimension value dimension_value
),

ranked as (
    select
        *,
        row_number() over (
            partition by dimension, dimension_value order by open_exposure desc, customer_id
        ) as exposure_rank,
        sum(open_exposure) over (partition by dimension, dimension_value) as group_exposure
    from long
),

grouped as (
    select
        dimension,
        dimension_value,
        count(*) as customers,
        -- counted only where exposure is known (a NULL exposure counts nothing)
        case when count(open_exposure) > 0 then count(*) filter (where open_exposure > 0) end
            as customers_with_exposure,
        sum(open_exposure) as exposure,
        sum(overdue) as overdue,
        sum(overdue_over_60) as overdue_over_60,
        sum(expected_loss) as expected_loss,
        sum(open_exposure::double * delinquency_probability) / nullif(sum(open_exposure), 0)
            as exposure_weighted_probability,
        case when count(over_credit_limit) > 0 then count(*) filter (where over_credit_limit) end
            as customers_over_credit_limit,
        sum(open_exposure) filter (where over_credit_limit) as exposure_over_credit_limit,
        sum(open_exposure) filter (where exposure_rank <= 10)::double
            / nullif(any_value(group_exposure), 0) as top10_exposure_share,
        sum(power(open_exposure::double / nullif(group_exposure, 0), 2)) as herfindahl_index,
        sum(clv_12m) as clv_12m,
        sum(risk_adjusted_clv) as risk_adjusted_clv
    from ranked
    group by dimension, dimension_value
),

portfolio_dso as (
    select 'portfolio' as dimension, 'all' as dimension_value, dso_days
    from features.receivables_dso
    where scope = 'portfolio'
),

final as (
    select
        $as_of::date as as_of_date,
        g.dimension,
        g.dimension_value,
        g.customers,
        g.customers_with_exposure,
        g.exposure::decimal(18, 2) as exposure,
        g.exposure::double / nullif(sum(g.exposure) over (partition by g.dimension), 0)
            as share_of_exposure,
        g.overdue::decimal(18, 2) as overdue,
        g.overdue_over_60::decimal(18, 2) as overdue_over_60,
        g.expected_loss,
        g.expected_loss / nullif(g.exposure::double, 0) as expected_loss_rate,
        g.exposure_weighted_probability,
        g.customers_over_credit_limit,
        case when s.finance_unknown_reason is null then
            coalesce(g.exposure_over_credit_limit, 0)::decimal(18, 2)
        end as exposure_over_credit_limit,
        g.top10_exposure_share,
        g.herfindahl_index,
        d.dso_days,
        g.clv_12m,
        g.risk_adjusted_clv,
        s.finance_unknown_reason
    from grouped as g
    cross join status as s
    left join portfolio_dso as d using (dimension, dimension_value)
)

select * from final
order by
    case dimension
        when 'portfolio' then 0 when 'sector' then 1 when 'region' then 2
        when 'rfm_segment' then 3 when 'delinquency_class' then 4 else 5
    end,
    exposure desc,
    dimension_value
