-- Credit alerts raised from $as_of - $lookback_days to $as_of (both days included), one row
-- per customer and event:
--   bureau_rating_downgrade  a bureau report in the window rates the firm lower than the
--                            report before it (D < C < B2 < B1 < A2 < A1)
--   failure_score_drop       a report in the window has a failure score at least
--                            $failure_score_drop points below the report before it
--   days_past_due_60         an invoice still open on $as_of passed 60 days past due in the window
--   over_credit_limit        exposure is over the bureau credit limit on $as_of and was not at
--                            the start of the window
-- Exposure at the window start is derived from today's (marts.receivables_aging, built as of
-- $as_of) rather than by building the aging again as of that date: the ledger total then =
-- today's - documents issued in the window + payments that count today but did not then (dated
-- in the window, or dated earlier against a document issued in the window). Both joins have a
-- window-sized side, where a second aging would join every payment to every document.
-- Reads features.invoice_settlement and features.credit_note_refunds as of $as_of too. With
-- no payment known (marts.finance_status) there is no receivable item: no arrears or limit alert.
-- Each alert carries the customer's name, open exposure (marts.receivables_aging's total_open
-- floored at 0; NULL with finance_unknown_reason when no payment is known) and bureau credit
-- limit on $as_of, and a severity, first rule that applies:
--   critical  an invoice passed 60 days past due and the customer is over its credit limit;
--             exposure at least 1.5 x the credit limit (over_credit_limit); the rating fell to
--             C or D and something is open
--   high      any other invoice passing 60 days past due; any other over_credit_limit; any other
--             rating downgrade with something open
--   medium    a rating fall to C or D with nothing open; a failure score drop with something open
--   low       any other alert (nothing open)
-- "Something open" is exposure > 0, or exposure unknown (no payments: unknown is not safe).
-- severity_rank orders them (1 = critical .. 4 = low); alert_rank ranks every alert by severity,
-- then open exposure (largest first), then the newest alert date.
with accounts as (
    select customer_id, tax_id, name from staging.accounts
),

reports as (
    select tax_id, report_date, rating_class, failure_score, credit_limit
    from staging.credit_reports
    where report_date <= $as_of::date
),

-- Per firm in one pass over its reports (unique per tax_id and report_date): the latest report
-- before the window, which the window's first report is compared with, and the credit limit on
-- $as_of and at the window start. Structs keep a report whose fields are null.
firm_history as (
    select
        tax_id,
        arg_max(
            struct_pack(
                report_date := report_date,
                rating_class := rating_class,
                failure_score := failure_score
            ),
            report_date
        ) filter (where report_date < $as_of::date - $lookback_days::integer) as before_window,
        arg_max(struct_pack(credit_limit := credit_limit), report_date) as limit_now,
        arg_max(struct_pack(credit_limit := credit_limit), report_date) filter (
            where report_date <= $as_of::date - $lookback_days::integer
        ) as limit_before
    from reports
    group by tax_id
),

-- each report in the window with the one before it: the window's reports plus each firm's last
-- report before the window are all the lag needs, not every report the firm ever had
compared_reports as (
    select
        tax_id,
        report_date,
        rating_class,
        failure_score,
        list_position(['D', 'C', 'B2', 'B1', 'A2', 'A1'], rating_class) as rating_rank,
        lag(rating_class) over by_date as previous_rating,
        lag(list_position(['D', 'C', 'B2', 'B1', 'A2', 'A1'], rating_class)) over by_date
            as previous_rating_rank,
        lag(failure_score) over by_date as previous_failure_score
    from (
        select tax_id, report_date, rating_class, failure_score
        from reports
        where report_date >= $as_of::date - $lookback_days::integer
        union all
        select
            tax_id,
            before_window.report_date,
            before_window.rating_class,
            before_window.failure_score
        from firm_history
        where before_window is not null
    )
    window by_date as (partition by tax_id order by report_date)
),

recent_reports as (
    select a.customer_id, r.*
    from compared_reports as r
    join accounts as a using (tax_id)
    where r.report_date >= $as_of::date - $lookback_days::integer
),

rating_alerts as (
    select
        customer_id,
        'bureau_rating_downgrade' as alert_type,
        report_date as alert_date,
        previous_rating as previous_value,
        rating_class as current_value,
        'bureau rating ' || previous_rating || ' -> ' || rating_class as change
    from recent_reports
    where rating_rank < previous_rating_rank
),

score_alerts as (
    select
        customer_id,
        'failure_score_drop' as alert_type,
        report_date as alert_date,
        previous_failure_score::varchar as previous_value,
        failure_score::varchar as current_value,
        'bureau failure score ' || previous_failure_score::bigint || ' -> '
            || failure_score::bigint as change
    from recent_reports
    where previous_failure_score - failure_score >= $failure_score_drop::double
),

overdue_alerts as (
    select
        customer_id,
        'days_past_due_60' as alert_type,
        due_date + 61 as alert_date,
        null::varchar as previous_value,
        days_past_due::varchar as current_value,
        'invoice ' || invoice_id || ' passed 60 days past due on ' || (due_date + 61)::varchar
            || ', ' || open_amount::varchar || ' open' as change
    from features.receivable_items
    -- an open invoice, as the aging counts it (a remainder within the tolerance is settled)
    where open_invoice
        and due_date + 61 >= $as_of::date - $lookback_days::integer
        and due_date + 61 <= $as_of::date
),

