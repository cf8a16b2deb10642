-- Payments against credit notes (refunds) known by $as_of, per credit note: how much, how many
-- and the first date. Invoices' payments are summed in features.invoice_settlement; with this
-- table every payment is joined to its document once a night, and the receivable items, the
-- count of payments that reference no known document and the alerts' deposits lookup read it.
-- $invoices_table and $payments_table are staging.invoices and staging.payments, or the ledger
-- sample a past cutoff's payment behaviour reads (features/receivables.py).
with credit_notes as (
    select invoice_id, customer_id, issue_date
    from query_table($invoices_table::varchar)
    where issue_date <= $as_of::date and document_type = 'credit_note'
)

select
    c.invoice_id,
    c.customer_id,
    c.issue_date,
    sum(p.amount) as refunded,
    count(*) as refunds,
    min(p.payment_date) as first_refund_date
from query_table($payments_table::varchar) as p
join credit_notes as c using (invoice_id)
where p.payment_date <= $as_of::date
group by c.invoice_id, c.customer_id, c.issue_date
