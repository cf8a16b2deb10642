-- Open receivable items per customer as of $as_of, to the cent (DECIMAL throughout): the one
-- definition of "open" that the aging, exposure, DSO, alerts and the payment-behaviour features
-- (at the as-of date and at every training cutoff) read.
-- Each document's residual = its amount minus the payments that reference it and are dated on
-- or before $as_of: for invoices that is paid_total of $settlement_table (invoice settlement built
-- as of the same date), for credit notes the refunds of $refunds_table (same date); a payment
-- that references no known document reduces no balance. $invoices_table gives the credit notes:
-- staging.invoices, or the ledger sample a past cutoff reads (features/receivables.py).
-- Credit notes carry no invoice reference, so a customer's credit (unapplied
-- credit notes plus overpayments, i.e. every negative residual) is applied to that customer's
-- open invoices oldest due date first, as a credit manager clears unallocated cash; credit left
-- over once every invoice is cleared stays as one 'unapplied_credit' item (negative amount).
-- Sum of open_amount per customer = invoices + credit notes - payments known by $as_of.
-- open_invoice: an invoice item left open by more than the settlement's tolerance. A smaller
-- remainder stays in the amounts to the cent, but the invoice is settled (the settlement's rule):
-- it counts in no open-invoice count and no days past due.
-- With no payment known by $as_of ($payments_known false) nothing tells an unpaid invoice from a
-- paid one: no item is written, and readers say why (features/receivables.py).
with credit_notes as (
    select
        invoice_id,
        customer_id,
        issue_date,
        coalesce(due_date, issue_date + $default_payment_terms_days::integer) as due_date,
        amount,
        document_type,
        null::decimal(18, 2) as settlement_tolerance
    from query_table($invoices_table::varchar)
    where issue_date <= $as_of::date and document_type = 'credit_note'
),

-- payments against credit notes (refunds) as of the same date; the invoices' are summed in the
-- settlement already
refunds as (
    select invoice_id, refunded as paid
    from query_table($refunds_table::varchar)
),

-- Only documents with something left (most invoices are paid to the cent) go further.
residuals as (
    select
        invoice_id,
        customer_id,
        issue_date,
        due_date,
        amount,
        'invoice' as document_type,
        settlement_tolerance,
        amount - paid_total as residual
    from query_table($settlement_table::varchar)
    where amount <> paid_total
    union all
    select c.*, c.amount - coalesce(r.paid, 0) as residual
    from credit_notes as c
    left join refunds as r using (invoice_id)
    where c.amount <> coalesce(r.paid, 0)
),

customer_credit as (
    select customer_id, -sum(residual) as credit
    from residuals
    where residual < 0
    group by customer_id
),

open_invoices as (
    select
        r.*,
        coalesce(c.credit, 0) as credit,
        coalesce(sum(r.residual) over (
            partition by r.customer_id
            order by r.due_date, r.issue_date, r.invoice_id
            rows between unbounded preceding and 1 preceding
        ), 0) as residual_before
    from residuals as r
    left join customer_credit as c using (customer_id)
    where r.residual > 0 and r.document_type = 'invoice'
),

allocated as (
    select
        customer_id,
        invoice_id,
        'invoice' as item_type,
        issue_date,
        due_date,
        amount as original_amount,
        residual - least(residual, greatest(credit - residual_before, 0)) as open_amount,
        settlement_tolerance
    from open_invoices
),

unapplied as (
    select
        c.customer_id,
        null::varchar as invoice_id,
        'unapplied_credit' as item_type,
        null::date as issue_date,
        null::date as due_date,
        null::decimal(18, 2) as original_amount,
        -(c.credit - least(c.credit, coalesce(o.open_before_credit, 0))) as open_amount,
        null::decimal(18, 2) as settlement_tolerance
    from customer_credit as c
    left join (
        select customer_id, sum(residual) as open_before_credit
        from residuals
        where residual > 0 and document_type = 'invoice'
        group by customer_id
    ) as o using (customer_id)
),

items as (
    select * from allocated
    union all
    select * from unapplied
),

final as (
    select
        customer_id,
        $as_of::date as as_of_date,
        invoice_id,
        item_type,
        issue_date,
        due_date,
        date_diff('day', due_date, $as_of::date) as days_past_due,
        original_amount,
        open_amount::decimal(18, 2) as open_amount,
        item_type = 'invoice' and open_amount > settlement_tolerance as open_invoice,
        case
            when item_type = 'unapplied_credit' then 'unapplied_credit'
            when date_diff('day', due_date, $as_of::date) <= 0 then 'not_due'
            when date_diff('day', due_date, $as_of::date) <= 30 then 'dpd_1_30'
            when date_diff('day', due_date, $as_of::date) <= 60 then 'dpd_31_60'
            when date_diff('day', due_date, $as_of::date) <= 90 then 'dpd_61_90'
            when date_diff('day', due_date, $as_of::date) <= 180 then 'dpd_91_180'
            else 'dpd_over_180'
        end as aging_bucket
    from items
    where open_amount <> 0 and $payments_known::boolean
)

select * from final
