-- Portfolio credit risk as of $as_of, one long table: one row per (dimension, dimension_value)
-- for dimension in portfolio (the total, value 'all'), sector, region, rfm_segment,
-- delinquency_class and bureau_rating; customers with no value fall in '(unknown)'.
-- Concentration inside each group: top10_exposure_share (the ten largest exposures over the
-- group's exposure) and herfindahl_index (sum of squared exposure shares; 1 = one customer).
-- dso_days: countback DSO of the slice, the definition of features.receivables_dso applied to
-- the slice's customers together: their net open receivables (credit balances included) floored
-- at 0, counted back against their invoiced sales month by month, newest first, from
-- features.receivables_dso_basis (build_portfolio_risk fills the month columns). The portfolio
-- row equals features.receivables_dso's; a slice with nothing open has 0 days.
-- overdue_over_90: open amounts more than 90 days past due (marts.receivables_aging's dpd_91_180
-- and dpd_over_180).
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

aging as (
    select customer_id, dpd_91_180 + dpd_over_180 as overdue_over_90
    from marts.receivables_aging
),

dso_basis as (
    select * from features.receivables_dso_basis
),

customer_dimensions as (
    select
        r.customer_id,
        r.open_exposure,
        r.overdue,
        r.overdue_over_60,
        -- a customer with no aging row has nothing open: a known 0 unless nothing is known
        case when r.finance_unknown_reason is null then coalesce(g.overdue_over_90, 0)
        end as overdue_over_90,
        r.expected_loss,
        r.delinquency_probability,
        r.over_credit_limit,
        r.clv,
        r.clv_horizon_days,
        r.risk_adjusted_clv,
        'all' as portfolio,
        coalesce(a.sector, '(unknown)') as sector,
        coalesce(a.region, '(unknown)') as region,
        coalesce(f.rfm_segment, 'No purchase yet') as rfm_segment,
        coalesce(r.delinquency_class, '(unscored)') as delinquency_class,
        coalesce(r.bureau_rating_class, '(no report)') as bureau_rating,
        b.* exclude (customer_id)
    from risk as r
    left join accounts as a using (customer_id)
    left join rfm as f using (customer_id)
    left join aging as g using (customer_id)
    left join dso_basis as b using (customer_id)
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
        sum(overdue_over_90) as overdue_over_90,
        sum(expected_loss) as expected_loss,
        sum(open_exposure::double * delinquency_probability) / nullif(sum(open_exposure), 0)
            as exposure_weighted_probability,
        case when count(over_credit_limit) > 0 then count(*) filter (where over_credit_limit) end
            as customers_over_credit_limit,
        sum(open_exposure) filter (where over_credit_limit) as exposure_over_credit_limit,
        sum(open_exposure) filter (where exposure_rank <= 10)::double
            / nullif(any_value(group_exposure), 0) as top10_exposure_share,
        sum(power(open_exposure::double / nullif(group_exposure, 0), 2)) as herfindahl_index,
        sum(clv) as clv,
        max(clv_horizon_days) as clv_horizon_days,
        sum(risk_adjusted_clv) as risk_adjusted_clv
    from ranked
    group by dimension, dimension_value
),

-- each slice's customers together: net open receivables floored at 0 and sales per month
slice_receivables as (
    select
        dimension,
        dimension_value,
        greatest(coalesce(sum(net_open), 0), 0) as open_receivables,
        /*group_sales*/
    from long
    group by dimension, dimension_value
),

slice_dso as (
    select
        dimension,
        dimension_value,
        /*countback_days*/
    from slice_receivables
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
        g.overdue_over_90::decimal(18, 2) as overdue_over_90,
        g.expected_loss,
        g.expected_loss / nullif(g.exposure::double, 0) as expected_loss_rate,
        g.exposure_weighted_probability,
        g.customers_over_credit_limit,
        case when s.finance_unknown_reason is null then
            coalesce(g.exposure_over_credit_limit, 0)::decimal(18, 2)
        end as exposure_over_credit_limit,
        g.top10_exposure_share,
        g.herfindahl_index,
        case when s.finance_unknown_reason is null then d.dso_days end as dso_days,
        g.clv,
        g.clv_horizon_days,
        g.risk_adjusted_clv,
        s.finance_unknown_reason
    from grouped as g
    cross join status as s
    left join slice_dso as d using (dimension, dimension_value)
)

select * from final
order by
    case dimension
        when 'portfolio' then 0 when 'sector' then 1 when 'region' then 2
        when 'rfm_segment' then 3 when 'delinquency_class' then 4 else 5
    end,
    exposure desc,
    dimension_value
