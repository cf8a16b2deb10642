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
