-- The campaign list for one segment: one row per contact who gave marketing consent.
-- Customers without such a contact are left out on purpose (consent is respected).
-- Reads the published snapshot, whose marts.consenting_contacts holds only consenting contacts
-- (features/publish.py PUBLISHED_TABLES): the others never leave the working warehouse.
with members as (
    select customer_id, name as customer_name, rfm_segment, as_of_date, clv_12m, p_alive,
           recency_days, frequency, monetary
    from marts.segment_members
    where lower(rfm_segment) = lower($segment)
),

consenting_contacts as (
    select contact_id, customer_id, email, phone, role, consent_updated_at
    from marts.consenting_contacts
),

final as (
    select
        m.customer_id,
        m.customer_name,
        k.contact_id,
        k.email,
        k.phone,
        k.role,
        k.consent_updated_at,
        m.rfm_segment,
        m.as_of_date,
        m.recency_days,
        m.frequency,
        m.monetary,
        m.clv_12m,
        m.p_alive
    from members as m
    inner join consenting_contacts as k using (customer_id)
)

select * from final order by clv_12m desc nulls last, customer_id, contact_id
