-- Payment behaviour per customer at $cutoff_date, from $settlement_table (invoice settlement
-- built as of that same date: features/receivables.py build_payment_behaviour guarantees it),
-- $items_table (the open receivable items built from that settlement as of that date,
-- feat_receivable_items.sql: at the as-of date the aging's own features.receivable_items) and the
-- bureau's latest report on or before the cutoff. Only facts dated on or before the cutoff are
-- used. How fast invoices were paid comes from their settled_date; what is open, overdue and how
-- many days past due comes from the open items alone, so open_amount, overdue_amount,
-- open_invoices and current_days_past_due are the aging's (open_amount = total_open floored at 0,
-- as open_exposure), with the same credit notes, unapplied credit, tolerance and payments.
-- Without a payment known by the cutoff ($payments_known false) every feature that needs
-- payments is NULL: unknown, not unpaid.
-- Population: every invoiced customer when $whole_ledger (scoring), else customers invoiced in
-- the 365 days before the cutoff or with an open invoice (training).
with cutoffs as (
    select $cutoff_date::date as cutoff_date
),

invoices as (
    select * from query_table($settlement_table::varchar)
),

items as (
    select * from query_table($items_table::varchar)
),

open_invoice_ids as (
    select invoice_id from items where open_invoice
),

at_cutoff as (
    select
        c.cutoff_date,
        i.*,
        i.settled_date is not null and i.settled_date <= c.cutoff_date as settled,
        o.invoice_id is not null as open_now,
        date_diff('day', i.due_date, i.settled_date) as days_late,
        date_diff('day', i.due_date, c.cutoff_date) as days_past_due_now,
        i.issue_date > c.cutoff_date - 365 as issued_12m,
        i.settled_date > c.cutoff_date - 365 and i.settled_date <= c.cutoff_date as settled_12m,
        i.settled_date > c.cutoff_date - 90 and i.settled_date <= c.cutoff_date as settled_90d
    from cutoffs as c
    join invoices as i on i.issue_date <= c.cutoff_date
    left join open_invoice_ids as o on o.invoice_id = i.invoice_id
),

-- what is open per customer: the aging's figures, from the same items
open_totals as (
    select
        customer_id,
        greatest(sum(open_amount), 0)::double as open_amount,
        coalesce(
            sum(open_amount) filter (where item_type = 'invoice' and days_past_due > 0), 0
        )::double as overdue_amount,
        count(*) filter (where open_invoice) as open_invoices,
        max(days_past_due) filter (where open_invoice) as current_days_past_due
    from items
    group by customer_id
),

per_customer as (
    select
        customer_id,
        cutoff_date,
        min(issue_date) as first_invoice_date,
        max(issue_date) as last_invoice_date,
        count(*) filter (where issued_12m) as invoices_12m,
        coalesce(sum(amount) filter (where issued_12m), 0)::double as invoiced_12m,
        count(*) filter (where settled_12m) as settled_invoices_12m,
        avg(days_late) filter (where settled_12m) as avg_days_late,
        (sum(days_late * amount) filter (where settled_12m)
            / sum(amount) filter (where settled_12m))::double as weighted_days_late,
        avg((days_late > 0)::int) filter (where settled_12m) as share_paid_late,
        avg((days_late > 30)::int) filter (where settled_12m) as share_paid_over_30_late,
        avg(days_late) filter (where settled_90d)
            - avg(days_late) filter (where settled_12m and not settled_90d) as days_late_trend,
        -- an invoice open now counts its days past due now, one settled its days late; one
        -- cleared by credit applied to it (no settled_date) has no days to count
        max(case when open_now then days_past_due_now when settled then days_late end) filter (
            where due_date <= cutoff_date and (open_now or settled_12m)
        ) as worst_days_past_due_12m,
        max(case when open_now then days_past_due_now when settled then days_late end) filter (
            where due_date <= cutoff_date
        ) as worst_days_past_due_ever,
        avg((
            (settled and payments_to_settle > 1)
            or (open_now and coalesce(first_payment_date <= cutoff_date, false))
        )::int) filter (where issued_12m) as share_partial_payments
    from at_cutoff
    group by customer_id, cutoff_date
),

