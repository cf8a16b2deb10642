"""Churn: calibrated probability of no purchase in the horizon, risk band and reasons in words.

The supervised model is the shared calibrated scorecard (``models.scorecard``) on purchase
history, BG/NBD outputs at the cutoff, CRM engagement, opportunities, payment behaviour, bureau
facts and firmographics. It is graded on a time-based holdout next to the BG/NBD baseline,
P(no purchase in H days | history), and the plain rankings by recency, frequency and net revenue;
the best one ships (``models.selection``).

Reasons: a linear model's log-odds is a sum of per-feature terms, so a customer's reason is a
feature whose term, coefficient x (value - training mean) / training standard deviation, pushes
their churn log-odds up the most relative to the average training customer. A feature is only
ever a reason when its fitted coefficient points the documented way (more tickets = riskier,
more orders = safer), so "ordered a lot" is never read out as a reason to leave.
"""

from __future__ import annotations

import copy
from datetime import date

import numpy as np
import polars as pl

from models.clv import ClvModel
from models.scorecard import CalibratedScorecard, ScorecardSpec
from models.selection import (
    SUPERVISED,
    Evaluation,
    Ranking,
    evaluate_or_fall_back,
    uncalibrated_probability,
)

LABEL = "churned"
BASELINE = "bg_nbd_churn_probability"
# Four parameters are pinned down long before this many customers; a fixed-seed sample keeps
# the per-cutoff refits fast on millions of customers. Every customer is still scored.
BASELINE_FIT_CUSTOMERS = 100_000


class PurchaseBaseline:
    """BG/NBD refitted at one cutoff: the probabilistic baseline the churn scorer must beat.

    Scores P(alive), expected purchases and P(no purchase) over the horizon for every customer
    of the cutoff, fitted on a fixed-seed sample of at most ``fit_customers``. Raises
    ``ValueError`` (``InsufficientDataError``) when the history cannot identify the model.
    ``clv`` is the unfitted CLV model of the ``[clv]`` settings with the BG/NBD purchase model
    (``ClvSettings().model(purchase_model="bg_nbd")``): P(no purchase) has a closed form for it.
    """

    def __init__(self, clv: ClvModel, fit_customers: int = BASELINE_FIT_CUSTOMERS):
        if clv.purchase_model != "bg_nbd":
            raise ValueError(f"the churn baseline is BG/NBD, got {clv.purchase_model!r}")
        self.clv = clv
        self.time_unit_days = clv.time_unit_days
        self.fit_customers = fit_customers

    def score(self, model_input: pl.DataFrame, horizon_days: int) -> pl.DataFrame:
        # The sample is drawn from the customers in id order, not in the order they were read
        # (a warehouse keeps no row order): the same history gives the same fit on any night,
        # thread count or engine.
        fit_rows = model_input.sort("customer_id").sample(
            n=min(model_input.height, self.fit_customers), seed=0, shuffle=False
        )
        model = copy.copy(self.clv).fit(fit_rows)  # a fresh fit at each cutoff
        horizon = horizon_days / self.time_unit_days
        x, t_x, T = (
            model_input[c].cast(pl.Float64).to_numpy() for c in ("frequency", "recency", "T")
        )
        return pl.DataFrame(
            {
                "bg_nbd_p_alive": model.purchase_.p_alive(x, t_x, T),
                "bg_nbd_expected_purchases": model.expected_purchases(model_input, horizon),
                "bg_nbd_churn_probability": model.probability_no_purchase(model_input, horizon),
            }
        )


