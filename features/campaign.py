"""Campaign lists: a segment's consenting contacts, minus whom a campaign must not reach.

A list is built from the published snapshot (``export_segment_contacts.sql``). Three things
leave a consenting contact out, and each is counted by reason so nothing disappears silently:

- the do-not-contact file in the inbox (``suppression/do_not_contact.csv``), honoured by every
  export: a row names an ``email`` (case and spaces ignored), a ``contact_id`` or a
  ``customer_id`` (every contact of that customer);
- the exclusions a marketer asks for (``EXCLUSIONS``);
- de-duplication: one row per e-mail address, the highest-value customer's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from features.spreadsheet import DAYS, MONEY, PROBABILITY, WHOLE, Sheet
from features.warehouse import sql_text

DO_NOT_CONTACT_FILE = Path("suppression") / "do_not_contact.csv"
DO_NOT_CONTACT_COLUMNS = ("email", "contact_id", "customer_id")

# What a marketer may leave out, in the words of the marts these come from.
EXCLUSIONS: dict[str, str] = {
    "closed": "account closed in the CRM",
    "credit-hold": "credit class E, the lowest delinquency class",
    "high-churn": "churn risk band high",
}
DO_NOT_CONTACT = "do-not-contact"
DUPLICATE_EMAIL = "duplicate-email"
# the order reasons are applied and reported in (the SQL gives each contact the first)
LEFT_OUT_ORDER = (DO_NOT_CONTACT, *EXCLUSIONS, DUPLICATE_EMAIL)


class CampaignListError(ValueError):
    """A campaign list cannot be built as asked (unknown exclusion, bad do-not-contact file)."""


@dataclass(frozen=True)
class CampaignList:
    """The contacts to write and how the segment's consenting contacts came down to them."""

    segment: str
    customers: int
    contactable_customers: int
    consenting_contacts: int
    contacts: pl.DataFrame
    left_out: dict[str, int] = field(default_factory=dict)


def parse_exclusions(values: Iterable[str]) -> tuple[str, ...]:
    """``["closed,credit-hold", "high-churn"]`` -> the exclusions, in vocabulary order."""
    asked = {part.strip().lower() for value in values for part in value.split(",")} - {""}
    unknown = sorted(asked - EXCLUSIONS.keys())
    if unknown:
        known = "; ".join(f"{name}: {meaning}" for name, meaning in EXCLUSIONS.items())
        raise CampaignListError(f"unknown exclusion {', '.join(unknown)}; known: {known}")
    return tuple(name for name in EXCLUSIONS if name in asked)


def _empty_do_not_contact() -> pl.DataFrame:
    return pl.DataFrame(schema={column: pl.String for column in DO_NOT_CONTACT_COLUMNS})


def read_do_not_contact(path: Path) -> pl.DataFrame:
    """The do-not-contact file as (email, contact_id, customer_id); empty when there is none.

    Any of the three columns may be missing and other columns (a note, a date) are ignored, but
    each row must name someone and an e-mail must look like one: a list that suppresses less
    than its author meant is worse than an export that fails, so the export fails, naming the
    file, row (the header is row 1) and column.
    """
    if not path.is_file():
        return _empty_do_not_contact()
    try:
        frame = pl.read_csv(path, infer_schema=False, encoding="utf8-lossy")
        frame = frame.rename({name: name.strip().lower() for name in frame.columns})
    except (pl.exceptions.PolarsError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CampaignListError(f"{path}: not a readable CSV file ({first_line})") from None
    present = [column for column in DO_NOT_CONTACT_COLUMNS if column in frame.columns]
    if not present:
        raise CampaignListError(
            f"{path}: needs a column {', '.join(DO_NOT_CONTACT_COLUMNS)} (any of them); "
            f"found {', '.join(frame.columns) or 'no header'}"
        )
    frame = frame.select(
        pl.int_range(2, pl.len() + 2).alias("row"),
        *(
            pl.col(c).str.strip_chars().replace("", None).alias(c)
            if c in present
            else pl.lit(None, pl.String).alias(c)
            for c in DO_NOT_CONTACT_COLUMNS
        ),
    )
    blank = frame.filter(pl.all_horizontal(pl.col(c).is_null() for c in DO_NOT_CONTACT_COLUMNS))
    if blank.height:
        raise CampaignListError(
            f"{path}, row {blank['row'][0]}: names no one (columns {', '.join(present)} empty)"
        )
    not_email = frame.filter(
        pl.col("email").is_not_null() & ~pl.col("email").str.contains(r"^[^@\s]+@[^@\s]+$")
    )
    if not_email.height:
        raise CampaignListError(
            f"{path}, row {not_email['row'][0]}, column email: "
            f"{not_email['email'][0][:80]!r} is not an e-mail address"
        )
    return frame.drop("row")


def campaign_list(
    con: duckdb.DuckDBPyConnection,
    segment: str,
    exclusions: Iterable[str] = (),
    do_not_contact: pl.DataFrame | None = None,
) -> CampaignList:
    """One segment's campaign list from the published snapshot open on ``con``."""
    exclusions = set(exclusions)
    suppressed = do_not_contact if do_not_contact is not None else _empty_do_not_contact()
    customers, contactable = con.execute(
        "select count(*), count(*) filter (where contactable) from marts.segment_members "
        "where lower(rfm_segment) = lower(?)",
        [segment],
    ).fetchall()[0]
    con.register("do_not_contact_list", suppressed)
    try:
        candidates = con.sql(
            sql_text("export_segment_contacts"),
            params={
                "segment": segment,
                "exclude_closed": "closed" in exclusions,
                "exclude_credit_hold": "credit-hold" in exclusions,
                "exclude_high_churn": "high-churn" in exclusions,
            },
        ).pl()
    finally:
        con.unregister("do_not_contact_list")
    counts = dict(
        candidates.filter(pl.col("left_out_because").is_not_null())
        .group_by("left_out_because")
        .len()
        .iter_rows()
    )
    return CampaignList(
        segment=segment,
        customers=customers,
        contactable_customers=contactable,
        consenting_contacts=candidates.height,
        contacts=candidates.filter(pl.col("left_out_because").is_null()).drop("left_out_because"),
        left_out={reason: counts[reason] for reason in LEFT_OUT_ORDER if reason in counts},
    )


# Excel number formats of the list's numbers; dates get the date format from their type.
CAMPAIGN_FORMATS = {
    "churn_probability": PROBABILITY,
    "p_alive": PROBABILITY,
    "recency_days": DAYS,
    "frequency": WHOLE,
    "monetary": MONEY,
    "clv": MONEY,
    "clv_horizon_days": DAYS,
}


def campaign_sheet(listing: CampaignList) -> Sheet:
    """The list as one worksheet named after its segment."""
    return Sheet(listing.segment, listing.contacts, CAMPAIGN_FORMATS)
