-- Row counts and order-independent checksums (sums of row hashes) of the ledger columns invoice
-- settlement reads, split into rows brought by loads after $since_load_sequence ("new") and all
-- the others ("old"). Settlement refresh compares the old part with the totals it recorded at its
-- previous build: equal means no row it settled from was changed or replaced since (a corrected
-- re-delivery, new FX rates or other ingest settings would change them), so only customers that
-- new rows touch need settling again.
with new_loads as (
    select content_hash from ops.loaded_files
    where outcome = 'loaded' and load_sequence > $since_load_sequence::bigint
),

invoices as (
    select
        coalesce(load_id in (select content_hash from new_loads), false) as is_new,
        hash(invoice_id, customer_id, issue_date, due_date, amount, document_type) as row_hash
    from staging.invoices
),

payments as (
    select
        coalesce(load_id in (select content_hash from new_loads), false) as is_new,
        hash(invoice_id, payment_date, amount) as row_hash
    from staging.payments
)

select
    i.old_invoice_rows, i.old_invoice_checksum, i.new_invoice_rows, i.new_invoice_checksum,
    p.old_payment_rows, p.old_payment_checksum, p.new_payment_rows, p.new_payment_checksum
from (
    select
        count(*) filter (not is_new) as old_invoice_rows,
        coalesce(sum(row_hash) filter (not is_new), 0)::hugeint as old_invoice_checksum,
        count(*) filter (is_new) as new_invoice_rows,
        coalesce(sum(row_hash) filter (is_new), 0)::hugeint as new_invoice_checksum
    from invoices
) as i
cross join (
    select
        count(*) filter (not is_new) as old_payment_rows,
        coalesce(sum(row_hash) filter (not is_new), 0)::hugeint as old_payment_checksum,
        count(*) filter (is_new) as new_payment_rows,
        coalesce(sum(row_hash) filter (is_new), 0)::hugeint as new_payment_checksum
    from payments
) as p
