-- Backtest tracking: repeat purchases of the calibration cohort per model time unit, up to
-- $as_of. Period k covers the days ($cutoff + (k-1) u, $cutoff + k u] for u = $time_unit_days:
-- k <= 0 is the calibration window, k >= 1 the holdout. A customer's first purchase day is not
-- a repeat purchase; customers whose first purchase came after $cutoff are not in the cohort.
with cohort as (
    select customer_id, first_purchase_date
    from features.clv_calibration_summary
),

repeat_purchase_days as (
    select distinct i.customer_id, i.issue_date as purchase_date
    from staging.invoices as i
    inner join cohort as c using (customer_id)
    where i.document_type = 'invoice'
        and i.issue_date > c.first_purchase_date
        and i.issue_date <= $as_of::date
),

final as (
    select
        ceil(date_diff('day', $cutoff::date, purchase_date) / $time_unit_days)::integer
            as period,
        count(*) as repeat_purchases
    from repeat_purchase_days
    group by all
)

select * from final order by period
