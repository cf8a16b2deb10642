-- Days sales outstanding by the countback method, per customer and for the whole portfolio
-- (the row with scope = 'portfolio'), as of $as_of. Open receivables (total_open from
-- features.receivable_items, floored at 0) are matched against invoiced sales month by month,
-- newest month first: a month whose sales are fully absorbed counts all its days, the month
-- where the receivables run out counts the absorbed fraction of its days. Months are calendar
-- months ending on $as_of; the count stops after $dso_months months (receivables larger than
-- that many months of sales give DSO = the days of those months).
-- Amounts stay DECIMAL until the fraction, so receivables absorbed exactly by a month's sales
-- leave exactly 0 for the next month (in floating point a 1e-12 remainder would count a whole
-- empty month). With no payment known by $as_of there is no item, so no DSO (NULL downstream,
-- with the reason in marts.finance_status), not a DSO of everything invoiced.
with receivables as (
    select
        customer_id,
        greatest(sum(open_amount), 0) as open_receivables
    from features.receivable_items
    group by grouping sets ((customer_id), ())
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

-- One column of sales per month (month_1_sales newest) in a single aggregation by customer:
-- the countback is then arithmetic across a customer's row, with no (customer, month) grid, join
-- or window. build_dso writes the month columns for $dso_months months.
sales as (
    select
        customer_id,
        /*monthly_sales*/
    from recent_invoices
    group by grouping sets ((customer_id), ())
),

-- Per month k: its days, its sales, the receivables the newer months left to absorb
-- (left_k = left_{k-1} - sales_{k-1}, left_1 = open receivables) and the days counted:
--     days_k * (0 if left_k <= 0, left_k / sales_k if sales_k >= left_k, else 1)
-- written by build_dso for $dso_months months, summed as dso_days.
final as (
    select
        r.customer_id,
        case when r.customer_id is null then 'portfolio' else 'customer' end as scope,
        $as_of::date as as_of_date,
        r.open_receivables::double as open_receivables,
        /*countback_days*/
    from receivables as r
    left join sales as s on s.customer_id is not distinct from r.customer_id
    where r.open_receivables > 0
)

select customer_id, scope, as_of_date, open_receivables, dso_days
from final
order by scope desc, customer_id
