-- Credit risk per customer as of $as_of: exposure, aging, DSO, bureau limit, delinquency
-- probability and class, expected loss and risk-adjusted CLV. One row per customer who was
-- ever invoiced or has an open balance.
--   open_exposure     = open receivables floored at 0 (credit balances are not at risk)
--   expected_loss     = open_exposure x delinquency_probability x $lgd; the 90-day delinquency
--                       probability stands in for the probability of default (conservative:
--                       30+ days late is more frequent than default)
--   expected_credit_exposure = dso_days / clv_horizon_days x clv: the part of the CLV revenue
--                       of the horizon that will be outstanding on average (the CLV covers
--                       clv_horizon_days of sales, dso_days of them are owed at any time).
--                       dso_days falls back to the portfolio DSO for a customer with nothing
--                       open today.
--   risk_adjusted_clv = clv - delinquency_probability x $lgd x (open_exposure
--                       + expected_credit_exposure)
--   delinquency_scorer, delinquency_unknown_reason  which scorer the holdout chose, or why
--                       there is no delinquency probability (then expected loss and
--                       risk-adjusted CLV are NULL too: unknown, never guessed)
--   finance_unknown_reason  why exposure, arrears, DSO, expected loss and risk-adjusted CLV are
--                       NULL (marts.finance_status: no payment known by $as_of, so nothing
--                       tells a paid invoice from an unpaid one); NULL when they are known.
with aging as (
    select * from marts.receivables_aging
),

status as (
    select finance_unknown_reason from marts.finance_status
),

scores as (
    select * from models.delinquency_scores
),

behaviour as (
    select * from features.payment_behaviour
),

dso as (
    select customer_id, dso_days from features.receivables_dso where scope = 'customer'
),

portfolio_dso as (
    select coalesce(max(dso_days), 0) as dso_days
    from features.receivables_dso
    where scope = 'portfolio'
),

clv as (
    select customer_id, clv, clv_horizon_days from models.clv_scores
),

customers as (
    select customer_id from scores
    union
    select customer_id from aging
),

-- a customer with no aging row has nothing open (a known 0), unless nothing is known
joined as (
    select
        c.customer_id,
        st.finance_unknown_reason,
        case when st.finance_unknown_reason is null then
            coalesce(a.total_open, 0)::decimal(18, 2)
        end as total_open,
        case when st.finance_unknown_reason is null then
            greatest(coalesce(a.total_open, 0), 0)::decimal(18, 2)
        end as open_exposure,
        case when st.finance_unknown_reason is null then
            coalesce(a.dpd_1_30 + a.dpd_31_60 + a.dpd_61_90 + a.dpd_91_180 + a.dpd_over_180, 0)
                ::decimal(18, 2)
        end as overdue,
        case when st.finance_unknown_reason is null then
            coalesce(a.dpd_61_90 + a.dpd_91_180 + a.dpd_over_180, 0)::decimal(18, 2)
        end as overdue_over_60,
        case when st.finance_unknown_reason is null then coalesce(a.max_days_past_due, 0)
        end as max_days_past_due,
        d.dso_days,
        b.credit_limit,
        b.bureau_rating_class,
        b.bureau_failure_score,
        b.bureau_delinquency_score,
        b.bureau_report_date,
        s.delinquency_probability,
        s.delinquency_score,
        s.delinquency_class,
        s.delinquency_reasons,
        s.delinquency_scorer,
        s.delinquency_unknown_reason,
        clv.clv,
        clv.clv_horizon_days,
        case when st.finance_unknown_reason is null then coalesce(d.dso_days, p.dso_days)
        end as dso_days_for_clv
    from customers as c
    cross join status as st
    left join aging as a using (customer_id)
    left join scores as s using (customer_id)
    left join behaviour as b using (customer_id)
    left join dso as d using (customer_id)
    left join clv using (customer_id)
    cross join portfolio_dso as p
),

final as (
    select
        customer_id,
        $as_of::date as as_of_date,
        total_open,
        open_exposure,
        overdue,
        overdue_over_60,
        max_days_past_due,
        dso_days,
        credit_limit,
        open_exposure::double / nullif(credit_limit, 0) as credit_limit_utilisation,
        case when finance_unknown_reason is null then
            coalesce(open_exposure::double > credit_limit, false)
        end as over_credit_limit,
        bureau_rating_class,
        bureau_failure_score,
        bureau_delinquency_score,
        bureau_report_date,
        delinquency_probability,
        delinquency_score,
        delinquency_class,
        delinquency_reasons,
        delinquency_scorer,
        delinquency_unknown_reason,
        open_exposure::double * delinquency_probability * $lgd::double as expected_loss,
        clv,
        clv_horizon_days,
        dso_days_for_clv / clv_horizon_days * clv as expected_credit_exposure,
        clv - delinquency_probability * $lgd::double
            * (open_exposure::double + dso_days_for_clv / clv_horizon_days * clv)
            as risk_adjusted_clv,
        finance_unknown_reason
    from joined
)

select * from final order by customer_id
