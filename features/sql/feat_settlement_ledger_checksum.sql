-- Row counts and order-independent checksums (sums of row hashes) of the ledger columns invoice
-- settlement reads, per ledger table, split into rows brought by loads after
-- $since_load_sequence (is_new) and all the others. Settlement refresh compares the old part with
-- the totals it recorded at its previous build: equal means no row it settled from was changed
-- or replaced since (a corrected re-delivery, new FX rates or other ingest settings would change
-- them), so only customers that new rows touch need settling again.
with new_loads as (
    select content_hash from ops.loaded_files
    where outcome = 'loaded' and load_sequence > $since_load_sequence::bigint
),

ledger as (
    select
        'invoices' as ledger_table,
        load_id,
        hash(invoice_id, customer_id, issue_date, due_date, amount, document_type) as row_hash
    from staging.invoices
    union all
    select 'payments', load_id, hash(invoice_id, payment_date, amount)
    from staging.payments
)

select
    ledger_table,
    coalesce(load_id in (select content_hash from new_loads), false) as is_new,
    count(*) as row_count,
    sum(row_hash)::hugeint as checksum
from ledger
group by all
