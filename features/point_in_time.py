"""Past cutoffs for point-in-time training sets.

A supervised model (churn, delinquency) learns from snapshots: features computed at a past
cutoff from facts dated on or before it, and a label from the ``horizon_days`` after it. The
latest usable cutoff is ``as_of - horizon_days``: any later one would need labels from after
the as-of date, which a rerun for that date must not see.

Cutoffs lie on a fixed calendar grid (every ``step_days`` days from ``GRID_EPOCH``), not at
``as_of - horizon_days`` itself: tonight's cutoffs are yesterday's, plus a new one every
``step_days`` nights, so a cutoff's labelled snapshot, once its label window has closed, can be
built once and kept (``features.training_cache``).
"""

from __future__ import annotations

import math
from datetime import date, timedelta

import duckdb

# Day zero of the cutoff grid: every training cutoff is GRID_EPOCH + a multiple of step_days.
GRID_EPOCH = date(2000, 1, 1)


def grid_date_on_or_before(day: date, step_days: int) -> date:
    """The latest date of the cutoff grid on or before ``day``."""
    return day - timedelta(days=(day - GRID_EPOCH).days % step_days)


def training_cutoffs(
    as_of: date, horizon_days: int, *, count: int, step_days: int = 30
) -> list[date]:
    """``count`` cutoffs of the grid, ``step_days`` apart, the latest at least ``horizon_days``
    before ``as_of``.

    Returned oldest first; the last ones are the natural time-based holdout.
    """
    if horizon_days <= 0 or count <= 0 or step_days <= 0:
        raise ValueError("horizon_days, count and step_days must be positive")
    latest = grid_date_on_or_before(as_of - timedelta(days=horizon_days), step_days)
    return [latest - timedelta(days=step_days * k) for k in range(count - 1, -1, -1)]


# Training samples shrink by this factor at a time: the share kept changes only when the
# customers grow by a fifth, not with every new customer, so kept cutoffs stay valid.
SAMPLE_STEP = 2**-0.25


def training_sample_fraction(customers: int, max_training_customers: int) -> float:
    """The share of customers the training cutoffs keep: the largest power of ``SAMPLE_STEP``
    that keeps at most ``max_training_customers`` of ``customers``; 1 when all fit."""
    if customers <= max_training_customers:
        return 1.0
    steps = math.ceil(math.log(max_training_customers / customers, SAMPLE_STEP) - 1e-9)
    return SAMPLE_STEP**steps


# Labels shorter than this say too little about the configured horizon to validate anything.
MIN_LABEL_HORIZON_DAYS = 30


def labelled_cutoffs(
    as_of: date,
    horizon_days: int,
    first_fact: date | None,
    *,
    count: int,
    min_history_days: int,
    step_days: int = 30,
) -> tuple[int, list[date]]:
    """The label horizon the data allows and the labelled cutoffs, oldest first.

    A cutoff is only useful with ``min_history_days`` of facts before it (a snapshot ten days
    after the ledger starts describes nobody). Cutoffs lie on the grid when it has one that
    leaves the configured ``horizon_days`` and that much history. A younger ledger has none:
    its cutoffs are counted back from ``as_of`` minus the longest horizon the history allows
    (they move night by night, so they are not kept, see ``features.training_cache``, and a young
    ledger is small); below ``MIN_LABEL_HORIZON_DAYS`` nothing can be labelled:
    ``(horizon_days, [])``.
    """
    if first_fact is None:
        return horizon_days, []
    earliest = first_fact + timedelta(days=min_history_days)
    on_grid = training_cutoffs(as_of, horizon_days, count=count, step_days=step_days)
    if on_grid[-1] >= earliest:
        return horizon_days, [c for c in on_grid if c >= earliest]
    horizon = min(horizon_days, (as_of - earliest).days)
    if horizon < MIN_LABEL_HORIZON_DAYS:
        return horizon_days, []
    latest = as_of - timedelta(days=horizon)
    cutoffs = [latest - timedelta(days=step_days * k) for k in range(count - 1, -1, -1)]
    return horizon, [c for c in cutoffs if c >= earliest]


def first_invoice_date(con: duckdb.DuckDBPyConnection, as_of: date) -> date | None:
    """The day the ledger starts, as known on ``as_of``: how much history a cutoff can have."""
    return con.sql(
        "select min(issue_date) from staging.invoices where issue_date <= $as_of",
        params={"as_of": as_of},
    ).fetchall()[0][0]


BACKFILL_STEPS = ("day", "week", "month")


def backfill_dates(start: date, end: date, every: str = "day") -> list[date]:
    """As-of dates from ``start`` to ``end`` (included if on a step), oldest first.

    ``month`` keeps the day of the month of ``start``, clamped to the month's length, and
    keeps month ends as month ends: a backfill from 2025-01-31 runs 2025-02-28, 2025-03-31, ...
    """
    if every not in BACKFILL_STEPS:
        raise ValueError(f"every must be one of {', '.join(BACKFILL_STEPS)}, got {every!r}")
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    if every != "month":
        step = timedelta(days=1 if every == "day" else 7)
        return [start + step * k for k in range((end - start) // step + 1)]
    month_end = (start + timedelta(days=1)).month != start.month
    dates = []
    year, month = start.year, start.month
    while True:
        last_day = (date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)).day
        day = last_day if month_end else min(start.day, last_day)
        current = date(year, month, day)
        if current > end:
            return dates
        dates.append(current)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


# Which staging table feeds which feature group; invoices (purchases) are always there.
SOURCES: dict[str, str] = {
    "engagement": "staging.activities",
    "opportunities": "staging.opportunities",
    "payments": "staging.payments",
    "bureau": "staging.credit_reports",
    "firmographics": "staging.accounts",
}
SOURCE_WORDS: dict[str, str] = {
    "engagement": "no CRM activities",
    "opportunities": "no CRM opportunities",
    "payments": "no payments",
    "bureau": "no credit report joins a CRM account",
    "firmographics": "no CRM accounts",
}


def missing_feature_groups(con: duckdb.DuckDBPyConnection, as_of: date) -> dict[str, str]:
    """Feature groups whose source has no usable rows on ``as_of``, with the reason in words."""
    present = {
        "engagement": "select count(*) from staging.activities where occurred_at <= $as_of",
        "opportunities": "select count(*) from staging.opportunities where created_at <= $as_of",
        "payments": "select count(*) from staging.payments where payment_date <= $as_of",
        "bureau": "select count(*) from staging.credit_reports r join staging.accounts a "
        "using (tax_id) where r.report_date <= $as_of",
        "firmographics": "select count(*) from staging.accounts",
    }
    missing = {}
    for group, query in present.items():
        params = {"as_of": as_of} if "$as_of" in query else None
        if con.sql(query, params=params).fetchall()[0][0] == 0:
            missing[group] = SOURCE_WORDS[group]
    return missing
