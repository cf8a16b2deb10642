-- Delinquency label per customer and cutoff in $cutoffs: 1 when, on some day in the
-- $horizon_days after the cutoff, one of the customer's invoices (open at the cutoff or issued
-- in the window) is more than $label_days_past_due days past due and not yet settled.
-- An invoice is that late from due_date + $label_days_past_due + 1 until its settled_date.
-- Reads features.invoice_settlement, which must be built as of a date >= every cutoff +
-- $horizon_days (the caller checks), so the whole window is observed.
with cutoffs as (
    select unnest($cutoffs::date[]) as cutoff_date
),

invoices as (
    select
        customer_id,
        due_date + $label_days_past_due::integer + 1 as delinquent_from,
        settled_date
    from features.invoice_settlement
),

delinquent as (
    select distinct i.customer_id, c.cutoff_date
    from cutoffs as c
    join invoices as i
        on i.delinquent_from <= c.cutoff_date + $horizon_days::integer
        and (
            i.settled_date is null
            or i.settled_date > greatest(i.delinquent_from, c.cutoff_date + 1)
        )
)

select
    p.customer_id,
    p.cutoff_date,
    (d.customer_id is not null) as delinquent
from features.payment_behaviour_history as p
left join delinquent as d using (customer_id, cutoff_date)
order by p.cutoff_date, p.customer_id
