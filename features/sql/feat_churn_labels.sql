-- The churn label of every training snapshot: churned = no purchase (invoice day) in the
-- $horizon_days days after the cutoff. Only cutoffs at least $horizon_days before $as_of are
-- labelled, so a label never reads a fact dated after the run's as-of date.
with snapshots as (
    select customer_id, cutoff_date
    from features.churn_purchase_history
    where cutoff_date + $horizon_days::integer <= $as_of::date
),

purchases as (
    select distinct customer_id, issue_date
    from staging.invoices
    where document_type = 'invoice' and issue_date <= $as_of::date
),

bought as (
    select s.customer_id, s.cutoff_date, count(*) as purchases_in_horizon
    from snapshots as s
    join purchases as p
        on p.customer_id = s.customer_id
        and p.issue_date > s.cutoff_date
        and p.issue_date <= s.cutoff_date + $horizon_days::integer
    group by all
),

final as (
    select
        s.customer_id,
        s.cutoff_date,
        coalesce(b.purchases_in_horizon, 0) = 0 as churned
    from snapshots as s
    left join bought as b using (customer_id, cutoff_date)
)

select * from final order by cutoff_date, customer_id
