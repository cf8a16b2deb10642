-- Backtest actuals: for every customer of the calibration summary (first purchase on or before
-- $cutoff), the purchase days in the holdout window ($cutoff, $as_of]. Same purchase definition
-- as feat_customer_summary: a distinct day with at least one invoice; credit notes are not
-- purchases.
with calibration_customers as (
    select customer_id, frequency, purchase_span_days, tenure_days, monetary_value
    from features.clv_calibration_summary
),

holdout_purchase_days as (
    select customer_id, count(distinct issue_date) as holdout_purchases
    from staging.invoices
    where document_type = 'invoice'
        and issue_date > $cutoff::date
        and issue_date <= $as_of::date
    group by customer_id
),

final as (
    select
        c.customer_id,
        c.frequency,
        c.purchase_span_days,
        c.tenure_days,
        c.monetary_value,
        coalesce(h.holdout_purchases, 0) as holdout_purchases
    from calibration_customers as c
    left join holdout_purchase_days as h using (customer_id)
)

select * from final order by customer_id
