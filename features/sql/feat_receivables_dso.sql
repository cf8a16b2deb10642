-- Days sales outstanding by the countback method, per customer and for the whole portfolio
-- (the row with scope = 'portfolio'), as of $as_of, from features.receivables_dso_basis (net open
-- receivables and invoiced sales per calendar month, per customer). Open receivables (floored
-- at 0) are matched against invoiced sales month by month, newest month first: a month whose
-- sales are fully absorbed counts all its days, the month where the receivables run out counts
-- the absorbed fraction of its days. Months are calendar months ending on $as_of; the count
-- stops after the basis's months (receivables larger than that many months of sales give DSO =
-- the days of those months). The portfolio's receivables are the sum over every customer
-- (credit balances included) floored at 0; marts.portfolio_risk counts back every slice alike.
-- Amounts stay DECIMAL until the fraction, so receivables absorbed exactly by a month's sales
-- leave exactly 0 for the next month (in floating point a 1e-12 remainder would count a whole
-- empty month). With no payment known by $as_of there is no item, so no DSO (NULL downstream,
-- with the reason in marts.finance_status), not a DSO of everything invoiced.
with receivables as (
    select
        customer_id,
        greatest(sum(net_open), 0) as open_receivables,
        /*group_sales*/
    from features.receivables_dso_basis
    group by grouping sets ((customer_id), ())
),

-- Per month k: its days, its sales, the receivables the newer months left to absorb
-- (left_k = left_{k-1} - sales_{k-1}, left_1 = open receivables) and the days counted:
--     days_k * (0 if left_k <= 0, left_k / sales_k if sales_k >= left_k, else 1)
-- written by build_dso for the basis's months, summed as dso_days.
final as (
    select
        customer_id,
        case when customer_id is null then 'portfolio' else 'customer' end as scope,
        $as_of::date as as_of_date,
        open_receivables::double as open_receivables,
        /*countback_days*/
    from receivables
    where open_receivables > 0
)

select customer_id, scope, as_of_date, open_receivables, dso_days
from final
order by scope desc, customer_id
