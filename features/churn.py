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
from features.training_cache import CutoffPlan, keep_cutoffs, restore_cutoffs
from features.warehouse import materialize_sql, row_count, transaction, write_frame

BG_NBD_COLUMNS = ("bg_nbd_p_alive", "bg_nbd_expected_purchases", "bg_nbd_churn_probability")
# features.churn_missing_groups: one row per feature group whose source is missing, and why.
MISSING_GROUPS_SCHEMA = {"feature_group": pl.String, "reason": pl.String}


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
    bg_nbd_failures: dict[str, str]  # of the cutoffs built tonight
    cutoffs_reused: int = 0
    cutoffs_built: int = 0


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
    payment_behaviour_today: str,
    scoring_horizon_days: int,
    sample_fraction: float = 1.0,
    cache_plan: CutoffPlan | None = None,
) -> ChurnSnapshots:
    """Write ``features.churn_snapshots`` (training cutoffs and ``as_of``),
    ``features.churn_labels`` (training cutoffs only, labelled over ``horizon_days``) and
    ``features.churn_missing_groups`` (feature groups whose source is missing on ``as_of``).

    ``scoring_horizon_days`` is the horizon of BG/NBD's P(no purchase) and expected purchases at
    every cutoff: the configured ``[churn] horizon_days``, also when a short history only lets
    the labels use a shorter ``horizon_days``, so the holdout grades the very quantity that
    would ship.

    ``sample_fraction`` keeps a deterministic share of customers in the training cutoffs (the
    ``as_of`` snapshot is always whole), to bound the fit on very large ledgers.
    ``payment_behaviour_today`` is the credit-risk stage's payment behaviour as of ``as_of``
    (``features.payment_behaviour``, the same definition on the whole ledger): the as-of
    snapshot takes it rather than settling the whole ledger again.

    ``cache_plan`` (``features.training_cache.plan_cutoffs`` on ``CHURN_TRAINING_CACHE``) builds
    only the training cutoffs the cache does not hold, keeps them there, and writes every
    training cutoff's rows from it.
    """
    late = [c for c in training_cutoffs if (as_of - c).days < horizon_days]
    if late:
        raise ValueError(f"training cutoffs {late} leave less than {horizon_days} days to {as_of}")
    if cache_plan is not None and sorted(cache_plan.keys) != sorted(training_cutoffs):
        raise ValueError("the cache plan is for other cutoffs than the training cutoffs given")
    to_build = training_cutoffs if cache_plan is None else cache_plan.built
    cutoffs = sorted({*to_build, as_of})
    failures = _cutoff_histories(
        con,
        cutoffs,
        as_of,
        baseline=baseline,
        default_payment_terms_days=default_payment_terms_days,
        settlement_tolerance=settlement_tolerance,
        payment_behaviour_today=payment_behaviour_today,
        sample_fraction=sample_fraction,
        horizon_days=scoring_horizon_days,
    )
    snapshots = materialize_sql(con, "features.churn_snapshots", "feat_churn_snapshots")
    labelled = materialize_sql(
        con, "features.churn_labels", "feat_churn_labels", as_of=as_of, horizon_days=horizon_days
    )
    _drop_histories(con)
    if cache_plan is not None:
        keep_cutoffs(con, CHURN_TRAINING_CACHE, cache_plan, CACHED_ROWS)
        # tonight's scoring snapshot stays as built; the training cutoffs come from the cache
        con.execute(
            f"create or replace temp table {SCORING_SNAPSHOT} as "
            "select * from features.churn_snapshots where cutoff_date = $as_of",
            {"as_of": as_of},
        )
        restore_cutoffs(con, CHURN_TRAINING_CACHE, labels="features.churn_labels", label="churned")
        snapshots = materialize_sql(
            con, "features.churn_snapshots", "feat_churn_training_snapshots"
        )
        con.execute(f"drop table {SCORING_SNAPSHOT}")
        labelled = row_count(con, "features.churn_labels")
    return ChurnSnapshots(
        snapshots,
        labelled,
        _write_missing_groups(con, as_of),
        failures,
        len(cache_plan.reused) if cache_plan else 0,
        len(to_build),
    )


# Where each churn training cutoff's labelled rows are kept between refits, and which rows: the
# snapshot without the account columns (joined from today's accounts when read back) and the label.
CHURN_TRAINING_CACHE = "features.churn_training_cache"
CACHED_ROWS = (
    "select s.* exclude (region, sector, size_band, account_closed), l.churned "
    "from features.churn_snapshots as s join features.churn_labels as l "
    "using (customer_id, cutoff_date)"
)


