-- Who is in each RFM segment, with what a campaign needs: value, activity and whether at
-- least one contact gave marketing consent.
with customers as (
    select customer_id, as_of_date, name, country, region, sector, rfm_segment, recency_days,
           frequency, monetary, clv, clv_horizon_days, p_alive
    from marts.customer_360
),

consenting_contacts as (
    select customer_id, count(*) as consenting_contacts
    from staging.contacts
    where marketing_consent
    group by customer_id
),

final as (
    select
        c.*,
        coalesce(k.consenting_contacts, 0) as consenting_contacts,
        coalesce(k.consenting_contacts, 0) > 0 as contactable
    from customers as c
    left join consenting_contacts as k using (customer_id)
)

select * from final order by rfm_segment, clv desc nulls last, customer_id
