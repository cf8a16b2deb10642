"""`crm-intel finance export` on a real run: the workbook a credit manager opens, read back with
openpyxl, and its figures against the marts, to the cent; DSO per slice against the definition
recomputed independently; alerts ranked by the documented severity; the trend against the
previous as-of date; and a run with no payments, whose finance figures read unknown."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import duckdb
import openpyxl
import polars as pl
import pytest
from typer.testing import CliRunner

from features.receivables import dso_months
from features.spreadsheet import DAYS, MONEY, PROBABILITY, RATE, WHOLE
from pipelines.cli import app
from pipelines.cli_common import published_path
from tests.conftest import run_cli

SHEETS = ["Summary", "Aging by customer", "Portfolio slices", "Alerts", "Top exposures"]
CSV_FILES = [
    "summary.csv", "aging_by_customer.csv", "portfolio_slices.csv", "alerts.csv",
    "top_exposures.csv",
]  # fmt: skip
SUMMARY_COLUMNS = [
    "figures", "as_of_date", "customers_with_open_receivables", "exposure", "overdue",
    "overdue_over_90", "expected_loss", "dso_days", "note",
]  # fmt: skip
AGING_COLUMNS = [
    "customer_id", "customer_name", "sector", "credit_class", "bureau_rating", "credit_limit",
    "credit_limit_utilisation", "not_due", "dpd_1_30", "dpd_31_60", "dpd_61_90", "dpd_91_180",
    "dpd_over_180", "unapplied_credit", "total_open", "max_days_past_due", "expected_loss",
    "finance_unknown_reason",
]  # fmt: skip
SEVERITIES = ["critical", "high", "medium", "low"]
TOP = 50


def _export(warehouse: Path, *args: str) -> str:
    result = CliRunner().invoke(
        app, ["finance", "export", *args, "--warehouse", str(warehouse)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output


def _snapshot(warehouse: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(published_path(warehouse)), read_only=True)


def _sheet(workbook: openpyxl.Workbook, name: str) -> pl.DataFrame:
    rows = list(workbook[name].iter_rows(values_only=True))
    return pl.DataFrame([list(r) for r in rows[1:]], schema=list(rows[0]), orient="row")


def _format_of(sheet, column: str) -> str:
    header = [cell.value for cell in sheet[1]]
    return sheet.cell(row=2, column=header.index(column) + 1).number_format


def _cents(value: object) -> int:
    return round(float(value) * 100)


@pytest.fixture(scope="module")
def workbook(full_run: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory):
    warehouse, _ = full_run
    out = tmp_path_factory.mktemp("finance") / "risk.xlsx"
    output = _export(warehouse, "--out", str(out))
    return out, output


def test_workbook_sheets_columns_formats_header_and_filters(workbook) -> None:
    out, output = workbook
    assert f"wrote {out}" in output and "exposure (open receivables):" in output
    book = openpyxl.load_workbook(out)
    assert book.sheetnames == SHEETS
    assert [c.value for c in book["Summary"][1]] == SUMMARY_COLUMNS
    assert [c.value for c in book["Aging by customer"][1]] == AGING_COLUMNS
    slices = [c.value for c in book["Portfolio slices"][1]]
    assert {"dimension", "dimension_value", "exposure", "dso_days"} <= set(slices)
    alerts = [c.value for c in book["Alerts"][1]]
    assert alerts[:2] == ["alert_rank", "severity"] and "customer_name" in alerts
    top = [c.value for c in book["Top exposures"][1]]
    assert {"credit_class", "credit_limit", "credit_limit_utilisation", "max_days_past_due"} <= set(
        top
    )
    for sheet in book.worksheets:
        assert sheet.freeze_panes == "A2", sheet.title
        (table,) = sheet.tables.values()
        width = sheet.max_column
        assert table.autoFilter is not None and table.autoFilter.ref.startswith("A1:"), sheet.title
        assert openpyxl.utils.cell.range_boundaries(table.autoFilter.ref)[2] == width
        assert all(cell.font.b for cell in sheet[1]), sheet.title
        assert sheet.column_dimensions["B"].width > 8  # fitted, not the default
    aging, summary = book["Aging by customer"], book["Summary"]
    assert _format_of(aging, "total_open") == MONEY
    assert _format_of(aging, "credit_limit_utilisation") == RATE
    assert _format_of(aging, "max_days_past_due") == DAYS
    assert _format_of(summary, "exposure") == MONEY
    assert _format_of(summary, "customers_with_open_receivables") == WHOLE
    assert _format_of(summary, "dso_days") == "#,##0.0"
    assert _format_of(book["Portfolio slices"], "share_of_exposure") == RATE
    assert _format_of(book["Portfolio slices"], "herfindahl_index") == PROBABILITY
    assert _format_of(book["Alerts"], "open_exposure") == MONEY
    assert _format_of(book["Alerts"], "alert_date") == "yyyy-mm-dd"
    assert isinstance(aging.cell(row=2, column=AGING_COLUMNS.index("total_open") + 1).value, float)


def test_workbook_totals_equal_the_marts_to_the_cent(full_run, workbook) -> None:
    warehouse, _ = full_run
    out, output = workbook
    book = openpyxl.load_workbook(out)
    summary = _sheet(book, "Summary").row(0, named=True)
    aging = _sheet(book, "Aging by customer")
    with _snapshot(warehouse) as con:
        marts = con.sql(
            """select sum(total_open), sum(dpd_1_30 + dpd_31_60 + dpd_61_90 + dpd_91_180
                      + dpd_over_180), sum(dpd_91_180 + dpd_over_180), count(*),
                      count(*) filter (where total_open > 0)
               from marts.receivables_aging"""
        ).fetchall()[0]
        portfolio = con.sql(
            "select exposure, overdue, overdue_over_90, expected_loss, dso_days, as_of_date, "
            "customers_with_exposure from marts.portfolio_risk where dimension = 'portfolio'"
        ).fetchall()[0]
        equity = con.sql(
            "select open_exposure, expected_loss_on_receivables from marts.customer_equity"
        ).fetchall()[0]
        top = con.sql(
            f"select customer_id, open_exposure from marts.customer_risk "
            f"where open_exposure > 0 order by open_exposure desc, customer_id limit {TOP}"
        ).fetchall()
    total_open, overdue, over_90, customers, owing = marts
    exposure, pf_overdue, pf_over_90, loss, dso, as_of, with_exposure = portfolio
    assert summary["figures"] == "as of" and summary["as_of_date"].date() == as_of
    assert _cents(summary["exposure"]) == _cents(exposure) == _cents(equity[0])
    assert _cents(summary["exposure"]) == _cents(
        aging.filter(pl.col("total_open") > 0)["total_open"].sum()
    )
    assert _cents(aging["total_open"].sum()) == _cents(total_open)
    assert _cents(summary["overdue"]) == _cents(overdue) == _cents(pf_overdue)
    assert _cents(summary["overdue_over_90"]) == _cents(over_90) == _cents(pf_over_90)
    assert 0 < over_90 < overdue
    assert _cents(summary["expected_loss"]) == _cents(loss) == _cents(equity[1])
    assert _cents(aging["expected_loss"].sum()) == _cents(loss)
    assert summary["dso_days"] == pytest.approx(dso, rel=1e-12) and dso > 0
    assert summary["customers_with_open_receivables"] == with_exposure == owing
    assert aging.height == customers and aging["customer_name"].null_count() == 0
    for bucket in ("not_due", "dpd_1_30", "dpd_31_60", "dpd_61_90", "dpd_91_180", "dpd_over_180"):
        assert aging[bucket].null_count() == 0
    top_sheet = _sheet(book, "Top exposures")
    assert top_sheet["customer_id"].to_list() == [c for c, _ in top]
    assert [_cents(v) for v in top_sheet["open_exposure"]] == [_cents(v) for _, v in top]
    assert top_sheet["exposure_rank"].to_list() == list(range(1, TOP + 1))
    # no earlier as-of date in this warehouse: said, not invented
    previous = _sheet(book, "Summary").row(1, named=True)
    assert previous["exposure"] is None and "no trend yet" in previous["note"]
    assert "no earlier as-of date kept" in output
    assert f"{exposure:,.2f}" in output


def test_csv_folder_holds_one_file_per_sheet(full_run, workbook, tmp_path: Path) -> None:
    warehouse, _ = full_run
    out, _ = workbook
    book = openpyxl.load_workbook(out)
    folder = tmp_path / "risk"
    output = _export(warehouse, "--out", f"{folder}/")
    assert f"to {folder}" in output
    assert sorted(p.name for p in folder.iterdir()) == sorted(CSV_FILES)
    for name, file in zip(SHEETS, CSV_FILES, strict=True):
        frame = pl.read_csv(folder / file, infer_schema_length=None)
        assert frame.columns == [c.value for c in book[name][1]], name
        assert frame.height == book[name].max_row - 1, name
    summary = pl.read_csv(folder / "summary.csv").row(0, named=True)
    assert _cents(summary["exposure"]) == _cents(_sheet(book, "Summary")["exposure"][0])
    # --format csv names the folder without a trailing slash
    named = tmp_path / "named"
    _export(warehouse, "--out", str(named), "--format", "csv")
    assert sorted(p.name for p in named.iterdir()) == sorted(CSV_FILES)
    # contradictions and databases are refused
    runner = CliRunner()
    database = tmp_path / "old.xlsx"  # a DuckDB file, whatever its name
    shutil.copy(published_path(warehouse), database)
    for args in (
        ["--out", str(tmp_path / "risk.csv")],
        ["--out", str(tmp_path / "x.xlsx"), "--format", "csv"],
        ["--out", str(folder), "--format", "xlsx"],
        ["--out", str(database)],
    ):
        result = runner.invoke(app, ["finance", "export", *args, "--warehouse", str(warehouse)])
        assert result.exit_code == 1, args


def _slice_dso_from_the_ledger(con: duckdb.DuckDBPyConnection, sector: str) -> float:
    """Countback DSO of one sector, from the receivable items and invoices, written as the
    definition reads: months as date ranges, the receivables left after the newer months as a
    running sum (not the pipeline's month numbers and month columns)."""
    months = dso_months(con)
    return con.execute(
        """with members as (
               select customer_id from staging.accounts where sector = $sector
           ),
           owed as (
               select greatest(coalesce(sum(open_amount), 0), 0) as owed
               from features.receivable_items join members using (customer_id)
           ),
           months as (
               select k, $as_of::date - to_months(k) as first_excluded,
                      $as_of::date - to_months(k - 1) as last_day
               from range(1, $months + 1) as t(k)
           ),
           sales as (
               select m.k, date_diff('day', m.first_excluded, m.last_day) as days,
                      coalesce(sum(i.amount), 0) as sales
               from months as m
               left join (
                   select issue_date, amount from staging.invoices join members using (customer_id)
                   where document_type = 'invoice'
               ) as i on i.issue_date > m.first_excluded and i.issue_date <= m.last_day
               group by all
           ),
           walk as (
               select days, sales, owed - coalesce(sum(sales) over (
                   order by k rows between unbounded preceding and 1 preceding), 0) as left_over
               from sales cross join owed
           )
           select sum(case when left_over <= 0 then 0
                           when sales >= left_over then days * left_over::double / sales::double
                           else days end)
           from walk""",
        {
            "sector": sector,
            "months": months,
            "as_of": con.sql("select as_of_date from marts.finance_status").fetchall()[0][0],
        },
    ).fetchall()[0][0]


def test_dso_per_slice_is_the_countback_of_the_slice(full_run) -> None:
    warehouse, _ = full_run
    with duckdb.connect(str(warehouse), read_only=True) as con:
        slices = con.sql(
            "select dimension, dimension_value, exposure, dso_days from marts.portfolio_risk"
        ).pl()
        portfolio_dso = con.sql(
            "select dso_days from features.receivables_dso where scope = 'portfolio'"
        ).fetchall()[0][0]
        sectors = slices.filter(pl.col("dimension") == "sector").sort("exposure", descending=True)
        recomputed = {
            sector: _slice_dso_from_the_ledger(con, sector)
            for sector in sectors["dimension_value"].head(3)
        }
    assert slices["dso_days"].null_count() == 0
    assert set(slices["dimension"]) == {
        "portfolio", "sector", "region", "rfm_segment", "delinquency_class", "bureau_rating",
    }  # fmt: skip
    portfolio = slices.filter(pl.col("dimension") == "portfolio")["dso_days"][0]
    assert portfolio == pytest.approx(portfolio_dso, rel=1e-12)
    by_value = dict(sectors.select("dimension_value", "dso_days").iter_rows())
    for sector, dso in recomputed.items():
        assert dso > 0
        assert by_value[sector] == pytest.approx(dso, rel=1e-9), sector
    # slices differ from one another (not the portfolio figure copied)
    assert sectors["dso_days"].n_unique() > 1
    # nothing open in a slice: no days of sales outstanding
    nothing_open = slices.filter(pl.col("exposure").cast(pl.Float64) == 0)
    assert (nothing_open["dso_days"] == 0).all()


def _expected_severity(alert: dict) -> str:
    """The documented rule, written again from the README."""
    kind, exposure, limit = alert["alert_type"], alert["open_exposure"], alert["credit_limit"]
    something_open = exposure is None or exposure > 0
    if kind == "days_past_due_60":
        return "critical" if limit is not None and exposure > limit else "high"
    if kind == "over_credit_limit":
        return "critical" if exposure >= 1.5 * limit else "high"
    if kind == "bureau_rating_downgrade" and alert["current_value"] in ("C", "D"):
        return "critical" if something_open else "medium"
    if kind == "bureau_rating_downgrade":
        return "high" if something_open else "low"
    return "medium" if something_open else "low"


def test_alerts_carry_names_and_exposure_ranked_by_severity_then_exposure(
    full_run, workbook
) -> None:
    warehouse, _ = full_run
    with _snapshot(warehouse) as con:
        alerts = con.sql("select * from marts.risk_alerts order by alert_rank").pl()
        risk = con.sql(
            "select customer_id, open_exposure as risk_exposure, credit_limit as risk_limit "
            "from marts.customer_risk"
        ).pl()
        names = con.sql("select customer_id, name from marts.customer_360").pl()
    assert alerts.height > 10
    # the columns other code reads are kept
    assert {"customer_id", "as_of_date", "alert_type", "alert_date", "previous_value",
            "current_value", "change"} <= set(alerts.columns)  # fmt: skip
    assert alerts["alert_rank"].to_list() == list(range(1, alerts.height + 1))
    assert set(alerts["severity"]) <= set(SEVERITIES) and alerts["severity"].n_unique() > 1
    ranks = alerts["severity"].map_elements(SEVERITIES.index, return_dtype=pl.Int64) + 1
    assert (ranks == alerts["severity_rank"]).all()
    order = list(
        zip(alerts["severity_rank"], (-float(e) for e in alerts["open_exposure"]), strict=True)
    )
    assert order == sorted(order)
    joined = alerts.join(risk, on="customer_id", how="left").join(
        names, on="customer_id", how="left"
    )
    assert (joined["customer_name"] == joined["name"]).all()
    assert joined["customer_name"].null_count() == 0
    assert (joined["open_exposure"] == joined["risk_exposure"]).all()
    for alert in alerts.iter_rows(named=True):
        amounts = {
            key: None if alert[key] is None else float(alert[key])
            for key in ("open_exposure", "credit_limit")
        }
        expected = _expected_severity({**alert, **amounts})
        assert alert["severity"] == expected, alert
    out, _ = workbook
    sheet = _sheet(openpyxl.load_workbook(out), "Alerts")
    assert sheet["customer_id"].to_list() == alerts["customer_id"].to_list()
    assert sheet["severity"].to_list() == alerts["severity"].to_list()


def test_summary_compares_with_the_previous_as_of_date(
    full_run, workbook, demo_inbox: Path, tmp_path: Path
) -> None:
    """A week later (a copy of the warehouse run again as of a later date): the Summary's
    previous row is the first date's figures, kept in the history, and the change between."""
    warehouse, _ = full_run
    out, _ = workbook
    first = _sheet(openpyxl.load_workbook(out), "Summary").row(0, named=True)
    later = tmp_path / "warehouse.duckdb"
    shutil.copy(warehouse, later)
    as_of = first["as_of_date"].date()
    run_cli(demo_inbox, later, "--as-of", str(as_of + timedelta(days=7)))
    output = _export(later, "--out", str(tmp_path / "risk.xlsx"))
    assert f"previous as-of date {as_of}" in output
    summary = _sheet(openpyxl.load_workbook(tmp_path / "risk.xlsx"), "Summary")
    now, previous, change = summary.iter_rows(named=True)
    assert previous["as_of_date"].date() == as_of
    assert change["note"] == f"since {as_of} (7 days)"
    figures = SUMMARY_COLUMNS[2:-1]
    for figure in figures:
        assert previous[figure] == pytest.approx(first[figure], rel=1e-12), figure
        assert change[figure] == pytest.approx(now[figure] - previous[figure], abs=1e-6), figure
    with _snapshot(later) as con:
        dates = con.sql(
            "select as_of_date from marts.portfolio_risk_history "
            "where dimension = 'portfolio' order by 1"
        ).fetchall()
    assert [d for (d,) in dates] == [as_of, as_of + timedelta(days=7)]


def test_without_payments_the_finance_figures_read_unknown(tmp_path: Path) -> None:
    inbox, warehouse = tmp_path / "inbox", tmp_path / "warehouse.duckdb"
    runner = CliRunner()
    generated = runner.invoke(
        app,
        ["demo-data", "--out", str(inbox), "--customers", "150", "--seed", "5",
         "--regime", "no_payments"],
    )  # fmt: skip
    assert generated.exit_code == 0, generated.output
    run_cli(inbox, warehouse)
    output = _export(warehouse, "--out", str(tmp_path / "risk.xlsx"))
    assert "finance figures unknown: no payments known on" in output
    assert "exposure (open receivables): unknown" in output and "DSO: unknown" in output
    book = openpyxl.load_workbook(tmp_path / "risk.xlsx")
    now = _sheet(book, "Summary").row(0, named=True)
    for figure in SUMMARY_COLUMNS[2:-1]:
        assert now[figure] is None, figure  # an empty cell, never 0
    assert now["note"].startswith("unknown: no payments known on")
    aging = _sheet(book, "Aging by customer")
    assert aging.height > 0 and aging["total_open"].null_count() == aging.height
    assert aging["finance_unknown_reason"].null_count() == 0
    slices = _sheet(book, "Portfolio slices")
    assert slices["dso_days"].null_count() == slices.height
    assert slices["exposure"].null_count() == slices.height
    assert slices["finance_unknown_reason"].null_count() == 0
    top = _sheet(book, "Top exposures")
    assert top.height == 1 and top["open_exposure"][0] is None
    assert top["finance_unknown_reason"][0].startswith("unknown: no payments known on")
    folder = tmp_path / "risk"
    _export(warehouse, "--out", str(folder), "--format", "csv")
    summary = pl.read_csv(folder / "summary.csv", infer_schema_length=None).row(0, named=True)
    assert summary["exposure"] is None and summary["note"].startswith("unknown:")