def refresh_scoring_snapshot(
    con: duckdb.DuckDBPyConnection,
    as_of: date,
    *,
    baseline: CutoffBaseline,
    payment_behaviour_today: str,
    scoring_horizon_days: int,
) -> ChurnSnapshots:
    """Replace only the snapshot scored tonight, keeping the labelled training snapshots.

    For a night that scores with a kept fit (``features.model_store``): the training snapshots
    and labels stay those the fit learnt from, and the as-of snapshot is built exactly as
    ``build_churn_snapshots`` builds it, from the same SQL.
    """
    failures = _cutoff_histories(
        con,
        [as_of],
        as_of,
        baseline=baseline,
        default_payment_terms_days=None,
        settlement_tolerance=None,
        payment_behaviour_today=payment_behaviour_today,
        sample_fraction=1.0,
        horizon_days=scoring_horizon_days,
    )
    with transaction(con):
        materialize_sql(con, SCORING_SNAPSHOT, "feat_churn_snapshots", temporary=True)
        con.execute(
            "delete from features.churn_snapshots where cutoff_date not in "
            "(select distinct cutoff_date from features.churn_labels)"
        )
        con.execute(
            f"insert into features.churn_snapshots by name select * from {SCORING_SNAPSHOT}"
        )
    con.execute(f"drop table {SCORING_SNAPSHOT}")
    _drop_histories(con)
    return ChurnSnapshots(
        row_count(con, "features.churn_snapshots"),
        row_count(con, "features.churn_labels"),
        _write_missing_groups(con, as_of),
        failures,
    )


SCORING_SNAPSHOT = "churn_scoring_snapshot"
HISTORIES = ("purchase", "engagement", "payment", "bg_nbd")


def _cutoff_histories(
    con: duckdb.DuckDBPyConnection,
    cutoffs: list[date],
    as_of: date,
    *,
    baseline: CutoffBaseline,
    default_payment_terms_days: int | None,
    settlement_tolerance: float | None,
    payment_behaviour_today: str,
    sample_fraction: float,
    horizon_days: int,
) -> dict[str, str]:
    """The per-cutoff inputs of ``feat_churn_snapshots.sql``: purchases, engagement, payment
    behaviour (the as-of date's taken from ``payment_behaviour_today``) and the BG/NBD baseline.
    Returns the cutoffs where BG/NBD could not be fitted."""
    stale = con.execute(
        f"select count(*) from {payment_behaviour_today} where cutoff_date <> $as_of",
        {"as_of": as_of},
    ).fetchall()[0][0]
    if stale:  # else tonight's payment features would silently be missing
        raise ValueError(f"{payment_behaviour_today} is not as of {as_of}: build it first")
    common = {"cutoffs": cutoffs, "as_of": as_of, "sample_fraction": sample_fraction}
    materialize_sql(con, "features.churn_purchase_history", "feat_churn_purchases", **common)
    materialize_sql(con, "features.churn_engagement_history", "feat_churn_engagement", **common)
    past = [c for c in cutoffs if c != as_of]
    if past:
        # the credit-risk stage's payment behaviour, each cutoff's from the ledger known then
        build_payment_behaviour(
            con,
            "features.churn_payment_history",
            past,
            default_payment_terms_days=default_payment_terms_days,
            settlement_tolerance=settlement_tolerance,
            whole_ledger=True,
            sample_fraction=sample_fraction,
        )
        con.execute(
            f"insert into features.churn_payment_history by name "
            f"select * from {payment_behaviour_today} where cutoff_date = $as_of",
            {"as_of": as_of},
        )
    else:
        con.execute(
            f"create or replace table features.churn_payment_history as "
            f"select * from {payment_behaviour_today} where cutoff_date = $as_of",
            {"as_of": as_of},
        )
    return _bg_nbd_history(con, cutoffs, horizon_days, baseline)


def _write_missing_groups(con: duckdb.DuckDBPyConnection, as_of: date) -> dict[str, str]:
    """``features.churn_missing_groups``: the feature groups whose source is missing, and why."""
    missing = missing_feature_groups(con, as_of)
    write_frame(
        con,
        "features.churn_missing_groups",
        pl.DataFrame(
            {"feature_group": list(missing), "reason": list(missing.values())},
            schema=MISSING_GROUPS_SCHEMA,
        ),
    )
    return missing


def _drop_histories(con: duckdb.DuckDBPyConnection) -> None:
    for table in HISTORIES:
        con.execute(f"drop table features.churn_{table}_history")


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
