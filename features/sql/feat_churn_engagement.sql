-- CRM engagement per customer at each cutoff in $cutoffs: activities per type in the 90 days
-- before the cutoff and the 90 before those, days since the last one of each type, and the
-- opportunities open at the cutoff or lost/won in the year before it. Only activities dated and
-- opportunities created (or closed) on or before the cutoff count; a deal closed after the
-- cutoff was still open then. The activity export carries no ticket status, so "tickets" are
-- tickets raised in the last 90 days. $sample_fraction keeps the same customers as the purchase
-- history at every cutoff except $as_of.
with cutoffs as (
    select unnest($cutoffs::date[]) as cutoff_date
),

activities as (
    select customer_id, lower(type) as activity_type, occurred_at
    from staging.activities
    where occurred_at <= $as_of::date
),

-- everyone at $as_of, the sample at past cutoffs (sampled before the range join)
activities_at_cutoff as (
    select $as_of::date as cutoff_date, a.*
    from activities as a
    where $as_of::date in (select cutoff_date from cutoffs)
    union all
    select c.cutoff_date, a.*
    from cutoffs as c
    join activities as a on a.occurred_at <= c.cutoff_date
    where c.cutoff_date <> $as_of::date
        and (
            $sample_fraction::double >= 1
            or left(md5(a.customer_id), 8) < lower(lpad(hex(floor($sample_fraction::double * 4294967296)::bigint), 8, '0'))
        )
),

activity_at_cutoff as (
    select
        a.customer_id,
        a.cutoff_date,
        count(*) filter (where a.occurred_at > a.cutoff_date - 90) as activities_90d,
        count(*) filter (
            where a.occurred_at <= a.cutoff_date - 90 and a.occurred_at > a.cutoff_date - 180
        ) as activities_previous_90d,
        count(*) filter (where a.activity_type = 'call' and a.occurred_at > a.cutoff_date - 90)
            as calls_90d,
        count(*) filter (where a.activity_type = 'email' and a.occurred_at > a.cutoff_date - 90)
            as emails_90d,
        count(*) filter (
            where a.activity_type = 'meeting' and a.occurred_at > a.cutoff_date - 90
        ) as meetings_90d,
        count(*) filter (
            where a.activity_type = 'ticket' and a.occurred_at > a.cutoff_date - 90
        ) as tickets_90d,
        date_diff('day', max(a.occurred_at), a.cutoff_date) as days_since_last_activity,
        date_diff('day', max(a.occurred_at) filter (where a.activity_type = 'call'),
            a.cutoff_date) as days_since_last_call,
        date_diff('day', max(a.occurred_at) filter (where a.activity_type = 'meeting'),
            a.cutoff_date) as days_since_last_meeting,
        date_diff('day', max(a.occurred_at) filter (where a.activity_type = 'email'),
            a.cutoff_date) as days_since_last_email
    from activities_at_cutoff as a
    group by a.customer_id, a.cutoff_date
),

opportunities as (
    select customer_id, created_at, closed_at, won
    from staging.opportunities
    where created_at <= $as_of::date
),

opportunities_as_of_cutoff as (
    select $as_of::date as cutoff_date, o.*
    from opportunities as o
    where $as_of::date in (select cutoff_date from cutoffs)
    union all
    select c.cutoff_date, o.*
    from cutoffs as c
    join opportunities as o on o.created_at <= c.cutoff_date
    where c.cutoff_date <> $as_of::date
        and (
            $sample_fraction::double >= 1
            or left(md5(o.customer_id), 8) < lower(lpad(hex(floor($sample_fraction::double * 4294967296)::bigint), 8, '0'))
        )
),

opportunities_at_cutoff as (
    select
        o.customer_id,
        o.cutoff_date,
        count(*) filter (where o.closed_at is null or o.closed_at > o.cutoff_date)
            as open_opportunities,
        count(*) filter (
            where o.closed_at <= o.cutoff_date and o.closed_at > o.cutoff_date - 365
                and not coalesce(o.won, false)
        ) as lost_opportunities_12m,
        count(*) filter (
            where o.closed_at <= o.cutoff_date and o.closed_at > o.cutoff_date - 365 and o.won
        ) as won_opportunities_12m
    from opportunities_as_of_cutoff as o
    group by o.customer_id, o.cutoff_date
),

final as (
    select
        customer_id,
        cutoff_date,
        coalesce(a.activities_90d, 0) as activities_90d,
        coalesce(a.activities_previous_90d, 0) as activities_previous_90d,
        coalesce(a.calls_90d, 0) as calls_90d,
        coalesce(a.emails_90d, 0) as emails_90d,
        coalesce(a.meetings_90d, 0) as meetings_90d,
        coalesce(a.tickets_90d, 0) as tickets_90d,
        a.days_since_last_activity,
        a.days_since_last_call,
        a.days_since_last_meeting,
        a.days_since_last_email,
        coalesce(o.open_opportunities, 0) as open_opportunities,
        coalesce(o.lost_opportunities_12m, 0) as lost_opportunities_12m,
        coalesce(o.won_opportunities_12m, 0) as won_opportunities_12m
    from activity_at_cutoff as a
    full outer join opportunities_at_cutoff as o using (customer_id, cutoff_date)
)

select * from final order by cutoff_date, customer_id