limits as (
    select
        a.customer_id,
        f.limit_now.credit_limit as credit_limit,
        f.limit_before.credit_limit as previous_credit_limit
    from accounts as a
    join firm_history as f using (tax_id)
),

exposure_now as (
    select customer_id, greatest(sum(open_amount), 0) as exposure
    from features.receivable_items
    group by customer_id
),

window_documents as (
    select invoice_id, customer_id, amount
    from staging.invoices
    where issue_date > $as_of::date - $lookback_days::integer and issue_date <= $as_of::date
),

-- Documents issued in the window with a payment dated before it (deposits): exactly those whose
-- first payment (settlement) or first refund (credit notes) is dated before the window, both
-- tables built as of $as_of.
deposit_documents as (
    select invoice_id, customer_id
    from features.invoice_settlement
    where issue_date > $as_of::date - $lookback_days::integer
        and first_payment_date <= $as_of::date - $lookback_days::integer
    union all
    select invoice_id, customer_id
    from features.credit_note_refunds
    where issue_date > $as_of::date - $lookback_days::integer
        and first_refund_date <= $as_of::date - $lookback_days::integer
),

window_payments as (
    select d.customer_id, p.amount
    from staging.payments as p
    join staging.invoices as d using (invoice_id)
    where p.payment_date > $as_of::date - $lookback_days::integer
        and p.payment_date <= $as_of::date
        and d.issue_date <= $as_of::date
    union all
    -- no deposit is dated before $deposits_since, the earliest first payment of those documents
    -- (build_risk_alerts looks it up): a date range of payments, not all of them, is joined
    select d.customer_id, p.amount
    from staging.payments as p
    join deposit_documents as d using (invoice_id)
    where p.payment_date <= $as_of::date - $lookback_days::integer
        and p.payment_date >= $deposits_since::date
),

window_change as (
    select customer_id, sum(amount) as change
    from (
        select customer_id, amount from window_documents
        union all
        select customer_id, -amount from window_payments
    )
    group by customer_id
),

exposure_before as (
    select
        a.customer_id,
        greatest(a.total_open::decimal(38, 2) - coalesce(w.change, 0), 0) as exposure
    from marts.receivables_aging as a
    left join window_change as w using (customer_id)
),

limit_alerts as (
    select
        n.customer_id,
        'over_credit_limit' as alert_type,
        $as_of::date as alert_date,
        coalesce(b.exposure, 0)::varchar as previous_value,
        n.exposure::varchar as current_value,
        'exposure ' || n.exposure::varchar || ' over credit limit '
            || l.credit_limit::varchar || ' (was ' || coalesce(b.exposure, 0)::varchar
            || ' against ' || coalesce(l.previous_credit_limit::varchar, 'no limit') || ')'
            as change
    from exposure_now as n
    join limits as l using (customer_id)
    left join exposure_before as b using (customer_id)
    where n.exposure > l.credit_limit
        and not coalesce(b.exposure > l.previous_credit_limit, false)
),

alerts as (
    select * from rating_alerts
    union all
    select * from score_alerts
    union all
    select * from overdue_alerts
    union all
    select * from limit_alerts
),

status as (
    select finance_unknown_reason from marts.finance_status
),

-- a customer with no aging row has nothing open: a known 0 unless nothing is known
customer_exposure as (
    select
        al.customer_id,
        case when st.finance_unknown_reason is null then
            greatest(coalesce(ag.total_open, 0), 0)::decimal(18, 2)
        end as open_exposure,
        st.finance_unknown_reason
    from (select distinct customer_id from alerts) as al
    cross join status as st
    left join marts.receivables_aging as ag using (customer_id)
),

graded as (
    select
        al.*,
        ac.name as customer_name,
        e.open_exposure,
        l.credit_limit,
        case
            when al.alert_type = 'days_past_due_60' then
                case when e.open_exposure > l.credit_limit then 1 else 2 end
            when al.alert_type = 'over_credit_limit' then
                case when e.open_exposure >= 1.5 * l.credit_limit then 1 else 2 end
            when al.alert_type = 'bureau_rating_downgrade' and al.current_value in ('C', 'D') then
                case when coalesce(e.open_exposure > 0, true) then 1 else 3 end
            when al.alert_type = 'bureau_rating_downgrade' then
                case when coalesce(e.open_exposure > 0, true) then 2 else 4 end
            else case when coalesce(e.open_exposure > 0, true) then 3 else 4 end
        end as severity_rank,
        e.finance_unknown_reason
    from alerts as al
    left join accounts as ac using (customer_id)
    left join customer_exposure as e using (customer_id)
    left join limits as l using (customer_id)
),

final as (
    select
        customer_id,
        $as_of::date as as_of_date,
        alert_type,
        alert_date,
        previous_value,
        current_value,
        change,
        customer_name,
        ['critical', 'high', 'medium', 'low'][severity_rank] as severity,
        severity_rank,
        row_number() over (
            order by severity_rank, open_exposure desc nulls last, alert_date desc, customer_id,
                alert_type, change
        ) as alert_rank,
        open_exposure,
        credit_limit,
        open_exposure::double / nullif(credit_limit, 0) as credit_limit_utilisation,
        finance_unknown_reason
    from graded
)

select * from final order by alert_rank
