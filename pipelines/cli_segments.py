"""``crm-intel segments``: segment lists for campaigns (marketing consent respected)."""

from pathlib import Path
from typing import Annotated

import typer

from features.warehouse import sql_text
from pipelines.cli_common import WarehouseOption, fail, read_published, refuse_to_overwrite

segments_app = typer.Typer(help="Segment lists for campaigns (marketing consent respected).")


@segments_app.command("list")
def segments_list(warehouse: WarehouseOption = None) -> None:
    """Segments with their size, reach and value."""
    with read_published(warehouse) as con:
        rows = con.sql(
            "select rfm_segment, customers, contactable_customers, clv_12m_total, as_of_date "
            "from marts.segment_summary order by clv_12m_total desc nulls last"
        ).fetchall()
    typer.echo(f"{'segment':<22}{'customers':>10}{'contactable':>13}{'CLV 12m':>16}  as of")
    for name, count, contactable, clv, as_of in rows:
        typer.echo(f"{name:<22}{count:>10,}{contactable:>13,}{clv or 0:>16,.2f}  {as_of}")


@segments_app.command("export")
def segments_export(
    name: Annotated[str, typer.Argument(help="Segment name, e.g. 'At risk' (any case).")],
    out: Annotated[Path, typer.Option(help="File to write.")],
    file_format: Annotated[str, typer.Option("--format", help="csv or xlsx.")] = "csv",
    warehouse: WarehouseOption = None,
) -> None:
    """Write one segment's consenting contacts to CSV or XLSX (formulas neutralised)."""
    from features.publish import write_export

    if file_format not in ("csv", "xlsx"):
        raise fail(f"--format must be csv or xlsx, got {file_format!r}")
    refuse_to_overwrite(out, warehouse)
    with read_published(warehouse) as con:
        known = [
            row[0] for row in con.sql("select rfm_segment from marts.segment_summary").fetchall()
        ]
        if name.lower() not in {k.lower() for k in known}:
            raise fail(f"unknown segment {name!r}; segments: {', '.join(sorted(known))}")
        members = con.execute(
            "select count(*), count(*) filter (where contactable) from marts.segment_members "
            "where lower(rfm_segment) = lower(?)",
            [name],
        ).fetchall()[0]
        contacts = con.sql(sql_text("export_segment_contacts"), params={"segment": name}).pl()
    write_export(contacts, out, file_format, sheet=name)
    typer.echo(
        f"{name}: {members[0]:,} customers, {members[1]:,} with a consenting contact; "
        f"wrote {contacts.height:,} contacts to {out} "
        f"({members[0] - members[1]:,} customers left out: no marketing consent)"
    )
