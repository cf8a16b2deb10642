"""Invoice settlement against an independent running-sum reference on a random ledger.

The SQL settles invoices paid on a single date from their payment totals and runs the
per-invoice running sums only for invoices paid on several dates; the reference here runs the
running sums for every invoice (the plain definition), in polars.
"""

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.receivables import (
    build_invoice_settlement,
    build_payment_behaviour,
    build_receivables,
    build_risk_alerts,
)
from features.warehouse import ensure_layout

TOLERANCE = Decimal("1.00")
TERMS = 30
SETTLEMENT_COLUMNS = [
    "invoice_id", "customer_id", "issue_date", "due_date", "amount", "credited",
    "first_payment_date", "paid_total", "payment_count", "settled_date", "payments_to_settle",
]  # fmt: skip


def _random_ledger(seed: int = 7, customers: int = 150) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Invoices, credit notes and payments with every shape the settlement must handle: paid in
    full on one date, in two payments on one date, in instalments, partly, over-paid, in
    advance, unpaid, paid after the as-of dates, corrected by credit notes (some issued the same
    day as an invoice, some larger than it), and invoices without a due date."""
    rng = np.random.default_rng(seed)
    documents, payments = [], []
    start = date(2023, 1, 1)
    for customer in range(customers):  # building test data, not pipeline maths
        for k in range(int(rng.integers(1, 12))):
            document_id = f"D{customer:03d}-{k:02d}"
            issued = start + timedelta(days=int(rng.integers(0, 500)))
            if rng.random() < 0.12:
                amount = -Decimal(int(rng.integers(100, 90000))) / 100
                documents.append((document_id, f"C{customer}", issued, None, amount, "credit_note"))
                continue
            amount = Decimal(int(rng.integers(1000, 500000))) / 100
            due = None if rng.random() < 0.1 else issued + timedelta(days=TERMS)
            documents.append((document_id, f"C{customer}", issued, due, amount, "invoice"))
            shape = rng.choice(
                [
                    "one",
                    "same_day_pair",
                    "instalments",
                    "part",
                    "over",
                    "net_of_credit",
                    "prepaid",
                    "none",
                ]
            )
            paid_on = issued + timedelta(days=int(rng.integers(0, 120)))
            half = (amount / 2).quantize(Decimal("0.01"))
            if shape == "net_of_credit":  # a credit note soon after, the rest paid on one date
                credit_note = (f"{document_id}-CN", f"C{customer}", issued, None, -half)
                documents.append((*credit_note, "credit_note"))
                parts = [(paid_on, amount - half)]
            elif shape == "prepaid":  # paid before it was issued (a deposit)
                parts = [(issued - timedelta(days=int(rng.integers(1, 60))), amount)]
            elif shape == "one":
                parts = [(paid_on, amount)]
            elif shape == "same_day_pair":
                parts = [(paid_on, half), (paid_on, amount - half)]
            elif shape == "instalments":
                cut = (amount / 3).quantize(Decimal("0.01"))
                parts = [(paid_on, cut), (paid_on + timedelta(days=20), cut)]
                parts.append((paid_on + timedelta(days=45), amount - 2 * cut))
            elif shape == "part":
                parts = [(paid_on, (amount * Decimal("0.6")).quantize(Decimal("0.01")))]
            elif shape == "over":
                parts = [(paid_on, half), (paid_on + timedelta(days=9), amount)]
            else:
                parts = []
            payments += [(document_id, day, part) for day, part in parts]
    invoices = pl.DataFrame(
        documents,
        schema={
            "invoice_id": pl.String,
            "customer_id": pl.String,
            "issue_date": pl.Date,
            "due_date": pl.Date,
            "amount": pl.Decimal(18, 2),
            "document_type": pl.String,
        },
        orient="row",
    )
    paid = pl.DataFrame(
        payments,
        schema={"invoice_id": pl.String, "payment_date": pl.Date, "amount": pl.Decimal(18, 2)},
        orient="row",
    )
    return invoices, paid


def _reference_settlement(
    invoices: pl.DataFrame, payments: pl.DataFrame, as_of: date
) -> pl.DataFrame:
    """Settlement by the plain definition: running sums of every invoice's payments by date."""
    known = invoices.filter(pl.col("issue_date") <= as_of).with_columns(
        pl.col("due_date").fill_null(pl.col("issue_date") + pl.duration(days=TERMS))
    )
    bills = known.filter(pl.col("document_type") == "invoice")
    credit_notes = known.filter(pl.col("document_type") == "credit_note").select(
        "customer_id", credit_date="issue_date", credit_amount=-pl.col("amount")
    )
    matched = (
        credit_notes.join(bills.select("customer_id", "invoice_id", "issue_date"), on="customer_id")
        .filter(pl.col("issue_date") <= pl.col("credit_date"))
        .sort("issue_date", "invoice_id", descending=True)
        .group_by("customer_id", "credit_date", "credit_amount", maintain_order=True)
        .first()
        .group_by("invoice_id")
        .agg(credited=pl.col("credit_amount").sum(), credit_date=pl.col("credit_date").max())
    )
    running = (
        payments.filter(pl.col("payment_date") <= as_of)
        .group_by("invoice_id", "payment_date")
        .agg(pl.col("amount").sum(), count=pl.len())
        .sort("invoice_id", "payment_date")
        .with_columns(
            paid_to_date=pl.col("amount").cum_sum().over("invoice_id"),
            payments_to_date=pl.col("count").cum_sum().over("invoice_id"),
        )
    )
    targets = bills.join(matched, on="invoice_id", how="left").with_columns(
        credited=pl.col("credited").fill_null(Decimal(0)),
        settle_at=pl.col("amount") - pl.col("credited").fill_null(Decimal(0)) - TOLERANCE,
    )
    reached = (
        targets.join(running, on="invoice_id")
        .group_by("invoice_id")
        .agg(
            first_payment_date=pl.col("payment_date").min(),
            paid_total=pl.col("paid_to_date").max(),
            payment_count=pl.col("payments_to_date").max(),
            paid_in_full_date=pl.col("payment_date")
            .filter(pl.col("paid_to_date") >= pl.col("amount") - TOLERANCE)
            .min(),
            paid_net_date=pl.col("payment_date")
            .filter(pl.col("paid_to_date") >= pl.col("settle_at"))
            .min(),
            payments_to_settle=pl.col("payments_to_date")
            .filter(pl.col("paid_to_date") >= pl.col("settle_at"))
            .min(),
        )
    )
    # paid net of the credit counts from the later of that payment and the credit note
    net_settled = pl.when(pl.col("paid_net_date").is_not_null()).then(
        pl.max_horizontal("paid_net_date", "credit_date")
    )
    return (
        targets.join(reached, on="invoice_id", how="left")
        .with_columns(
            pl.col("paid_total").fill_null(Decimal(0)),
            pl.col("payment_count").fill_null(0),
            settled_date=pl.when(pl.col("settle_at") <= 0)
            .then(pl.col("credit_date"))
            .otherwise(pl.min_horizontal("paid_in_full_date", net_settled)),
        )
        .select(SETTLEMENT_COLUMNS)
    )


