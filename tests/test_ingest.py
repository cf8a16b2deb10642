"""Staging and quarantine on hand-written exports: every raw row is staged or quarantined."""

from pathlib import Path

import duckdb
import pytest

from features.contracts import CONTRACTS_BY_TABLE
from features.ingest import (
    InboxError,
    build_staging,
    discover_files,
    ingest_group,
    load_new_files,
)
from features.validation import validate_batch
from pipelines.settings import IngestSettings
from tests.conftest import write_csv

INVOICES = CONTRACTS_BY_TABLE["invoices"]
# These tests are about row quarantine, not the file gate: accept any share of bad rows.
DEFAULTS = IngestSettings().options()
NO_GATE = IngestSettings(reject_threshold=1.0, validate_files=False).options()


def test_bad_rows_are_quarantined_with_file_line_and_reason(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    write_csv(
        inbox / "invoices/invoices_2024.csv",
        """
invoice_id,customer_id,issue_date,due_date,amount,currency,document_type
I1,C1,2024-01-05,2024-02-04,100.50,EUR,invoice
I2,C1,2024-13-40,2024-02-04,10,EUR,invoice
I3,,2024-01-07,2024-02-06,10,EUR,invoice
I4,C2,2024-01-08,2024-02-07,12;3x,EUR,invoice
I5,C2,2024-01-09,2024-02-08,25.00,EUR,credit_note
I6,C2,2024-01-10,2024-02-09,30,EUR,bogus
I1,C1,2024-01-05,2024-02-04,100.50,EUR,invoice
""",
    )
    result = ingest_group(con, inbox, INVOICES, run_id="r1", options=NO_GATE)
    assert result.raw_rows == 7
    assert result.staged_rows + result.quarantined_rows == result.raw_rows
    rejected = dict(
        con.sql(
            "select line_number, reason from quarantine.rejected_rows order by line_number"
        ).fetchall()
    )
    assert rejected == {
        3: "bad_date",
        4: "missing_required",
        5: "bad_number",
        7: "not_allowed",
        8: "duplicate_key",  # a key repeated within one file: the first line (2) stands
    }
    files = {
        row[0] for row in con.sql("select source_file from quarantine.rejected_rows").fetchall()
    }
    assert files == {"invoices/invoices_2024.csv"}
    # credit notes are stored negative whatever sign they arrive with
    assert con.sql("select amount from staging.invoices where invoice_id = 'I5'").fetchall() == [
        (pytest.approx(-25.0),)
    ]
    raw = con.sql(
        "select raw_record from quarantine.rejected_rows where line_number = 5"
    ).fetchall()[0][0]
    assert "12;3x" in raw


def test_later_file_wins_for_the_same_key(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    inbox = tmp_path / "inbox"
    header = "invoice_id,customer_id,issue_date,amount\n"
    write_csv(inbox / "invoices/invoices_1.csv", header + "I1,C1,2024-01-05,100\n")
    write_csv(inbox / "invoices/invoices_2.csv", header + "I1,C1,2024-01-05,120\n")
    ingest_group(con, inbox, INVOICES, run_id="r1", options=DEFAULTS)
    assert con.sql("select amount, source_file from staging.invoices").fetchall() == [
        (pytest.approx(120.0), "invoices/invoices_2.csv")
    ]


def test_invoiced_customers_keep_their_key_and_new_ones_are_numbered_after_the_last(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    for run, rows in enumerate(("I1,C7,2024-01-05,100\nI2,C3,2024-01-06,5", "I3,C1,2024-01-07,7")):
        write_csv(
            inbox / f"invoices/invoices_{run}.csv",
            f"invoice_id,customer_id,issue_date,amount\n{rows}\n",
        )
        ingest_group(con, inbox, INVOICES, run_id=f"r{run}", options=NO_GATE)
        if run == 0:
            assert con.sql("select * from staging.customer_keys order by 2").fetchall() == [
                ("C3", 1),
                ("C7", 2),
            ]
    # the new id C1 is merged in after the last key: staged rows keep theirs, keys stay dense
    rows = con.sql(
        "select i.invoice_id, i.customer_key, k.customer_key from staging.invoices i "
        "join staging.customer_keys k using (customer_id) order by 1"
    ).fetchall()
    assert rows == [("I1", 2, 2), ("I2", 1, 1), ("I3", 3, 3)]
    # a rebuild from raw numbers every id in id order again
    build_staging(con, INVOICES, NO_GATE)
    rows = con.sql(
        "select i.invoice_id, i.customer_key, k.customer_key from staging.invoices i "
        "join staging.customer_keys k using (customer_id) order by 1"
    ).fetchall()
    assert rows == [("I1", 3, 3), ("I2", 2, 2), ("I3", 1, 1)]
    # a row added without a key would drop out of the per-customer summary: refused instead
    with pytest.raises(duckdb.ConstraintException, match="customer_key"):
        con.execute(
            "insert into staging.invoices (invoice_id, customer_id, issue_date, amount) "
            "values ('I4', 'C9', date '2024-01-08', 1)"
        )


def test_missing_required_column_names_file_and_column(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    write_csv(
        inbox / "invoices/invoices.csv",
        "invoice_id,customer,issue_date,amount\nI1,C1,2024-01-05,1\n",
    )
    with pytest.raises(InboxError, match=r"invoices\.csv.*customer_id"):
        ingest_group(con, inbox, INVOICES, run_id="r1", options=DEFAULTS)


def test_no_invoice_file_is_an_error_but_optional_sources_degrade(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with pytest.raises(InboxError, match="invoices"):
        ingest_group(con, inbox, INVOICES, run_id="r1", options=DEFAULTS)
    result = ingest_group(
        con, inbox, CONTRACTS_BY_TABLE["credit_reports"], run_id="r1", options=DEFAULTS
    )
    assert not result.present
    # the empty table keeps its typed columns so downstream SQL still runs
    types = {row[0]: row[1] for row in con.sql("describe staging.credit_reports").fetchall()}
    assert types["report_date"] == "DATE"


def test_undecodable_file_names_the_file(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    path = tmp_path / "inbox/invoices/invoices.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(
        "invoice_id,customer_id,issue_date,amount\nI1,C\xe9,2024-01-05,1\n".encode("latin-1")
    )
    with pytest.raises(InboxError, match=r"invoices\.csv"):
        ingest_group(con, tmp_path / "inbox", INVOICES, run_id="r1", options=DEFAULTS)


def test_within_one_file_the_first_line_of_a_key_wins_and_the_rest_are_quarantined(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    write_csv(
        inbox / "invoices/invoices.csv",
        "invoice_id,customer_id,issue_date,amount\n"
        "I1,C1,2024-01-05,100\n"
        "I2,C2,2024-01-06,50\n"
        "I1,C1,2024-01-05,999\n"
        "I1,C1,2024-01-07,777\n",
    )
    result = ingest_group(con, inbox, INVOICES, "r1", NO_GATE)
    assert (result.raw_rows, result.staged_rows, result.quarantined_rows) == (4, 2, 2)
    assert con.sql(
        "select invoice_id, amount::double, line_number from staging.invoices order by 1"
    ).fetchall() == [("I1", pytest.approx(100.0), 2), ("I2", pytest.approx(50.0), 3)]
    losers = con.sql(
        "select line_number, reason, raw_record->>'amount' from quarantine.rejected_rows order by 1"
    ).fetchall()
    assert losers == [(4, "duplicate_key", "999"), (5, "duplicate_key", "777")]


def test_with_contract_checks_off_rows_are_still_typed_and_deduplicated(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    """The bench's unvalidated baseline skips the rules, not the load's own dedup rule."""
    inbox = tmp_path / "inbox"
    header = "invoice_id,customer_id,issue_date,amount,document_type\n"
    write_csv(
        inbox / "invoices/invoices_1.csv",
        header + "I1,C1,2024-01-05,100,invoice\n"
        "I2,C1,2024-13-40,50,invoice\n"
        "I3,C2,2024-01-06,70,bogus\n"
        "I1,C1,2024-01-05,999,invoice\n",
    )
    write_csv(
        inbox / "invoices/invoices_2.csv",
        header + "I3,C2,2024-01-06,75,invoice\nI4,C2,2024-01-07,20,invoice\n",
    )
    files = discover_files(inbox, INVOICES)
    load_new_files(con, files, INVOICES, "r1", NO_GATE)

    counts, _ = build_staging(con, INVOICES, NO_GATE, checks=False)
    staged = "select invoice_id, issue_date::varchar, amount::double, source_file, line_number "
    staged += "from staging.invoices order by 1"
    assert con.sql(staged).fetchall() == [
        ("I1", "2024-01-05", pytest.approx(100.0), "invoices/invoices_1.csv", 2),
        ("I2", None, pytest.approx(50.0), "invoices/invoices_1.csv", 3),
        ("I3", "2024-01-06", pytest.approx(75.0), "invoices/invoices_2.csv", 2),
        ("I4", "2024-01-07", pytest.approx(20.0), "invoices/invoices_2.csv", 3),
    ]
    rejected = "select source_file, line_number, reason from quarantine.rejected_rows order by 1, 2"
    assert con.sql(rejected).fetchall() == [("invoices/invoices_1.csv", 5, "duplicate_key")]
    assert (counts["raw"], counts["staged"], counts["superseded"]) == (6, 4, 1)

    counts, _ = build_staging(con, INVOICES, NO_GATE)
    assert [row[0] for row in con.sql(staged).fetchall()] == ["I1", "I3", "I4"]
    assert con.sql(rejected).fetchall() == [
        ("invoices/invoices_1.csv", 3, "bad_date"),
        ("invoices/invoices_1.csv", 4, "not_allowed"),
        ("invoices/invoices_1.csv", 5, "duplicate_key"),
    ]
    assert (counts["raw"], counts["staged"], counts["superseded"]) == (6, 3, 0)


def test_a_large_file_is_validated_on_the_same_spread_out_sample_every_time(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    lines = [f"I{n},C1,2024-01-05,{'x' if n % 10 == 0 else n}" for n in range(400)]
    write_csv(
        inbox / "invoices/invoices.csv",
        "invoice_id,customer_id,issue_date,amount\n" + "\n".join(lines) + "\n",
    )
    options = IngestSettings(reject_threshold=0.2, validation_sample_rows=50).options()
    result = ingest_group(con, inbox, INVOICES, "r1", options)
    report = result.validations["invoices/invoices.csv"]["great_expectations"]
    assert report["sampled"]
    assert 25 <= report["rows_validated"] <= 75
    load_id = con.sql("select load_id from raw.invoices limit 1").fetchall()[0][0]
    assert validate_batch(con, INVOICES, load_id, 0.2, sample_rows=50) == report
    # every 10th amount does not parse: the sample sees them, wherever they are in the file
    assert validate_batch(con, INVOICES, load_id, 0.0, sample_rows=50)["failed"] == [
        {
            "expectation": "expect_column_values_to_not_be_null",
            "column": "amount",
            "unexpected_count": pytest.approx(report["rows_validated"] / 10, abs=6),
            "unexpected_percent": pytest.approx(10.0, abs=8),
        }
    ]


def test_a_streamed_export_keeps_file_line_numbers_and_a_ragged_line_loads_nothing(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    header = "invoice_id,customer_id,issue_date,amount\n"
    # a blank line is a row (quarantined), so the lines after it keep their file line numbers
    write_csv(
        inbox / "invoices/invoices_1.csv",
        header + "I1,C1,2024-01-05,1\n\nI2,C1,2024-01-05\nI3,C1,2024-99-05,1\n",
    )
    ingest_group(con, inbox, INVOICES, "r1", NO_GATE)
    assert con.sql(
        "select line_number, reason from quarantine.rejected_rows order by 1"
    ).fetchall() == [(3, "missing_required"), (4, "missing_required"), (5, "bad_date")]
    assert con.sql("select invoice_id, line_number from staging.invoices").fetchall() == [("I1", 2)]
    # a line with more fields than the header fails while the file is streamed into raw
    write_csv(inbox / "invoices/invoices_2.csv", header + "I4,C1,2024-01-06,2\nI5,C1,2024,3,4\n")
    with pytest.raises(InboxError, match=r"invoices/invoices_2\.csv: cannot be read as csv"):
        ingest_group(con, inbox, INVOICES, "r2", NO_GATE)
    assert con.sql("select count(*) from raw.invoices").fetchall() == [(4,)]
    assert con.sql("select count(*) from ops.loaded_files").fetchall() == [(1,)]
