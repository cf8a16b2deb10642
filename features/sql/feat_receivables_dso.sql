-- Days sales outstanding by the countback method, per customer and for the whole portfolio
-- (the row with scope = 'portfolio'), as of $as_of. Open receivables (total_open from
-- features.receivable_items, floored at 0) are matched against invoiced sales month by month,
-- newest month first: a month whose sales are fully absorbed counts all its days, the month
-- where the receivables run out counts the absorbed fraction of its days. Months are calendar
-- months ending on $as_of; the count stops after $dso_months months (receivables larger than
-- that many months of sales give DSO = the days of those months).
with months as (
    select
        k as month_number,
        $as_of::date - to_months(k) as month_start,
        $as_of::date - to_months(k - 1) as month_end
    from range(1, $dso_months::integer + 1) as t(k)
),

receivables as (
    select
        customer_id,
        greatest(sum(open_amount), 0)::double as open_receivables
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
        issue_date,
        date_diff('month', issue_date, $as_of::date) as calendar_months
    from staging.invoices
    where document_type = 'invoice'
        and issue_date > $as_of::date - to_months($dso_months::integer)
        and issue_date <= $as_of::date
),

sales as (
    select
        customer_id,
        calendar_months
            + (issue_date <= $as_of::date - to_months(calendar_months))::integer as month_number,
        sum(amount)::double as month_sales
    from recent_invoices
    group by grouping sets ((customer_id, month_number), (month_number))
),

grid as (
    select
        r.customer_id,
        r.open_receivables,
        m.month_number,
        date_diff('day', m.month_start, m.month_end) as month_days,
        coalesce(s.month_sales, 0) as month_sales
    from receivables as r
    cross join months as m
    left join sales as s
        on s.month_number = m.month_number
        and s.customer_id is not distinct from r.customer_id
    where r.open_receivables > 0
),

countback as (
    select
        *,
        open_receivables - coalesce(sum(month_sales) over (
            partition by customer_id
            order by month_number
            rows between unbounded preceding and 1 preceding
        ), 0) as receivables_left
    from grid
),

final as (
    select
        customer_id,
        case when customer_id is null then 'portfolio' else 'customer' end as scope,
        $as_of::date as as_of_date,
        any_value(open_receivables) as open_receivables,
        sum(
            month_days * case
                when receivables_left <= 0 then 0
                when month_sales >= receivables_left then receivables_left / month_sales
                else 1
            end
        ) as dso_days
    from countback
    group by customer_id
)

select * from final order by scope desc, customer_id
