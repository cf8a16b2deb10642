-- One row per known customer (CRM accounts and invoiced customers): firmographics, RFM and
-- lifetime value as of the run's as-of date.
with accounts as (
    select customer_id, name, tax_id, country, region, sector, size_band, status
    from staging.accounts
),

invoiced_customers as (
    select customer_id from features.customer_summary
),

customers as (
    select customer_id from accounts
    union
    select customer_id from invoiced_customers
),

summary as (
    select customer_id, first_purchase_date, last_purchase_date from features.customer_summary
),

rfm as (
    select * from models.rfm_scores
),

clv as (
    select * from models.clv_scores
),

credit_risk as (
    select * from marts.customer_risk
),

churn as (
    select * from models.churn_scores
),

final as (
    select
        c.customer_id,
        $as_of::date as as_of_date,
        a.name,
        a.tax_id,
        a.country,
        a.region,
        a.sector,
        a.size_band,
        a.status as account_status,
        s.first_purchase_date,
        s.last_purchase_date,
        rfm.recency_days,
        coalesce(rfm.frequency, 0) as frequency,
        coalesce(rfm.monetary, 0) as monetary,
        rfm.r_score,
        rfm.f_score,
        rfm.m_score,
        rfm.rfm_cell,
        coalesce(rfm.rfm_segment, 'No purchase yet') as rfm_segment,
        clv.expected_purchases_90d,
        clv.expected_purchases_365d,
        clv.p_alive,
        clv.expected_order_value,
        clv.clv,
        clv.clv_low,
        clv.clv_high,
        clv.clv_horizon_days,
        clv.next_order_date,
        -- no credit-risk row: never invoiced, nothing owed; a NULL there is unknown and stays so
        case when credit_risk.customer_id is null then 0 else credit_risk.open_exposure end
            as open_exposure,
        case when credit_risk.customer_id is null then 0 else credit_risk.max_days_past_due end
            as max_days_past_due,
        credit_risk.dso_days,
        credit_risk.credit_limit,
        credit_risk.delinquency_probability,
        credit_risk.delinquency_score,
        credit_risk.delinquency_class,
        credit_risk.delinquency_reasons,
        credit_risk.delinquency_scorer,
        credit_risk.delinquency_unknown_reason,
        credit_risk.expected_loss,
        credit_risk.risk_adjusted_clv,
        credit_risk.finance_unknown_reason,
        churn.churn_probability,
        churn.churn_risk_band,
        churn.churn_reasons,
        churn.churn_model_version
    from customers as c
    left join accounts as a using (customer_id)
    left join summary as s using (customer_id)
    left join rfm using (customer_id)
    left join clv using (customer_id)
    left join credit_risk using (customer_id)
    left join churn using (customer_id)
)

select * from final order by customer_id
