"""The input edge with real exports: workbooks with several sheets, repeated columns, amounts
finer than a cent, links leading out of the inbox, huge bad lines, files removed after loading.

Every bad input is a small file written by the test into a temp inbox; real DuckDB files, real
Dagster materializations and the CLI."""

import datetime as dt
import json
import logging
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
import xlsxwriter
from typer.testing import CliRunner

from features.contracts import CONTRACTS_BY_TABLE
from features.ingest import EXCERPT_CHARS, InboxError, ingest_group
from pipelines.cli import app
from pipelines.ingest.assets import staging_assets
from pipelines.resources import Inbox, Warehouse
from pipelines.settings import IngestSettings, default_settings_resources
from tests.conftest import staged_metadata, write_csv

ACCOUNTS = CONTRACTS_BY_TABLE["accounts"]
INVOICES = CONTRACTS_BY_TABLE["invoices"]
PAYMENTS = CONTRACTS_BY_TABLE["payments"]
FAST = IngestSettings(validate_files=False).options()
HEADER = "invoice_id,customer_id,issue_date,amount\n"
# A line of another system's password file: it must never be read, quoted or stored.
SECRET = "root:x:0:0:root:/root:/bin/bash"


def _rows(con: duckdb.DuckDBPyConnection, query: str) -> list[tuple]:
    return con.sql(query).fetchall()


def _invoices(ids: list[str], amounts: list[float]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "invoice_id": ids,
            "customer_id": ["C1"] * len(ids),
            "issue_date": [dt.date(2024, 1, 5)] * len(ids),
            "amount": amounts,
        }
    )


