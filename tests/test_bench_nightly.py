"""bench/bench_nightly.py: night 1 sees nothing of day D, night 2 stages day D's rows once.

One run of the bench at 500 customers (two real ``crm-intel run`` child processes on a real
warehouse), checked against a ledger generated independently with the same parameters.
"""

from __future__ import annotations

import contextlib
import re
from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from bench.bench_nightly import DAY, GENERATED_UNTIL, Night, main, purchase_parameters
from synthetic import generate_demo_data

CUSTOMERS = 500
INVOICES_PER_CUSTOMER = 20
SEED = 42
# Fewer bootstrap draws and training cutoffs, no backtest or GX gate: the nights stay whole
# jobs, in under half the time.
QUICK_SETTINGS = """
[clv]
n_bootstrap = 20
holdout_days = 0
[churn]
training_cutoffs = 3
[ingest]
validate_files = false
"""


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Night], str]:
    """The bench's two nights, kept: (its folder, the nights, what it printed)."""
    folder = tmp_path_factory.mktemp("bench_nightly")
    argv = ["--customers", str(CUSTOMERS), "--invoices-per-customer", str(INVOICES_PER_CUSTOMER)]
    config = folder / "crm-intel.toml"
    config.write_text(QUICK_SETTINGS)
    argv += ["--seed", str(SEED), "--keep", str(folder), "--config", str(config)]
    capture = folder / "printed.txt"
    with capture.open("w") as printed, contextlib.redirect_stdout(printed):
        nights = main(argv)
    return folder, nights, capture.read_text()


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The same ledger, generated here: (invoices, payments)."""
    out = tmp_path_factory.mktemp("ledger")
    params = purchase_parameters(INVOICES_PER_CUSTOMER, CUSTOMERS, SEED, GENERATED_UNTIL)
    generate_demo_data(
        out,
        customers=CUSTOMERS,
        seed=SEED,
        end_date=GENERATED_UNTIL,
        params=params,
        file_format="parquet",
        include=frozenset({"invoices/invoices", "invoices/payments"}),
    )
    return (
        pl.read_parquet(out / "invoices" / "invoices.parquet"),
        pl.read_parquet(out / "invoices" / "payments.parquet"),
    )


def test_night_one_holds_nothing_of_day_d(bench_run, ledger) -> None:
    _, nights, _ = bench_run
    invoices, _ = ledger
    before = invoices.filter(pl.col("issue_date") < DAY).height
    assert nights[0].as_of == DAY - timedelta(days=1)
    assert nights[0].day_invoices_staged == 0
    assert nights[0].invoices == before


def test_night_two_stages_day_d_once(bench_run, ledger) -> None:
    folder, nights, _ = bench_run
    invoices, payments = ledger
    day_invoices = invoices.filter(pl.col("issue_date") == DAY)
    day_payments = payments.filter(pl.col("payment_date") == DAY)
    assert day_invoices.height > 0 and day_payments.height > 0  # else the test proves nothing
    with duckdb.connect(str(folder / "warehouse" / "warehouse.duckdb"), read_only=True) as con:
        staged_ids = con.execute(
            "select invoice_id from staging.invoices where issue_date = $day", {"day": DAY}
        ).fetchall()
        staged_payments = con.execute(
            "select count(*) from staging.payments where payment_date = $day", {"day": DAY}
        ).fetchall()[0][0]
    assert sorted(i for (i,) in staged_ids) == sorted(day_invoices["invoice_id"].to_list())
    assert staged_payments == day_payments.height
    assert nights[1].day_invoices_staged == nights[1].day_invoice_ids_staged == day_invoices.height
    assert nights[1].invoices == invoices.filter(pl.col("issue_date") <= DAY).height
    # The inbox is left as night 1 found it, so a rerun with --inbox starts clean.
    assert not list((folder / "inbox").rglob(f"*_{DAY}.*"))


def test_printed_table_has_both_nights(bench_run) -> None:
    _, _, printed = bench_run
    rows = [line for line in printed.splitlines() if re.match(r"\| night \d", line)]
    assert [row[2:9] for row in rows] == ["night 1", "night 2"]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        customers, invoices, new_rows = (int(cell.replace(",", "")) for cell in cells[1:4])
        assert customers == CUSTOMERS and invoices > 0 and new_rows > 0
        for measured in cells[4:9]:  # wall, CPU, peak RSS, peak disk, warehouse
            assert float(measured.split()[0]) > 0, row
    realised = float(printed.split(" invoices/customer")[0].rsplit("(", 1)[1])
    assert realised == pytest.approx(INVOICES_PER_CUSTOMER, rel=0.05)
    assert "command: python bench/bench_nightly.py --customers 500" in printed
