-- The CLV distribution of the published customers in $bins equal-width bins up to the
-- 99th percentile; the last bin also holds the top 1% (is_overflow), so a few very large
-- customers do not squeeze every other bar into one. Counts and sums only: the report embeds
-- at most $bins + 1 points, whatever the number of customers.
with clv as (
    select clv from marts.customer_360 where clv is not null
),

bounds as (
    select greatest(quantile_cont(clv, 0.99), 1e-9) as cap from clv
),

binned as (
    select
        least(floor(greatest(c.clv, 0) / (b.cap / $bins)), $bins)::integer as bin,
        b.cap,
        c.clv
    from clv as c
    cross join bounds as b
)

select
    bin,
    bin * any_value(cap) / $bins as bin_from,
    case when bin = $bins then max(clv) else (bin + 1) * any_value(cap) / $bins end
        as bin_to,
    bin = $bins as is_overflow,
    count(*) as customers,
    sum(clv) as clv_total
from binned
group by bin
order by bin
