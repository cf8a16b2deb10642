"""``crm-intel segments``: segment lists for campaigns (marketing consent respected)."""

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from features.campaign import (
    DO_NOT_CONTACT,
    DO_NOT_CONTACT_FILE,
    DUPLICATE_EMAIL,
    EXCLUSIONS,
    CampaignList,
    CampaignListError,
    campaign_list,
    campaign_sheet,
    parse_exclusions,
    read_do_not_contact,
)
from pipelines.cli_common import (
    WarehouseOption,
    fail,
    read_published,
    refuse_to_overwrite,
)
from pipelines.resources import DEFAULT_INBOX
from pipelines.wording import plural

segments_app = typer.Typer(help="Segment lists for campaigns (marketing consent respected).")

FILE_FORMATS = {".csv": "csv", ".xlsx": "xlsx"}
STDOUT = Path("-")


@segments_app.command("list")
def segments_list(
    warehouse: WarehouseOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per segment, in a list.")
    ] = False,
) -> None:
    """Segments with their size, reach and value."""
    with read_published(warehouse) as con:
        frame = con.sql(
            "select rfm_segment, customers, contactable_customers::bigint as "
            "contactable_customers, clv_total::double as clv_total, clv_horizon_days, as_of_date "
            "from marts.segment_summary order by clv_total desc nulls last"
        ).pl()
    if as_json:
        typer.echo(json.dumps(frame.to_dicts(), default=str, indent=2))
        return
    horizon = frame["clv_horizon_days"].max()
    clv_column = f"CLV {horizon} days" if horizon else "CLV"
    typer.echo(f"{'segment':<22}{'customers':>10}{'contactable':>13}{clv_column:>16}  as of")
    for name, count, contactable, clv, _, as_of in frame.iter_rows():
        clv_text = "unknown" if clv is None else f"{clv:,.2f}"
        typer.echo(f"{name:<22}{count:>10,}{contactable:>13,}{clv_text:>16}  {as_of}")


def _file_format(out: Path, asked: str | None) -> str:
    """csv or xlsx from the file name; ``--format``, when given, must say the same."""
    if asked is not None and asked not in FILE_FORMATS.values():
        raise fail(f"--format must be csv or xlsx, got {asked!r}")
    if out == STDOUT:
        if asked not in (None, "csv"):
            raise fail("--out - writes CSV to standard output; --format xlsx needs a file name")
        return "csv"
    found = FILE_FORMATS.get(out.suffix.lower())
    if found is None:
        raise fail(f"--out {out}: name the file .csv or .xlsx (the format follows the name)")
    if asked is not None and asked != found:
        raise fail(f"--format {asked} does not match --out {out}; name the file .{asked}")
    return found


def _summary(listing: CampaignList, do_not_contact: Path, exclusions: tuple[str, ...]) -> str:
    """How the segment came down to the list: every contact left out, counted by reason."""
    left_out_no_consent = listing.customers - listing.contactable_customers
    reasons = {
        DO_NOT_CONTACT: f"on the do-not-contact list {do_not_contact}",
        **{name: f"{meaning} (--exclude {name})" for name, meaning in EXCLUSIONS.items()},
        DUPLICATE_EMAIL: "same e-mail address as a contact kept at a higher-value customer",
    }
    lines = [
        f"{listing.segment}: {plural(listing.customers, 'customer')}, "
        f"{listing.contactable_customers:,} with a consenting contact "
        f"({plural(left_out_no_consent, 'customer')} left out: no marketing consent); "
        f"{plural(listing.consenting_contacts, 'consenting contact')}"
    ]
    for reason, count in listing.left_out.items():
        verb = "merged" if reason == DUPLICATE_EMAIL else "left out"
        lines.append(f"  {plural(count, 'contact')} {verb}: {reasons[reason]}")
    if not do_not_contact.is_file():
        lines.append(f"  no do-not-contact list at {do_not_contact}")
    if exclusions and not any(reason in listing.left_out for reason in exclusions):
        lines.append(f"  --exclude {','.join(exclusions)}: no contact left out")
    return "\n".join(lines)


@segments_app.command("export")
def segments_export(
    name: Annotated[str, typer.Argument(help="Segment name, e.g. 'At risk' (any case).")],
    out: Annotated[
        Path,
        typer.Option(
            help="File to write: .csv or .xlsx (the format follows the name); - for "
            "CSV on standard output."
        ),
    ],
    file_format: Annotated[
        str | None, typer.Option("--format", help="csv or xlsx; must match --out.")
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            help="Leave out: "
            + "; ".join(f"{k} = {v}" for k, v in EXCLUSIONS.items())
            + ". Comma-separated or repeated.",
        ),
    ] = None,
    inbox: Annotated[
        Path | None,
        typer.Option(
            help=f"Inbox whose {DO_NOT_CONTACT_FILE} every export honours "
            f"(default: $CRM_INTEL_INBOX or {DEFAULT_INBOX})."
        ),
    ] = None,
    warehouse: WarehouseOption = None,
) -> None:
    """Write one segment's campaign list: consenting contacts, de-duplicated by e-mail, minus
    the do-not-contact list and the exclusions asked for (formulas neutralised)."""
    from features.spreadsheet import write_csv, write_workbook

    if out != STDOUT:
        refuse_to_overwrite(out, warehouse)
    chosen_format = _file_format(out, file_format)
    inbox_path = inbox or Path(os.environ.get("CRM_INTEL_INBOX", DEFAULT_INBOX))
    do_not_contact = inbox_path / DO_NOT_CONTACT_FILE
    try:
        exclusions = parse_exclusions(exclude or ())
        suppressed = read_do_not_contact(do_not_contact)
    except CampaignListError as error:
        raise fail(str(error)) from None
    with read_published(warehouse) as con:
        known = [
            row[0] for row in con.sql("select rfm_segment from marts.segment_summary").fetchall()
        ]
        matching = [k for k in known if k.lower() == name.lower()]
        if not matching:
            raise fail(f"unknown segment {name!r}; segments: {', '.join(sorted(known))}")
        listing = campaign_list(con, matching[0], exclusions, suppressed)
    if chosen_format == "xlsx":
        write_workbook(out, [campaign_sheet(listing)])
    else:
        write_csv(listing.contacts, None if out == STDOUT else out)
    where = "standard output" if out == STDOUT else str(out)
    summary = _summary(listing, do_not_contact, exclusions)
    typer.echo(
        f"{summary}\nwrote {plural(listing.contacts.height, 'contact')} to {where}",
        err=out == STDOUT,
    )
