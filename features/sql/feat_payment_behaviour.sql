-- Payment behaviour per customer at each cutoff in $cutoffs (one row per customer and cutoff),
-- from features.invoice_settlement and the bureau's latest report on or before the cutoff.
-- Only facts dated on or before a cutoff are used: an invoice counts as settled at a cutoff
-- when its settled_date is on or before it, otherwise it is open then.
-- Population: every invoiced customer when $whole_ledger (scoring), else customers invoiced in
-- the 365 days before the cutoff or with an open invoice (training). $sample_fraction keeps a
-- deterministic share of customers, by hash of the id, to bound very large training sets.
with cutoffs as (
    select unnest($cutoffs::date[]) as cutoff_date
),

invoices as (
    select *
    from features.invoice_settlement
    where $sample_fraction::double >= 1
        or hash(customer_id) % 1000000 < $sample_fraction::double * 1000000
),

at_cutoff as (
    select
        c.cutoff_date,
        i.*,
        i.settled_date is not null and i.settled_date <= c.cutoff_date as settled,
        -- only the credit notes issued by the cutoff lower what is owed at the cutoff
        coalesce(list_sum(list_transform(
            list_filter(i.credits, lambda credit: credit.credit_date <= c.cutoff_date),
            lambda credit: credit.amount
        )), 0) as credited_by_cutoff,
        date_diff('day', i.due_date, i.settled_date) as days_late,
        date_diff('day', i.due_date, c.cutoff_date) as days_past_due_now,
        i.issue_date > c.cutoff_date - 365 as issued_12m,
        i.settled_date > c.cutoff_date - 365 and i.settled_date <= c.cutoff_date as settled_12m,
        i.settled_date > c.cutoff_date - 90 and i.settled_date <= c.cutoff_date as settled_90d
    from cutoffs as c
    join invoices as i on i.issue_date <= c.cutoff_date
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
        max(case when settled then days_late else days_past_due_now end) filter (
            where due_date <= cutoff_date and (not settled or settled_12m)
        ) as worst_days_past_due_12m,
        max(case when settled then days_late else days_past_due_now end) filter (
            where due_date <= cutoff_date
        ) as worst_days_past_due_ever,
        avg((
            (settled and payments_to_settle > 1)
            or (not settled and coalesce(first_payment_date <= cutoff_date, false))
        )::int) filter (where issued_12m) as share_partial_payments,
        count(*) filter (where not settled) as open_invoices,
        coalesce(sum(amount - credited_by_cutoff) filter (where not settled), 0)::double
            as open_amount,
        coalesce(
            sum(amount - credited_by_cutoff) filter (where not settled and days_past_due_now > 0),
            0
        )::double as overdue_amount,
        coalesce(max(days_past_due_now) filter (where not settled), 0) as current_days_past_due
    from at_cutoff
    group by customer_id, cutoff_date
),

population as (
    select * from per_customer
    where $whole_ledger::boolean or invoices_12m > 0 or open_invoices > 0
),

accounts as (
    select customer_id, tax_id from staging.accounts
),

reports as (
    select tax_id, report_date, rating_class, failure_score, delinquency_score, credit_limit,
        legal_events
    from staging.credit_reports
),

with_tax as (
    select p.*, a.tax_id, p.cutoff_date - 90 as earlier_date
    from population as p
    left join accounts as a using (customer_id)
),

latest_report as (
    select w.customer_id, w.cutoff_date, r.report_date, r.rating_class, r.failure_score,
        r.delinquency_score, r.credit_limit
    from with_tax as w
    asof join reports as r on w.tax_id = r.tax_id and w.cutoff_date >= r.report_date
),

earlier_report as (
    select w.customer_id, w.cutoff_date, r.failure_score as failure_score_3m_ago
    from with_tax as w
    asof join reports as r on w.tax_id = r.tax_id and w.earlier_date >= r.report_date
),

legal as (
    select w.customer_id, w.cutoff_date, sum(r.legal_events) as legal_events_12m
    from with_tax as w
    join reports as r
        on w.tax_id = r.tax_id
        and r.report_date <= w.cutoff_date
        and r.report_date > w.cutoff_date - 365
    group by all
),

final as (
    select
        p.customer_id,
        p.cutoff_date,
        date_diff('day', p.first_invoice_date, p.cutoff_date) as tenure_days,
        date_diff('day', p.last_invoice_date, p.cutoff_date) as days_since_last_invoice,
        p.invoices_12m,
        p.invoiced_12m,
        p.settled_invoices_12m,
        p.avg_days_late,
        p.weighted_days_late,
        p.share_paid_late,
        p.share_paid_over_30_late,
        p.days_late_trend,
        greatest(p.worst_days_past_due_12m, 0) as worst_days_past_due_12m,
        coalesce(p.worst_days_past_due_ever > 30, false) as ever_30_days_late,
        p.share_partial_payments,
        p.open_invoices,
        p.open_amount,
        p.overdue_amount,
        greatest(p.current_days_past_due, 0) as current_days_past_due,
        lr.report_date as bureau_report_date,
        lr.rating_class as bureau_rating_class,
        lr.failure_score::double as bureau_failure_score,
        lr.delinquency_score::double as bureau_delinquency_score,
        lr.credit_limit::double as credit_limit,
        (lr.failure_score - er.failure_score_3m_ago)::double as bureau_failure_score_change_3m,
        l.legal_events_12m::double as bureau_legal_events_12m,
        p.open_amount / nullif(lr.credit_limit, 0)::double as credit_limit_utilisation
    from population as p
    left join latest_report as lr using (customer_id, cutoff_date)
    left join earlier_report as er using (customer_id, cutoff_date)
    left join legal as l using (customer_id, cutoff_date)
)

select * from final order by cutoff_date, customer_id
