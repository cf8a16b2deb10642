-- One branch of feat_customer_summary.sql's per_customer: the customers whose customer_key
-- satisfies the range predicate filled in for /*key_range*/. Reads that query's `invoices`.
-- Two levels, because a purchase is a distinct day: per customer and day with an invoice
-- (the day's spend), then per customer.
select
    customer_key,
    min(purchase_date) as first_purchase_date,
    max(purchase_date) as last_purchase_date,
    count(*) as purchase_days,
    sum(day_amount) as gross_revenue,
    sum(day_amount) - arg_min(day_amount, purchase_date) as repeat_revenue
from (
    select customer_key, issue_date as purchase_date, sum(amount) as day_amount
    from invoices
    where document_type = 'invoice' and (/*key_range*/)
    group by customer_key, issue_date
)
group by customer_key
