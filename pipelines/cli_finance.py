"""``crm-intel finance``: what a credit manager takes home from the published snapshot."""

from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli_common import WarehouseOption, fail, read_published, refuse_to_overwrite

finance_app = typer.Typer(help="Finance deliverables: the portfolio risk workbook.")

FORMATS = ("xlsx", "csv")


def export_format(out: Path, file_format: str | None) -> str:
    """xlsx or csv: ``--format`` when given, else from ``--out`` (a .xlsx file is a workbook;
    a folder, i.e. a path ending in '/', an existing directory or a name without suffix, gets
    one CSV per sheet). Contradictions fail rather than guess."""
    is_folder = str(out).endswith(("/", "\\")) or out.is_dir() or not out.suffix
    if file_format is None:
        if out.suffix.lower() == ".xlsx":
            return "xlsx"
        if is_folder:
            return "csv"
        raise fail(
            f"--out {out}: give a .xlsx file for the workbook or a folder (e.g. risk/) for one "
            "CSV per sheet"
        )
    if file_format not in FORMATS:
        raise fail(f"--format must be xlsx or csv, got {file_format!r}")
    if file_format == "xlsx" and out.suffix.lower() != ".xlsx":
        raise fail(f"--format xlsx writes a .xlsx file, not {out}")
    if file_format == "csv" and out.is_file():
        raise fail(f"--format csv writes a folder of CSV files; {out} is a file")
    if file_format == "csv" and out.suffix.lower() == ".xlsx":
        raise fail(f"--format csv writes a folder of CSV files, not {out}")
    return file_format


def _money(value: float | None) -> str:
    return "unknown" if value is None else f"{value:,.2f}"


@finance_app.command("export")
def finance_export(
    out: Annotated[
        Path,
        typer.Option(help="risk.xlsx for the workbook, or a folder (risk/) for one CSV a sheet."),
    ],
    file_format: Annotated[
        str | None,
        typer.Option("--format", help="xlsx or csv (default: from --out)."),
    ] = None,
    top: Annotated[int, typer.Option(help="Customers in Top exposures.", min=1)] = 50,
    warehouse: WarehouseOption = None,
) -> None:
    """The portfolio risk workbook: summary with trend, aging by customer, portfolio slices with
    DSO, ranked alerts and top exposures, from the published snapshot."""
    from features.finance_workbook import build_finance_workbook, sheet_file_name
    from features.spreadsheet import write_csv, write_workbook

    kind = export_format(out, file_format)
    targets = [out] if kind == "xlsx" else []
    with read_published(warehouse) as con:
        workbook = build_finance_workbook(con, top)
    if kind == "csv":
        targets = [out / sheet_file_name(sheet) for sheet in workbook.sheets]
    for target in targets:
        refuse_to_overwrite(target, warehouse)
    if kind == "xlsx":
        write_workbook(out, workbook.sheets)
        typer.echo(f"wrote {out} ({', '.join(sheet.name for sheet in workbook.sheets)})")
    else:
        for sheet, target in zip(workbook.sheets, targets, strict=True):
            write_csv(sheet.frame, target)
        typer.echo(f"wrote {len(targets)} CSV files to {out}: {', '.join(t.name for t in targets)}")
    h = workbook.headline
    previous = f"previous as-of date {h.previous_as_of}" if h.previous_as_of else None
    typer.echo(f"as of {h.as_of} ({previous or 'no earlier as-of date kept'})")
    if h.finance_unknown_reason:
        typer.echo(f"finance figures unknown: {h.finance_unknown_reason}")
    customers = h.customers_with_open_receivables
    customers = "unknown" if customers is None else f"{customers:,}"
    typer.echo(f"customers with open receivables: {customers}")
    typer.echo(f"exposure (open receivables): {_money(h.exposure)}")
    typer.echo(f"overdue: {_money(h.overdue)}; over 90 days past due: {_money(h.overdue_over_90)}")
    typer.echo(f"expected loss: {_money(h.expected_loss)}")
    typer.echo("DSO: " + ("unknown" if h.dso_days is None else f"{h.dso_days:.1f} days"))
    typer.echo(f"alerts: {h.alerts:,} ({h.critical_alerts:,} critical)")
