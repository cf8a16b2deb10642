-- The finance workbook's Aging by customer: marts.receivables_aging (one row per customer with
-- an open item, buckets by days past due, to the cent) with the customer's name and sector
-- (marts.customer_360), credit class (the delinquency class A-E), bureau rating, credit limit,
-- utilisation and expected loss (marts.customer_risk); largest open total first. Unknown
-- amounts (no payments known) stay NULL with finance_unknown_reason.
select
    a.customer_id,
    c.name as customer_name,
    c.sector,
    r.delinquency_class as credit_class,
    r.bureau_rating_class as bureau_rating,
    r.credit_limit,
    r.credit_limit_utilisation,
    a.not_due::double as not_due,
    a.dpd_1_30::double as dpd_1_30,
    a.dpd_31_60::double as dpd_31_60,
    a.dpd_61_90::double as dpd_61_90,
    a.dpd_91_180::double as dpd_91_180,
    a.dpd_over_180::double as dpd_over_180,
    a.unapplied_credit::double as unapplied_credit,
    a.total_open::double as total_open,
    a.max_days_past_due,
    r.expected_loss,
    a.finance_unknown_reason
from marts.receivables_aging as a
left join marts.customer_360 as c using (customer_id)
left join marts.customer_risk as r using (customer_id)
order by a.total_open desc nulls last, a.customer_id
