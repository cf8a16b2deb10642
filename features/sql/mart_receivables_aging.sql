-- Receivables aging per customer as of $as_of, from features.receivable_items. Buckets are
-- days past due of each open invoice (after credit applied oldest first); credit that no open
-- invoice could absorb is shown in unapplied_credit (<= 0) and netted in total_open, so
-- not_due + dpd_* + unapplied_credit = total_open to the cent. max_days_past_due is that of the
-- oldest open invoice (open_invoice: a remainder within the settlement tolerance is settled).
-- With a $finance_unknown_reason (no payment known by $as_of: build_receivables writes it to
-- marts.finance_status too) the amounts are unknown: features.receivable_items is empty and every
-- customer invoiced by then gets a row with NULL amounts and that reason, never a number. The
-- parameter is folded when the statement is planned, so a normal night reads no invoices here.
with items as (
    select * from features.receivable_items
),

invoiced as (
    select distinct customer_id
    from staging.invoices
    where issue_date <= $as_of::date and $finance_unknown_reason::varchar is not null
),

per_customer as (
    select
        customer_id,
        sum(open_amount) filter (where aging_bucket = 'not_due') as not_due,
        sum(open_amount) filter (where aging_bucket = 'dpd_1_30') as dpd_1_30,
        sum(open_amount) filter (where aging_bucket = 'dpd_31_60') as dpd_31_60,
        sum(open_amount) filter (where aging_bucket = 'dpd_61_90') as dpd_61_90,
        sum(open_amount) filter (where aging_bucket = 'dpd_91_180') as dpd_91_180,
        sum(open_amount) filter (where aging_bucket = 'dpd_over_180') as dpd_over_180,
        sum(open_amount) filter (where aging_bucket = 'unapplied_credit') as unapplied_credit,
        sum(open_amount) as total_open,
        max(days_past_due) filter (where open_invoice) as max_days_past_due
    from items
    group by customer_id
),

known as (
    select
        customer_id,
        $as_of::date as as_of_date,
        coalesce(not_due, 0)::decimal(18, 2) as not_due,
        coalesce(dpd_1_30, 0)::decimal(18, 2) as dpd_1_30,
        coalesce(dpd_31_60, 0)::decimal(18, 2) as dpd_31_60,
        coalesce(dpd_61_90, 0)::decimal(18, 2) as dpd_61_90,
        coalesce(dpd_91_180, 0)::decimal(18, 2) as dpd_91_180,
        coalesce(dpd_over_180, 0)::decimal(18, 2) as dpd_over_180,
        coalesce(unapplied_credit, 0)::decimal(18, 2) as unapplied_credit,
        total_open::decimal(18, 2) as total_open,
        greatest(coalesce(max_days_past_due, 0), 0) as max_days_past_due,
        null::varchar as finance_unknown_reason
    from per_customer
),

unknown as (
    select
        i.customer_id,
        $as_of::date as as_of_date,
        null::decimal(18, 2) as not_due,
        null::decimal(18, 2) as dpd_1_30,
        null::decimal(18, 2) as dpd_31_60,
        null::decimal(18, 2) as dpd_61_90,
        null::decimal(18, 2) as dpd_91_180,
        null::decimal(18, 2) as dpd_over_180,
        null::decimal(18, 2) as unapplied_credit,
        null::decimal(18, 2) as total_open,
        null::bigint as max_days_past_due,
        $finance_unknown_reason::varchar as finance_unknown_reason
    from invoiced as i
),

final as (
    select * from known
    union all
    select * from unknown
)

select * from final order by customer_id
