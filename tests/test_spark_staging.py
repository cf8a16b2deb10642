"""Staging's typing and checks on Spark stage and quarantine the rows DuckDB does.

The same inbox is ingested twice, once with every stage on DuckDB and once with the typing and
checks of every row (``staging_checks.<table>``) on local Spark, translated from the same SQL;
staging tables and quarantine rows must be equal, value for value. The inbox holds what the
translation has to get right: comma decimals and day-first dates, a mapping's own date format,
exchange rates with gaps, codes in lower case (one day's rate in two spellings) and days before
a currency's first rate, every kind of faulty row the generator makes, and a second delivery
that the merge path takes.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import duckdb
import pytest

from features.contracts import CONTRACTS, CONTRACTS_BY_TABLE
from features.ingest import ingest_group
from features.spark_sql import SparkStages, local_spark
from features.warehouse import ensure_layout, run_stages_on
from pipelines.settings import IngestSettings
from synthetic import generate_demo_data
from synthetic.generator import FAULT_KINDS
from tests.conftest import write_csv
from tests.test_ingest_exports import ERP_PAYMENTS_MAPPING

OPTIONS = IngestSettings(validate_files=False, reject_threshold=1.0).options()
FX = """
rate_date,currency,rate
2024-01-01,USD,0.90
2024-02-01,usd,0.95
2024-02-01,USD,0.96
2024-02-01,GBP,1.15
2024-03-10,USD,0.93
2024-03-10,GBP,1.17
"""
FOREIGN_INVOICES = """
invoice_id,customer_id,issue_date,amount,currency
F1,{c},2023-12-31,100.00,USD
F2,{c},2024-01-01,100.00,USD
F3,{c},2024-01-31,100.00,usd
F4,{c},2024-02-01,100.00,USD
F5,{c},2024-03-09,100.00,Usd
F6,{c},2024-03-10,100.00,USD
F7,{c},2026-06-30,100.00,USD
F8,{c},2024-02-15,100.00,GBP
F9,{c},2024-01-15,100.00,GBP
F10,{c},2024-02-15,100.00,CHF
F11,{c},,100.00,USD
F12,{c},2024-02-15,100.00,
"""
EUROPEAN_INVOICES = """
Document No.;Customer No.;Document Date;Due Date;Amount;Currency Code;Document Type
E-1;{c};05/01/2024;04/02/2024;1.234,50;EUR;Invoice
E-2;{c};31/02/2024;04/02/2024;10,00;EUR;Invoice
E-3;{c};06/01/2024;05/02/2024;12.5;EUR;Invoice
E-4;{c};7/1/2024;5/2/2024;-3,10;usd;Credit Memo
"""
PAYMENTS = (
    "Beleg|Rechnung|Datum|Betrag\nZ1|F2|20.01.2024|60\nZ2|F4|31.02.2024|5\nZ3|F6|1.4.2024|7\n"
    "Z4|F6|20.01.24|7\nZ5|F6|2024-01-20|7\nZ6|F6|020.01.2024|7\n"
)
BANK_MAPPING = """
name = "bank_payments"
group = "invoices/payments"
pattern = "bank/*"
date_format = "%d-%b-%Y"