def _write_ledger(
    con: duckdb.DuckDBPyConnection, invoices: pl.DataFrame, payments: pl.DataFrame
) -> None:
    ensure_layout(con)
    for table, frame in (("invoices", invoices), ("payments", payments)):
        con.register("ledger_frame", frame)
        con.execute(f"create table staging.{table} as select * from ledger_frame")
        con.unregister("ledger_frame")


def _write_bureau(con: duckdb.DuckDBPyConnection, report_day: date) -> None:
    """One account per customer and one bureau report each on ``report_day``, credit limit 0.01."""
    con.execute(
        "create or replace table staging.accounts as "
        "select distinct customer_id, customer_id as tax_id, 'Firm ' || customer_id as name "
        "from staging.invoices"
    )
    con.execute(
        "create or replace table staging.credit_reports as select tax_id, "
        "$day::date as report_date, 'A1' as rating_class, 50.0 as failure_score, "
        "60.0 as delinquency_score, 0.01::decimal(18, 2) as credit_limit, 0 as legal_events "
        "from staging.accounts",
        {"day": report_day},
    )


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame, pl.DataFrame]:
    invoices, payments = _random_ledger()
    path = tmp_path_factory.mktemp("settlement") / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        _write_ledger(con, invoices, payments)
    return path, invoices, payments