# Feature groups, each fed by one source; a group without data is left out and reported.
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "purchases": (
        "recency_days",
        "frequency",
        "net_revenue",
        "tenure_days",
        "usual_gap_days",
        "gap_variation",
        "recency_to_usual_gap",
        "orders_90d",
        "orders_previous_90d",
        "spend_90d",
        "spend_previous_90d",
        "spend_trend",
    ),
    "bg_nbd": ("bg_nbd_p_alive", "bg_nbd_expected_purchases", "bg_nbd_churn_probability"),
    "engagement": (
        "activities_90d",
        "activities_previous_90d",
        "calls_90d",
        "emails_90d",
        "meetings_90d",
        "tickets_90d",
        "days_since_last_activity",
        "days_since_last_call",
        "days_since_last_meeting",
        "days_since_last_email",
    ),
    "opportunities": ("open_opportunities", "lost_opportunities_12m", "won_opportunities_12m"),
    "payments": (
        "avg_days_late",
        "share_paid_late",
        "days_late_trend",
        "worst_days_past_due_12m",
        "open_invoices",
        "current_days_past_due",
    ),
    "bureau": (
        "bureau_failure_score",
        "bureau_delinquency_score",
        "bureau_failure_score_change_3m",
        "bureau_legal_events_12m",
    ),
    "firmographics": ("size_band", "sector", "region"),
}
CATEGORICAL = frozenset({"size_band", "sector", "region"})
# Counts are null where the source has no row for the customer: that means none.
_ZERO_WHEN_NULL = frozenset(
    FEATURE_GROUPS["engagement"][:6]
    + FEATURE_GROUPS["opportunities"]
    + ("bureau_legal_events_12m",)
)
# Long right tails: the log keeps a few huge accounts from dominating a linear model.
_LOG_FEATURES = frozenset(
    {
        "frequency",
        "net_revenue",
        "usual_gap_days",
        "recency_to_usual_gap",
        "orders_90d",
        "orders_previous_90d",
        "spend_90d",
        "spend_previous_90d",
        "bg_nbd_expected_purchases",
        *FEATURE_GROUPS["engagement"],
        *FEATURE_GROUPS["opportunities"],
        "open_invoices",
    }
)
_CLIPPED = {"spend_trend": (-1.0, 5.0), "days_late_trend": (-120.0, 120.0), "gap_variation": (0, 5)}


def _int(column: str) -> pl.Expr:
    return pl.col(column).round(0).cast(pl.Int64).cast(pl.String)


def _percent(column: str, sign: float = 1.0) -> pl.Expr:
    return (pl.col(column) * 100 * sign).round(0).cast(pl.Int64).cast(pl.String)


def _count(column: str, none: str, some: str, one: str | None = None) -> pl.Expr:
    """Words for a count: ``none`` at 0, ``one`` at 1 (if given), else ``some`` with the count."""
    value = pl.col(column).fill_null(0)
    words = pl.when(value == 0).then(pl.lit(none))
    if one is not None:
        words = words.when(value == 1).then(pl.lit(one))
    return words.otherwise(pl.format(some, _int(column)))


_NO_ORDER = (
    pl.when(pl.col("usual_gap_days").is_null())
    .then(pl.format("no order in {} days (only one order so far)", _int("recency_days")))
    .otherwise(
        pl.format(
            "no order in {} days (usual gap {})", _int("recency_days"), _int("usual_gap_days")
        )
    )
)

_PATTERN = pl.format(
    "purchase pattern: {}% chance of no order", _percent("bg_nbd_churn_probability")
)


def _silence(kind: str, noun: str) -> pl.Expr:
    """``no <noun> in N days``, N from days_since_last_<kind>; the same words as _quiet's."""
    days = f"days_since_last_{kind}"
    return (
        pl.when(pl.col(days).is_null())
        .then(pl.lit(f"no {noun} on record"))
        .otherwise(pl.format(f"no {noun} in {{}} days", _int(days)))
    )


def _quiet(column: str, noun: str, nouns: str, kind: str) -> pl.Expr:
    """Few contacts of a kind in 90 days; none is said as the silence since the last one."""
    value = pl.col(column).fill_null(0)
    return (
        pl.when(value == 0)
        .then(_silence(kind, noun))
        .when(value == 1)
        .then(pl.lit(f"only 1 {noun} in 90 days"))
        .otherwise(pl.format(f"only {{}} {nouns} in 90 days", _int(column)))
    )


