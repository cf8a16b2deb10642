-- How many customers went from each RFM segment to each other one (or stayed) between every
-- as-of date in history and the previous one.
with transitions as (
    select * from features.segment_transitions
)

select
    as_of_date,
    previous_as_of_date,
    from_segment,
    to_segment,
    from_segment <> to_segment as moved,
    count(*) as customers,
    sum(clv) as clv_total,
    max(clv_horizon_days) as clv_horizon_days
from transitions
group by all
order by as_of_date, from_segment, to_segment
