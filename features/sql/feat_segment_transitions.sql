-- Every customer's RFM segment at each as-of date in history next to the one at the previous
-- as-of date in history: the ground both the migration matrix and the who-moved list stand on.
with history as (
    select customer_id, as_of_date, rfm_segment, clv, clv_horizon_days
    from marts.customer_360_history
),

as_of_dates as (
    select
        as_of_date,
        lag(as_of_date) over (order by as_of_date) as previous_as_of_date
    from (select distinct as_of_date from history)
),

current_rows as (
    select
        h.customer_id, h.as_of_date, d.previous_as_of_date, h.rfm_segment, h.clv,
        h.clv_horizon_days
    from history as h
    inner join as_of_dates as d using (as_of_date)
    where d.previous_as_of_date is not null
),

previous_rows as (
    select
        h.customer_id,
        d.as_of_date,
        d.previous_as_of_date,
        h.rfm_segment,
        h.clv,
        h.clv_horizon_days
    from history as h
    inner join as_of_dates as d on h.as_of_date = d.previous_as_of_date
)

select
    coalesce(c.customer_id, p.customer_id) as customer_id,
    coalesce(c.as_of_date, p.as_of_date) as as_of_date,
    coalesce(c.previous_as_of_date, p.previous_as_of_date) as previous_as_of_date,
    -- a customer absent at one of the two dates (no purchase yet, or no longer exported)
    coalesce(p.rfm_segment, '(not listed)') as from_segment,
    coalesce(c.rfm_segment, '(not listed)') as to_segment,
    p.clv as previous_clv,
    c.clv as clv,
    -- what each date's clv covers; they differ when [clv] horizon_days was changed in between
    p.clv_horizon_days as previous_clv_horizon_days,
    c.clv_horizon_days as clv_horizon_days
from current_rows as c
full outer join previous_rows as p
    on c.customer_id = p.customer_id and c.as_of_date = p.as_of_date
