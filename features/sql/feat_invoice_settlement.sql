-- One row per invoice issued on or before $as_of: when it was settled, from facts known by
-- $as_of (a later settlement is unknown: settled_date is null). A credit note has no invoice
-- reference; for payment behaviour it is taken to correct the customer's latest invoice issued
-- on or before it (a return or price correction soon after delivery; of several invoices issued
-- that same day, the one with the greatest invoice_id, so reruns agree), which lowers the amount
-- that settles that invoice. Settled = payments reach the full amount, or the amount net of
-- that credit once the credit note is issued, less $settlement_tolerance (bank charges and
-- rounding a credit manager writes off). $sample_fraction keeps a deterministic share of
-- customers (by the md5 of the id, alike on every engine) to bound very large training sets;
-- 1 keeps everyone.
-- $invoices_table and $payments_table are staging.invoices and staging.payments, or a sample of
-- them built once for several cutoffs (features/receivables.py build_payment_behaviour).
with documents as not materialized (
    select
        invoice_id,
        customer_id,
        issue_date,
        coalesce(due_date, issue_date + $default_payment_terms_days::integer) as due_date,
        amount,
        document_type
    from query_table($invoices_table::varchar)
    where issue_date <= $as_of::date
        and (
            $sample_fraction::double >= 1
            or left(md5(customer_id), 8) < lower(lpad(hex(floor($sample_fraction::double * 4294967296)::bigint), 8, '0'))
        )
),

invoices as (
    select * from documents where document_type = 'invoice'
),

credit_notes as materialized (
    select
        invoice_id as credit_note_id,
        customer_id,
        issue_date as credit_date,
        -amount as credit_amount
    from documents
    where document_type = 'credit_note'
),

-- The invoice a credit note corrects is the greatest (issue_date, invoice_id) issued on or
-- before it (a deterministic pick among same-day ties). A hash join finds it among the
-- customer's invoices of the 90 days before, where nearly every credit note has one; only the
-- others are matched over their customer's whole history.
recent_match as materialized (
    select
        c.credit_note_id,
        arg_max(i.invoice_id, struct_pack(issued := i.issue_date, invoice_id := i.invoice_id))
            as invoice_id
    from credit_notes as c
    join invoices as i
        on c.customer_id = i.customer_id
        and i.issue_date <= c.credit_date
        and i.issue_date >= c.credit_date - 90
    group by c.credit_note_id
),

unmatched_credit_notes as (
    select c.*
    from credit_notes as c
    anti join recent_match as r using (credit_note_id)
),

older_match as (
    select
        c.credit_note_id,
        arg_max(i.invoice_id, struct_pack(issued := i.issue_date, invoice_id := i.invoice_id))
            as invoice_id
    from unmatched_credit_notes as c
    join invoices as i
        on c.customer_id = i.customer_id
        and i.issue_date <= c.credit_date
    group by c.credit_note_id
),

matched_credit as (
    select
        m.invoice_id,
        sum(c.credit_amount) as credited,
        max(c.credit_date) as credit_date
    from (select * from recent_match union all select * from older_match) as m
    join credit_notes as c using (credit_note_id)
    group by m.invoice_id
),

-- Payments known by $as_of. A sample keeps its own invoices' payments only; the parameters are
-- folded when the statement is planned, so exactly one branch reads the payments (an OR of
-- the two would run the semi-join even when nothing is sampled).
payments as not materialized (
    select invoice_id, payment_date, amount
    from query_table($payments_table::varchar)
    where payment_date <= $as_of::date and $sample_fraction::double >= 1
    union all
    select invoice_id, payment_date, amount
    from query_table($payments_table::varchar)
    where payment_date <= $as_of::date
        and $sample_fraction::double < 1
        and invoice_id in (select invoice_id from documents)
),

payment_totals as (
    select
        invoice_id,
        sum(amount) as paid_total,
        count(*) as payment_count,
        min(payment_date) as first_payment_date,
        max(payment_date) as last_payment_date
    from payments
    group by invoice_id
),

-- Most invoices are paid on a single date, where the running sum is the total (settled below
-- from payment_totals alone). Only invoices paid on several dates need running sums to find the
-- first date that reached each target.
running as (
    select
        invoice_id,
        payment_date,
        sum(amount) over by_date as paid_to_date,
        sum(payment_count) over by_date as payments_to_date
    from (
        select invoice_id, payment_date, sum(amount) as amount, count(*) as payment_count
        from payments
        where invoice_id in (
            select invoice_id from payment_totals where first_payment_date < last_payment_date
        )
        group by invoice_id, payment_date
    )
    window by_date as (partition by invoice_id order by payment_date)
),

-- per invoice paid on several dates, the running sums by date, matched against its targets
-- below; kept narrow so the one join with the invoices carries them along
payment_steps as (
    select
        invoice_id,
        list(struct_pack(
            payment_date := payment_date,
            paid_to_date := paid_to_date,
            payments_to_date := payments_to_date
        )) as steps
    from running
    group by invoice_id
),

paid as (
    select p.*, s.steps
    from payment_totals as p
    left join payment_steps as s using (invoice_id)
),

targets as (
    select
        i.*,
        coalesce(m.credited, 0) as credited,
        m.credit_date,
        i.amount - coalesce(m.credited, 0) - $settlement_tolerance::decimal(18, 2) as settle_at
    from invoices as i
    left join matched_credit as m using (invoice_id)
),

-- the first date the payments reached the full amount, and the amount net of credit
settlement as (
    select
        t.*,
        p.first_payment_date,
        -- every payment to the invoice dated on or before $as_of (the aging's residuals use it)
        coalesce(p.paid_total, 0) as paid_total,
        coalesce(p.payment_count, 0)::hugeint as payment_count,
        case
            when p.steps is not null then list_min(list_transform(
                list_filter(
                    p.steps,
                    lambda step: step.paid_to_date
                        >= t.amount - $settlement_tolerance::decimal(18, 2)
                ),
                lambda step: step.payment_date
            ))
            when p.paid_total >= t.amount - $settlement_tolerance::decimal(18, 2)
                then p.first_payment_date
        end as paid_in_full_date,
        case
            when p.steps is not null then list_min(list_transform(
                list_filter(p.steps, lambda step: step.paid_to_date >= t.settle_at),
                lambda step: step.payment_date
            ))
            when p.paid_total >= t.settle_at then p.first_payment_date
        end as paid_net_date,
        case
            when p.steps is not null then list_min(list_transform(
                list_filter(p.steps, lambda step: step.paid_to_date >= t.settle_at),
                lambda step: step.payments_to_date
            ))
            when p.paid_total >= t.settle_at then p.payment_count::hugeint
        end as payments_to_settle
    from targets as t
    left join paid as p using (invoice_id)
),

final as (
    select
        customer_id,
        invoice_id,
        issue_date,
        due_date,
        amount,
        credited,
        first_payment_date,
        paid_total,
        payment_count,
        case
            when settle_at <= 0 then credit_date
            -- paid in full, or paid net of the credit once the credit note exists
            else least(
                paid_in_full_date,
                case
                    when paid_net_date is not null
                        then greatest(paid_net_date, coalesce(credit_date, paid_net_date))
                end
            )
        end as settled_date,
        payments_to_settle,
        -- what "settled" forgave, so the open items read from this table (feat_receivable_items)
        -- count an invoice as open by the same rule
        $settlement_tolerance::decimal(18, 2) as settlement_tolerance
    from settlement
)

-- no order: readers aggregate or join it, and sorting 50M invoices costs more than joining them
select * from final