@pytest.mark.parametrize("as_of", [date(2023, 6, 30), date(2023, 11, 15), date(2025, 1, 1)])
def test_settlement_equals_the_running_sum_definition(
    ledger: tuple[Path, pl.DataFrame, pl.DataFrame], as_of: date
) -> None:
    path, invoices, payments = ledger
    with duckdb.connect(str(path)) as con:
        rows = build_invoice_settlement(con, as_of, TERMS, float(TOLERANCE))
        built = con.sql("select * from features.invoice_settlement").pl()
    expected = _reference_settlement(invoices, payments, as_of)
    assert rows == expected.height > 0
    got = built.select(SETTLEMENT_COLUMNS).with_columns(
        pl.col("payment_count", "payments_to_settle").cast(pl.Int64)
    )
    expected = expected.with_columns(pl.col("payment_count", "payments_to_settle").cast(pl.Int64))
    assert_frame_equal(got.sort("invoice_id"), expected.sort("invoice_id"))
    # the ledger exercises both paths: invoices paid on one date and on several by the as-of date
    paid = got.filter(pl.col("payment_count") > 0)
    several = (
        payments.filter(pl.col("payment_date") <= as_of)
        .group_by("invoice_id")
        .agg(dates=pl.col("payment_date").n_unique())
    )
    dates = paid.join(several, on="invoice_id")["dates"]
    assert (dates == 1).sum() > 20 and (dates > 1).sum() > 20


def test_a_credit_note_corrects_the_greatest_invoice_id_of_a_same_day_tie(tmp_path: Path) -> None:
    invoices = pl.DataFrame(
        {
            "invoice_id": ["A-2", "A-10", "A-1"],
            "customer_id": ["C1", "C1", "C1"],
            "issue_date": [date(2024, 3, 1), date(2024, 3, 1), date(2024, 3, 5)],
            "due_date": [None, None, None],
            "amount": [Decimal("100.00"), Decimal("100.00"), Decimal("-40.00")],
            "document_type": ["invoice", "invoice", "credit_note"],
        },
        schema_overrides={"due_date": pl.Date, "amount": pl.Decimal(18, 2)},
    )
    payments = pl.DataFrame(
        {"invoice_id": ["A-2"], "payment_date": [date(2024, 3, 20)], "amount": [Decimal("60")]},
        schema_overrides={"amount": pl.Decimal(18, 2)},
    )
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        _write_ledger(con, invoices, payments)
        for _ in range(3):  # every rerun picks the same invoice
            build_invoice_settlement(con, date(2024, 6, 30), TERMS, 0.0)
            credited = dict(
                con.sql("select invoice_id, credited from features.invoice_settlement").fetchall()
            )
            assert credited == {"A-2": Decimal("40.00"), "A-10": Decimal("0.00")}
        settled = con.sql(
            "select settled_date from features.invoice_settlement where invoice_id = 'A-2'"
        ).fetchall()
    # 60 paid on 03-20 settles A-2 net of the 40 credit ('A-2' > 'A-10' as text)
    assert settled == [(date(2024, 3, 20),)]


