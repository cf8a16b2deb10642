"""Incremental invoice settlement: after every load and as-of date, the refreshed table holds
exactly the rows a full build gives, and anything the incremental path cannot vouch for
(re-delivered rows, an earlier as-of date, changed settings) rebuilds in full and says why."""

from datetime import date, timedelta
from pathlib import Path

import duckdb
import polars as pl
from polars.testing import assert_frame_equal

from features.contracts import CONTRACTS_BY_TABLE
from features.ingest import ingest_group
from features.receivables import (
    SETTLEMENT,
    build_invoice_settlement,
    refresh_invoice_settlement,
)
from pipelines.settings import IngestSettings, RiskSettings
from tests.test_risk_settlement import TERMS, TOLERANCE, _random_ledger

OPTIONS = IngestSettings(validate_files=False, reject_threshold=1.0).options()
D0, D1, D2 = date(2023, 10, 1), date(2023, 10, 11), date(2023, 10, 31)
NEVER = 100_000  # days: no periodic full build unless a test asks for one
WEEKLY = RiskSettings().settlement_full_rebuild_days


def _ledger() -> tuple[pl.DataFrame, pl.DataFrame]:
    invoices, payments = _random_ledger(seed=11, customers=120)
    payments = payments.with_row_index("n").with_columns(
        payment_id=pl.format("P{}", pl.col("n")), currency=pl.lit("EUR")
    )
    return invoices.with_columns(currency=pl.lit("EUR")), payments.drop("n")


def _deliver(inbox: Path, name: str, invoices: pl.DataFrame, payments: pl.DataFrame) -> None:
    """One delivery: an invoice export and a payment export, as accounting sends them."""
    (inbox / "invoices").mkdir(parents=True, exist_ok=True)
    invoices.write_csv(inbox / f"invoices/invoices_{name}.csv")
    payments.select("payment_id", "invoice_id", "payment_date", "amount", "currency").write_csv(
        inbox / f"invoices/payments_{name}.csv"
    )


def _load(con: duckdb.DuckDBPyConnection, inbox: Path, run: str) -> None:
    for table in ("accounts", "invoices", "payments"):
        result = ingest_group(con, inbox, CONTRACTS_BY_TABLE[table], run, OPTIONS)
        assert result.quarantined_rows == 0, table


def _rows(con: duckdb.DuckDBPyConnection, table: str) -> pl.DataFrame:
    return con.sql(f"select * from {table} order by invoice_id").pl()


def _refresh_matches_a_full_build(
    con: duckdb.DuckDBPyConnection, as_of: date, full_rebuild_days: int = WEEKLY
) -> tuple[str, str, int]:
    refresh = refresh_invoice_settlement(
        con, as_of, TERMS, float(TOLERANCE), full_rebuild_days=full_rebuild_days
    )
    build_invoice_settlement(
        con, as_of, TERMS, float(TOLERANCE), table="full_build", temporary=True
    )
    assert_frame_equal(_rows(con, SETTLEMENT), _rows(con, "full_build"))
    assert refresh.rows == _rows(con, "full_build").height
    return refresh.mode, refresh.reason, refresh.customers_resettled


def test_each_refresh_equals_a_full_build_and_re_settles_only_changed_customers(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    invoices, payments = _ledger()
    customers = invoices.select("customer_id").unique().sort("customer_id")
    inbox = tmp_path / "inbox"
    (inbox / "crm").mkdir(parents=True)
    customers.with_columns(tax_id=pl.col("customer_id")).write_csv(inbox / "crm/accounts.csv")
    # Late history: a tenth of the customers arrive whole in the second delivery (backdated),
    # and so does a tenth of the other customers' payments dated before D0.
    late = pl.col("customer_id").hash(seed=1) % 10 == 0
    late_payment = (pl.col("payment_id").hash(seed=2) % 10 == 0) & (pl.col("payment_date") < D0)
    late_invoices = invoices.filter(late).select("invoice_id")
    paid_late = payments.join(late_invoices, on="invoice_id", how="semi")
    first_invoices = invoices.filter(~late & (pl.col("issue_date") <= D1))
    first_payments = (
        payments.join(first_invoices, on="invoice_id", how="semi")
        .join(paid_late, on="payment_id", how="anti")
        .filter((pl.col("payment_date") <= D1) & ~late_payment)
    )
    _deliver(inbox, "1", first_invoices, first_payments)
    _load(con, inbox, "run-1")

    assert _refresh_matches_a_full_build(con, D0, full_rebuild_days=NEVER)[0] == "full"
    # the next as-of date, nothing loaded: customers with facts dated in between only
    mode, reason, resettled = _refresh_matches_a_full_build(con, D1, full_rebuild_days=NEVER)
    assert mode == "incremental", reason
    assert 0 < resettled < customers.height / 2

    # the second delivery: the rest, late customers and backdated payments included
    _deliver(
        inbox,
        "2",
        invoices.join(first_invoices, on="invoice_id", how="anti"),
        payments.join(first_payments, on="payment_id", how="anti"),
    )
    _load(con, inbox, "run-2")
    for as_of in (D1, D2):  # the same date again (new loads only), then a later one
        mode, _, resettled = _refresh_matches_a_full_build(con, as_of, full_rebuild_days=NEVER)
        assert mode == "incremental"
        assert resettled < customers.height

    # a cumulative re-export (everything again, unchanged) keeps the rows' first loads
    _deliver(inbox, "all", invoices, payments)
    _load(con, inbox, "run-all")
    assert _refresh_matches_a_full_build(con, D2, full_rebuild_days=NEVER)[::2] == (
        "incremental",
        0,
    )

    # a corrected re-delivery replaces a loaded payment: rows read before changed
    corrected = payments.filter(pl.col("payment_date") < D0).head(1)
    corrected = corrected.with_columns(amount=pl.col("amount") / 2)
    _deliver(inbox, "3", invoices.head(0), corrected)
    _load(con, inbox, "run-3")
    mode, reason, _ = _refresh_matches_a_full_build(con, D2, full_rebuild_days=NEVER)
    assert (mode, "re-delivery" in reason) == ("full", True)

    mode, reason, _ = _refresh_matches_a_full_build(con, D1, full_rebuild_days=NEVER)
    assert (mode, "before the previous build" in reason) == ("full", True)
    mode, reason, _ = _refresh_matches_a_full_build(con, D2, full_rebuild_days=15)
    assert (mode, "last full build" in reason) == ("full", True)
    assert _refresh_matches_a_full_build(con, D2 + timedelta(days=1))[0] == "incremental"


def test_changed_settings_or_a_direct_rebuild_forget_the_previous_build(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    invoices, payments = _ledger()
    inbox = tmp_path / "inbox"
    (inbox / "crm").mkdir(parents=True)
    invoices.select("customer_id").unique().with_columns(tax_id=pl.col("customer_id")).write_csv(
        inbox / "crm/accounts.csv"
    )
    _deliver(inbox, "1", invoices, payments)
    _load(con, inbox, "run-1")
    refresh_invoice_settlement(con, D0, TERMS, float(TOLERANCE), full_rebuild_days=WEEKLY)
    changed = refresh_invoice_settlement(
        con, D0, TERMS + 15, float(TOLERANCE), full_rebuild_days=WEEKLY
    )
    assert (changed.mode, "settings" in changed.reason) == ("full", True)
    build_invoice_settlement(con, D1, TERMS, float(TOLERANCE))  # not through refresh
    again = refresh_invoice_settlement(con, D1, TERMS, float(TOLERANCE), full_rebuild_days=WEEKLY)
    assert (again.mode, again.reason) == ("full", "no previous settlement to refresh")
