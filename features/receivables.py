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

from features.warehouse import materialize_sql, row_count


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
    """Write ``features.receivable_items`` and ``marts.receivables_aging`` as of ``as_of``."""
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
    unmatched = con.execute(
        "select count(*) from staging.payments p where p.payment_date <= ? and not exists "
        "(select 1 from staging.invoices i where i.invoice_id = p.invoice_id "
        "and i.issue_date <= ?)",
        [as_of, as_of],
    ).fetchall()[0][0]
    return ReceivablesSummary(customers, items, total_open, unapplied, unmatched)


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
) -> int:
    """Write ``features.invoice_settlement`` from facts dated on or before ``as_of``."""
    return materialize_sql(
        con,
        "features.invoice_settlement",
        "feat_invoice_settlement",
        as_of=as_of,
        default_payment_terms_days=default_payment_terms_days,
        settlement_tolerance=settlement_tolerance,
    )


def build_payment_behaviour(
    con: duckdb.DuckDBPyConnection,
    table: str,
    cutoffs: list[date],
    *,
    whole_ledger: bool = False,
    sample_fraction: float = 1.0,
) -> int:
    """Write payment-behaviour features per customer and cutoff into ``table``.

    ``whole_ledger`` scores every invoiced customer (the as-of snapshot); otherwise only
    customers active in the year before each cutoff (training snapshots). ``sample_fraction``
    keeps a deterministic share of customers (by hash of the id) for large training sets.
    """
    return materialize_sql(
        con,
        table,
        "feat_payment_behaviour",
        cutoffs=cutoffs,
        whole_ledger=whole_ledger,
        sample_fraction=sample_fraction,
    )


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
