"""Point-in-time churn snapshots: features at past cutoffs, labels from the horizon after each.

Every feature at a cutoff is computed from facts dated on or before that cutoff, the payment
ledger included: invoice settlement is rebuilt as of each cutoff (a credit note or payment dated
later must not make an invoice look settled, or open, at the cutoff). The BG/NBD baseline is
refitted at each cutoff on that cutoff's purchase history; the model that does it is handed in
(``CutoffBaseline``, ``models.churn.PurchaseBaseline`` in the pipeline), so features never import
models. Loops run over a handful of cutoffs, never over customers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Protocol

import duckdb
import polars as pl

from features.customer import lifetimes_summary
from features.point_in_time import missing_feature_groups
from features.receivables import build_payment_behaviour
from features.warehouse import materialize_sql, write_frame

BG_NBD_COLUMNS = ("bg_nbd_p_alive", "bg_nbd_expected_purchases", "bg_nbd_churn_probability")


class CutoffBaseline(Protocol):
    """A purchase model refitted at one cutoff, scoring that cutoff's customers.

    ``score`` takes the cutoff's lifetimes-shaped summary (frequency, recency, T in
    ``time_unit_days``) and returns ``BG_NBD_COLUMNS`` in the same row order; it raises
    ``ValueError`` when the model cannot be identified from that history.
    """

    time_unit_days: float

    def score(self, model_input: pl.DataFrame, horizon_days: int) -> pl.DataFrame: ...


@dataclass(frozen=True)
class ChurnSnapshots:
    """What one build wrote, for metadata."""

    snapshots: int
    labelled: int
    missing_groups: dict[str, str]
    bg_nbd_failures: dict[str, str]


def _bg_nbd_history(
    con: duckdb.DuckDBPyConnection,
    cutoffs: list[date],
    horizon_days: int,
    baseline: CutoffBaseline,
) -> dict[str, str]:
    """The baseline refitted at each cutoff: P(alive), expected purchases, P(no purchase in H).

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
        try:
            scores = baseline.score(
                lifetimes_summary(summary, baseline.time_unit_days), horizon_days
            )
        except ValueError as error:
            failures[cutoff.isoformat()] = str(error)
            continue
        frames.append(
            pl.concat([summary.select("customer_id", "cutoff_date"), scores], how="horizontal")
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
    baseline: CutoffBaseline,
    default_payment_terms_days: int,
    settlement_tolerance: float,
    scoring_horizon_days: int,
    sample_fraction: float = 1.0,
) -> ChurnSnapshots:
    """Write ``features.churn_snapshots`` (training cutoffs and ``as_of``) and
    ``features.churn_labels`` (training cutoffs only, labelled over ``horizon_days``).

    ``scoring_horizon_days`` is the horizon of BG/NBD's P(no purchase) and expected purchases at
    every cutoff: the configured ``[churn] horizon_days``, also when a short history only lets
    the labels use a shorter ``horizon_days``, so the holdout grades the very quantity that
    would ship.

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
    failures = _bg_nbd_history(con, cutoffs, scoring_horizon_days, baseline)
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
