"""Payment delinquency: calibrated probability, 1-100 score, class A-E and reasons in words.

The model is the shared calibrated scorecard (``models.scorecard``) on payment-behaviour features
(and bureau features when credit reports exist). It is graded on a time-based holdout next to the
bureau score alone and the customer's own late-payment record column by column (share paid late,
average days late, worst and current days past due); the best one ships (``models.selection``).
A linear score keeps every reason honest: a customer's reason is a feature whose contribution
(coefficient x standardised value) pushes their probability up the most.

The label (``features/sql/feat_delinquency_labels.sql``, defaults of ``[risk]``): a customer is
delinquent at a cutoff when, on some day in the 90 days after it, one of their invoices (open at
the cutoff or issued in the window) is more than 30 days past due and still not settled. An
invoice already more than 30 days past due and unpaid at the cutoff therefore counts.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from models.scorecard import CalibratedScorecard, ScorecardSpec
from models.selection import Evaluation, Ranking, evaluate_or_fall_back

LABEL = "delinquent"

# Own payment history: always available when invoices are.
BEHAVIOUR_FEATURES: tuple[str, ...] = (
    "tenure_days",
    "days_since_last_invoice",
    "invoices_12m",
    "invoiced_12m",
    "avg_days_late",
    "weighted_days_late",
    "share_paid_late",
    "share_paid_over_30_late",
    "days_late_trend",
    "worst_days_past_due_12m",
    "ever_30_days_late",
    "share_partial_payments",
    "open_invoices",
    "open_amount",
    "overdue_amount",
    "current_days_past_due",
)
# From the credit bureau: used only when the training data has credit reports.
BUREAU_FEATURES: tuple[str, ...] = (
    "bureau_delinquency_score",
    "bureau_failure_score",
    "bureau_failure_score_change_3m",
    "bureau_legal_events_12m",
    "credit_limit_utilisation",
)
# Amounts and counts have long right tails: the log keeps a few big accounts from dominating.
_LOG_FEATURES = frozenset({"invoiced_12m", "open_amount", "overdue_amount", "invoices_12m"})
_CLIPPED = {"credit_limit_utilisation": (0.0, 5.0), "days_late_trend": (-120.0, 120.0)}


def _number(column: str, decimals: int = 0) -> pl.Expr:
    return pl.col(column).round(decimals).cast(pl.Int64).cast(pl.String)


def _percent(column: str) -> pl.Expr:
    return (pl.col(column) * 100).round(0).cast(pl.Int64).cast(pl.String)


def _money(column: str) -> pl.Expr:
    return pl.col(column).round(0).cast(pl.Int64).cast(pl.String)


def _when_positive(column: str, words: pl.Expr) -> pl.Expr:
    """Words only where the customer has some of it: nothing overdue is never said as overdue."""
    return pl.when(pl.col(column) > 0).then(words).otherwise(pl.lit(""))


# Plain-words reason per feature, filled with the customer's own value, and the direction in
# which the feature raises risk (+1: higher is riskier). A feature is only ever given as a
# reason when the fitted coefficient agrees with that direction: correlated features can take
# odd signs, and "pays early" must never be read out as a reason for risk. Size alone (number
# of invoices, amounts invoiced or open) and how recently the customer was invoiced are no
# reason: they have no words.
_REASONS: dict[str, tuple[int, pl.Expr]] = {
    "tenure_days": (-1, pl.format("customer for only {} days", _number("tenure_days"))),
    "avg_days_late": (
        1,
        pl.format("pays on average {} days after the due date", _number("avg_days_late")),
    ),
    "weighted_days_late": (
        1,
        pl.format("larger invoices paid {} days late on average", _number("weighted_days_late")),
    ),
    "share_paid_late": (
        1,
        pl.format("{}% of invoices paid late in 12 months", _percent("share_paid_late")),
    ),
    "share_paid_over_30_late": (
        1,
        pl.format(
            "{}% of invoices paid more than 30 days late", _percent("share_paid_over_30_late")
        ),
    ),
    "days_late_trend": (
        1,
        pl.format("pays {} days later than earlier in the year", _number("days_late_trend")),
    ),
    "worst_days_past_due_12m": (
        1,
        pl.format("was {} days past due in the last 12 months", _number("worst_days_past_due_12m")),
    ),
    "ever_30_days_late": (1, pl.lit("has been more than 30 days late before")),
    "share_partial_payments": (
        1,
        pl.format("{}% of invoices paid in instalments", _percent("share_partial_payments")),
    ),
    "overdue_amount": (
        1,
        _when_positive("overdue_amount", pl.format("{} overdue", _money("overdue_amount"))),
    ),
    "current_days_past_due": (
        1,
        _when_positive(
            "current_days_past_due",
            pl.format("an invoice is {} days past due", _number("current_days_past_due")),
        ),
    ),
    "bureau_delinquency_score": (
        -1,
        pl.format("bureau delinquency score {} of 100", _number("bureau_delinquency_score")),
    ),
    "bureau_failure_score": (
        -1,
        pl.format("bureau failure score {} of 100", _number("bureau_failure_score")),
    ),
    "bureau_failure_score_change_3m": (
        -1,
        pl.format(
            "bureau failure score moved {} points in 3 months",
            _number("bureau_failure_score_change_3m"),
        ),
    ),
    "bureau_legal_events_12m": (
        1,
        pl.format("{} legal events at the bureau in 12 months", _number("bureau_legal_events_12m")),
    ),
    "credit_limit_utilisation": (
        1,
        pl.format(
            "open balance is {}% of the bureau credit limit", _percent("credit_limit_utilisation")
        ),
    ),
}
# Missing values that are themselves a reason; other missing-value indicators never are.
_MISSING_TEXT = {
    "bureau_delinquency_score": "no bureau report",
    "avg_days_late": "no invoice settled in the last 12 months",
    "share_partial_payments": "no invoice in the last 12 months",
}


DELINQUENCY_SPEC = ScorecardSpec(
    label=LABEL,
    reasons_column="delinquency_reasons",
    features=BEHAVIOUR_FEATURES + BUREAU_FEATURES,
    log_features=_LOG_FEATURES,
    clipped=_CLIPPED,
    reasons=_REASONS,
    missing_reasons=_MISSING_TEXT,
)
# Scorers that need no training, graded next to the scorecard on every holdout.
RANKINGS: tuple[Ranking, ...] = (
    Ranking("bureau_delinquency_score", "baseline", -1),
    Ranking("share_paid_late", "one_column", 1),
    Ranking("avg_days_late", "one_column", 1),
    Ranking("worst_days_past_due_12m", "one_column", 1),
    Ranking("current_days_past_due", "one_column", 1),
)
# What ships when the holdout cannot judge: the customer's own record of paying late.
ROBUST = ("share_paid_late", "worst_days_past_due_12m", "current_days_past_due")
# Graded for reading next to the whole holdout: customers already more than 30 days past due at
# the cutoff are delinquent by definition; the last population shows the forward-looking part.
POPULATIONS = {
    "with_bureau_report": pl.col("bureau_delinquency_score").is_not_null(),
    "not_yet_30_days_past_due": pl.col("current_days_past_due").fill_null(0) <= 30,
}


class DelinquencyModel(CalibratedScorecard):
    """Calibrated scorecard for "more than N days past due within H days" on payment history,
    and bureau facts when the training data has credit reports (``CalibratedScorecard``)."""

    spec = DELINQUENCY_SPEC

    def _usable_features(self, frame: pl.DataFrame) -> list[str]:
        if self.features is None:
            self._validate_columns(frame, BEHAVIOUR_FEATURES)
        features = super()._usable_features(frame)
        self.bureau_used_ = any(f in BUREAU_FEATURES for f in features)
        return features


# models.delinquency_scores: one row per customer; probability, score and class NULL (unknown)
# with the reason when no calibrated model could be fitted.
SCORE_SCHEMA = {
    "customer_id": pl.String,
    "as_of_date": pl.Date,
    "delinquency_probability": pl.Float64,
    "delinquency_score": pl.Int64,
    "delinquency_class": pl.String,
    "delinquency_reasons": pl.String,
    "delinquency_scorer": pl.String,
    "delinquency_unknown_reason": pl.String,
}


def delinquency_score(probability: np.ndarray, anchor_odds: float = 10.0) -> np.ndarray:
    """Scorecard points 1-100, higher = safer (the bureau's direction).

    60 points at good:bad odds of ``anchor_odds`` (10:1, probability 9.1%), 10 more points each
    time the odds double; clipped to 1-100.
    """
    p = np.clip(probability, 1e-6, 1 - 1e-6)
    points = 60.0 + 10.0 / np.log(2.0) * np.log((1.0 - p) / p / anchor_odds)
    return np.clip(np.round(points), 1, 100).astype(np.int64)


def delinquency_class(score: np.ndarray, cut_points: list[int]) -> np.ndarray:
    """Class A (safest) to E from the score: A >= cut_points[0], B >= cut_points[1], ..."""
    cuts = sorted(cut_points, reverse=True)
    if len(cuts) != 4:
        raise ValueError("delinquency classes need four cut points (A/B, B/C, C/D, D/E)")
    classes = np.array(["E", "D", "C", "B", "A"])
    cuts_passed = (np.asarray(score)[:, None] >= np.asarray(cuts)[None, :]).sum(axis=1)
    return classes[cuts_passed]


def score_customers(
    current: pl.DataFrame,
    as_of: date,
    *,
    model: DelinquencyModel | None,
    chosen: str,
    unknown: str | None,
    cut_points: list[int],
) -> pl.DataFrame:
    """``models.delinquency_scores`` rows for the customers of ``current``: probability, score,
    class and reasons, or NULL with ``unknown`` as the reason when there is no calibrated
    ``model``. Each row from its customer's features alone, so any split of the customers gives
    the same rows (scoring on Spark's executors splits them)."""
    if model is None:
        # a ranking without a calibrated level is no probability: unknown, with the reason
        probability = np.full(current.height, np.nan)
        reasons = pl.repeat(None, current.height, dtype=pl.String, eager=True)
    else:
        probability, reasons = model.predict_with_reasons(current, min_contribution=0.2)
    known = ~np.isnan(probability)
    score = delinquency_score(np.where(known, probability, 0.5))  # unknown: masked below
    return pl.DataFrame(
        {
            "customer_id": current["customer_id"],
            "as_of_date": [as_of] * current.height,
            "delinquency_probability": pl.Series(probability).fill_nan(None),
            "delinquency_score": pl.Series(score).set(pl.Series(~known), None),
            "delinquency_class": pl.Series(delinquency_class(score, cut_points)).set(
                pl.Series(~known), None
            ),
            "delinquency_reasons": reasons,
            "delinquency_scorer": [chosen if model is not None else None] * current.height,
            "delinquency_unknown_reason": [unknown] * current.height,
        },
        schema=SCORE_SCHEMA,
    )


def evaluate_holdout(
    history: pl.DataFrame,
    current: pl.DataFrame,
    holdout_cutoffs: list[date],
    label_horizon_days: int,
    configured_horizon_days: int,
    model: DelinquencyModel,
) -> Evaluation:
    """Every delinquency candidate at the holdout cutoffs, one chosen
    (``selection.evaluate_or_fall_back``): the scorecard fitted on cutoffs whose label window
    had closed by then, the bureau score alone and the customer's own late-payment record,
    column by column."""
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
        populations=POPULATIONS,
    )
