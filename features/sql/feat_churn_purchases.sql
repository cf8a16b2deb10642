-- Purchase history per customer at each cutoff in $cutoffs (one row per customer with a
-- purchase on or before the cutoff, and cutoff): recency, frequency, spend, regularity of the
-- gaps between purchases and the trend of spend, from invoices dated on or before the cutoff.
-- $sample_fraction keeps a deterministic share of customers (by the md5 of the id, alike on
-- every engine) at every cutoff except $as_of, which is always scored whole.
-- Money is summed as decimals and gap regularity from integer sums, turned into doubles only at
-- the end: a sum of doubles depends on the order it is added up in, which differs between
-- engines and runs, and the churn fit would turn those last bits into another model.
with cutoffs as (
    select unnest($cutoffs::date[]) as cutoff_date
),

documents as (
    select customer_id, issue_date, amount, document_type
    from staging.invoices
    where issue_date <= $as_of::date
),

purchase_days as (
    select customer_id, issue_date as purchase_date, sum(amount) as day_amount
    from documents
    where document_type = 'invoice'
    group by customer_id, issue_date
),

with_gaps as (
    select
        *,
        date_diff(
            'day',
            lag(purchase_date) over (partition by customer_id order by purchase_date),
            purchase_date
        ) as gap_days
    from purchase_days
),

-- The as-of snapshot takes everyone; past cutoffs take the sample. Sampling before the range
-- join keeps cutoffs x purchases, the big intermediate, small on millions of customers.
sampled as (
    select *
    from with_gaps
    where $sample_fraction::double >= 1
        or left(md5(customer_id), 8) < lower(lpad(hex(floor($sample_fraction::double * 4294967296)::bigint), 8, '0'))
),

purchases_at_cutoff as (
    select $as_of::date as cutoff_date, p.*
    from with_gaps as p
    where $as_of::date in (select cutoff_date from cutoffs)
    union all
    select c.cutoff_date, p.*
    from cutoffs as c
    join sampled as p on p.purchase_date <= c.cutoff_date
    where c.cutoff_date <> $as_of::date
),

credit_notes_at_cutoff as (
    select c.cutoff_date, d.customer_id, sum(d.amount) as credit_note_total
    from cutoffs as c
    join documents as d on d.issue_date <= c.cutoff_date and d.document_type = 'credit_note'
    group by all
),

per_customer as (
    select
        customer_id,
        cutoff_date,
        min(purchase_date) as first_purchase_date,
        max(purchase_date) as last_purchase_date,
        count(*) as purchase_days,
        sum(day_amount) as gross_revenue,
        sum(day_amount) - arg_min(day_amount, purchase_date) as repeat_revenue,
        median(gap_days) as usual_gap_days,
        count(gap_days) as gaps,
        sum(gap_days) as gap_total,
        sum(gap_days * gap_days) as gap_squares,
        count(*) filter (where purchase_date > cutoff_date - 90) as orders_90d,
        count(*) filter (
            where purchase_date <= cutoff_date - 90 and purchase_date > cutoff_date - 180
        ) as orders_previous_90d,
        coalesce(sum(day_amount) filter (where purchase_date > cutoff_date - 90), 0)
            as spend_90d,
        coalesce(sum(day_amount) filter (
            where purchase_date <= cutoff_date - 90 and purchase_date > cutoff_date - 180
        ), 0) as spend_previous_90d
    from purchases_at_cutoff
    group by customer_id, cutoff_date
),

final as (
    select
        p.customer_id,
        p.cutoff_date,
        p.first_purchase_date,
        p.last_purchase_date,
        p.purchase_days,
        p.purchase_days - 1 as frequency,
        date_diff('day', p.first_purchase_date, p.last_purchase_date) as purchase_span_days,
        date_diff('day', p.last_purchase_date, p.cutoff_date) as recency_days,
        date_diff('day', p.first_purchase_date, p.cutoff_date) as tenure_days,
        (p.gross_revenue + coalesce(c.credit_note_total, 0))::double as net_revenue,
        -- repeat spend per repeat purchase day, for the BG/NBD fit's input validation only
        case when p.purchase_days > 1
            then greatest(p.repeat_revenue / (p.purchase_days - 1), 0) else 0
        end::double as monetary_value,
        p.usual_gap_days::double as usual_gap_days,
        -- coefficient of variation of the gaps: sample standard deviation over the mean
        case when p.gaps > 1 and p.gap_total > 0 then
            sqrt((p.gaps * p.gap_squares - p.gap_total * p.gap_total) / (p.gaps * (p.gaps - 1)))
            / (p.gap_total / p.gaps)
        end as gap_variation,
        date_diff('day', p.last_purchase_date, p.cutoff_date)
            / nullif(p.usual_gap_days, 0)::double as recency_to_usual_gap,
        p.orders_90d,
        p.orders_previous_90d,
        p.spend_90d::double as spend_90d,
        p.spend_previous_90d::double as spend_previous_90d,
        (p.spend_90d - p.spend_previous_90d) / nullif(p.spend_previous_90d, 0) as spend_trend
    from per_customer as p
    left join credit_notes_at_cutoff as c using (customer_id, cutoff_date)
)

select * from final order by cutoff_date, customer_id
