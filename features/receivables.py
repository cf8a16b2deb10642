"""Receivables and payment behaviour as of a date (SQL in ``features/sql``), for finance and the
delinquency model.

Two views of the same ledger, each with its documented credit-note rule:

- ``features.receivable_items`` / ``marts.receivables_aging``: exact open amounts to the cent;
  a customer's credit (credit notes, overpayments) clears their oldest open invoices first.
- ``features.invoice_settlement``: when each invoice was settled, for payment behaviour and the
  delinquency label; a credit note corrects the customer's latest invoice issued before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb
import polars as pl

from features.warehouse import materialize_sql, row_count, sql_text, table_exists


@dataclass(frozen=True)
class ReceivablesSummary:
    """Totals of one aging build, for metadata and reconciliation."""

    customers: int
    open_items: int
    total_open: float
    unapplied_credit: float
    unmatched_payments: int


def build_receivables(
    con: duckdb.DuckDBPyConnection, as_of: date, default_payment_terms_days: int
) -> ReceivablesSummary:
    """Write ``features.receivable_items`` and ``marts.receivables_aging`` as of ``as_of``.

    Reads ``features.invoice_settlement``, which must be built as of the same ``as_of`` (the
    invoice_settlement asset upstream does): its payment totals are the invoices' residuals.
    """
    items = materialize_sql(
        con,
        "features.receivable_items",
        "feat_receivable_items",
        as_of=as_of,
        default_payment_terms_days=default_payment_terms_days,
    )
    customers = materialize_sql(
        con, "marts.receivables_aging", "mart_receivables_aging", as_of=as_of
    )
    total_open, unapplied = con.sql(
        "select coalesce(sum(total_open), 0)::double, coalesce(sum(unapplied_credit), 0)::double "
        "from marts.receivables_aging"
    ).fetchall()[0]
    # Payments that reference no known invoice cannot reduce anyone's balance: say how many.
    # Known = counted by the settlement (invoices) or paid against a credit note; counting them
    # this way spares an anti-join of every payment with every document.
    unmatched = con.execute(
        "select (select count(*) from staging.payments where payment_date <= $as_of) "
        "- (select coalesce(sum(payment_count), 0) from features.invoice_settlement) "
        "- (select count(*) from staging.payments where payment_date <= $as_of and invoice_id in "
        "(select invoice_id from staging.invoices "
        "where document_type = 'credit_note' and issue_date <= $as_of))",
        {"as_of": as_of},
    ).fetchall()[0][0]
    return ReceivablesSummary(customers, items, total_open, unapplied, int(unmatched))


def build_dso(con: duckdb.DuckDBPyConnection, as_of: date, months: int = 12) -> float | None:
    """Write ``features.receivables_dso`` (countback DSO); returns the portfolio DSO."""
    materialize_sql(
        con, "features.receivables_dso", "feat_receivables_dso", as_of=as_of, dso_months=months
    )
    rows = con.sql(
        "select dso_days from features.receivables_dso where scope = 'portfolio'"
    ).fetchall()
    return rows[0][0] if rows else None


def build_invoice_settlement(
    con: duckdb.DuckDBPyConnection,
    as_of: date,
    default_payment_terms_days: int,
    settlement_tolerance: float,
    *,
    table: str = "features.invoice_settlement",
    temporary: bool = False,
    sample_fraction: float = 1.0,
    ledger: tuple[str, str] = ("staging.invoices", "staging.payments"),
) -> int:
    """Write invoice settlement (``features.invoice_settlement`` by default) from facts dated on
    or before ``as_of``; ``sample_fraction`` keeps a deterministic share of customers;
    ``ledger`` names the invoices and payments tables to read (a sample built beforehand)."""
    invoices_table, payments_table = ledger
    return materialize_sql(
        con,
        table,
        "feat_invoice_settlement",
        temporary=temporary,
        # one row per invoice: its id is unique and its customer's repeats only a few times
        uncompressed=("customer_id", "invoice_id"),
        as_of=as_of,
        default_payment_terms_days=default_payment_terms_days,
        settlement_tolerance=settlement_tolerance,
        sample_fraction=sample_fraction,
        invoices_table=invoices_table,
        payments_table=payments_table,
    )


# Settlement as of one cutoff, private to the connection (a temp table), so two stages building
# payment behaviour at the same time in one warehouse never read each other's.
SETTLEMENT_AT_CUTOFF = "invoice_settlement_at_cutoff"
# The sampled customers' ledger, private to the connection too, built once for all cutoffs.
LEDGER_SAMPLE = ("ledger_sample_invoices", "ledger_sample_payments")


def build_payment_behaviour(
    con: duckdb.DuckDBPyConnection,
    table: str,
    cutoffs: list[date],
    *,
    default_payment_terms_days: int,
    settlement_tolerance: float,
    whole_ledger: bool = False,
    sample_fraction: float = 1.0,
    whole_ledger_at: date | None = None,
    settlement_table: str | None = None,
) -> int:
    """Write payment-behaviour features per customer and cutoff into ``table``, each cutoff's
    from the ledger as it was known on that cutoff (the only point-in-time way to build them).

    Invoice settlement is rebuilt as of every cutoff: settlement as of a later date would let a
    payment or credit note dated after the cutoff change what the cutoff sees (how much was
    paid, in how many instalments, against what credited amount). ``settlement_table`` reuses a
    settlement already built as of the single cutoff given (the run's own
    ``features.invoice_settlement`` for the as-of snapshot) instead of building it again.

    ``whole_ledger`` scores every invoiced customer (the as-of snapshot); otherwise only
    customers active in the year before each cutoff (training snapshots). ``sample_fraction``
    keeps a deterministic share of customers (by hash of the id) for large training sets, except
    at ``whole_ledger_at``, where every customer is kept (a scoring date inside a history); the
    sample's invoices and payments are copied once (temp tables) and every cutoff reads them.
    Loops over the cutoffs only, never over customers.
    """
    if settlement_table is not None and len(cutoffs) != 1:
        raise ValueError("a prebuilt settlement_table is as of one date: give exactly one cutoff")
    con.execute(f"drop table if exists {table}")
    sampled = settlement_table is None and sample_fraction < 1
    if sampled:  # scan the whole ledger for the sample once, not once per cutoff
        for sample_table, name in zip(LEDGER_SAMPLE, ("invoices", "payments"), strict=True):
            materialize_sql(
                con,
                sample_table,
                f"feat_ledger_sample_{name}",
                temporary=True,
                sample_fraction=sample_fraction,
            )
    for cutoff in sorted(cutoffs):  # a handful of cutoffs
        settlement = settlement_table
        if settlement is None:
            settlement = SETTLEMENT_AT_CUTOFF
            build_invoice_settlement(
                con,
                cutoff,
                default_payment_terms_days,
                settlement_tolerance,
                table=settlement,
                temporary=True,
                ledger=(
                    LEDGER_SAMPLE
                    if sampled and cutoff != whole_ledger_at
                    else ("staging.invoices", "staging.payments")
                ),
            )
        params = {
            "cutoff_date": cutoff,
            "settlement_table": settlement,
            "whole_ledger": whole_ledger,
        }
        behaviour = sql_text("feat_payment_behaviour")
        if table_exists(con, table):
            con.execute(f"insert into {table} {behaviour}", params).fetchall()
        else:
            con.execute(f"create table {table} as {behaviour}", params).fetchall()
    for private in (SETTLEMENT_AT_CUTOFF, *LEDGER_SAMPLE):
        con.execute(f"drop table if exists {private}")
    return row_count(con, table)


def build_delinquency_labels(
    con: duckdb.DuckDBPyConnection,
    cutoffs: list[date],
    horizon_days: int,
    label_days_past_due: int,
    as_of: date,
) -> int:
    """Write ``features.delinquency_labels`` for the snapshots in payment_behaviour_history."""
    late = [c for c in cutoffs if (as_of - c).days < horizon_days]
    if late:
        raise ValueError(f"cutoffs {late} leave less than {horizon_days} days before {as_of}")
    return materialize_sql(
        con,
        "features.delinquency_labels",
        "feat_delinquency_labels",
        cutoffs=cutoffs,
        horizon_days=horizon_days,
        label_days_past_due=label_days_past_due,
    )


def training_snapshots(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Features joined to labels, one row per customer and cutoff."""
    return con.sql(
        "select * from features.payment_behaviour_history "
        "join features.delinquency_labels using (customer_id, cutoff_date) "
        "order by cutoff_date, customer_id"
    ).pl()


def bureau_reports_available(con: duckdb.DuckDBPyConnection, as_of: date) -> bool:
    """Whether any credit report dated on or before ``as_of`` joins a CRM account."""
    return (
        con.execute(
            "select count(*) from staging.credit_reports r join staging.accounts a "
            "using (tax_id) where r.report_date <= ?",
            [as_of],
        ).fetchall()[0][0]
        > 0
    )


def customers_invoiced(con: duckdb.DuckDBPyConnection) -> int:
    return row_count(con, "(select distinct customer_id from staging.invoices)")
