-- What countback DSO reads, per customer, as of $as_of: net open receivables (the sum of the
-- customer's open_amount in features.receivable_items, signed: a credit balance offsets other
-- customers' debts when a group is counted back) and invoiced sales per calendar month ending on
-- $as_of (month_1_sales newest, $dso_months months). One row per customer with an open item or
-- an invoice in those months. feat_receivables_dso.sql counts back each customer and the
-- portfolio from it, mart_portfolio_risk.sql every slice of the portfolio: one definition.
-- Amounts stay DECIMAL (see feat_receivables_dso.sql). With no payment known by $as_of there is
-- no item: net_open is NULL for everyone and no DSO follows.
with receivables as (
    select customer_id, sum(open_amount) as net_open
    from features.receivable_items
    group by customer_id
),

-- An invoice's month number by arithmetic rather than a range join with months (which sorts
-- every invoice): $as_of minus the calendar months between them lands in the invoice's calendar
-- month; the invoice belongs to that month number if issued after that day, else to the next.
recent_invoices as (
    select
        customer_id,
        amount,
        date_diff('month', issue_date, $as_of::date)
            + (issue_date <= $as_of::date - to_months(date_diff('month', issue_date, $as_of::date)))
                ::integer as month_number
    from staging.invoices
    where document_type = 'invoice'
        and issue_date > $as_of::date - to_months($dso_months::integer)
        and issue_date <= $as_of::date
),

-- One column of sales per month in a single aggregation by customer: the countback is then
-- arithmetic across a row, with no (customer, month) grid, join or window. build_dso writes the
-- month columns for $dso_months months.
sales as (
    select
        customer_id,
        /*monthly_sales*/
    from recent_invoices
    group by customer_id
)

select customer_id, r.net_open, s.* exclude (customer_id)
from receivables as r
full outer join sales as s using (customer_id)
order by customer_id
