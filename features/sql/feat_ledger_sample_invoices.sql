-- The invoices and credit notes of a deterministic share of customers, $sample_fraction, chosen
-- by hash of the id with the same rule as feat_invoice_settlement: built once for all the
-- training cutoffs, so each cutoff's settlement reads the sample instead of the whole ledger.
select *
from staging.invoices
where hash(customer_id) % 1000000 < $sample_fraction::double * 1000000
