"""Spreadsheets people open on Monday: formatted XLSX sheets and neutralised CSV.

One writer for every file that leaves the warehouse (the finance workbook, campaign lists), so
they look alike: bold header, frozen first row, filter on every column, widths fitted to the
content, numbers as numbers with a business format (money with thousands separators and two
decimals, rates as percentages, dates as dates). Text is written as text, never as a formula
or a link, whatever it starts with.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from features.publish import neutralise_formulas

MONEY = "#,##0.00"
WHOLE = "#,##0"
RATE = "0.0%"
PROBABILITY = "0.000"
DAYS = "#,##0"
DATE = "yyyy-mm-dd"
TIMESTAMP = "yyyy-mm-dd hh:mm"

HEADER = {"bold": True, "bg_color": "#DDEBF7", "border": 1, "text_wrap": False}
_DTYPE_FORMATS = {pl.Date: DATE, pl.Datetime: TIMESTAMP}


@dataclass(frozen=True)
class Sheet:
    """One worksheet: a frame and the Excel number format of the columns that need one."""

    name: str
    frame: pl.DataFrame
    formats: Mapping[str, str] = field(default_factory=dict)


def write_workbook(path: Path, sheets: Sequence[Sheet]) -> None:
    """Write the sheets, in order, to one XLSX file (formats, frozen header, filters, widths)."""
    import xlsxwriter  # only spreadsheet exports need it

    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"strings_to_formulas": False, "strings_to_urls": False, "strings_to_numbers": False}
    with xlsxwriter.Workbook(str(path), options) as workbook:
        for sheet in sheets:
            formats = {c: f for c, f in sheet.formats.items() if c in sheet.frame.columns}
            sheet.frame.write_excel(
                workbook=workbook,
                worksheet=sheet.name[:31],
                column_formats=formats or None,
                dtype_formats=_DTYPE_FORMATS,
                header_format=HEADER,
                table_style=None,
                autofilter=True,
                autofit=True,
                freeze_panes=(1, 0),
                float_precision=2,
            )


def write_csv(frame: pl.DataFrame, out: Path | None) -> None:
    """CSV with spreadsheet formulas neutralised and text quoted; ``None`` writes to stdout."""
    safe = neutralise_formulas(frame)
    if out is None:
        sys.stdout.write(safe.write_csv(quote_style="non_numeric"))
        sys.stdout.flush()
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    safe.write_csv(out, quote_style="non_numeric")
