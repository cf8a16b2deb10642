-- One row per customer with at least one purchase on or before $as_of: the facts RFM and the
-- BG/NBD + Gamma-Gamma models need. A purchase is a distinct day with at least one invoice
-- (Fader, Hardie & Lee; lifetimes); credit notes reduce spend but are not purchases.
-- Durations are in days; the CLV stage converts them to its model time unit.
-- Grouped by the integer customer_key (staging.customer_keys), not the text id: with
-- features.warehouse.perfect_hash_groups the per-customer level is an array indexed by the key.
with invoices as not materialized (
    select customer_key, issue_date, amount, document_type
    from staging.invoices
    where issue_date <= $as_of
),

credit_notes as (
    select customer_key, sum(amount) as credit_note_total
    from invoices
    where document_type = 'credit_note'
    group by customer_key
),

-- Per customer. Two levels, because a purchase is a distinct day: per customer and day with an
-- invoice (the day's spend), then per customer.
customer_days as (
    select customer_key, issue_date as purchase_date, sum(amount) as day_amount
    from invoices
    where document_type = 'invoice'
    group by customer_key, issue_date
),

per_customer as (
    select
        customer_key,
        min(purchase_date) as first_purchase_date,
        max(purchase_date) as last_purchase_date,
        count(*) as purchase_days,
        sum(day_amount) as gross_revenue,
        sum(day_amount) - arg_min(day_amount, purchase_date) as repeat_revenue
    from customer_days
    group by customer_key
),

final as (
    select
        p.customer_key,
        k.customer_id,
        $as_of::date as as_of_date,
        p.first_purchase_date,
        p.last_purchase_date,
        p.purchase_days,
        p.purchase_days - 1 as frequency,
        date_diff('day', p.first_purchase_date, p.last_purchase_date) as purchase_span_days,
        date_diff('day', p.last_purchase_date, $as_of::date) as recency_days,
        date_diff('day', p.first_purchase_date, $as_of::date) as tenure_days,
        p.gross_revenue::double as gross_revenue,
        coalesce(c.credit_note_total, 0)::double as credit_note_total,
        (p.gross_revenue + coalesce(c.credit_note_total, 0))::double as net_revenue,
        (p.gross_revenue + coalesce(c.credit_note_total, 0))::double / p.purchase_days
            as avg_order_value,
        -- Gamma-Gamma spend: mean repeat purchase, net of the customer's credit-note share.
        case
            when p.purchase_days > 1
                then greatest(
                    p.repeat_revenue::double / (p.purchase_days - 1)
                    * (1 + coalesce(c.credit_note_total, 0)::double / p.gross_revenue::double),
                    0
                )
            else 0
        end as monetary_value
    from per_customer as p
    join staging.customer_keys as k using (customer_key)
    left join credit_notes as c using (customer_key)
)

-- in id order: keys follow it only until a merge numbers new customers after the last key
select * exclude (customer_key) from final order by customer_id
