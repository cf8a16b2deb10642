"""One definition of open: aging, exposure and payment behaviour read the same open items.

The aging (``marts.receivables_aging``), the exposure (``marts.customer_risk`` /
``marts.customer_360``) and the payment-behaviour features (``open_amount``, ``overdue_amount``,
``open_invoices``, ``current_days_past_due``) must agree customer by customer, to the cent, on the
as-of date and at any past cutoff the training snapshots are built at.
"""

import shutil
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest

from features.receivables import (
    build_invoice_settlement,
    build_payment_behaviour,
    build_receivables,
)
from features.warehouse import ensure_layout

CENT = Decimal("0.01")


def _cents(column: str) -> pl.Expr:
    """A double amount as exact cents (the features are doubles, the aging DECIMAL)."""
    return (pl.col(column).cast(pl.Float64) * 100).round(0).cast(pl.Int64)


def test_aging_exposure_and_payment_behaviour_agree_customer_by_customer(
    full_run: tuple[Path, str],
) -> None:
    warehouse, _ = full_run
    with duckdb.connect(str(warehouse), read_only=True) as con:
        joined = con.sql(
            """select
                   c.customer_id,
                   a.total_open,
                   a.max_days_past_due as aging_days_past_due,
                   c.open_exposure,
                   c.max_days_past_due,
                   r.overdue,
                   b.open_amount,
                   b.overdue_amount,
                   b.open_invoices,
                   b.current_days_past_due,
                   (select count(*) from features.receivable_items as i
                    where i.customer_id = c.customer_id and i.open_invoice) as open_items,
                   (select count(*) from staging.invoices as i
                    where i.customer_id = c.customer_id) as documents
               from marts.customer_360 as c
               left join marts.receivables_aging as a using (customer_id)
               left join marts.customer_risk as r using (customer_id)
               left join features.payment_behaviour as b using (customer_id)"""
        ).pl()
    invoiced = joined.filter(pl.col("documents") > 0)
    assert invoiced["open_amount"].null_count() == 0  # every invoiced customer has features
    exposure = pl.max_horizontal(pl.col("total_open").fill_null(Decimal(0)), Decimal(0))
    checks = invoiced.with_columns(
        aging_exposure=(exposure * 100).cast(pl.Int64),
        exposure_cents=_cents("open_exposure"),
        behaviour_cents=_cents("open_amount"),
        overdue_cents=_cents("overdue"),
        behaviour_overdue_cents=_cents("overdue_amount"),
        aging_days=pl.col("aging_days_past_due").fill_null(0),
    )
    # aging total_open = open_exposure = open_amount, to the cent (a credit balance, a negative
    # total_open, is no exposure: both are 0 there)
    assert (checks["aging_exposure"] == checks["exposure_cents"]).all()
    assert (checks["behaviour_cents"] == checks["exposure_cents"]).all()
    owing = checks.filter(pl.col("total_open") >= 0)
    assert (owing["total_open"] == owing["open_exposure"]).all()
    assert (checks["behaviour_overdue_cents"] == checks["overdue_cents"]).all()
    # days past due: features = aging = customer_360
    assert (checks["current_days_past_due"] == checks["aging_days"]).all()
    assert (checks["max_days_past_due"] == checks["aging_days"]).all()
    assert (checks["open_invoices"] == checks["open_items"]).all()
    # nothing open: no open invoice, no day past due
    nothing_open = checks.filter(pl.col("open_exposure") == 0)
    assert (nothing_open["current_days_past_due"] == 0).all()
    assert (nothing_open["open_invoices"] == 0).all()
    # the comparison is not vacuous: many customers owe, many more owe nothing, some have credit
    assert owing.filter(pl.col("open_exposure") > 0).height > 100
    assert nothing_open.height > 100
    assert checks.filter(pl.col("current_days_past_due") > 90).height > 20


def test_a_training_cutoff_sees_the_aging_as_of_that_cutoff(
    full_run: tuple[Path, str], tmp_path: Path
) -> None:
    """Training snapshots (built per cutoff, sampled or not) read the same definition of open as
    the aging built as of the cutoff; nothing dated after the cutoff counts."""
    copy = tmp_path / "copy.duckdb"
    shutil.copy(full_run[0], copy)
    with duckdb.connect(str(copy)) as con:
        cutoff = con.sql("select max(issue_date) - 200 from staging.invoices").fetchall()[0][0]
        build_payment_behaviour(
            con,
            "features.behaviour_at_cutoff",
            [cutoff],
            default_payment_terms_days=30,
            settlement_tolerance=1.0,
            whole_ledger=True,
        )
        build_payment_behaviour(
            con,
            "features.sampled_at_cutoff",
            [cutoff, cutoff + timedelta(days=30)],
            default_payment_terms_days=30,
            settlement_tolerance=1.0,
            sample_fraction=0.5,
        )
        build_invoice_settlement(con, cutoff, 30, 1.0)
        build_receivables(con, cutoff, 30)
        compared = con.sql(
            """select
                   b.customer_id, b.open_amount, b.overdue_amount, b.open_invoices,
                   b.current_days_past_due,
                   greatest(coalesce(a.total_open, 0), 0) as exposure,
                   coalesce(a.max_days_past_due, 0) as aging_days,
                   coalesce(a.dpd_1_30 + a.dpd_31_60 + a.dpd_61_90 + a.dpd_91_180
                            + a.dpd_over_180, 0) as overdue
               from features.behaviour_at_cutoff as b
               left join marts.receivables_aging as a using (customer_id)"""
        ).pl()
        sampled = con.sql(
            """select s.customer_id, s.open_amount, s.current_days_past_due, s.open_invoices,
                      w.open_amount as whole_open_amount,
                      w.current_days_past_due as whole_days, w.open_invoices as whole_invoices
               from features.sampled_at_cutoff as s
               join features.behaviour_at_cutoff as w using (customer_id, cutoff_date)"""
        ).pl()
    assert compared.height > 500
    assert compared.filter(pl.col("exposure") > 0).height > 50
    assert (
        compared.select(_cents("open_amount")).to_series()
        == compared.select(_cents("exposure")).to_series()
    ).all()
    assert (
        compared.select(_cents("overdue_amount")).to_series()
        == compared.select(_cents("overdue")).to_series()
    ).all()
    assert (compared["current_days_past_due"] == compared["aging_days"]).all()
    # a sampled training snapshot of a customer is that customer's whole-ledger snapshot
    assert sampled.height > 100
    assert (sampled["open_amount"] == sampled["whole_open_amount"]).all()
    assert (sampled["current_days_past_due"] == sampled["whole_days"]).all()
    assert (sampled["open_invoices"] == sampled["whole_invoices"]).all()


