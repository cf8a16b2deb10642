"""Real-shaped exports: vendor mappings, XLSX, European formats, FX, incremental deliveries,
file-level failures and the reject gate."""

import datetime as dt
import os
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

from features.contracts import CONTRACTS_BY_TABLE, inputs_markdown, reasons_markdown
from features.ingest import InboxError, RejectThresholdError, ingest_group
from features.mappings import MappingError, load_mappings
from features.validation import validate_frame
from features.warehouse import ensure_layout
from pipelines.settings import IngestSettings
from synthetic import generate_demo_data
from tests.conftest import write_csv

ACCOUNTS = CONTRACTS_BY_TABLE["accounts"]
CONTACTS = CONTRACTS_BY_TABLE["contacts"]
INVOICES = CONTRACTS_BY_TABLE["invoices"]
PAYMENTS = CONTRACTS_BY_TABLE["payments"]
FX_RATES = CONTRACTS_BY_TABLE["fx_rates"]
FAST = IngestSettings(validate_files=False).options()  # the GX gate has its own tests below
README = Path(__file__).parents[1] / "README.md"


def _rows(con: duckdb.DuckDBPyConnection, query: str) -> list[tuple]:
    return con.sql(query).fetchall()


def test_salesforce_and_hubspot_exports_load_through_their_mappings(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    write_csv(
        inbox / "crm/salesforce/Account.csv",
        """
Id,Name,Tax_ID__c,BillingCountry,BillingState,Industry,CreatedDate,Account_Status__c,Rating
001A,Acme GmbH,DE123,Germany,Bavaria,Manufacturing,2024-01-05T10:23:00.000Z,Customer,Hot
001B,Beta SA,FR456,France,,Retail,2024-02-01T08:00:00.000Z,Inactive,Cold
""",
    )
    write_csv(
        inbox / "crm/salesforce/Contact.csv",
        "Id,AccountId,Email,Title,Marketing_Consent__c\n"
        "003X,001A,anna@acme.example,CFO,true\n003Y,001B,bob@beta.example,Buyer,false\n",
    )
    # HubSpot: UTF-8 with BOM, lifecycle stages and marketing-contact words
    (inbox / "crm/hubspot").mkdir(parents=True)
    (inbox / "crm/hubspot/hubspot-crm-exports-all-companies-2024-06-01.csv").write_bytes(
        "\ufeffRecord ID,Company name,VAT number,Country/Region,Lifecycle Stage,Create Date\n"
        "9001,Gamma Ltd,GB789,United Kingdom,Customer,2024-03-04 09:15\n"
        "9002,Délta Oy,FI012,Finland,Lead,2024-04-05 11:00\n".encode()
    )
    write_csv(
        inbox / "crm/hubspot/hubspot-crm-exports-all-contacts-2024-06-01.csv",
        "Record ID,Associated Company IDs (Primary),Email,Marketing contact status\n"
        "501,9001,cara@gamma.example,Marketing contact\n"
        "502,9002,dan@delta.example,Non-marketing contact\n",
    )
    accounts = ingest_group(con, inbox, ACCOUNTS, "r1", FAST)
    contacts = ingest_group(con, inbox, CONTACTS, "r1", FAST)
    assert (accounts.staged_rows, accounts.quarantined_rows) == (4, 0)
    assert (contacts.staged_rows, contacts.quarantined_rows) == (4, 0)
    assert _rows(
        con, "select customer_id, name, tax_id, status, created_at from staging.accounts"
    ) == [
        ("001A", "Acme GmbH", "DE123", "active", dt.date(2024, 1, 5)),
        ("001B", "Beta SA", "FR456", "closed", dt.date(2024, 2, 1)),
        ("9001", "Gamma Ltd", "GB789", "active", dt.date(2024, 3, 4)),
        ("9002", "Délta Oy", "FI012", "prospect", dt.date(2024, 4, 5)),
    ]
    assert _rows(
        con, "select contact_id, customer_id, role, marketing_consent from staging.contacts"
    ) == [
        ("003X", "001A", "CFO", True),
        ("003Y", "001B", "Buyer", False),
        ("501", "9001", None, True),
        ("502", "9002", None, False),
    ]
    mappings = dict(_rows(con, "select source_file, mapping from ops.loaded_files"))
    assert mappings["crm/salesforce/Account.csv"] == "salesforce_accounts"
    assert mappings["crm/hubspot/hubspot-crm-exports-all-contacts-2024-06-01.csv"] == (
        "hubspot_contacts"
    )


def _accounting_invoices() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "Document No.": ["F-1", "F-2", "F-3"],
            "Customer No.": ["C1", "C1", "C2"],
            "Document Date": [dt.date(2024, 1, 5), dt.date(2024, 2, 10), dt.date(2024, 2, 11)],
            "Due Date": [dt.date(2024, 2, 4), dt.date(2024, 3, 11), dt.date(2024, 3, 12)],
            "Amount": [1234.5, 80.0, 99.99],
            "Currency Code": ["EUR", "EUR", "EUR"],
            "Document Type": ["Invoice", "Credit Memo", "Invoice"],
        }
    )


