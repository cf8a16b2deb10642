-- Customers whose invoice settlement as of $as_of can differ from the previous build's as of
-- $previous_as_of (<= $as_of), given that every row loaded by then is unchanged (checked by
-- feat_settlement_ledger_checksum): those with a document or a payment dated after
-- $previous_as_of and on or before $as_of, or brought by a load after $since_load_sequence
-- (late or backdated facts). A customer's settlement reads only their own documents and the
-- payments to them, so every other customer's rows stay as they were.
with new_loads as (
    select content_hash from ops.loaded_files
    where outcome = 'loaded' and load_sequence > $since_load_sequence::bigint
),

facts as (
    select customer_id, null::varchar as invoice_id, issue_date as fact_date, load_id
    from staging.invoices
    union all
    select null, invoice_id, payment_date, load_id
    from staging.payments
),

new_facts as (
    select customer_id, invoice_id
    from facts
    where fact_date <= $as_of::date
        and (
            fact_date > $previous_as_of::date
            or load_id in (select content_hash from new_loads)
        )
)

-- a document names its customer; a payment names its invoice, whose customer is looked up
select customer_id from new_facts where customer_id is not null
union
select customer_id
from staging.invoices
where invoice_id in (select invoice_id from new_facts where invoice_id is not null)
