-- The payments against the sampled customers' documents (temp table ledger_sample_invoices).
select p.*
from staging.payments as p
where p.invoice_id in (select invoice_id from ledger_sample_invoices)