def write_credit_ledger(con: duckdb.DuckDBPyConnection) -> None:
    """A credit note that clears an older, partly paid invoice while the settlement matches it
    to a later invoice paid in full; and an invoice paid 0.40 short (within the tolerance)."""
    ensure_layout(con)
    con.execute(
        """create table staging.invoices as select * from (values
            ('I1', 'C1', date '2024-12-16', date '2025-01-15', 2389.60, 'invoice'),
            ('I2', 'C1', date '2024-12-20', date '2025-01-19', 500.00, 'invoice'),
            ('CN1', 'C1', date '2024-12-22', null, -843.20, 'credit_note'),
            ('I3', 'C2', date '2025-01-10', date '2025-02-09', 100.00, 'invoice'),
            ('I4', 'C3', date '2025-06-01', date '2025-07-01', 300.00, 'invoice')
        ) as t(invoice_id, customer_id, issue_date, due_date, amount, document_type)"""
    )
    con.execute("alter table staging.invoices alter amount type decimal(18, 2)")
    con.execute(
        """create table staging.payments as select * from (values
            ('P1', 'I1', date '2025-02-18', 1546.40),
            ('P2', 'I2', date '2025-01-05', 500.00),
            ('P3', 'I3', date '2025-02-01', 99.60),
            ('P4', 'I4', date '2025-06-20', 100.00)
        ) as t(payment_id, invoice_id, payment_date, amount)"""
    )
    con.execute("alter table staging.payments alter amount type decimal(18, 2)")
    con.execute("create table staging.accounts (customer_id varchar, tax_id varchar)")
    con.execute(
        "create table staging.credit_reports (tax_id varchar, report_date date, "
        "rating_class varchar, failure_score double, delinquency_score double, "
        "credit_limit decimal(18, 2), legal_events integer)"
    )


@pytest.fixture
def credit_ledger(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    write_credit_ledger(con)
    return con


def test_credit_cleared_and_tolerance_remainders_are_not_open_invoices(
    credit_ledger: duckdb.DuckDBPyConnection,
) -> None:
    con, as_of = credit_ledger, date(2025, 12, 31)
    build_invoice_settlement(con, as_of, 30, 1.0)
    build_receivables(con, as_of, 30)
    build_payment_behaviour(
        con,
        "features.payment_behaviour",
        [as_of],
        default_payment_terms_days=30,
        settlement_tolerance=1.0,
        whole_ledger=True,
        settlement_table="features.invoice_settlement",
        items_table="features.receivable_items",
    )
    # the settlement matched CN1 to I2 (the latest invoice before it): I1 is never "settled"
    unsettled = con.sql(
        "select invoice_id from features.invoice_settlement where settled_date is null order by 1"
    ).fetchall()
    assert unsettled == [("I1",), ("I4",)]
    aging = {
        row[0]: row[1:]
        for row in con.sql(
            "select customer_id, total_open, max_days_past_due from marts.receivables_aging"
        ).fetchall()
    }
    behaviour = {
        row[0]: row[1:]
        for row in con.sql(
            "select customer_id, open_amount, open_invoices, current_days_past_due, "
            "worst_days_past_due_12m from features.payment_behaviour"
        ).fetchall()
    }
    # C1 owes nothing (2889.60 - 843.20 - 2046.40): no open invoice, no days past due
    assert "C1" not in aging
    assert behaviour["C1"] == (0.0, 0, 0, 0)
    # C2 is 0.40 short: in the amounts to the cent, but the invoice is settled (tolerance 1.00)
    assert aging["C2"] == (Decimal("0.40"), 0)
    assert behaviour["C2"][:3] == (0.4, 0, 0)
    # C3 really owes 200 on an invoice 183 days past due: every view says so
    assert aging["C3"] == (Decimal("200.00"), 183)
    assert behaviour["C3"] == (200.0, 1, 183, 183)
