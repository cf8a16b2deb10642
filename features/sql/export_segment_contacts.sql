-- The campaign list for one segment: every contact who gave marketing consent, with what a
-- marketer filters and sorts on, and why a contact is left out (NULL: on the list).
-- Customers without a consenting contact are not here at all (consent is respected): the
-- published snapshot's marts.consenting_contacts holds only consenting contacts
-- (features/publish.py PUBLISHED_TABLES); the others never leave the working warehouse.
--   left_out_because  the first that applies, in this order:
--     do-not-contact  the e-mail address, contact id or customer id is on the do-not-contact
--                     list (relation do_not_contact_list, registered by the caller)
--     closed          $exclude_closed and the account is closed in the CRM
--     credit-hold     $exclude_credit_hold and the delinquency class is E
--     high-churn      $exclude_high_churn and the churn risk band is high
--     duplicate-email another contact left on the list has the same address (case and spaces
--                     ignored) at a higher-value customer: highest clv, then monetary,
--                     then the lowest customer id and contact id
-- Money is rounded to cents, probabilities to three decimals.
with members as (
    select customer_id, name as customer_name, rfm_segment, as_of_date, recency_days, frequency,
           monetary, clv, clv_horizon_days, p_alive
    from marts.segment_members
    where lower(rfm_segment) = lower($segment)
),

profiles as (
    select customer_id, country, sector, account_status, churn_probability, churn_risk_band,
           delinquency_class
    from marts.customer_360
),

consenting_contacts as (
    select contact_id, customer_id,
           nullif(concat_ws(' ', first_name, last_name), '') as contact_name,
           email, phone, role, consent_updated_at,
           nullif(regexp_replace(lower(email), '\s', '', 'g'), '') as email_key
    from marts.consenting_contacts
),

do_not_contact as (
    select nullif(regexp_replace(lower(email), '\s', '', 'g'), '') as email_key, contact_id,
           customer_id
    from do_not_contact_list
),

candidates as (
    select
        m.customer_id,
        m.customer_name,
        k.contact_id,
        k.contact_name,
        k.email,
        k.phone,
        k.role,
        p.country,
        p.sector,
        p.account_status,
        m.rfm_segment,
        round(p.churn_probability, 3) as churn_probability,
        p.churn_risk_band,
        p.delinquency_class,
        m.recency_days,
        m.frequency,
        round(m.monetary, 2) as monetary,
        round(m.clv, 2) as clv,
        m.clv_horizon_days,
        round(m.p_alive, 3) as p_alive,
        m.as_of_date,
        k.consent_updated_at,
        k.email_key,
        m.clv as clv_unrounded,
        m.monetary as monetary_unrounded,
        case
            when k.email_key in (select email_key from do_not_contact where email_key is not null)
                or k.contact_id in (select contact_id from do_not_contact where contact_id is not null)
                or m.customer_id in (
                    select customer_id from do_not_contact where customer_id is not null
                )
                then 'do-not-contact'
            when $exclude_closed and p.account_status = 'closed' then 'closed'
            when $exclude_credit_hold and p.delinquency_class = 'E' then 'credit-hold'
            when $exclude_high_churn and p.churn_risk_band = 'high' then 'high-churn'
        end as suppressed_by
    from members as m
    inner join consenting_contacts as k using (customer_id)
    left join profiles as p using (customer_id)
),

-- a contact without an address is its own group: nothing to merge it with
ranked as (
    select
        *,
        row_number() over (
            partition by
                suppressed_by is null,
                email_key,
                case when email_key is null then contact_id end
            order by clv_unrounded desc nulls last, monetary_unrounded desc nulls last,
                customer_id, contact_id
        ) as address_rank
    from candidates
),

final as (
    select
        * exclude (email_key, clv_unrounded, monetary_unrounded, suppressed_by, address_rank),
        coalesce(suppressed_by, case when address_rank > 1 then 'duplicate-email' end)
            as left_out_because
    from ranked
)

select * from final order by clv desc nulls last, customer_id, contact_id
