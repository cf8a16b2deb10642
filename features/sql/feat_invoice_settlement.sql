-- One row per invoice issued on or before $as_of: when it was settled, from facts known by
-- $as_of (a later settlement is unknown: settled_date is null). A credit note has no invoice
-- reference; for payment behaviour it is taken to correct the customer's latest invoice issued
-- on or before it (a return or price correction soon after delivery), which lowers the amount
-- that settles that invoice. Settled = payments reach the full amount, or the amount net of
-- that credit once the credit note is issued, less $settlement_tolerance (bank charges and
-- rounding a credit manager writes off).
with documents as (
    select
        invoice_id,
        customer_id,
        issue_date,
        coalesce(due_date, issue_date + $default_payment_terms_days::integer) as due_date,
        amount,
        document_type
    from staging.invoices
    where issue_date <= $as_of::date
),

invoices as (
    select * from documents where document_type = 'invoice'
),

credit_notes as (
    select customer_id, issue_date as credit_date, -amount as credit_amount
    from documents
    where document_type = 'credit_note'
),

matched_credit as (
    select
        i.invoice_id,
        sum(c.credit_amount) as credited,
        max(c.credit_date) as credit_date,
        list(struct_pack(credit_date := c.credit_date, amount := c.credit_amount)) as credits
    from credit_notes as c
    asof join invoices as i
        on c.customer_id = i.customer_id and c.credit_date >= i.issue_date
    group by i.invoice_id
),

payments as (
    select invoice_id, payment_date, sum(amount) as amount, count(*) as payment_count
    from staging.payments
    where payment_date <= $as_of::date
    group by invoice_id, payment_date
),

running as (
    select
        invoice_id,
        payment_date,
        sum(amount) over (partition by invoice_id order by payment_date) as paid_to_date,
        sum(payment_count) over (partition by invoice_id order by payment_date) as payments_to_date
    from payments
),

targets as (
    select
        i.*,
        coalesce(m.credited, 0) as credited,
        m.credit_date,
        m.credits,
        i.amount - coalesce(m.credited, 0) - $settlement_tolerance::decimal(18, 2) as settle_at
    from invoices as i
    left join matched_credit as m using (invoice_id)
),

settlement as (
    select
        t.invoice_id,
        min(r.payment_date) as first_payment_date,
        max(r.paid_to_date) as paid_total,
        max(r.payments_to_date) as payment_count,
        min(r.payment_date) filter (
            where r.paid_to_date >= t.amount - $settlement_tolerance::decimal(18, 2)
        ) as paid_in_full_date,
        min(r.payment_date) filter (where r.paid_to_date >= t.settle_at) as paid_net_date,
        min(r.payments_to_date) filter (where r.paid_to_date >= t.settle_at) as payments_to_settle
    from targets as t
    join running as r using (invoice_id)
    group by t.invoice_id
),

final as (
    select
        t.customer_id,
        t.invoice_id,
        t.issue_date,
        t.due_date,
        t.amount,
        t.credited,
        t.credits,
        s.first_payment_date,
        coalesce(s.paid_total, 0) as paid_total,
        coalesce(s.payment_count, 0) as payment_count,
        case
            when t.settle_at <= 0 then t.credit_date
            -- paid in full, or paid net of the credit once the credit note exists
            else least(
                s.paid_in_full_date,
                case
                    when s.paid_net_date is not null
                        then greatest(s.paid_net_date, coalesce(t.credit_date, s.paid_net_date))
                end
            )
        end as settled_date,
        s.payments_to_settle
    from targets as t
    left join settlement as s using (invoice_id)
)

select * from final order by customer_id, issue_date, invoice_id
