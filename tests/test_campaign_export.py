"""Campaign lists a marketer pulls: `crm-intel segments export` and `segments list --json`.

Every test reads the published snapshot of one real pipeline run (the `full_run` fixture) and
checks the files the CLI writes against the marts: columns, rounding, the XLSX formatting,
de-duplication by e-mail, each exclusion, the do-not-contact file, and where the output goes.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import duckdb
import openpyxl
import polars as pl
import pytest
from typer.testing import CliRunner

from features.publish import default_snapshot_path
from pipelines.cli import app

runner = CliRunner()
COLUMNS = [
    "customer_id", "customer_name", "contact_id", "contact_name", "email", "phone", "role",
    "country", "sector",
    "account_status", "rfm_segment", "churn_probability", "churn_risk_band", "delinquency_class",
    "recency_days", "frequency", "monetary", "clv", "clv_horizon_days", "p_alive", "as_of_date",
    "consent_updated_at",
]  # fmt: skip
NUMBER_FORMATS = {
    "churn_probability": "0.000", "p_alive": "0.000", "recency_days": "#,##0",
    "frequency": "#,##0", "monetary": "#,##0.00", "clv": "#,##0.00", "clv_horizon_days": "#,##0",
}  # fmt: skip
# every consenting contact of a segment, with what the exclusions look at
CONSENTING = """
    select k.contact_id, k.customer_id, k.first_name || ' ' || k.last_name as contact_name,
           k.email, c.account_status, c.delinquency_class,
           c.churn_risk_band, c.churn_probability, c.clv, c.monetary, c.p_alive
    from marts.segment_members as m
    join marts.consenting_contacts as k using (customer_id)
    join marts.customer_360 as c using (customer_id)
    where m.rfm_segment = $segment
