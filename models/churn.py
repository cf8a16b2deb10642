"""Churn: calibrated probability of no purchase in the horizon, risk band and reasons in words.

The supervised model is a logistic regression on purchase history, BG/NBD outputs at the
cutoff, CRM engagement, opportunities, payment behaviour, bureau facts and firmographics,
calibrated with scikit-learn's ``CalibratedClassifierCV``. It is compared on a time-based
holdout with the BG/NBD baseline, P(no purchase in H days | history), and the better one scores.

Reasons: a linear model's log-odds is a sum of per-feature terms, so a customer's reason is a
feature whose term, coefficient x (value - training mean) / training standard deviation, pushes
their churn log-odds up the most relative to the average training customer. A feature is only
ever a reason when its fitted coefficient points the documented way (more tickets = riskier,
more orders = safer), so "ordered a lot" is never read out as a reason to leave.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from models.delinquency import _reliability
from models.reasons import say_reasons, strongest_terms

LABEL = "churned"
BASELINE = "bg_nbd_churn_probability"

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


def _validate_columns(frame: pl.DataFrame, required: list[str] | tuple[str, ...]) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"churn data is missing columns: {', '.join(missing)}")


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


class ChurnModel:
    """Calibrated logistic regression for "no purchase in the horizon after the cutoff".

    Parameters
    ----------
    regularization : float
        Inverse L2 strength ``C`` of the logistic regression.
    calibration : str
        ``"sigmoid"`` (Platt) or ``"isotonic"``, passed to ``CalibratedClassifierCV``.
    folds : int
        Cross-validation folds for calibration, grouped by customer so one customer's
        snapshots never sit on both sides.
    missing_groups : dict[str, str] | None
        Feature groups known to be missing (group -> reason); they are left out even if a
        column happens to exist.
    """

    def __init__(
        self,
        regularization: float = 1.0,
        calibration: str = "sigmoid",
        folds: int = 3,
        missing_groups: dict[str, str] | None = None,
    ) -> None:
        self.regularization = regularization
        self.calibration = calibration
        self.folds = folds
        self.missing_groups = missing_groups

    def _transformed(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Numeric features on the model's scale (log, clip) with nulls kept; categories 0/1."""
        columns = []
        for name in self.numeric_features_:
            values = pl.col(name).cast(pl.Float64).fill_nan(None)
            if name in _ZERO_WHEN_NULL:
                values = values.fill_null(0.0)
            if name in _LOG_FEATURES:
                values = values.clip(lower_bound=0).log1p()
            if name in _CLIPPED:
                values = values.clip(*_CLIPPED[name])
            columns.append(values.alias(name))
        for name, levels in self.categories_.items():
            columns += [
                (pl.col(name) == level).fill_null(False).cast(pl.Float64).alias(f"{name}={level}")
                for level in levels
            ]
        return frame.select(columns)

    def _matrix(self, frame: pl.DataFrame) -> np.ndarray:
        """Model matrix: nulls filled with the training median, plus a missing-value indicator
        for each feature that had nulls in training (scikit-learn's SimpleImputer with
        add_indicator, done in polars because the imputer's masked median is slow on millions
        of rows)."""
        transformed = self._transformed(frame)
        filled = [pl.col(n).fill_null(self.medians_[n]) for n in self.numeric_features_]
        categories = [c for c in transformed.columns if c not in self.medians_]
        indicators = [
            pl.col(n).is_null().cast(pl.Float64).alias(f"missingindicator_{n}")
            for n in self.missing_indicators_
        ]
        return transformed.select(*filled, *categories, *indicators).to_numpy()

    def fit(self, training: pl.DataFrame) -> ChurnModel:
        """Fit on point-in-time snapshots with ``customer_id``, features and ``churned``."""
        _validate_columns(training, ["customer_id", LABEL, *FEATURE_GROUPS["purchases"]])
        self.groups_ = present_groups(training, self.missing_groups)
        self.missing_groups_ = {
            group: (self.missing_groups or {}).get(group, "no values in the training data")
            for group in FEATURE_GROUPS
            if group not in self.groups_
        }
        features = [c for g in self.groups_ for c in FEATURE_GROUPS[g]]
        self.numeric_features_ = [c for c in features if c not in CATEGORICAL]
        self.categories_ = {
            c: sorted(training[c].drop_nulls().unique().to_list())
            for c in features
            if c in CATEGORICAL
        }
        labels = training[LABEL].cast(pl.Int8).to_numpy()
        if labels.min() == labels.max():
            raise ValueError("churn training data has only one class: nothing to learn")
        transformed = self._transformed(training).select(self.numeric_features_)
        # medians from all training rows, also for the calibration folds: a median moves the
        # filled-in value of a few rows, not the out-of-fold probabilities the calibration needs
        self.medians_ = {
            n: float(v) if v is not None else 0.0
            for n, v in transformed.median().row(0, named=True).items()
        }
        self.missing_indicators_ = [
            n for n, nulls in transformed.null_count().row(0, named=True).items() if nulls
        ]
        # newton-cholesky: few, exact steps; with many more rows than columns it fits several
        # times faster than lbfgs to the same coefficients
        base = Pipeline(
            [
                ("scale", StandardScaler()),
                ("logit", LogisticRegression(C=self.regularization, solver="newton-cholesky")),
            ]
        )
        groups = training["customer_id"].to_numpy()
        splits = list(GroupKFold(n_splits=self.folds).split(labels, labels, groups))
        # ensemble=False: calibrate on out-of-fold predictions, then refit one model on all rows,
        # so reasons come from the same single model that makes the probabilities.
        self.calibrated_ = CalibratedClassifierCV(
            base, method=self.calibration, cv=splits, ensemble=False
        ).fit(self._matrix(training), labels)
        self.model_ = self.calibrated_.calibrated_classifiers_[0].estimator
        self.feature_names_ = [
            *self.numeric_features_,
            *(f"{c}={level}" for c, levels in self.categories_.items() for level in levels),
            *(f"missingindicator_{n}" for n in self.missing_indicators_),
        ]
        self.coefficients_ = dict(
            zip(
                self.feature_names_, self.model_.named_steps["logit"].coef_[0].tolist(), strict=True
            )
        )
        self.training_rows_ = len(labels)
        self.base_rate_ = float(labels.mean())
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "calibrated_"):
            raise RuntimeError("ChurnModel is not fitted yet: call fit(training) first")

    def predict_proba(self, frame: pl.DataFrame) -> np.ndarray:
        """Calibrated probability of no purchase in the horizon, per row."""
        self._check_fitted()
        _validate_columns(frame, self.numeric_features_ + list(self.categories_))
        return self._probability(self._matrix(frame))

    def reasons(
        self, frame: pl.DataFrame, top: int = 3, min_contribution: float = 0.1
    ) -> pl.Series:
        """Up to ``top`` plain-words reasons per row, the strongest push towards churn first.

        A reason is a feature whose log-odds term relative to the average training customer,
        coefficient x standardised value, is at least ``min_contribution``.
        """
        self._check_fitted()
        _validate_columns(frame, self.numeric_features_ + list(self.categories_))
        return self._reasons(frame, self._matrix(frame), top, min_contribution)

    def predict_with_reasons(
        self, frame: pl.DataFrame, top: int = 3, min_contribution: float = 0.1
    ) -> tuple[np.ndarray, pl.Series]:
        """``predict_proba`` and ``reasons`` from one model matrix (scoring needs both)."""
        self._check_fitted()
        _validate_columns(frame, self.numeric_features_ + list(self.categories_))
        matrix = self._matrix(frame)
        return self._probability(matrix), self._reasons(frame, matrix, top, min_contribution)

    def _terms(self) -> tuple[np.ndarray, np.ndarray]:
        """Per model column, weight and offset of its log-odds term: coefficient x (value -
        mean) / scale = value x weight - offset. Folding the scaler into the weights spares
        scikit-learn's copy and rescaling of the whole matrix (seconds at a million rows)."""
        scale = self.model_.named_steps["scale"]
        weights = self.model_.named_steps["logit"].coef_[0] / scale.scale_
        return weights, scale.mean_ * weights

    def _probability(self, matrix: np.ndarray) -> np.ndarray:
        """``calibrated_.predict_proba(matrix)[:, 1]``, computed as scikit-learn does for a
        binary label (log-odds, then the fitted calibrator), without rescaling the matrix."""
        weights, offsets = self._terms()
        intercept = self.model_.named_steps["logit"].intercept_[0]
        log_odds = matrix @ weights + (intercept - offsets.sum())
        calibrator = self.calibrated_.calibrated_classifiers_[0].calibrators[0]
        probability = np.asarray(calibrator.predict(log_odds), dtype=np.float64)
        # scikit-learn's own clean-up of rounding just above 1
        probability[(probability > 1.0) & (probability <= 1.0 + 1e-5)] = 1.0
        return probability

    def _speakable(self) -> tuple[np.ndarray, list[pl.Expr | None]]:
        """Which model columns may be read out as a reason, and their words."""
        coefficients = self.model_.named_steps["logit"].coef_[0]
        speakable = np.zeros(len(self.feature_names_), dtype=bool)
        words: list[pl.Expr | None] = []
        for position, name in enumerate(self.feature_names_):  # features, not customers
            feature = name.removeprefix("missingindicator_")
            if name != feature:
                speakable[position] = feature in _MISSING_TEXT
                words.append(pl.lit(_MISSING_TEXT[feature]) if speakable[position] else None)
            elif name in _REASONS:
                speakable[position] = np.sign(coefficients[position]) == _REASONS[name][0]
                words.append(_REASONS[name][1])
            else:  # categories and features without words (e.g. orders_previous_90d)
                words.append(None)
        return speakable, words

    def _reasons(
        self, frame: pl.DataFrame, matrix: np.ndarray, top: int, min_contribution: float
    ) -> pl.Series:
        speakable, words = self._speakable()
        columns = np.flatnonzero(speakable)  # the others are never ranked
        weights, offsets = self._terms()
        terms = np.ascontiguousarray(matrix[:, columns]) * weights[columns] - offsets[columns]
        # one extra rank so a reason said twice (recency and recency vs usual gap) still
        # leaves ``top`` distinct reasons
        order, strength = strongest_terms(terms, min(top + 1, len(columns)))
        return say_reasons(
            frame,
            order,
            strength,
            [words[position] for position in columns],
            top=top,
            min_contribution=min_contribution,
            name="churn_reasons",
        )