def test_xlsx_invoice_export_loads_through_the_accounting_mapping(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "invoices/accounting").mkdir(parents=True)
    _accounting_invoices().write_excel(inbox / "invoices/accounting/invoice_journal_2024.xlsx")
    result = ingest_group(con, inbox, INVOICES, "r1", FAST)
    assert (result.staged_rows, result.quarantined_rows) == (3, 0)
    assert _rows(
        con, "select invoice_id, issue_date, amount::double, document_type from staging.invoices"
    ) == [
        ("F-1", dt.date(2024, 1, 5), pytest.approx(1234.5), "invoice"),
        ("F-2", dt.date(2024, 2, 10), pytest.approx(-80.0), "credit_note"),
        ("F-3", dt.date(2024, 2, 11), pytest.approx(99.99), "invoice"),
    ]


def test_european_csv_semicolons_comma_decimals_and_day_first_dates(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    write_csv(
        inbox / "invoices/accounting/invoices_2024.csv",
        """
Document No.;Customer No.;Document Date;Due Date;Amount;Currency Code;Document Type
F-1;C1;05/01/2024;04/02/2024;1.234,50;EUR;Invoice
F-2;C1;31/02/2024;04/02/2024;10,00;EUR;Invoice
F-3;C2;06/01/2024;05/02/2024;12.5;EUR;Invoice
""",
    )
    options = IngestSettings(validate_files=False, reject_threshold=1.0).options()
    result = ingest_group(con, inbox, INVOICES, "r1", options)
    assert _rows(con, "select invoice_id, issue_date, amount::double from staging.invoices") == [
        ("F-1", dt.date(2024, 1, 5), pytest.approx(1234.5))
    ]
    # a dot-decimal number in a comma-decimal file is not guessed at
    assert result.reasons == {"bad_date": 1, "bad_number": 1}


# A user's own payments export: pipe-separated, German headers, day-first dates with dots.
ERP_PAYMENTS_MAPPING = """
name = "my_erp_payments"
group = "invoices/payments"
pattern = "erp/zahlungen*"
delimiter = "|"
date_format = "%d.%m.%Y"

[columns]
"Beleg" = "payment_id"
"Rechnung" = "invoice_id"
"Datum" = "payment_date"
"Betrag" = "amount"
"""


def test_a_user_mapping_needs_no_code(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    inbox = tmp_path / "inbox"
    write_csv(inbox / "mappings/my_erp.toml", ERP_PAYMENTS_MAPPING)
    write_csv(
        inbox / "invoices/invoices.csv",
        "invoice_id,customer_id,issue_date,amount\nI1,C1,2024-01-05,100\n",
    )
    write_csv(
        inbox / "erp/zahlungen_2024.csv", "Beleg|Rechnung|Datum|Betrag\nP1|I1|20.01.2024|60\n"
    )
    ingest_group(con, inbox, INVOICES, "r1", FAST)
    result = ingest_group(con, inbox, PAYMENTS, "r1", FAST)
    assert result.files == ("erp/zahlungen_2024.csv",)
    assert _rows(
        con, "select payment_id, invoice_id, payment_date, amount::double from staging.payments"
    ) == [("P1", "I1", dt.date(2024, 1, 20), pytest.approx(60.0))]


def test_a_mapping_to_an_unknown_column_names_file_and_column(tmp_path: Path) -> None:
    write_csv(
        tmp_path / "bad.toml",
        'name = "x"\ngroup = "crm/accounts"\npattern = "x*"\n[columns]\n"A" = "customer"\n',
    )
    with pytest.raises(MappingError, match=r"bad\.toml.*customer"):
        load_mappings(tmp_path)


def test_a_date_format_beyond_the_known_directives_names_file_and_directive(
    tmp_path: Path,
) -> None:
    write_csv(
        tmp_path / "two_digit_years.toml",
        'name = "x"\ngroup = "crm/accounts"\npattern = "x*"\ndate_format = "%d/%m/%y"\n'
        '[columns]\n"A" = "customer_id"\n',
    )
    with pytest.raises(MappingError, match=r"two_digit_years\.toml.*%y is not one of"):
        load_mappings(tmp_path)


def test_amounts_convert_to_base_currency_and_unknown_currencies_are_quarantined(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    write_csv(
        inbox / "fx/rates_2024.csv",
        "rate_date,currency,rate\n2024-01-01,USD,0.90\n2024-02-01,USD,0.95\n",
    )
    write_csv(
        inbox / "invoices/invoices.csv",
        """
invoice_id,customer_id,issue_date,amount,currency
I1,C1,2024-01-15,100.00,EUR
I2,C1,2024-01-15,100.00,USD
I3,C1,2024-02-15,100.00,usd
I4,C1,2024-02-15,100.00,GBP
I5,C1,2023-12-15,100.00,USD
""",
    )
    options = IngestSettings(validate_files=False, reject_threshold=1.0).options()
    ingest_group(con, inbox, FX_RATES, "r1", options)
    ingest_group(con, inbox, INVOICES, "r1", options)
    assert _rows(
        con,
        "select invoice_id, amount::double, original_amount::double, fx_rate from staging.invoices",
    ) == [
        ("I1", pytest.approx(100.0), pytest.approx(100.0), 1.0),
        ("I2", pytest.approx(90.0), pytest.approx(100.0), 0.90),
        ("I3", pytest.approx(95.0), pytest.approx(100.0), 0.95),
    ]
    # no GBP rate at all, and no USD rate on or before 2023-12-15: quarantined, not guessed
    assert _rows(con, "select line_number, reason from quarantine.rejected_rows order by 1") == [
        (5, "unknown_currency"),
        (6, "unknown_currency"),
    ]


def test_a_copy_of_a_loaded_file_under_another_name_loads_once(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    text = "invoice_id,customer_id,issue_date,amount\nI1,C1,2024-01-05,100\nI2,C2,2024-01-06,50\n"
    write_csv(inbox / "invoices/invoices_2024-01.csv", text)
    ingest_group(con, inbox, INVOICES, "r1", FAST)
    write_csv(inbox / "invoices/invoices_2024-01_resent.csv", text)
    result = ingest_group(con, inbox, INVOICES, "r2", FAST)
    assert result.duplicate_files == ("invoices/invoices_2024-01_resent.csv",)
    assert (result.raw_rows, result.staged_rows, result.quarantined_rows) == (2, 2, 0)
    assert _rows(con, "select source_file, outcome, rows from ops.loaded_files order by 1") == [
        ("invoices/invoices_2024-01.csv", "loaded", 2),
        ("invoices/invoices_2024-01_resent.csv", "duplicate", 0),
    ]


def test_a_corrected_redelivery_wins_and_the_old_version_stays_in_raw(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    header = "invoice_id,customer_id,issue_date,amount\n"
    write_csv(
        inbox / "invoices/invoices.csv", header + "I1,C1,2024-01-05,100\nI2,C2,2024-01-06,50\n"
    )
    ingest_group(con, inbox, INVOICES, "r1", FAST)
    # the exporter overwrites the same file name with a corrected amount for I1
    write_csv(inbox / "invoices/invoices.csv", header + "I1,C1,2024-01-05,120\n")
    result = ingest_group(con, inbox, INVOICES, "r2", FAST)
    assert (result.raw_rows, result.staged_rows, result.superseded_rows) == (3, 2, 1)
    assert result.raw_rows == result.staged_rows + result.quarantined_rows + result.superseded_rows
    assert _rows(con, "select invoice_id, amount::double from staging.invoices order by 1") == [
        ("I1", pytest.approx(120.0)),
        ("I2", pytest.approx(50.0)),
    ]
    history = _rows(con, "select amount from raw.invoices where invoice_id = 'I1' order by 1")
    assert history == [("100",), ("120",)]


def test_a_row_delivered_again_unchanged_keeps_its_first_load(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    header = "invoice_id,customer_id,issue_date,amount\n"
    write_csv(inbox / "invoices/invoices_1.csv", header + "I1,C1,2024-01-05,100\n")
    ingest_group(con, inbox, INVOICES, "r1", FAST)
    # a cumulative re-export: I1 again, unchanged (written differently), and a new I2
    write_csv(
        inbox / "invoices/invoices_2.csv", header + "I1,C1,2024-01-05,100.00\nI2,C1,2024-02-01,7\n"
    )
    result = ingest_group(con, inbox, INVOICES, "r2", FAST)
    assert (result.raw_rows, result.staged_rows, result.superseded_rows) == (3, 2, 1)
    assert _rows(con, "select invoice_id, source_file from staging.invoices order by 1") == [
        ("I1", "invoices/invoices_1.csv"),
        ("I2", "invoices/invoices_2.csv"),
    ]
    # changed in a third export, then back to the first amount: the latest content wins
    write_csv(inbox / "invoices/invoices_3.csv", header + "I1,C1,2024-01-05,90\n")
    write_csv(inbox / "invoices/invoices_4.csv", header + "I1,C1,2024-01-05,100.0\n")
    ingest_group(con, inbox, INVOICES, "r3", FAST)
    assert _rows(
        con, "select amount::double, source_file from staging.invoices where invoice_id = 'I1'"
    ) == [(pytest.approx(100.0), "invoices/invoices_1.csv")]


def test_a_bad_row_never_replaces_a_good_one(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    header = "invoice_id,customer_id,issue_date,amount\n"
    write_csv(inbox / "invoices/invoices_1.csv", header + "I1,C1,2024-01-05,100\n")
    write_csv(inbox / "invoices/invoices_2.csv", header + "I1,C1,2024-01-05,abc\n")
    ingest_group(
        con,
        inbox,
        INVOICES,
        "r1",
        IngestSettings(validate_files=False, reject_threshold=1.0).options(),
    )
    assert _rows(con, "select amount::double, source_file from staging.invoices") == [
        (pytest.approx(100.0), "invoices/invoices_1.csv")
    ]


def test_unknown_customer_is_skipped_and_said_when_accounts_are_missing(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    write_csv(
        inbox / "invoices/invoices.csv",
        "invoice_id,customer_id,issue_date,amount\nI1,C9,2024-01-05,1\n",
    )
    ingest_group(con, inbox, ACCOUNTS, "r1", FAST)
    result = ingest_group(con, inbox, INVOICES, "r1", FAST)
    assert result.staged_rows == 1
    assert any(s.startswith("unknown_customer") for s in result.skipped_rules)


def test_a_file_over_the_reject_threshold_is_refused_whole(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    header = "invoice_id,customer_id,issue_date,amount\n"
    write_csv(inbox / "invoices/invoices_1.csv", header + "I1,C1,2024-01-05,100\n")
    ingest_group(con, inbox, INVOICES, "r1", IngestSettings().options())
    write_csv(
        inbox / "invoices/invoices_2.csv",
        header + "I2,C1,2024-01-05,1\nI3,C1,nope,1\nI4,C1,2024-01-05,x\nI5,,2024-01-05,1\n",
    )
    for run in ("r2", "r3"):  # a rerun meets the same refusal: nothing was half-loaded
        with pytest.raises(RejectThresholdError) as refused:
            ingest_group(con, inbox, INVOICES, run, IngestSettings(reject_threshold=0.25).options())
        message = str(refused.value)
        assert "invoices/invoices_2.csv: 3 of 4 rows rejected" in message
        assert "bad_date 1" in message and "missing_required 1" in message
        assert _rows(con, "select count(*) from raw.invoices") == [(1,)]
        assert _rows(con, "select invoice_id from staging.invoices") == [("I1",)]
        assert _rows(con, "select count(*) from quarantine.rejected_rows") == [(0,)]
    assert _rows(con, "select source_file, outcome from ops.loaded_files order by 1") == [
        ("invoices/invoices_1.csv", "loaded"),
        ("invoices/invoices_2.csv", "refused"),
    ]
    validation = _rows(
        con,
        "select validation->>'$.great_expectations.success', validation->>'$.rejected_rows' "
        "from ops.loaded_files where outcome = 'loaded'",
    )
    assert validation == [("true", "0")]


def test_the_great_expectations_suite_comes_from_the_contract() -> None:
    frame = pl.DataFrame(
        {
            "invoice_id": ["I1", "I2", "I2", "I4"],
            "customer_id": ["C1", None, None, "C2"],
            "issue_date": [dt.date(2024, 1, 5)] * 4,
            "due_date": [None] * 4,
            "amount": [10.0, 20.0, 30.0, 40.0],
            "currency": ["EUR"] * 4,
            "document_type": ["invoice", "invoice", "receipt", "invoice"],
        }
    ).to_pandas()
    report = validate_frame(frame, INVOICES, mostly=0.9)
    failed = {(f["expectation"], str(f["column"])): f["unexpected_count"] for f in report["failed"]}
    assert not report["success"]
    assert failed == {
        ("expect_column_values_to_not_be_null", "customer_id"): 2,
        ("expect_column_values_to_be_in_set", "document_type"): 1,
        ("expect_column_values_to_be_unique", "invoice_id"): 2,
    }


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("invoices.csv", b"", r"invoices/invoices\.csv: empty file"),
        (
            "invoices.csv",
            b"invoice_id,customer_id,issue_date,amount\nI1,C1,2024-01-05,1\nI2,C1,2024-0",
            r"invoices/invoices\.csv: truncated last line \(3 of 4 fields",
        ),
        (
            "invoices.csv",
            b"invoice_id,customer_no,issue_date,amount\nI1,C1,2024-01-05,1\n",
            r"invoices/invoices\.csv: missing required column\(s\) 'customer_id' "
            r"\(closest found: customer_no\)",
        ),
        (
            "invoices.csv",
            "invoice_id,customer_id,issue_date,amount\nI1,Cé,2024-01-05,1\n".encode("latin-1"),
            r"invoices/invoices\.csv: .*not valid utf-8",
        ),
        ("invoices.xlsx", b"not a workbook", r"invoices/invoices\.xlsx: cannot be read as xlsx"),
    ],
)
def test_file_level_failures_name_the_file(
    tmp_path: Path, con: duckdb.DuckDBPyConnection, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / "inbox/invoices" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(InboxError, match=message):
        ingest_group(con, tmp_path / "inbox", INVOICES, "r1", FAST)
    assert _rows(con, "select count(*) from ops.loaded_files") == [(0,)]


def test_a_file_still_being_written_is_not_loaded(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    inbox = tmp_path / "inbox"
    path = write_csv(inbox / "invoices/invoices.csv", "invoice_id,customer_id,issue_date,amount\n")
    options = IngestSettings(validate_files=False, settle_seconds=600).options()
    with pytest.raises(InboxError, match=r"invoices/invoices\.csv: still being written"):
        ingest_group(con, inbox, INVOICES, "r1", options)
    settled = time.time() - 3600
    os.utime(path, (settled, settled))
    assert ingest_group(con, inbox, INVOICES, "r1", options).new_files == ("invoices/invoices.csv",)


def test_readme_input_and_reason_tables_come_from_the_contracts() -> None:
    readme = README.read_text()
    assert inputs_markdown() in readme
    assert reasons_markdown() in readme


def test_parquet_and_csv_deliveries_stage_the_same_rows(tmp_path: Path) -> None:
    groups = frozenset({"crm/accounts", "crm/contacts", "invoices/invoices"})
    staged = {}
    for file_format in ("csv", "parquet"):
        inbox = tmp_path / file_format
        generate_demo_data(inbox, customers=120, seed=5, include=groups, file_format=file_format)
        with duckdb.connect(str(tmp_path / f"{file_format}.duckdb")) as con:
            ensure_layout(con)
            for contract in (ACCOUNTS, CONTACTS, INVOICES):
                result = ingest_group(con, inbox, contract, "r1", FAST)
                assert result.quarantined_rows == 0
            staged[file_format] = {
                table: con.sql(
                    f"select * exclude (load_id, source_file) from staging.{table}"
                ).fetchall()
                for table in ("accounts", "contacts", "invoices")
            }
    assert staged["csv"]["invoices"]
    assert staged["parquet"] == staged["csv"]