"""


@pytest.fixture(scope="module")
def snapshot(full_run: tuple[Path, str]) -> Path:
    return default_snapshot_path(full_run[0])


def marts(snapshot: Path, query: str, **params: object) -> pl.DataFrame:
    with duckdb.connect(str(snapshot), read_only=True) as con:
        return con.sql(query, params=params or None).pl()


def export(warehouse: Path, segment: str, out: Path | str, *extra: str, inbox: Path) -> object:
    """`crm-intel segments export`; an empty inbox unless a test gives one."""
    return runner.invoke(
        app,
        ["segments", "export", segment, "--out", str(out), "--warehouse", str(warehouse),
         "--inbox", str(inbox), *extra],
    )  # fmt: skip


def exported(warehouse: Path, segment: str, out: Path, *extra: str, inbox: Path) -> pl.DataFrame:
    result = export(warehouse, segment, out, *extra, inbox=inbox)
    assert result.exit_code == 0, result.output + repr(result.exception)
    if out.suffix == ".xlsx":
        return pl.read_excel(out, engine="openpyxl", infer_schema_length=None)
    return pl.read_csv(out, infer_schema_length=None)


def left_out(output: str, what: str) -> int:
    """The count the summary gives for one reason, 0 when it names none."""
    found = re.search(rf"^\s+([\d,]+) contacts? (?:left out|merged): {what}", output, re.M)
    return int(found.group(1).replace(",", "")) if found else 0


def test_xlsx_is_a_formatted_campaign_list_with_the_mart_figures_rounded(
    full_run: tuple[Path, str], snapshot: Path, tmp_path: Path
) -> None:
    warehouse, _ = full_run
    out = tmp_path / "champions.xlsx"  # no --format: the name says XLSX
    result = export(warehouse, "champions", out, inbox=tmp_path / "inbox")
    assert result.exit_code == 0, result.output
    sheet = openpyxl.load_workbook(out).worksheets[0]
    assert sheet.title == "Champions"
    assert [cell.value for cell in sheet[1]] == COLUMNS
    assert all(cell.font.b for cell in sheet[1])
    assert sheet.freeze_panes == "A2"
    last = sheet.cell(1, len(COLUMNS)).column_letter
    filters = {sheet.auto_filter.ref} | {t.ref for t in sheet.tables.values() if t.autoFilter}
    assert f"A1:{last}{sheet.max_row}" in filters
    widths = {key: dim.width for key, dim in sheet.column_dimensions.items()}
    assert widths["E"] > 20  # the e-mail column is fitted to its addresses
    header = COLUMNS
    rows = list(sheet.iter_rows(min_row=2))
    assert rows
    for cells in rows:
        cell = dict(zip(header, cells, strict=True))
        for column, number_format in NUMBER_FORMATS.items():
            if cell[column].value is not None:
                assert cell[column].number_format == number_format, column
                assert cell[column].data_type == "n", column
        for column in ("monetary", "clv"):
            assert round(cell[column].value, 2) == cell[column].value
        for column in ("churn_probability", "p_alive"):
            if cell[column].value is not None:
                assert round(cell[column].value, 3) == cell[column].value
        assert cell["as_of_date"].is_date and cell["as_of_date"].number_format == "yyyy-mm-dd"
        assert cell["phone"].data_type == "s" and cell["phone"].value.startswith("+")

    # the figures are the marts', rounded, for every consenting contact of the segment
    expected = marts(snapshot, CONSENTING, segment="Champions")
    workbook = pl.read_excel(out, engine="openpyxl", infer_schema_length=None)
    assert sorted(workbook["contact_id"]) == sorted(expected["contact_id"])
    joined = workbook.join(expected, on="contact_id", suffix="_mart")
    assert joined.height == expected.height
    assert (joined["clv"] == joined["clv_mart"].round(2)).all()
    assert (joined["monetary"] == joined["monetary_mart"].round(2)).all()
    assert (joined["p_alive"] == joined["p_alive_mart"].round(3)).all()
    assert (joined["churn_probability"] == joined["churn_probability_mart"].round(3)).all()
    assert (joined["delinquency_class"] == joined["delinquency_class_mart"]).all()
    assert (joined["contact_name"] == joined["contact_name_mart"]).all()
    assert (joined["account_status"] == joined["account_status_mart"]).all()
    assert set(workbook["rfm_segment"]) == {"Champions"}


def test_summary_counts_equal_the_marts_and_list_json_has_the_same_figures(
    full_run: tuple[Path, str], snapshot: Path, tmp_path: Path
) -> None:
    warehouse, _ = full_run
    summary = marts(
        snapshot,
        "select rfm_segment, customers, contactable_customers, clv_total, clv_horizon_days, "
        "as_of_date from marts.segment_summary",
    )
    listing = runner.invoke(app, ["segments", "list", "--json", "--warehouse", str(warehouse)])
    assert listing.exit_code == 0, listing.output
    segments = {row["rfm_segment"]: row for row in json.loads(listing.stdout)}
    assert set(segments) == set(summary["rfm_segment"])
    for row in summary.iter_rows(named=True):
        listed = segments[row["rfm_segment"]]
        assert listed["customers"] == row["customers"]
        assert listed["contactable_customers"] == row["contactable_customers"]
        assert listed["clv_total"] == pytest.approx(float(row["clv_total"]), abs=0.005)
        assert listed["clv_horizon_days"] == row["clv_horizon_days"]
        assert listed["as_of_date"] == row["as_of_date"].isoformat()
    # a segment's CLV covers the configured horizon; a segment without purchases has none
    assert set(summary["clv_horizon_days"]) - {None} == {365}

    out = tmp_path / "at_risk.csv"
    result = export(warehouse, "at risk", out, inbox=tmp_path / "inbox")
    assert result.exit_code == 0, result.output
    customers = segments["At risk"]["customers"]
    contactable = segments["At risk"]["contactable_customers"]
    contacts = marts(snapshot, CONSENTING, segment="At risk")
    assert contacts.height > 0 and customers > contactable
    assert (
        f"At risk: {customers:,} customers, {contactable:,} with a consenting contact "
        f"({customers - contactable:,} customers left out: no marketing consent); "
        f"{contacts.height:,} consenting contacts"
    ) in result.output
    assert f"wrote {contacts.height:,} contacts to {out}" in result.output
    assert "no do-not-contact list at" in result.output
    assert pl.read_csv(out).height == contacts.height


@pytest.fixture(scope="module")
def shared_addresses(
    snapshot: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str]]:
    """A copy of the snapshot where contacts share addresses: (warehouse path, roles).

    In Champions, the lowest-value customer's first contact gets the highest-value customer's
    address in another case with spaces, and the highest-value customer's second contact the
    same address exactly (same customer: the lower contact id is kept).
    """
    warehouse = tmp_path_factory.mktemp("shared") / "warehouse.duckdb"
    copy = default_snapshot_path(warehouse)
    copy.parent.mkdir(parents=True)
    shutil.copyfile(snapshot, copy)
    with duckdb.connect(str(copy)) as con:
        ranked = con.sql(
            "select k.customer_id, list(k.contact_id order by k.contact_id) as contacts, "
            "any_value(m.clv) as clv from marts.segment_members m "
            "join marts.consenting_contacts k using (customer_id) "
            "where m.rfm_segment = 'Champions' group by 1 order by clv desc, 1"
        ).fetchall()
        top = next(row for row in ranked if len(row[1]) >= 2)
        bottom = ranked[-1]
        assert top[2] > bottom[2]
        keeper, same_customer, other_customer = top[1][0], top[1][1], bottom[1][0]
        address = con.execute(
            "select email from marts.consenting_contacts where contact_id = ?", [keeper]
        ).fetchall()[0][0]
        con.execute(
            "update marts.consenting_contacts set email = ? where contact_id = ?",
            [f"  {address.upper()} ", other_customer],
        )
        con.execute(
            "update marts.consenting_contacts set email = ? where contact_id = ?",
            [address, same_customer],
        )
    roles = {"keeper": keeper, "same_customer": same_customer, "other_customer": other_customer}
    return warehouse, roles


def test_one_row_per_email_address_the_highest_value_customers(
    shared_addresses: tuple[Path, dict[str, str]], snapshot: Path, tmp_path: Path
) -> None:
    warehouse, roles = shared_addresses
    out = tmp_path / "champions.csv"
    result = export(warehouse, "Champions", out, inbox=tmp_path / "inbox")
    assert result.exit_code == 0, result.output
    rows = pl.read_csv(out, infer_schema_length=None)
    assert roles["keeper"] in set(rows["contact_id"])
    assert not {roles["same_customer"], roles["other_customer"]} & set(rows["contact_id"])
    keys = rows["email"].str.to_lowercase().str.replace_all(r"\s", "")
    assert keys.n_unique() == rows.height
    all_contacts = marts(snapshot, CONSENTING, segment="Champions").height
    assert left_out(result.output, "same e-mail address") == 2
    assert rows.height == all_contacts - 2
    assert "2 contacts merged: same e-mail address as a contact kept at a higher-value" in (
        result.output
    )
    # the same list every time
    again = tmp_path / "again.csv"
    assert export(warehouse, "Champions", again, inbox=tmp_path / "inbox").exit_code == 0
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.parametrize(
    ("exclusion", "condition"),
    [
        ("closed", pl.col("account_status") == "closed"),
        ("credit-hold", pl.col("delinquency_class") == "E"),
        ("high-churn", pl.col("churn_risk_band") == "high"),
    ],
)
def test_each_exclusion_leaves_out_exactly_its_contacts_and_counts_them(
    full_run: tuple[Path, str], snapshot: Path, tmp_path: Path, exclusion: str, condition: pl.Expr
) -> None:
    warehouse, _ = full_run
    segment = "At risk"
    contacts = marts(snapshot, CONSENTING, segment=segment)
    excluded = contacts.filter(condition.fill_null(False))
    assert 0 < excluded.height < contacts.height
    out = tmp_path / f"{exclusion}.csv"
    result = export(warehouse, segment, out, "--exclude", exclusion, inbox=tmp_path / "inbox")
    assert result.exit_code == 0, result.output
    rows = pl.read_csv(out, infer_schema_length=None)
    assert set(rows["contact_id"]) == set(contacts["contact_id"]) - set(excluded["contact_id"])
    assert left_out(result.output, "") == excluded.height
    noun = "contact" if excluded.height == 1 else "contacts"
    assert f"{excluded.height:,} {noun} left out: " in result.output
    assert f"(--exclude {exclusion})" in result.output


def test_exclusions_combine_and_an_unknown_one_is_refused(
    full_run: tuple[Path, str], snapshot: Path, tmp_path: Path
) -> None:
    warehouse, _ = full_run
    contacts = marts(snapshot, CONSENTING, segment="At risk")
    kept = contacts.filter(
        (pl.col("account_status") != "closed").fill_null(True)
        & (pl.col("delinquency_class") != "E").fill_null(True)
    )
    out = tmp_path / "at_risk.csv"
    result = export(
        warehouse, "At risk", out, "--exclude", "closed,credit-hold", inbox=tmp_path / "inbox"
    )
    assert result.exit_code == 0, result.output
    assert set(pl.read_csv(out)["contact_id"]) == set(kept["contact_id"])
    closed = left_out(result.output, "account closed")
    held = left_out(result.output, "credit class E")
    assert closed > 0 and closed + held == contacts.height - kept.height

    refused = export(warehouse, "At risk", tmp_path / "x.csv", "--exclude", "vip",
                     inbox=tmp_path / "inbox")  # fmt: skip
    assert refused.exit_code == 1 and "unknown exclusion vip" in refused.output
    assert "credit-hold" in refused.output and not (tmp_path / "x.csv").exists()


def test_the_do_not_contact_file_is_honoured_by_email_contact_and_customer(
    full_run: tuple[Path, str], snapshot: Path, tmp_path: Path
) -> None:
    warehouse, _ = full_run
    contacts = marts(snapshot, CONSENTING + " order by k.contact_id", segment="Loyal")
    by_email, by_contact = contacts.row(0, named=True), contacts.row(1, named=True)
    customer = contacts.filter(
        ~pl.col("customer_id").is_in([by_email["customer_id"], by_contact["customer_id"]])
    ).row(0, named=True)["customer_id"]
    customer_contacts = contacts.filter(pl.col("customer_id") == customer)["contact_id"]
    inbox = tmp_path / "inbox"
    listed = inbox / "suppression" / "do_not_contact.csv"
    listed.parent.mkdir(parents=True)
    listed.write_text(
        "Email,contact_id,customer_id,note\n"
        f" {by_email['email'].upper()} ,,,asked by phone\n"
        f",{by_contact['contact_id']},,\n"
        f",,{customer},whole company\n"
        "someone@elsewhere.example.com,,,not in this segment\n"
    )
    out = tmp_path / "loyal.csv"
    result = export(warehouse, "Loyal", out, inbox=inbox)
    assert result.exit_code == 0, result.output
    gone = {by_email["contact_id"], by_contact["contact_id"], *customer_contacts}
    rows = pl.read_csv(out, infer_schema_length=None)
    assert set(rows["contact_id"]) == set(contacts["contact_id"]) - gone
    assert left_out(result.output, "on the do-not-contact list") == len(gone)
    assert str(listed) in result.output

    # $CRM_INTEL_INBOX when there is no --inbox; every format honours the list
    xlsx = tmp_path / "loyal.xlsx"
    from_env = runner.invoke(
        app,
        ["segments", "export", "Loyal", "--out", str(xlsx), "--warehouse", str(warehouse)],
        env={"CRM_INTEL_INBOX": str(inbox)},
    )
    assert from_env.exit_code == 0, from_env.output
    workbook = pl.read_excel(xlsx, engine="openpyxl", infer_schema_length=None)
    assert set(workbook["contact_id"]) == set(rows["contact_id"])

    # one contact: said in the singular
    listed.write_text(f"contact_id\n{by_contact['contact_id']}\n")
    single = export(warehouse, "Loyal", out, inbox=inbox)
    assert "\n  1 contact left out: on the do-not-contact list" in single.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("email,contact_id\nok@example.com,\nnot-an-address,\n", "row 3, column email"),
        ("email,contact_id\nok@example.com,\n,\n", "row 3: names no one"),
        ("mail\nok@example.com\n", "needs a column email, contact_id, customer_id"),
    ],
)
def test_a_malformed_do_not_contact_file_fails_the_export(
    full_run: tuple[Path, str], tmp_path: Path, content: str, message: str
) -> None:
    warehouse, _ = full_run
    listed = tmp_path / "inbox" / "suppression" / "do_not_contact.csv"
    listed.parent.mkdir(parents=True)
    listed.write_text(content)
    out = tmp_path / "loyal.csv"
    result = export(warehouse, "Loyal", out, inbox=tmp_path / "inbox")
    assert result.exit_code == 1
    assert str(listed) in result.output and message in result.output
    assert not out.exists()


def test_the_format_follows_the_file_name(full_run: tuple[Path, str], tmp_path: Path) -> None:
    warehouse, _ = full_run
    inbox = tmp_path / "inbox"
    xlsx, csv_file = tmp_path / "lost.xlsx", tmp_path / "lost.CSV"
    assert export(warehouse, "Lost", xlsx, inbox=inbox).exit_code == 0
    assert openpyxl.load_workbook(xlsx).worksheets[0].title == "Lost"
    assert export(warehouse, "Lost", csv_file, inbox=inbox).exit_code == 0
    assert csv_file.read_text().startswith('"customer_id","customer_name","contact_id"')
    # --format still works when it agrees, and fails when it does not
    agreed = export(warehouse, "Lost", tmp_path / "agreed.xlsx", "--format", "xlsx", inbox=inbox)
    assert agreed.exit_code == 0 and openpyxl.load_workbook(tmp_path / "agreed.xlsx")
    clash = export(warehouse, "Lost", tmp_path / "clash.xlsx", "--format", "csv", inbox=inbox)
    assert clash.exit_code == 1 and "does not match" in clash.output
    unknown = export(warehouse, "Lost", tmp_path / "lost.txt", inbox=inbox)
    assert unknown.exit_code == 1 and ".csv or .xlsx" in unknown.output
    assert not (tmp_path / "clash.xlsx").exists() and not (tmp_path / "lost.txt").exists()


def test_out_dash_writes_csv_to_stdout_and_the_summary_to_stderr(
    full_run: tuple[Path, str], snapshot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse, _ = full_run
    monkeypatch.chdir(tmp_path)
    result = export(warehouse, "Champions", "-", inbox=tmp_path / "inbox")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "-").exists()
    rows = list(csv.DictReader(io.StringIO(result.stdout, newline="")))
    assert [*rows[0]] == COLUMNS
    assert len(rows) == marts(snapshot, CONSENTING, segment="Champions").height
    assert "wrote" in result.stderr and "to standard output" in result.stderr
    assert "wrote" not in result.stdout
    # the CSV on stdout is neutralised as the file is: phone numbers start with +
    assert all(row["phone"].startswith("'+") for row in rows if row["phone"])
    refused = export(warehouse, "Champions", "-", "--format", "xlsx", inbox=tmp_path / "inbox")
    assert refused.exit_code == 1 and "standard output" in refused.output
