"""``crm-intel report``: one self-contained HTML page of plots from the published snapshot."""

from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli_common import WarehouseOption, fail, read_published, refuse_to_overwrite

DEFAULT_REPORT = Path("data/exports/report.html")


def report_command(
    out: Annotated[
        Path, typer.Option(help="HTML file to write (replaced if it exists).")
    ] = DEFAULT_REPORT,
    warehouse: WarehouseOption = None,
) -> None:
    """Write the HTML report (CLV, segments, churn, credit risk, data quality) of the snapshot.

    The page holds its own plotting library and opens offline in any browser.
    """
    from features.report import write_report  # plotly imports slowly: only for this command

    if out.suffix.lower() not in (".html", ".htm"):
        raise fail(f"--out {out} must end in .html")
    refuse_to_overwrite(out, warehouse)
    with read_published(warehouse) as con:
        written = write_report(con, out)
    typer.echo(
        f"report as of {written.as_of_date}: {written.figures} charts, "
        f"{written.size_bytes / 1e6:.1f} MB, written to {out}"
    )
    for note in written.notes:
        typer.echo(f"  not drawn: {note}")
    typer.echo(
        f"open it in a browser (no network needed): {out.resolve().as_uri()} "
        f"(or `xdg-open {out}` / `open {out}`)"
    )
