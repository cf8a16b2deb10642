-- features.churn_snapshots on a night that refits: every labelled cutoff's churn features from
-- features.churn_training_cache (each cutoff built once, features/training_cache.py), with the
-- account columns of today's accounts joined as feat_churn_snapshots.sql joins them, and
-- tonight's scoring snapshot (churn_scoring_snapshot, this step's own temp table) after them.
with kept as (
    select * exclude (cache_key, churned) from features.churn_training_cache
),

accounts as (
    select customer_id, region, sector, size_band, status = 'closed' as account_closed
    from staging.accounts
),

training as (
    select
        k.*,
        a.region,
        a.sector,
        a.size_band,
        coalesce(a.account_closed, false) as account_closed
    from kept as k
    left join accounts as a using (customer_id)
),

final as (
    select * from training
    union all by name
    select * from churn_scoring_snapshot
)

select * from final order by cutoff_date, customer_id
