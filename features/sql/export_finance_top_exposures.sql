-- The finance workbook's Top exposures: the $top customers with the largest open exposure
-- (marts.customer_risk), with name and sector, credit class, bureau rating, limit, utilisation,
-- share of the portfolio's exposure, arrears and days past due. With no payments known nobody's
-- exposure is known: one row saying why instead of a ranking.
with ranked as (
    select
        row_number() over (order by r.open_exposure desc, r.customer_id) as exposure_rank,
        r.customer_id,
        c.name as customer_name,
        c.sector,
        r.delinquency_class as credit_class,
        r.bureau_rating_class as bureau_rating,
        r.credit_limit,
        r.credit_limit_utilisation,
        r.over_credit_limit,
        r.open_exposure::double as open_exposure,
        r.open_exposure::double / sum(r.open_exposure::double) over () as share_of_exposure,
        r.overdue::double as overdue,
        r.max_days_past_due,
        r.delinquency_probability,
        r.expected_loss,
        r.finance_unknown_reason
    from marts.customer_risk as r
    left join marts.customer_360 as c using (customer_id)
    where r.open_exposure > 0
    qualify exposure_rank <= $top::integer
)

select * from ranked
union all by name
select 'unknown: ' || finance_unknown_reason as finance_unknown_reason
from marts.finance_status
where finance_unknown_reason is not null
order by exposure_rank nulls first
