"""Merging a night's new files into staging writes exactly what a rebuild from raw writes.

Each night below delivers files into one inbox; the warehouse that merged them night after night
is compared with a warehouse that loads the same inbox at once and builds staging from raw:
staging rows, quarantine rows and counts must be equal. The nights cover what a merge must
get right: new keys, repeats within a file, a row let through once the customer or invoice it
names arrives, a corrected re-delivery (which invalidates the payments checked against the old
amount), a cumulative re-export of old content (the first delivery of that content stands) and a
bad row in a later file.
"""

from pathlib import Path

import duckdb
import polars as pl
from polars.testing import assert_frame_equal

from features.contracts import CONTRACTS_BY_TABLE
from features.ingest import StagingResult, ingest_group
from features.warehouse import ensure_layout
from pipelines.settings import IngestSettings
from tests.conftest import write_csv

OPTIONS = IngestSettings(reject_threshold=1.0, validate_files=False).options()
ORDER = ("accounts", "invoices", "payments")
HEADERS = {
    "accounts": "customer_id,name,tax_id\n",
    "invoices": "invoice_id,customer_id,issue_date,due_date,amount,currency,document_type\n",
    "payments": "payment_id,invoice_id,payment_date,amount\n",
}
FOLDERS = {
    "accounts": "crm/accounts",
    "invoices": "invoices/invoices",
    "payments": "invoices/payments",
}
NIGHTS: list[dict[str, str]] = [
    {
        "accounts": "A1,First,T1\nA2,Second,T2\n",
        "invoices": "I1,A1,2024-01-05,2024-02-04,100,EUR,invoice\n"
        "I2,A2,2024-01-06,2024-02-05,50,EUR,invoice\n"
        "I3,A9,2024-01-07,2024-02-06,70,EUR,invoice\n"  # unknown customer, for now
        "I2,A2,2024-01-06,2024-02-05,55,EUR,invoice\n",  # repeats I2 in its own file
        "payments": "P1,I1,2024-01-20,40\n"
        "P2,I5,2024-01-21,20\n"  # unknown invoice, for now
        "P3,I2,2024-01-22,500\n",  # larger than the invoice
    },
    {
        "accounts": "A9,Ninth,T9\n",
        "invoices": "I5,A1,2024-02-01,2024-03-02,80,EUR,invoice\n"
        "I6,A2,2024-02-02,2024-03-03,10,EUR,invoice\n"
        "I6,A2,2024-02-02,2024-03-03,11,EUR,invoice\n",
        "payments": "P4,I5,2024-02-10,20\n",
    },
    {  # a corrected amount: P1 (40) now exceeds I1
        "invoices": "I1,A1,2024-01-05,2024-02-04,30,EUR,invoice\n",
    },
    {  # the original I1 delivered again, and a bad date
        "invoices": "I1,A1,2024-01-05,2024-02-04,100,EUR,invoice\n"
        "I7,A2,2024-13-01,2024-03-03,10,EUR,invoice\n",
        "payments": "P5,I3,2024-03-01,70\n",
    },
    {},  # nothing new
]


def deliver(inbox: Path, night: int) -> None:
    for table, rows in NIGHTS[night].items():
        write_csv(inbox / FOLDERS[table] / f"{table}_{night:02d}.csv", HEADERS[table] + rows)


def ingest_all(
    con: duckdb.DuckDBPyConnection, inbox: Path, run_id: str
) -> dict[str, StagingResult]:
    return {
        table: ingest_group(con, inbox, CONTRACTS_BY_TABLE[table], run_id, OPTIONS)
        for table in ORDER
    }


def content(con: duckdb.DuckDBPyConnection) -> dict[str, pl.DataFrame]:
    tables = {
        table: con.sql(f"select * exclude (customer_key) from staging.{table}")
        .pl()
        .sort(CONTRACTS_BY_TABLE[table].key)
        if table == "invoices"
        else con.sql(f"select * from staging.{table}").pl().sort(CONTRACTS_BY_TABLE[table].key)
        for table in ORDER
    }
    tables["quarantine"] = (
        con.sql(
            "select staging_table, source_file, line_number, reason, detail, raw_record::varchar "
            "as raw_record, load_id from quarantine.rejected_rows"
        )
        .pl()
        .sort(["staging_table", "source_file", "line_number"])
    )
    # keys stay dense and each invoice carries its customer's key
    assert con.sql("select count(*) = max(customer_key) from staging.customer_keys").fetchall() == [
        (True,)
    ]
    assert (
        con.sql(
            "select count(*) from staging.invoices i join staging.customer_keys k "
            "using (customer_id, customer_key)"
        ).fetchall()
        == con.sql("select count(*) from staging.invoices").fetchall()
    )
    return tables


def test_merged_nights_equal_a_rebuild_from_raw(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    merged = duckdb.connect(str(tmp_path / "merged.duckdb"))
    ensure_layout(merged)
    builds = []
    for night in range(len(NIGHTS)):
        deliver(inbox, night)
        results = ingest_all(merged, inbox, f"night{night}")
        builds.append({table: result.build for table, result in results.items()})
        rebuilt = duckdb.connect(str(tmp_path / f"rebuilt_{night}.duckdb"))
        ensure_layout(rebuilt)
        fresh = ingest_all(rebuilt, inbox, "fresh")
        assert {t: r.build for t, r in fresh.items()} == dict.fromkeys(ORDER, "rebuilt")
        for table in ORDER:
            counts = [
                (r.raw_rows, r.staged_rows, r.quarantined_rows, r.superseded_rows, r.reasons)
                for r in (results[table], fresh[table])
            ]
            assert counts[0] == counts[1], (night, table)
        expected = content(rebuilt)
        for name, frame in content(merged).items():
            assert_frame_equal(frame, expected[name], check_row_order=True), (night, name)
        rebuilt.close()
    merged.close()
    assert builds == [
        dict.fromkeys(ORDER, "rebuilt"),
        # new accounts let quarantined invoices through; payments merge against new invoices
        dict.fromkeys(ORDER, "merged"),
        # a corrected invoice changes what the payments were checked against
        {"accounts": "kept", "invoices": "merged", "payments": "rebuilt"},
        {"accounts": "kept", "invoices": "merged", "payments": "rebuilt"},
        dict.fromkeys(ORDER, "kept"),
    ]
