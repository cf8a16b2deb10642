-- Who moved: one row per customer whose RFM segment changed since the previous as-of date.
with transitions as (
    select * from features.segment_transitions
)

select
    as_of_date,
    previous_as_of_date,
    customer_id,
    from_segment,
    to_segment,
    previous_clv,
    clv,
    clv - previous_clv as clv_change,
    previous_clv_horizon_days,
    clv_horizon_days
from transitions
where from_segment <> to_segment
order by as_of_date, from_segment, to_segment, customer_id