def test_exposure_at_the_alert_window_start_is_the_ledger_then(
    ledger: tuple[Path, pl.DataFrame, pl.DataFrame],
) -> None:
    """The over-limit alert's earlier exposure, derived from today's aging and the window's
    documents and payments, equals billed minus paid as of the window start."""
    path, invoices, payments = ledger
    as_of, lookback = date(2023, 11, 15), 31
    window_start = as_of - timedelta(days=lookback)
    with duckdb.connect(str(path)) as con:
        # one report inside the window with a tiny limit: everyone owing anything today is over
        # it, and no earlier limit means every such customer is alerted with the earlier exposure
        _write_bureau(con, window_start + timedelta(days=5))
        build_invoice_settlement(con, as_of, TERMS, float(TOLERANCE))
        build_receivables(con, as_of, TERMS)
        build_risk_alerts(con, as_of, lookback, failure_score_drop=15.0)
        deposits = con.execute(
            "select count(*) from staging.payments join staging.invoices using (invoice_id) "
            "where issue_date > $start and issue_date <= $as_of and payment_date <= $start",
            {"start": window_start, "as_of": as_of},
        ).fetchall()[0][0]
        assert deposits > 0  # payments before the window to documents issued in it
        alerts = con.sql(
            "select customer_id, previous_value, current_value from marts.risk_alerts "
            "where alert_type = 'over_credit_limit'"
        ).pl()

    def ledger_open(day: date) -> pl.DataFrame:
        known = invoices.filter(pl.col("issue_date") <= day)
        paid = payments.filter(pl.col("payment_date") <= day).join(known, on="invoice_id")
        billed = known.group_by("customer_id").agg(billed=pl.col("amount").sum())
        settled = paid.group_by("customer_id").agg(paid=pl.col("amount").sum())
        return billed.join(settled, on="customer_id", how="left").select(
            "customer_id",
            open=pl.max_horizontal(pl.col("billed") - pl.col("paid").fill_null(0), Decimal(0)),
        )

    then, now = ledger_open(window_start), ledger_open(as_of)
    expected = now.filter(pl.col("open") > Decimal("0.01")).join(
        then, on="customer_id", how="left", suffix="_then"
    )
    got = alerts.with_columns(
        pl.col("previous_value", "current_value").map_elements(Decimal, return_dtype=pl.Object)
    )
    assert got.height == expected.height > 50
    joined = got.join(expected, on="customer_id")
    then_open = joined["open_then"].fill_null(Decimal(0)).to_list()
    assert joined["previous_value"].to_list() == then_open
    assert joined["current_value"].to_list() == joined["open"].to_list()
    # the window moved balances: an exposure derived without the window's facts would not match
    assert sum(a != b for a, b in zip(then_open, joined["open"].to_list(), strict=True)) > 20


def test_a_sampled_history_is_the_whole_history_of_the_sampled_customers(
    ledger: tuple[Path, pl.DataFrame, pl.DataFrame],
) -> None:
    """Training snapshots on a customer sample (its ledger copied once for every cutoff) equal
    the whole ledger's snapshots of those customers; the scoring date keeps everyone."""
    path, _, _ = ledger
    cutoffs, scoring_day = [date(2023, 6, 30), date(2023, 11, 15)], date(2024, 3, 1)
    with duckdb.connect(str(path)) as con:
        _write_bureau(con, date(2023, 5, 1))

        def history(sample_fraction: float) -> pl.DataFrame:
            build_payment_behaviour(
                con,
                "features.payment_behaviour_history",
                [*cutoffs, scoring_day],
                default_payment_terms_days=TERMS,
                settlement_tolerance=float(TOLERANCE),
                whole_ledger=True,
                sample_fraction=sample_fraction,
                whole_ledger_at=scoring_day,
            )
            return con.sql("select * from features.payment_behaviour_history").pl()

        whole, sampled = history(1.0), history(0.5)
        in_sample = con.sql(
            "select distinct customer_id from staging.invoices "
            "where left(md5(customer_id), 8) < '80000000'"  # half of the first 32 bits
        ).pl()["customer_id"]
    past = pl.col("cutoff_date") < scoring_day
    expected = whole.filter(~past | pl.col("customer_id").is_in(in_sample.implode()))
    assert 0 < sampled.filter(past).height < whole.filter(past).height
    assert sampled.filter(~past).height == whole.filter(~past).height
    order = ["cutoff_date", "customer_id"]
    assert_frame_equal(sampled.sort(order), expected.sort(order))
