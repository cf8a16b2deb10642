"""The finance workbook: what a credit manager opens on Monday, built from the published snapshot.

Five sheets, each a plain query of the marts (SQL in ``features/sql/export_finance_*.sql``) so
every figure in the workbook is the figure in the warehouse, to the cent:

- Summary: customers with open receivables, exposure, overdue, over 90 days past due, expected
  loss and DSO as of the snapshot's date, as of the previous as-of date the history kept
  (``marts.portfolio_risk_history``) and the change; no earlier date is said, not invented.
- Aging by customer, Portfolio slices (with DSO per slice), Alerts ranked by severity then
  exposure, Top exposures.

A figure that cannot be known (no payments: ``marts.finance_status``) stays empty with the
reason next to it, never 0. Reads only: the connection may be (and in the CLI is) read-only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import duckdb

from features.spreadsheet import DAYS, MONEY, PROBABILITY, RATE, WHOLE, Sheet
from features.warehouse import sql_text, table_exists

HISTORY = "marts.portfolio_risk_history"
# the history's columns with no row: a snapshot published before the history was kept
NO_HISTORY = "(select * from marts.portfolio_risk limit 0)"
TOP_EXPOSURES = 50

SUMMARY_FORMATS = {
    "customers_with_open_receivables": WHOLE,
    "exposure": MONEY,
    "overdue": MONEY,
    "overdue_over_90": MONEY,
    "expected_loss": MONEY,
    "dso_days": "#,##0.0",
}
AGING_FORMATS = {
    "credit_limit": MONEY,
    "credit_limit_utilisation": RATE,
    **dict.fromkeys(
        ("not_due", "dpd_1_30", "dpd_31_60", "dpd_61_90", "dpd_91_180", "dpd_over_180"), MONEY
    ),
    "unapplied_credit": MONEY,
    "total_open": MONEY,
    "max_days_past_due": DAYS,
    "expected_loss": MONEY,
}
SLICE_FORMATS = {
    "customers": WHOLE,
    "customers_with_exposure": WHOLE,
    "exposure": MONEY,
    "share_of_exposure": RATE,
    "overdue": MONEY,
    "overdue_over_60": MONEY,
    "overdue_over_90": MONEY,
    "expected_loss": MONEY,
    "expected_loss_rate": RATE,
    "exposure_weighted_probability": PROBABILITY,
    "customers_over_credit_limit": WHOLE,
    "exposure_over_credit_limit": MONEY,
    "top10_exposure_share": RATE,
    "herfindahl_index": PROBABILITY,
    "dso_days": "#,##0.0",
}
ALERT_FORMATS = {
    "alert_rank": WHOLE,
    "open_exposure": MONEY,
    "credit_limit": MONEY,
    "credit_limit_utilisation": RATE,
}
TOP_FORMATS = {
    "exposure_rank": WHOLE,
    "credit_limit": MONEY,
    "credit_limit_utilisation": RATE,
    "open_exposure": MONEY,
    "share_of_exposure": RATE,
    "overdue": MONEY,
    "max_days_past_due": DAYS,
    "delinquency_probability": PROBABILITY,
    "expected_loss": MONEY,
}


@dataclass(frozen=True)
class Headline:
    """The Summary's current row, for the command's closing lines (None: unknown or none)."""

    as_of: date
    customers_with_open_receivables: int | None
    exposure: float | None
    overdue: float | None
    overdue_over_90: float | None
    expected_loss: float | None
    dso_days: float | None
    previous_as_of: date | None
    alerts: int
    critical_alerts: int
    finance_unknown_reason: str | None


@dataclass(frozen=True)
class FinanceWorkbook:
    sheets: list[Sheet]
    headline: Headline


def sheet_file_name(sheet: Sheet) -> str:
    """A sheet's CSV file name in the folder form: 'Aging by customer' -> aging_by_customer.csv."""
    return re.sub(r"[^a-z0-9]+", "_", sheet.name.lower()).strip("_") + ".csv"


def build_finance_workbook(
    con: duckdb.DuckDBPyConnection, top: int = TOP_EXPOSURES
) -> FinanceWorkbook:
    """The workbook's sheets and headline figures from the snapshot ``con`` points at."""
    if top < 1:
        raise ValueError(f"top exposures needs at least one customer, got {top}")
    history = HISTORY if table_exists(con, HISTORY) else NO_HISTORY
    summary = con.sql(sql_text("export_finance_summary", {"history": history})).pl()
    aging = con.sql(sql_text("export_finance_aging")).pl()
    slices = con.sql(sql_text("export_finance_slices")).pl()
    alerts = con.sql(sql_text("export_finance_alerts")).pl()
    top_exposures = con.sql(sql_text("export_finance_top_exposures"), params={"top": top}).pl()
    sheets = [
        Sheet("Summary", summary, SUMMARY_FORMATS),
        Sheet("Aging by customer", aging, AGING_FORMATS),
        Sheet("Portfolio slices", slices, SLICE_FORMATS),
        Sheet("Alerts", alerts, ALERT_FORMATS),
        Sheet("Top exposures", top_exposures, TOP_FORMATS),
    ]
    now, previous = summary.row(0, named=True), summary.row(1, named=True)
    reason = con.sql("select finance_unknown_reason from marts.finance_status").fetchall()[0][0]
    headline = Headline(
        as_of=now["as_of_date"],
        customers_with_open_receivables=now["customers_with_open_receivables"],
        exposure=now["exposure"],
        overdue=now["overdue"],
        overdue_over_90=now["overdue_over_90"],
        expected_loss=now["expected_loss"],
        dso_days=now["dso_days"],
        previous_as_of=previous["as_of_date"],
        alerts=alerts.height,
        critical_alerts=alerts.filter(alerts["severity"] == "critical").height,
        finance_unknown_reason=reason,
    )
    return FinanceWorkbook(sheets, headline)
