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

new_documents as (
    select customer_id
    from staging.invoices
    where issue_date <= $as_of::date
        and (
            issue_date > $previous_as_of::date
            or load_id in (select content_hash from new_loads)
        )
),

new_payments as (
    select invoice_id
    from staging.payments
    where payment_date <= $as_of::date
        and (
            payment_date > $previous_as_of::date
            or load_id in (select content_hash from new_loads)
        )
)

select customer_id from new_documents
union
select customer_id from staging.invoices where invoice_id in (select invoice_id from new_payments)
