-- One row per customer and cutoff: every churn feature group side by side. Purchase history
-- decides who is in a snapshot (a customer with a purchase on or before the cutoff); the other
-- groups join to it and stay null where their source has nothing for the customer.
with purchases as (
    select * from features.churn_purchase_history
),

engagement as (
    select * from features.churn_engagement_history
),

payments as (
    select
        customer_id,
        cutoff_date,
        avg_days_late,
        share_paid_late,
        days_late_trend,
        worst_days_past_due_12m,
        open_invoices,
        current_days_past_due,
        bureau_failure_score,
        bureau_delinquency_score,
        bureau_failure_score_change_3m,
        bureau_legal_events_12m
    from features.churn_payment_history
),

bg_nbd as (
    select * from features.churn_bg_nbd_history
),

accounts as (
    select customer_id, region, sector, size_band, status = 'closed' as account_closed
    from staging.accounts
),

final as (
    select
        p.*,
        b.* exclude (customer_id, cutoff_date),
        e.* exclude (customer_id, cutoff_date),
        m.* exclude (customer_id, cutoff_date),
        a.region,
        a.sector,
        a.size_band,
        coalesce(a.account_closed, false) as account_closed
    from purchases as p
    left join bg_nbd as b using (customer_id, cutoff_date)
    left join engagement as e using (customer_id, cutoff_date)
    left join payments as m using (customer_id, cutoff_date)
    left join accounts as a using (customer_id)
)

select * from final order by cutoff_date, customer_id
