-- Size, value and reach of each RFM segment.
with members as (
    select * from marts.segment_members
),

final as (
    select
        rfm_segment,
        any_value(as_of_date) as as_of_date,
        count(*) as customers,
        count(*) / sum(count(*)) over () as share_of_customers,
        sum(contactable::int) as contactable_customers,
        round(sum(monetary), 2) as net_revenue,
        round(avg(recency_days), 1) as avg_recency_days,
        round(avg(frequency), 2) as avg_purchases,
        round(sum(clv), 2) as clv_total,
        round(avg(clv), 2) as clv_avg,
        max(clv_horizon_days) as clv_horizon_days,
        round(avg(p_alive), 4) as p_alive_avg
    from members
    group by rfm_segment
)

select * from final order by clv_total desc nulls last