def churn_risk_band(probability: np.ndarray, cut_points: list[float]) -> np.ndarray:
    """``low`` below cut_points[0], ``medium`` below cut_points[1], else ``high``."""
    if len(cut_points) != 2 or not 0 < cut_points[0] < cut_points[1] < 1:
        raise ValueError(f"churn bands need two increasing cut points in (0, 1), got {cut_points}")
    bands = np.array(["low", "medium", "high"])
    return bands[(np.asarray(probability)[:, None] >= np.asarray(cut_points)[None, :]).sum(axis=1)]


def top_decile_lift(observed: np.ndarray, predicted: np.ndarray) -> float:
    """Churn rate among the 10% highest predictions over the overall churn rate."""
    top = max(1, int(np.ceil(len(predicted) * 0.1)))
    order = np.argsort(-predicted, kind="stable")[:top]
    return float(observed[order].mean() / observed.mean())


@dataclass(frozen=True)
class Evaluation:
    """Holdout comparison of the supervised model and the BG/NBD baseline."""

    summary: pl.DataFrame
    reliability: pl.DataFrame
    chosen: str


def evaluate_holdout(
    history: pl.DataFrame, holdout_cutoffs: list[date], horizon_days: int, model: ChurnModel
) -> Evaluation:
    """Backtest on ``holdout_cutoffs``: fit on cutoffs whose label window had closed by the first.

    Both scorers are graded on the same holdout customers: ROC AUC, PR AUC (average precision),
    Brier score and lift in the top decile. The one with the higher ROC AUC is chosen; the
    baseline wins ties and is the only candidate when the model cannot be fitted.
    """
    first = min(holdout_cutoffs)
    train = history.filter(pl.col("cutoff_date") <= first - timedelta(days=horizon_days))
    test = history.filter(pl.col("cutoff_date").is_in(holdout_cutoffs))
    if train.height == 0 or test.height == 0:
        raise ValueError(f"no training cutoff {horizon_days} days before the holdout {first}")
    observed = test[LABEL].cast(pl.Int8).to_numpy()
    if observed.min() == observed.max():
        raise ValueError("the holdout has only one class: AUC is undefined")
    predictions = {"supervised": model.fit(train).predict_proba(test)}
    if BASELINE in test.columns and test[BASELINE].null_count() < test.height:
        # the baseline needs no training; customers it could not score get the holdout mean
        baseline = test[BASELINE].cast(pl.Float64)
        predictions["bg_nbd_baseline"] = baseline.fill_null(baseline.mean()).to_numpy()
    rows, reliability = [], []
    for scorer, predicted in predictions.items():
        rows.append(
            {
                "scorer": scorer,
                "holdout_cutoffs": ", ".join(c.isoformat() for c in sorted(holdout_cutoffs)),
                "customers": test.height,
                "churned": int(observed.sum()),
                "training_rows": train.height if scorer == "supervised" else 0,
                "roc_auc": float(roc_auc_score(observed, predicted)),
                "pr_auc": float(average_precision_score(observed, predicted)),
                "brier": float(brier_score_loss(observed, predicted)),
                "top_decile_lift": top_decile_lift(observed, predicted),
            }
        )
        reliability.append(_reliability(scorer, "holdout", predicted, observed))
    summary = pl.DataFrame(rows)
    best = summary.sort("roc_auc", descending=True)["scorer"][0]
    if "bg_nbd_baseline" in predictions and (
        summary.filter(pl.col("scorer") == "bg_nbd_baseline")["roc_auc"][0]
        >= summary.filter(pl.col("scorer") == "supervised")["roc_auc"][0]
    ):
        best = "bg_nbd_baseline"
    summary = summary.with_columns(chosen=pl.col("scorer") == best)
    return Evaluation(summary=summary, reliability=pl.concat(reliability), chosen=best)


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


def score_customers(
    current: pl.DataFrame,
    as_of: date,
    *,
    model: ChurnModel | None,
    chosen: str,
    cut_points: list[float],
    model_version: str,
) -> pl.DataFrame:
    """Churn probability, band and reasons per customer of the ``as_of`` snapshot.

    ``chosen`` is ``"supervised"`` (the fitted ``model``) or ``"bg_nbd_baseline"``. Reasons come
    from ``model`` whenever it is fitted, also when the baseline makes the probability, since
    they name the facts behind the risk; without a model they are empty. Accounts closed in the
    CRM are lost by a business rule: no probability, band ``closed``.
    """
    _validate_columns(current, ["customer_id", "account_closed"])
    if chosen == "supervised":
        if model is None:
            raise ValueError("the supervised scorer was chosen but no model is fitted")
        probability, reasons = model.predict_with_reasons(current)
    else:
        _validate_columns(current, [BASELINE])
        probability = current[BASELINE].cast(pl.Float64).to_numpy()
        reasons = (
            model.reasons(current)
            if model is not None
            else pl.Series("churn_reasons", [None] * current.height, dtype=pl.String)
        )
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