[columns]
"Ref" = "payment_id"
"Invoice" = "invoice_id"
"Value date" = "payment_date"
"Amount" = "amount"
"""
BANK = (
    "Ref,Invoice,Value date,Amount\nB1,F2,05-jan-2024,1\nB2,F2,5-JAN-2024,1\n"
    "B3,F2,05-Janu-2024,1\nB4,F2,05-01-2024,1\nB5,F2,30-Feb-2024,1\n"
)


def _inbox(root: Path) -> Path:
    inbox = root / "inbox"
    generate_demo_data(inbox, customers=120, seed=5, faults=FAULT_KINDS, fault_rate=0.03)
    customer = next(
        line.split(",")[0] for line in (inbox / "crm/accounts.csv").read_text().splitlines()[1:]
    )
    write_csv(inbox / "fx/rates_2024.csv", FX)
    write_csv(inbox / "invoices/invoices_foreign_2024.csv", FOREIGN_INVOICES.format(c=customer))
    write_csv(inbox / "invoices/accounting/invoices_2024.csv", EUROPEAN_INVOICES.format(c=customer))
    write_csv(inbox / "mappings/erp.toml", ERP_PAYMENTS_MAPPING)
    write_csv(inbox / "erp/zahlungen_2024.csv", PAYMENTS)
    write_csv(inbox / "mappings/bank.toml", BANK_MAPPING)
    write_csv(inbox / "bank/statement_2024.csv", BANK)
    return inbox


def _second_delivery(inbox: Path) -> None:
    """A re-export with one invoice changed, one repeated unchanged and one new, and a rate."""
    customer = (
        (inbox / "invoices/invoices_foreign_2024.csv").read_text().splitlines()[2].split(",")[1]
    )
    write_csv(
        inbox / "invoices/invoices_foreign_2024-03.csv",
        f"invoice_id,customer_id,issue_date,amount,currency\nF2,{customer},2024-01-01,120.00,USD\n"
        f"F3,{customer},2024-01-31,100.00,usd\nF20,{customer},2024-03-11,50.00,GBP\n",
    )
    write_csv(inbox / "fx/rates_2024-03.csv", "rate_date,currency,rate\n2024-03-11,GBP,1.2\n")


def _ingest(con: duckdb.DuckDBPyConnection, inbox: Path, run_id: str) -> None:
    """Every group, each after the tables its checks read (the asset graph's order)."""
    order = TopologicalSorter({c.table: c.depends_on for c in CONTRACTS}).static_order()
    for table in order:
        ingest_group(con, inbox, CONTRACTS_BY_TABLE[table], run_id, OPTIONS)


def _tables(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    """Every staging table and the quarantine, rows sorted, clock readings left out."""
    tables = {
        f"staging.{contract.table}": f"select * from staging.{contract.table}"
        for contract in CONTRACTS
    }
    tables["quarantine"] = "select * exclude (rejected_at) from quarantine.rejected_rows"
    return {name: sorted(con.sql(query).fetchall(), key=str) for name, query in tables.items()}


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    session = local_spark(tmp_path_factory.mktemp("spark-session"))
    yield session
    session.stop()


def test_staging_on_spark_stages_and_quarantines_what_duckdb_does(
    tmp_path: Path, spark: Any
) -> None:
    inbox = _inbox(tmp_path)
    cons = {}
    stages = SparkStages(lambda: spark, tmp_path / "lake")
    for engine in ("duckdb", "spark"):
        con = duckdb.connect(str(tmp_path / f"{engine}.duckdb"))
        ensure_layout(con)
        if engine == "spark":
            run_stages_on(con, stages)
        cons[engine] = con
    nights = []
    for night, run_id in enumerate(("r1", "r2")):
        if night:
            _second_delivery(inbox)
        for con in cons.values():
            _ingest(con, inbox, run_id)
        nights.append({engine: _tables(con) for engine, con in cons.items()})
    ran = {stage.stage for stage in stages.take_stages_run()}
    assert {f"staging_checks.{c.table}" for c in CONTRACTS} <= ran
    for tables in nights:
        for name, rows in tables["duckdb"].items():
            assert tables["spark"][name] == rows, name
    # what the inbox was made to exercise is there: every fault, each rate as of its day, the
    # second night's changed invoice and its new rate, every odd date refused
    assert set(FAULT_KINDS) <= {row[4] for row in nights[0]["duckdb"]["quarantine"]}
    rates = dict(
        cons["duckdb"]
        .sql("select invoice_id, fx_rate from staging.invoices where invoice_id like 'F%'")
        .fetchall()
    )
    assert rates == {
        "F2": 0.90, "F3": 0.90, "F4": 0.96, "F5": 0.96, "F6": 0.93, "F7": 0.93, "F8": 1.15,
        "F12": 1.0, "F20": 1.2,
    }  # fmt: skip
    second = nights[1]["duckdb"]
    payments = {row[0] for row in second["staging.payments"]}
    assert {"Z1", "Z3", "B1", "B2"} <= payments
    assert not {"Z2", "Z4", "Z5", "Z6", "B3", "B4", "B5"} & payments
    for con in cons.values():
        con.close()
    shutil.rmtree(tmp_path / "lake", ignore_errors=True)