def _workbook(path: Path, sheets: dict[str, pl.DataFrame | None]) -> Path:
    """An XLSX export with the given sheets (None: a blank sheet)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with xlsxwriter.Workbook(path) as book:
        for name, frame in sheets.items():
            if frame is None:
                book.add_worksheet(name)
            else:
                frame.write_excel(book, worksheet=name)
    return path


def _report(con: duckdb.DuckDBPyConnection, source_file: str) -> dict:
    (validation,) = _rows(
        con, f"select validation from ops.loaded_files where source_file = '{source_file}'"
    )[0]
    return json.loads(validation)


# --- workbooks: every sheet, or the one a mapping names --------------------------------------


def test_every_sheet_of_a_workbook_is_loaded_and_rows_name_their_sheet(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    _workbook(
        inbox / "invoices/invoices_2024.xlsx",
        {
            "January": _invoices(["I1", "I2"], [10.0, 20.0]),
            "February": _invoices(["I3"], [30.0]),
            "Notes": None,
        },
    )
    result = ingest_group(con, inbox, INVOICES, "r1", FAST)
    assert result.staged_rows == 3
    assert _rows(
        con, "select invoice_id, source_file, line_number from staging.invoices order by 1"
    ) == [
        ("I1", "invoices/invoices_2024.xlsx[January]", 2),
        ("I2", "invoices/invoices_2024.xlsx[January]", 3),
        ("I3", "invoices/invoices_2024.xlsx[February]", 2),
    ]
    report = _report(con, "invoices/invoices_2024.xlsx")
    assert report["sheets"] == {"January": 2, "February": 1}
    assert report["sheets_not_loaded"] == {"Notes": "blank"}
    assert result.warnings == ()  # a blank sheet is recorded, not warned about


def test_a_sheet_with_other_columns_fails_the_file_naming_file_sheet_and_column(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    summary = pl.DataFrame({"customer_id": ["C1"], "total": [30.0]})
    _workbook(
        inbox / "invoices/invoices_2024.xlsx",
        {"Invoices": _invoices(["I1"], [10.0]), "Summary": summary},
    )
    with pytest.raises(
        InboxError,
        match=r"invoices/invoices_2024\.xlsx sheet 'Summary': other columns than sheet "
        r"'Invoices' \(no column amount, invoice_id, issue_date; extra column total\)",
    ):
        ingest_group(con, inbox, INVOICES, "r1", FAST)
    assert _rows(con, "select count(*) from ops.loaded_files") == [(0,)]


def test_a_mapping_names_the_sheet_and_the_other_sheets_are_reported(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    summary = pl.DataFrame({"customer_id": ["C1"], "total": [30.0]})
    _workbook(
        inbox / "invoices/erp/journal.xlsx",
        {"Summary": summary, "Invoices": _invoices(["I1", "I2"], [10.0, 20.0])},
    )
    write_csv(
        inbox / "mappings/erp.toml",
        'name = "erp"\ngroup = "invoices/invoices"\npattern = "invoices/erp/*"\n'
        'sheet = "Invoices"\n',
    )
    result = ingest_group(con, inbox, INVOICES, "r1", FAST)
    assert result.staged_rows == 2
    assert _rows(con, "select distinct source_file from staging.invoices") == [
        ("invoices/erp/journal.xlsx",)
    ]
    assert result.warnings == (
        "invoices/erp/journal.xlsx: sheet(s) 'Summary' not loaded "
        "(mapping 'erp' names sheet 'Invoices')",
    )
    report = _report(con, "invoices/erp/journal.xlsx")
    assert report["sheets_not_loaded"] == {"Summary": "mapping 'erp' names sheet 'Invoices'"}


# --- repeated columns -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "header", "message"),
    [
        (
            "invoices/invoices.csv",
            "invoice_id,customer_id,issue_date,amount,amount",
            r"invoices/invoices\.csv: duplicate column amount \('amount' in column 4 and "
            r"'amount' in column 5\)",
        ),
        (  # equal once trimmed and lower-cased, as headers are matched
            "invoices/invoices.csv",
            "invoice_id,customer_id,issue_date,Amount, amount ",
            r"invoices/invoices\.csv: duplicate column amount \('Amount' in column 4 and "
            r"' amount ' in column 5\)",
        ),
        (  # two export headers the shipped mapping sends to one canonical column
            "invoices/accounting/invoice_journal.csv",
            "Document No.;Customer No.;Document Date;Amount;Amount Incl. VAT",
            r"invoices/accounting/invoice_journal\.csv: duplicate column amount \('Amount' in "
            r"column 4 and 'Amount Incl\. VAT' in column 5\) \(mapping 'accounting_invoices'\)",
        ),
    ],
)
def test_a_csv_with_a_repeated_column_fails_naming_file_and_column(
    tmp_path: Path, con: duckdb.DuckDBPyConnection, name: str, header: str, message: str
) -> None:
    inbox = tmp_path / "inbox"
    separator = ";" if ";" in header else ","
    values = separator.join(["I1", "C1", "2024-01-05", "10", "12"])
    if separator == ";":
        values = "I1;C1;05/01/2024;10;12"
    write_csv(inbox / name, f"{header}\n{values}\n")
    with pytest.raises(InboxError, match=message):
        ingest_group(con, inbox, INVOICES, "r1", FAST)
    assert _rows(con, "select count(*) from ops.loaded_files") == [(0,)]


def test_an_xlsx_with_a_repeated_column_fails_naming_file_sheet_and_column(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    path = tmp_path / "inbox/invoices/invoices.xlsx"
    path.parent.mkdir(parents=True)
    with xlsxwriter.Workbook(path) as book:
        sheet = book.add_worksheet("Invoices")
        sheet.write_row(0, 0, ["invoice_id", "customer_id", "issue_date", "amount", "amount"])
        sheet.write_row(1, 0, ["I1", "C1", "2024-01-05", 10, 12])
    with pytest.raises(
        InboxError,
        match=r"invoices/invoices\.xlsx sheet 'Invoices': duplicate column amount "
        r"\('amount' in column 4 and 'amount' in column 5\)",
    ):
        ingest_group(con, tmp_path / "inbox", INVOICES, "r1", FAST)


# --- amounts finer than a cent ----------------------------------------------------------------


def test_amounts_with_more_than_two_decimals_are_rounded_to_the_cent_and_reported(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    write_csv(
        inbox / "invoices/invoices.csv",
        HEADER + "I1,C1,2024-01-05,1.234\nI2,C1,2024-01-05,0.005\n"
        "I3,C1,2024-01-05,2.50\nI4,C1,2024-01-05,3.1000\nI5,C1,2024-01-05,2.675\n",
    )
    result = ingest_group(
        con, inbox, INVOICES, "r1", IngestSettings(reject_threshold=1.0).options()
    )
    assert _rows(con, "select invoice_id, amount from staging.invoices order by 1") == [
        ("I1", Decimal("1.23")),
        ("I2", Decimal("0.01")),
        ("I3", Decimal("2.50")),
        ("I4", Decimal("3.10")),
        ("I5", Decimal("2.68")),  # decimal, not binary float: 2.675 is 2.68
    ]
    assert result.warnings == (
        "invoices/invoices.csv: 3 amount value(s) with more than two decimals rounded to the "
        "cent (half away from zero), e.g. line 2: 1.234 stored as 1.23",
    )
    assert _report(con, "invoices/invoices.csv")["rounded_to_cent"] == {"amount": 3}


def test_comma_decimal_amounts_are_judged_with_their_decimal_mark(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    write_csv(
        inbox / "invoices/accounting/invoice_journal.csv",
        "Document No.;Customer No.;Document Date;Amount\n"
        "F1;C1;05/01/2024;1.234,50\nF2;C1;05/01/2024;7,125\n",
    )
    result = ingest_group(con, inbox, INVOICES, "r1", FAST)
    assert _rows(con, "select amount from staging.invoices order by 1") == [
        (Decimal("7.13"),),
        (Decimal("1234.50"),),
    ]
    assert result.warnings == (
        "invoices/accounting/invoice_journal.csv: 1 amount value(s) with more than two decimals "
        "rounded to the cent (half away from zero), e.g. line 3: 7,125 stored as 7.13",
    )


# Raw text and what a column of each type makes of it (None: the row is quarantined as a bad
# number or date). Values a cast would take but no export means stay out: not-a-number,
# infinity, digit separators, hex, a fraction in an integer column, a bare year.
ODD_VALUES: dict[str, list[tuple[str, object]]] = {
    "date": [
        ("2024-01-05", dt.date(2024, 1, 5)),
        ("2024-1-5", dt.date(2024, 1, 5)),
        ("2024/01/05", dt.date(2024, 1, 5)),
        ("2024-01-05 10:30:00", dt.date(2024, 1, 5)),
        ("2024-01-05T10:30:00.123+01:00", dt.date(2024, 1, 5)),
        ("2024-02-29", dt.date(2024, 2, 29)),
        ("2023-02-29", None),
        ("2024", None),
        ("2024-01", None),
        ("20240105", None),
        ("-2024-01-05", None),
        ("2024-01-05 (BC)", None),
        ("10000-01-01", None),
        ("05-01-2024", None),
        ("2024-01-05x", None),
    ],
    "decimal": [
        ("12.345", Decimal("12.35")),
        ("-12.345", Decimal("-12.35")),
        ("1e3", Decimal("1000.00")),
        (".5", Decimal("0.50")),
        ("+5", Decimal("5.00")),
        ("00012.1", Decimal("12.10")),
        ("1_000", None),
        ("0x1A", None),
        ("nan", None),
        ("inf", None),
        ("1.2.3", None),
        ("123456789012345678", None),
    ],
    "number": [
        ("0.1", 0.1),
        ("1e3", 1000.0),
        ("5.", 5.0),
        ("1e400", None),
        ("nan", None),
        ("NaN", None),
        ("inf", None),
        ("-Infinity", None),
        ("1d", None),
    ],
    "integer": [
        ("12", 12),
        ("-0", 0),
        ("3.0", 3),
        ("1.5", None),
        ("1e3", None),
        ("0x1A", None),
        ("1_000", None),
        ("99999999999999999999", None),
    ],
}


def test_values_no_export_means_are_bad_numbers_and_dates(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    """Through staging, one bureau report per odd value: typed as ``ODD_VALUES`` says, or
    quarantined as a bad date or number with file and line."""
    reports = CONTRACTS_BY_TABLE["credit_reports"]
    columns = {"date": "report_date", "decimal": "credit_limit", "number": "failure_score",
               "integer": "legal_events"}  # fmt: skip
    lines, expected = [], {}
    for kind, cases in ODD_VALUES.items():
        for raw, typed in cases:
            tax_id = f"T{len(lines)}"
            values = {"report_date": "2024-06-30"} | {columns[kind]: raw}
            lines.append(",".join([tax_id] + [values.get(c, "") for c in list(columns.values())]))
            expected[tax_id] = (kind, typed)
    write_csv(
        tmp_path / "inbox/credit/reports.csv",
        "tax_id," + ",".join(columns.values()) + "\n" + "\n".join(lines) + "\n",
    )
    options = IngestSettings(validate_files=False, reject_threshold=1.0).options()
    ingest_group(con, tmp_path / "inbox", reports, "r1", options)
    staged = {
        row[0]: row[1:]
        for row in _rows(
            con, f"select tax_id, {', '.join(columns.values())} from staging.credit_reports"
        )
    }
    rejected = dict(_rows(con, "select line_number, reason from quarantine.rejected_rows"))
    for line, (tax_id, (kind, typed)) in enumerate(expected.items(), start=2):
        if typed is None:
            reason = "bad_date" if kind == "date" else "bad_number"
            assert rejected.get(line) == reason, (tax_id, kind, lines[line - 2])
        else:
            value = staged[tax_id][list(columns).index(kind)]
            assert value == typed, (tax_id, kind, lines[line - 2], value)


# --- the inbox is a boundary; errors quote short excerpts --------------------------------------


def test_a_link_to_a_file_outside_the_inbox_is_refused_never_read(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    write_csv(inbox / "invoices/invoices.csv", HEADER + "I1,C1,2024-01-05,10\n")
    secret = write_csv(tmp_path / "elsewhere/passwd", SECRET + "\n")
    (inbox / "invoices/invoices_more.csv").symlink_to(secret)
    # a link that stays inside the inbox is an ordinary delivery
    write_csv(inbox / "archive/march.csv", HEADER + "I2,C1,2024-03-05,20\n")
    (inbox / "invoices/invoices_march.csv").symlink_to(inbox / "archive/march.csv")

    result = ingest_group(con, inbox, INVOICES, "r1", FAST)
    assert _rows(con, "select invoice_id from staging.invoices order by 1") == [("I1",), ("I2",)]
    assert result.warnings == (
        f"invoices/invoices_more.csv: refused, not loaded: it is a link to {secret.resolve()}, "
        "outside the inbox; copy the export into the inbox instead",
    )
    assert _rows(
        con,
        "select outcome, rows from ops.loaded_files "
        "where source_file = 'invoices/invoices_more.csv'",
    ) == [("refused", 0)]
    stored = _rows(con, "select string_agg(to_json(f)::varchar, '') from ops.loaded_files f")
    assert SECRET not in stored[0][0]
    # the next run says it again and records it once
    assert ingest_group(con, inbox, INVOICES, "r2", FAST).warnings == result.warnings
    assert _rows(con, "select count(*) from ops.loaded_files where outcome = 'refused'") == [(1,)]


def test_a_bad_line_is_quoted_as_a_short_excerpt_never_the_whole_file(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    # one unbalanced quote: the reader sees the rest of the file as one field
    row = "I3,C3,2024-01-05,3," + "x" * 100 + "\n"
    write_csv(
        inbox / "invoices/invoices.csv",
        "invoice_id,customer_id,issue_date,amount,note\n"
        'I1,C1,2024-01-05,1,ok\nI2,"C2,2024-01-05,2,open quote\n' + row * 3000,
    )
    with pytest.raises(InboxError) as raised:
        ingest_group(con, inbox, INVOICES, "r1", FAST)
    message = str(raised.value)
    assert message.startswith("invoices/invoices.csv: cannot be read as csv:")
    assert "characters left out" in message
    assert len(message) < 2 * EXCERPT_CHARS + 200
    assert "\n" not in message


def test_a_huge_header_without_the_required_columns_is_quoted_in_short(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    write_csv(inbox / "invoices/invoices.csv", ",".join(f"col{n}" for n in range(20_000)) + "\n")
    with pytest.raises(InboxError, match=r"missing required column") as raised:
        ingest_group(con, inbox, INVOICES, "r1", FAST)
    assert len(str(raised.value)) < 1000


def test_the_cli_and_the_failure_record_quote_a_bad_line_in_short(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    row = "I3,C3,2024-01-05,3," + "y" * 200 + "\n"
    write_csv(
        inbox / "invoices/invoices.csv",
        "invoice_id,customer_id,issue_date,amount,note\n"
        'I1,C1,2024-01-05,1,ok\nI2,"C2,2024-01-05,2,open quote\n' + row * 2000,
    )
    warehouse = tmp_path / "warehouse.duckdb"
    result = CliRunner().invoke(app, ["run", "--inbox", str(inbox), "--warehouse", str(warehouse)])
    assert result.exit_code == 1
    assert "invoices/invoices.csv: cannot be read as csv" in result.output
    assert result.output.count("y") < 1000, len(result.output)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        (reason,) = con.sql("select reason from ops.run_failures").fetchall()[0]
    assert "invoices/invoices.csv: cannot be read as csv" in reason
    assert len(reason) < 1500


# --- a file removed after loading ------------------------------------------------------------


def _accounts_asset() -> dg.AssetsDefinition:
    return next(a for a in staging_assets if dg.AssetKey(["staging", "accounts"]) in a.keys)


def _warnings(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [
        entry.user_message
        for entry in instance.all_logs(run_id)
        if entry.level == logging.WARNING and entry.user_message
    ]


def test_a_file_removed_after_loading_is_said_to_be_gone_with_its_rows_still_staged(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    accounts = write_csv(inbox / "crm/accounts.csv", "customer_id,tax_id\nC1,T1\nC2,T2\n")
    resources = {
        **default_settings_resources(),
        "warehouse": Warehouse(path=str(tmp_path / "warehouse.duckdb")),
        "inbox": Inbox(path=str(inbox)),
    }
    instance = dg.DagsterInstance.ephemeral()
    first = dg.materialize([_accounts_asset()], resources=resources, instance=instance)
    assert first.success
    accounts.unlink()
    second = dg.materialize([_accounts_asset()], resources=resources, instance=instance)
    assert second.success
    warnings = _warnings(instance, second.run_id)
    assert not any("is empty" in w for w in warnings), warnings
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        (load_id,) = con.sql("select content_hash from ops.loaded_files").fetchall()[0]
        assert con.sql("select count(*) from staging.accounts").fetchall() == [(2,)]
    assert (
        "no crm/accounts* file in the inbox now: staging.accounts keeps 2 row(s) of earlier "
        f"loads of files no longer there: crm/accounts.csv (load {load_id[:12]}, 2 row(s))"
    ) in warnings
    metadata = staged_metadata(second, "accounts")
    assert metadata["files_gone"].value == [
        {"source_file": "crm/accounts.csv", "load_id": load_id, "staged_rows": 2}
    ]


def test_file_warnings_reach_the_run_log(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    write_csv(inbox / "invoices/invoices.csv", HEADER + "I1,C1,2024-01-05,1.234\n")
    instance = dg.DagsterInstance.ephemeral()
    invoices = next(a for a in staging_assets if dg.AssetKey(["staging", "invoices"]) in a.keys)
    result = dg.materialize(
        [invoices],
        resources={
            **default_settings_resources(),
            "warehouse": Warehouse(path=str(tmp_path / "warehouse.duckdb")),
            "inbox": Inbox(path=str(inbox)),
        },
        instance=instance,
        run_config={"resources": {"ingest": {"config": {"validate_files": False}}}},
    )
    assert result.success
    assert any(
        "1 amount value(s) with more than two decimals" in w
        for w in _warnings(instance, result.run_id)
    )
    metadata = staged_metadata(result, "invoices")
    assert metadata["file_warnings"].value == [
        "invoices/invoices.csv: 1 amount value(s) with more than two decimals rounded to the "
        "cent (half away from zero), e.g. line 2: 1.234 stored as 1.23"
    ]
