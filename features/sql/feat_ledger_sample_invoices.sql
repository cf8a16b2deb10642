-- The invoices and credit notes of a deterministic share of customers, $sample_fraction, chosen
-- by the md5 of the id (alike on every engine) with the same rule as feat_invoice_settlement:
-- built once for all the training cutoffs, so each cutoff's settlement reads the sample instead
-- of the whole ledger.
select *
from staging.invoices
where left(md5(customer_id), 8) < lower(lpad(hex(floor($sample_fraction::double * 4294967296)::bigint), 8, '0'))