# Plain-words reason per feature, with the customer's own value, and the direction in which the
# feature raises churn risk (+1: higher is riskier).
_REASONS: dict[str, tuple[int, pl.Expr]] = {
    "recency_days": (1, _NO_ORDER),
    "recency_to_usual_gap": (1, _NO_ORDER),
    "frequency": (-1, _count("purchase_days", "", "only {} orders so far", "only 1 order so far")),
    "net_revenue": (-1, pl.format("lifetime spend only {}", _int("net_revenue"))),
    "tenure_days": (-1, pl.format("customer for only {} days", _int("tenure_days"))),
    "usual_gap_days": (1, pl.format("orders only every {} days", _int("usual_gap_days"))),
    "gap_variation": (1, pl.lit("orders at irregular intervals")),
    "orders_90d": (
        -1,
        _count("orders_90d", "no order in the last 90 days", "only {} orders in the last 90 days"),
    ),
    "spend_90d": (-1, pl.format("spent only {} in the last 90 days", _int("spend_90d"))),
    "spend_trend": (
        -1,
        pl.format("spend down {}% on the previous 90 days", _percent("spend_trend", -1.0)),
    ),
    # the three BG/NBD outputs say one thing; one wording lets a customer hear it once
    "bg_nbd_p_alive": (-1, _PATTERN),
    "bg_nbd_expected_purchases": (-1, _PATTERN),
    "bg_nbd_churn_probability": (1, _PATTERN),
    "activities_90d": (-1, _quiet("activities_90d", "CRM contact", "CRM contacts", "activity")),
    "calls_90d": (-1, _quiet("calls_90d", "call", "calls", "call")),
    "emails_90d": (-1, _quiet("emails_90d", "email", "emails", "email")),
    "meetings_90d": (-1, _quiet("meetings_90d", "meeting", "meetings", "meeting")),
    "tickets_90d": (
        1,
        _count("tickets_90d", "", "{} support tickets in 90 days", "1 support ticket in 90 days"),
    ),
    "days_since_last_activity": (1, _silence("activity", "CRM contact")),
    "days_since_last_call": (1, _silence("call", "call")),
    "days_since_last_meeting": (1, _silence("meeting", "meeting")),
    "days_since_last_email": (1, _silence("email", "email")),
    "open_opportunities": (
        -1,
        _count(
            "open_opportunities",
            "no open opportunity",
            "only {} open opportunities",
            "only 1 open opportunity",
        ),
    ),
    "lost_opportunities_12m": (
        1,
        _count(
            "lost_opportunities_12m", "", "{} deals lost in 12 months", "a deal lost in 12 months"
        ),
    ),
    "won_opportunities_12m": (
        -1,
        _count(
            "won_opportunities_12m",
            "no deal won in 12 months",
            "only {} deals won in 12 months",
            "only 1 deal won in 12 months",
        ),
    ),
    "avg_days_late": (1, pl.format("pays on average {} days late", _int("avg_days_late"))),
    "share_paid_late": (1, pl.format("{}% of invoices paid late", _percent("share_paid_late"))),
    "days_late_trend": (
        1,
        pl.format("pays {} days later than earlier in the year", _int("days_late_trend")),
    ),
    "worst_days_past_due_12m": (
        1,
        pl.format("was {} days past due in 12 months", _int("worst_days_past_due_12m")),
    ),
    "open_invoices": (
        1,
        _count("open_invoices", "", "{} invoices unpaid", "1 invoice unpaid"),
    ),
    "current_days_past_due": (
        1,
        pl.format("an invoice is {} days past due", _int("current_days_past_due")),
    ),
    "bureau_failure_score": (
        -1,
        pl.format("bureau failure score {} of 100", _int("bureau_failure_score")),
    ),
    "bureau_delinquency_score": (
        -1,
        pl.format("bureau delinquency score {} of 100", _int("bureau_delinquency_score")),
    ),
    "bureau_failure_score_change_3m": (
        -1,
        pl.format(
            "failure score worsened by {} in 3 months",
            (-pl.col("bureau_failure_score_change_3m")).round(0).cast(pl.Int64).cast(pl.String),
        ),
    ),
    "bureau_legal_events_12m": (
        1,
        pl.format("{} legal events at the bureau in 12 months", _int("bureau_legal_events_12m")),
    ),
}
# Missing values that are themselves a reason; other missing-value indicators never are.
_MISSING_TEXT = {"days_since_last_activity": "no CRM contact on record"}