with_open as (
    select
        p.*,
        coalesce(o.open_invoices, 0) as open_invoices,
        coalesce(o.open_amount, 0) as open_amount,
        coalesce(o.overdue_amount, 0) as overdue_amount,
        coalesce(o.current_days_past_due, 0) as current_days_past_due
    from per_customer as p
    left join open_totals as o using (customer_id)
),

population as (
    select * from with_open
    where $whole_ledger::boolean or invoices_12m > 0 or open_invoices > 0
),

accounts as (
    select customer_id, tax_id from staging.accounts
),

-- The bureau's facts per firm as of the cutoff, in one pass over its reports (unique per tax_id
-- and report_date): the latest report on or before the cutoff, the latest on or before 90 days
-- earlier, and the legal events reported in the 365 days up to the cutoff. Structs keep a report
-- whose fields are null (arg_max skips a null argument).
bureau as (
    select
        r.tax_id,
        arg_max(
            struct_pack(
                report_date := r.report_date,
                rating_class := r.rating_class,
                failure_score := r.failure_score,
                delinquency_score := r.delinquency_score,
                credit_limit := r.credit_limit
            ),
            r.report_date
        ) as latest,
        arg_max(struct_pack(failure_score := r.failure_score), r.report_date) filter (
            where r.report_date <= $cutoff_date::date - 90
        ) as earlier,
        sum(r.legal_events) filter (
            where r.report_date > $cutoff_date::date - 365
        ) as legal_events_12m
    from staging.credit_reports as r
    where r.report_date <= $cutoff_date::date
    group by r.tax_id
),

with_bureau as (
    select
        p.*,
        b.latest.report_date,
        b.latest.rating_class,
        b.latest.failure_score,
        b.latest.delinquency_score,
        b.latest.credit_limit,
        b.earlier.failure_score as failure_score_3m_ago,
        b.legal_events_12m
    from population as p
    left join accounts as a using (customer_id)
    left join bureau as b using (tax_id)
),

final as (
    select
        p.customer_id,
        p.cutoff_date,
        date_diff('day', p.first_invoice_date, p.cutoff_date) as tenure_days,
        date_diff('day', p.last_invoice_date, p.cutoff_date) as days_since_last_invoice,
        p.invoices_12m,
        p.invoiced_12m,
        case when $payments_known::boolean then p.settled_invoices_12m end
            as settled_invoices_12m,
        case when $payments_known::boolean then p.avg_days_late end as avg_days_late,
        case when $payments_known::boolean then p.weighted_days_late end as weighted_days_late,
        case when $payments_known::boolean then p.share_paid_late end as share_paid_late,
        case when $payments_known::boolean then p.share_paid_over_30_late end
            as share_paid_over_30_late,
        case when $payments_known::boolean then p.days_late_trend end as days_late_trend,
        case when $payments_known::boolean then greatest(p.worst_days_past_due_12m, 0) end
            as worst_days_past_due_12m,
        case when $payments_known::boolean then coalesce(p.worst_days_past_due_ever > 30, false)
        end as ever_30_days_late,
        case when $payments_known::boolean then p.share_partial_payments end
            as share_partial_payments,
        case when $payments_known::boolean then p.open_invoices end as open_invoices,
        case when $payments_known::boolean then p.open_amount end as open_amount,
        case when $payments_known::boolean then p.overdue_amount end as overdue_amount,
        case when $payments_known::boolean then greatest(p.current_days_past_due, 0) end
            as current_days_past_due,
        p.report_date as bureau_report_date,
        p.rating_class as bureau_rating_class,
        p.failure_score::double as bureau_failure_score,
        p.delinquency_score::double as bureau_delinquency_score,
        p.credit_limit::double as credit_limit,
        (p.failure_score - p.failure_score_3m_ago)::double as bureau_failure_score_change_3m,
        p.legal_events_12m::double as bureau_legal_events_12m,
        case when $payments_known::boolean then p.open_amount / nullif(p.credit_limit, 0)::double
        end as credit_limit_utilisation
    from with_bureau as p
)

select * from final
