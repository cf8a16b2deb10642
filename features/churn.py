"""Point-in-time churn snapshots: features at past cutoffs, labels from the horizon after each.

Every feature at a cutoff is computed from facts dated on or before that cutoff, the payment
ledger included: invoice settlement is rebuilt as of each cutoff (a credit note or payment dated
later must not make an invoice look settled, or open, at the cutoff). The BG/NBD baseline is
refitted at each cutoff on that cutoff's purchase history. Loops run over a handful of cutoffs,
never over customers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb
import numpy as np
import polars as pl

from features.customer import lifetimes_summary
from features.receivables import build_payment_behaviour
from features.warehouse import materialize_sql, write_frame
from models.clv import ClvModel, InsufficientDataError, bg_nbd_p_alive

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
BG_NBD_COLUMNS = ("bg_nbd_p_alive", "bg_nbd_expected_purchases", "bg_nbd_churn_probability")
# BG/NBD time unit: weeks, as in the CLV stage's default.
TIME_UNIT_DAYS = 7.0
# Four parameters are pinned down long before this many customers; a fixed-seed sample keeps
# the per-cutoff refits fast on millions of customers. Every customer is still scored.
BG_NBD_FIT_CUSTOMERS = 100_000


@dataclass(frozen=True)
class ChurnSnapshots:
    """What one build wrote, for metadata."""

    snapshots: int
    labelled: int
    missing_groups: dict[str, str]
    bg_nbd_failures: dict[str, str]


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


def _bg_nbd_history(
    con: duckdb.DuckDBPyConnection, cutoffs: list[date], horizon_days: int
) -> dict[str, str]:
    """BG/NBD refitted at each cutoff: P(alive), expected purchases and P(no purchase in H).

    Returns the cutoffs where the fit was impossible (too few repeat buyers), with the reason;
    their BG/NBD columns stay null.
    """
    frames, failures = [], {}
    for cutoff in cutoffs:  # a handful of cutoffs
        summary = con.sql(
            "select * from features.churn_purchase_history where cutoff_date = $cutoff",
            params={"cutoff": cutoff},
        ).pl()
        if summary.height == 0:
            continue
        model_input = lifetimes_summary(summary, TIME_UNIT_DAYS)
        try:
            fit_rows = model_input.sample(
                n=min(model_input.height, BG_NBD_FIT_CUSTOMERS), seed=0, shuffle=False
            )
            model = ClvModel(time_unit_days=TIME_UNIT_DAYS, n_bootstrap=1).fit(fit_rows)
        except (InsufficientDataError, ValueError) as error:
            failures[cutoff.isoformat()] = str(error)
            continue
        horizon = horizon_days / TIME_UNIT_DAYS
        x, t_x, T = (
            model_input[c].cast(pl.Float64).to_numpy() for c in ("frequency", "recency", "T")
        )
        p_alive = (
            bg_nbd_p_alive(model.purchase_params_, x, t_x, T)
            if model.purchase_family_ == "bg_nbd"
            else np.ones_like(x)
        )
        frames.append(
            pl.DataFrame(
                {
                    "customer_id": summary["customer_id"],
                    "cutoff_date": summary["cutoff_date"],
                    "bg_nbd_p_alive": p_alive,
                    "bg_nbd_expected_purchases": model.expected_purchases(model_input, horizon),
                    "bg_nbd_churn_probability": model.probability_no_purchase(model_input, horizon),
                }
            )
        )
    history = (
        pl.concat(frames)
        if frames
        else pl.DataFrame(
            schema={"customer_id": pl.String, "cutoff_date": pl.Date}
            | {c: pl.Float64 for c in BG_NBD_COLUMNS}
        )
    )
    write_frame(con, "features.churn_bg_nbd_history", history)
    return failures


def build_churn_snapshots(
    con: duckdb.DuckDBPyConnection,
    training_cutoffs: list[date],
    as_of: date,
    horizon_days: int,
    *,
    sample_fraction: float = 1.0,
    default_payment_terms_days: int = 30,
    settlement_tolerance: float = 1.0,
    scoring_horizon_days: int | None = None,
) -> ChurnSnapshots:
    """Write ``features.churn_snapshots`` (training cutoffs and ``as_of``) and
    ``features.churn_labels`` (training cutoffs only, labelled over ``horizon_days``).

    ``scoring_horizon_days`` (default ``horizon_days``) is the horizon of BG/NBD's P(no
    purchase) and expected purchases at every cutoff: the configured one, also when a short
    history only lets the labels use a shorter one, so the holdout grades the very quantity
    that would ship.

    ``sample_fraction`` keeps a deterministic share of customers in the training cutoffs (the
    ``as_of`` snapshot is always whole), to bound the fit on very large ledgers.
    """
    late = [c for c in training_cutoffs if (as_of - c).days < horizon_days]
    if late:
        raise ValueError(f"training cutoffs {late} leave less than {horizon_days} days to {as_of}")
    cutoffs = sorted({*training_cutoffs, as_of})
    common = {"cutoffs": cutoffs, "as_of": as_of, "sample_fraction": sample_fraction}
    materialize_sql(con, "features.churn_purchase_history", "feat_churn_purchases", **common)
    materialize_sql(con, "features.churn_engagement_history", "feat_churn_engagement", **common)
    # the credit-risk stage's payment behaviour, each cutoff's from the ledger known then
    build_payment_behaviour(
        con,
        "features.churn_payment_history",
        cutoffs,
        default_payment_terms_days=default_payment_terms_days,
        settlement_tolerance=settlement_tolerance,
        whole_ledger=True,
        sample_fraction=sample_fraction,
        whole_ledger_at=as_of,
    )
    failures = _bg_nbd_history(con, cutoffs, scoring_horizon_days or horizon_days)
    snapshots = materialize_sql(con, "features.churn_snapshots", "feat_churn_snapshots")
    labelled = materialize_sql(
        con, "features.churn_labels", "feat_churn_labels", as_of=as_of, horizon_days=horizon_days
    )
    for table in ("purchase", "engagement", "payment", "bg_nbd"):
        con.execute(f"drop table features.churn_{table}_history")
    return ChurnSnapshots(snapshots, labelled, missing_feature_groups(con, as_of), failures)


def training_frame(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Labelled snapshots: features joined to ``churned``, one row per customer and cutoff."""
    return con.sql(
        "select * from features.churn_snapshots join features.churn_labels "
        "using (customer_id, cutoff_date) order by cutoff_date, customer_id"
    ).pl()


def scoring_frame(con: duckdb.DuckDBPyConnection, as_of: date) -> pl.DataFrame:
    """The ``as_of`` snapshot: every customer with a purchase on or before the as-of date."""
    return con.sql(
        "select * from features.churn_snapshots where cutoff_date = $as_of order by customer_id",
        params={"as_of": as_of},
    ).pl()