CHURN_SPEC = ScorecardSpec(
    label=LABEL,
    reasons_column="churn_reasons",
    features=tuple(c for columns in FEATURE_GROUPS.values() for c in columns),
    categorical=CATEGORICAL,
    log_features=_LOG_FEATURES,
    clipped=_CLIPPED,
    zero_when_null=_ZERO_WHEN_NULL,
    reasons=_REASONS,
    missing_reasons=_MISSING_TEXT,
)


def present_groups(frame: pl.DataFrame, missing: dict[str, str] | None = None) -> list[str]:
    """Feature groups with at least one known value in ``frame`` and not reported missing."""
    groups = []
    for group, columns in FEATURE_GROUPS.items():
        if group in (missing or {}) or not all(c in frame.columns for c in columns):
            continue
        known = frame.select(pl.any_horizontal(pl.col(columns).is_not_null()).any()).item()
        if known:
            groups.append(group)
    return groups


class ChurnModel(CalibratedScorecard):
    """Calibrated scorecard for "no purchase in the horizon after the cutoff".

    Parameters
    ----------
    missing_groups : dict[str, str] | None
        Feature groups known to be missing (group -> reason); they are left out even if a
        column happens to exist. The other parameters are ``CalibratedScorecard``'s.
    """

    spec = CHURN_SPEC

    def __init__(
        self,
        features: tuple[str, ...] | None = None,
        regularization: float | str = "auto",
        *,
        calibration: str,
        folds: int = 3,
        events_per_column: int = 10,
        min_events: int = 10,
        missing_groups: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            features=features,
            regularization=regularization,
            calibration=calibration,
            folds=folds,
            events_per_column=events_per_column,
            min_events=min_events,
        )
        self.missing_groups = missing_groups

    def _usable_features(self, frame: pl.DataFrame) -> list[str]:
        if self.features is not None:
            return super()._usable_features(frame)
        self._validate_columns(frame, FEATURE_GROUPS["purchases"])
        self.groups_ = present_groups(frame, self.missing_groups)
        self.missing_groups_ = {
            group: (self.missing_groups or {}).get(group, "no values in the training data")
            for group in FEATURE_GROUPS
            if group not in self.groups_
        }
        return [c for g in self.groups_ for c in FEATURE_GROUPS[g]]


def churn_risk_band(probability: np.ndarray, cut_points: list[float]) -> np.ndarray:
    """``low`` below cut_points[0], ``medium`` below cut_points[1], else ``high``."""
    if len(cut_points) != 2 or not 0 < cut_points[0] < cut_points[1] < 1:
        raise ValueError(f"churn bands need two increasing cut points in (0, 1), got {cut_points}")
    bands = np.array(["low", "medium", "high"])
    return bands[(np.asarray(probability)[:, None] >= np.asarray(cut_points)[None, :]).sum(axis=1)]


# Scorers that need no training, graded next to the supervised model on every holdout.
RANKINGS: tuple[Ranking, ...] = (
    Ranking(BASELINE, "baseline", 1, is_probability=True),
    Ranking("bg_nbd_expected_purchases", "baseline", -1),
    Ranking("recency_days", "one_column", 1),
    Ranking("frequency", "one_column", -1),
    Ranking("net_revenue", "one_column", -1),
)
# What ships when the holdout cannot judge: the purchase model's probability, else recency.
ROBUST = (BASELINE, "recency_days")


