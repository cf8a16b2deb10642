"""Past cutoffs for point-in-time training sets.

A supervised model (churn, delinquency) learns from snapshots: features computed at a past
cutoff from facts dated on or before it, and a label from the ``horizon_days`` after it. The
latest usable cutoff is ``as_of - horizon_days``: any later one would need labels from after
the as-of date, which a rerun for that date must not see.
"""

from __future__ import annotations

from datetime import date, timedelta


def training_cutoffs(
    as_of: date, horizon_days: int, count: int = 6, step_days: int = 30
) -> list[date]:
    """``count`` cutoffs, ``step_days`` apart, the latest ``horizon_days`` before ``as_of``.

    Returned oldest first; the last ones are the natural time-based holdout.
    """
    if horizon_days <= 0 or count <= 0 or step_days <= 0:
        raise ValueError("horizon_days, count and step_days must be positive")
    latest = as_of - timedelta(days=horizon_days)
    return [latest - timedelta(days=step_days * k) for k in range(count - 1, -1, -1)]


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