def evaluate_holdout(
    history: pl.DataFrame,
    current: pl.DataFrame,
    holdout_cutoffs: list[date],
    label_horizon_days: int,
    configured_horizon_days: int,
    model: ChurnModel,
) -> Evaluation:
    """Every churn candidate on the holdout cutoffs, one chosen
    (``selection.evaluate_or_fall_back``)."""
    _validate_columns(history, ["customer_id", "cutoff_date", LABEL])
    return evaluate_or_fall_back(
        history,
        current,
        holdout_cutoffs,
        label_horizon_days,
        configured_horizon_days,
        label=LABEL,
        model=model,
        rankings=RANKINGS,
        robust=ROBUST,
    )


def ranking(name: str) -> Ranking:
    """The ranking called ``name``."""
    return next(r for r in RANKINGS if r.column == name)


SCORE_SCHEMA = {
    "customer_id": pl.String,
    "as_of_date": pl.Date,
    "churn_probability": pl.Float64,
    "churn_risk_band": pl.String,
    "churn_reasons": pl.String,
    "churn_model_version": pl.String,
    "account_closed": pl.Boolean,
}
CLOSED_BAND = "closed"
CLOSED_REASON = "account closed in the CRM"


def _validate_columns(frame: pl.DataFrame, required: list[str]) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"churn data is missing columns: {', '.join(missing)}")


def score_customers(
    current: pl.DataFrame,
    as_of: date,
    *,
    scorer: ChurnModel | None,
    chosen: str,
    cut_points: list[float],
    model_version: str,
) -> pl.DataFrame:
    """Churn probability, band and reasons per customer of the ``as_of`` snapshot.

    ``scorer`` is the chosen scorer fitted on the labelled snapshots (``fit_shipped``): the
    supervised model or the chosen ranking's one-column scorecard, which makes the probability
    and the reasons. None when it could not be fitted at the configured horizon: the chosen
    ranking then orders the customers and BG/NBD's P(no purchase) gives the levels
    (``uncalibrated_probability``); no reasons. Accounts closed in the CRM are lost by a
    business rule: no probability, band ``closed``.
    """
    _validate_columns(current, ["customer_id", "account_closed"])
    if scorer is not None:
        probability, reasons = scorer.predict_with_reasons(current)
    else:
        if chosen == SUPERVISED:
            raise ValueError("the supervised scorer was chosen but no model is fitted")
        reference = BASELINE if BASELINE in current.columns else None
        probability = uncalibrated_probability(current, ranking(chosen), reference)
        reasons = pl.repeat("", current.height, dtype=pl.String, eager=True)
    closed = current["account_closed"].fill_null(False)
    band = churn_risk_band(np.nan_to_num(probability, nan=0.0), cut_points)
    scores = pl.DataFrame(
        {
            "customer_id": current["customer_id"],
            "as_of_date": pl.Series([as_of] * current.height, dtype=pl.Date),
            "churn_probability": pl.Series(probability, dtype=pl.Float64).fill_nan(None),
            "churn_risk_band": band,
            "churn_reasons": reasons,
            "churn_model_version": [model_version] * current.height,
            "account_closed": closed,
        },
        schema=SCORE_SCHEMA,
    )
    return scores.with_columns(
        churn_probability=pl.when(closed).then(None).otherwise("churn_probability"),
        churn_risk_band=pl.when(closed)
        .then(pl.lit(CLOSED_BAND))
        .when(pl.col("churn_probability").is_null())
        .then(None)
        .otherwise("churn_risk_band"),
        churn_reasons=pl.when(closed).then(pl.lit(CLOSED_REASON)).otherwise("churn_reasons"),
    )
