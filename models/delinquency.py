"""Payment delinquency: calibrated probability, 1-100 score, class A-E and reasons in words.

The model is a credit scorecard: logistic regression on payment-behaviour features (and bureau
features when credit reports exist), calibrated with scikit-learn's ``CalibratedClassifierCV``.
A linear score keeps every reason honest: a customer's reason is a feature whose contribution
(coefficient x standardised value) pushes their probability up the most.

The label (``features/sql/feat_delinquency_labels.sql``, defaults of ``[risk]``): a customer is
delinquent at a cutoff when, on some day in the 90 days after it, one of their invoices (open at
the cutoff or issued in the window) is more than 30 days past due and still not settled. An
invoice already more than 30 days past due and unpaid at the cutoff therefore counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl
from sklearn.calibration import CalibratedClassifierCV
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from models.reasons import say_reasons, strongest_terms

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


# Plain-words reason per feature, filled with the customer's own value, and the direction in
# which the feature raises risk (+1: higher is riskier). A feature is only ever given as a
# reason when the fitted coefficient agrees with that direction: correlated features can take
# odd signs, and "pays early" must never be read out as a reason for risk.
_REASONS: dict[str, tuple[int, pl.Expr]] = {
    "tenure_days": (-1, pl.format("customer for only {} days", _number("tenure_days"))),
    "days_since_last_invoice": (
        -1,
        pl.format("new exposure: last invoiced {} days ago", _number("days_since_last_invoice")),
    ),
    "invoices_12m": (1, pl.format("{} invoices in the last 12 months", _number("invoices_12m"))),
    "invoiced_12m": (1, pl.format("invoiced {} in the last 12 months", _money("invoiced_12m"))),
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
    "open_invoices": (1, pl.format("{} invoices unpaid", _number("open_invoices"))),
    "open_amount": (1, pl.format("{} open", _money("open_amount"))),
    "overdue_amount": (1, pl.format("{} overdue", _money("overdue_amount"))),
    "current_days_past_due": (
        1,
        pl.format("an invoice is {} days past due", _number("current_days_past_due")),
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


def _validate_columns(frame: pl.DataFrame, required: list[str]) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"delinquency data is missing columns: {', '.join(missing)}")


class DelinquencyModel:
    """Calibrated logistic scorecard for "more than N days past due within H days".

    Parameters
    ----------
    use_bureau : bool
        Use bureau features when the training data has any; off = payment history only.
    regularization : float
        Inverse L2 strength ``C`` of the logistic regression.
    calibration : str
        ``"isotonic"`` or ``"sigmoid"`` (Platt), passed to ``CalibratedClassifierCV``.
    folds : int
        Cross-validation folds for calibration, grouped by customer so one customer's
        snapshots never sit on both sides.
    """

    def __init__(
        self,
        use_bureau: bool = True,
        regularization: float = 1.0,
        calibration: str = "sigmoid",
        folds: int = 3,
    ) -> None:
        self.use_bureau = use_bureau
        self.regularization = regularization
        self.calibration = calibration
        self.folds = folds

    def _matrix(self, frame: pl.DataFrame) -> np.ndarray:
        columns = []
        for name in self.features_:
            values = pl.col(name).cast(pl.Float64)
            if name in _LOG_FEATURES:
                values = values.clip(lower_bound=0).log1p()
            if name in _CLIPPED:
                values = values.clip(*_CLIPPED[name])
            columns.append(values.alias(name))
        return frame.select(columns).to_numpy().astype(np.float64)

    def fit(self, training: pl.DataFrame) -> DelinquencyModel:
        """Fit on point-in-time snapshots with ``customer_id``, features and ``delinquent``."""
        _validate_columns(training, ["customer_id", LABEL, *BEHAVIOUR_FEATURES])
        has_bureau = all(c in training.columns for c in BUREAU_FEATURES) and (
            training["bureau_delinquency_score"].drop_nulls().len() > 0
        )
        self.bureau_used_ = bool(self.use_bureau and has_bureau)
        self.features_ = list(BEHAVIOUR_FEATURES) + (
            list(BUREAU_FEATURES) if self.bureau_used_ else []
        )
        labels = training[LABEL].cast(pl.Int8).to_numpy()
        if labels.min() == labels.max():
            raise ValueError("delinquency training data has only one class: nothing to learn")
        base = Pipeline(
            [
                ("impute", SimpleImputer(strategy="median", add_indicator=True)),
                ("scale", StandardScaler()),
                ("logit", LogisticRegression(C=self.regularization, max_iter=1000)),
            ]
        )
        groups = training["customer_id"].to_numpy()
        splits = list(GroupKFold(n_splits=self.folds).split(labels, labels, groups))
        # ensemble=False: calibrate on out-of-fold predictions, then refit one scorecard on all
        # rows, so reasons come from the same single model that makes the probabilities.
        # A few dozen columns: threaded BLAS only adds contention on a shared machine (a fit on
        # 126k snapshots took 16 s threaded vs 4 s on one thread on the 2-core reference box).
        with threadpool_limits(limits=1, user_api="blas"):
            self.calibrated_ = CalibratedClassifierCV(
                base, method=self.calibration, cv=splits, ensemble=False
            ).fit(self._matrix(training), labels)
        scorecard = self.calibrated_.calibrated_classifiers_[0].estimator
        imputer = scorecard.named_steps["impute"]
        self.scorecard_ = scorecard
        self.coefficients_ = dict(
            zip(
                imputer.get_feature_names_out(self.features_),
                scorecard.named_steps["logit"].coef_[0].tolist(),
                strict=True,
            )
        )
        self.training_rows_ = len(labels)
        self.base_rate_ = float(labels.mean())
        return self

    def predict_proba(self, frame: pl.DataFrame) -> np.ndarray:
        """Calibrated probability of delinquency per row."""
        _validate_columns(frame, self.features_)
        return self.calibrated_.predict_proba(self._matrix(frame))[:, 1]

    def reasons(
        self, frame: pl.DataFrame, top: int = 3, min_contribution: float = 0.2
    ) -> pl.Series:
        """Up to ``top`` plain-words reasons per row, the strongest push towards delinquency first.

        A reason is a feature whose contribution to the log-odds (coefficient x standardised
        value, relative to the average training customer) is at least ``min_contribution``.
        """
        _validate_columns(frame, self.features_)
        imputer = self.scorecard_.named_steps["impute"]
        scaled = self.scorecard_.named_steps["scale"].transform(
            imputer.transform(self._matrix(frame))
        )
        coefficients = self.scorecard_.named_steps["logit"].coef_[0]
        columns, words = [], []
        for position, name in enumerate(imputer.get_feature_names_out(self.features_)):
            feature = name.removeprefix("missingindicator_")
            if name != feature:  # a missing-value indicator: said only where it has words
                if feature in _MISSING_TEXT:
                    columns.append(position)
                    words.append(pl.lit(_MISSING_TEXT[feature]))
            elif name in _REASONS and np.sign(coefficients[position]) == _REASONS[name][0]:
                columns.append(position)  # never said against its own words' direction
                words.append(_REASONS[name][1])
        terms = np.ascontiguousarray(scaled[:, columns]) * coefficients[columns]
        order, strength = strongest_terms(terms, min(top, len(columns)))
        return say_reasons(
            frame,
            order,
            strength,
            words,
            top=top,
            min_contribution=min_contribution,
            name="delinquency_reasons",
        )


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


@dataclass(frozen=True)
class Evaluation:
    """Holdout comparison of our model, the bureau score alone and the 30+-days rule."""

    summary: pl.DataFrame
    reliability: pl.DataFrame


def _reliability(scorer: str, population: str, predicted: np.ndarray, observed: np.ndarray):
    bins = np.minimum((predicted * 10).astype(np.int64), 9)
    return (
        pl.DataFrame({"bin": bins, "predicted": predicted, "observed": observed.astype(float)})
        .group_by("bin")
        .agg(
            pl.len().alias("customers"),
            pl.col("predicted").mean().alias("mean_predicted"),
            pl.col("observed").mean().alias("observed_rate"),
        )
        .with_columns(
            scorer=pl.lit(scorer),
            population=pl.lit(population),
            bin_from=pl.col("bin") / 10,
            bin_to=(pl.col("bin") + 1) / 10,
        )
        .select(
            "population",
            "scorer",
            "bin_from",
            "bin_to",
            "customers",
            "mean_predicted",
            "observed_rate",
        )
        .sort("bin_from")
    )


def evaluate_holdout(
    history: pl.DataFrame, holdout_cutoff: date, horizon_days: int, model: DelinquencyModel
) -> Evaluation:
    """Backtest at ``holdout_cutoff``: fit on cutoffs whose label window had closed by then.

    Compares, on the same customers, our calibrated model, the bureau delinquency score alone
    (turned into a probability by a logistic fit on the same training rows; lower = riskier)
    and the rule "was ever more than 30 days late" (its training delinquency rate per group).
    Bureau comparisons use the customers with a bureau report; ours also on everyone.
    """
    train = history.filter(pl.col("cutoff_date") <= holdout_cutoff - timedelta(days=horizon_days))
    test = history.filter(pl.col("cutoff_date") == holdout_cutoff)
    if train.height == 0 or test.height == 0:
        raise ValueError(
            f"no training cutoff {horizon_days} days before the holdout {holdout_cutoff}"
        )
    model.fit(train)
    observed = test[LABEL].cast(pl.Int8).to_numpy()
    predictions = {"our_model": model.predict_proba(test)}
    rule_rates = train.group_by("ever_30_days_late").agg(pl.col(LABEL).cast(pl.Float64).mean())
    predictions["rule_ever_30_days_late"] = (
        test.select("ever_30_days_late")
        .join(rule_rates, on="ever_30_days_late", how="left", maintain_order="left")[LABEL]
        .fill_null(float(train[LABEL].cast(pl.Float64).mean()))
        .to_numpy()
    )
    covered = test["bureau_delinquency_score"].is_not_null().to_numpy()
    if covered.any() and train["bureau_delinquency_score"].drop_nulls().len() > 0:
        bureau_train = train.filter(pl.col("bureau_delinquency_score").is_not_null())
        bureau_fit = LogisticRegression().fit(
            bureau_train.select("bureau_delinquency_score").to_numpy(),
            bureau_train[LABEL].cast(pl.Int8).to_numpy(),
        )
        bureau = np.full(test.height, np.nan)
        bureau[covered] = bureau_fit.predict_proba(
            test.filter(pl.col("bureau_delinquency_score").is_not_null())
            .select("bureau_delinquency_score")
            .to_numpy()
        )[:, 1]
        predictions["bureau_delinquency_score"] = bureau
    # Customers already more than 30 days past due at the cutoff are delinquent by definition;
    # the last population leaves them out to show the forward-looking part of the ranking.
    not_yet_late = (test["current_days_past_due"] <= 30).to_numpy()
    populations = {
        "all": np.ones(test.height, dtype=bool),
        "with_bureau_report": covered,
        "with_bureau_report_not_yet_30_days_past_due": covered & not_yet_late,
    }
    rows, reliability = [], []
    for population, mask in populations.items():
        if mask.sum() == 0 or len(np.unique(observed[mask])) < 2:
            continue
        for scorer, predicted in predictions.items():
            if scorer == "bureau_delinquency_score" and population == "all":
                continue
            p, y = predicted[mask], observed[mask]
            rows.append(
                {
                    "holdout_cutoff": holdout_cutoff,
                    "population": population,
                    "scorer": scorer,
                    "customers": int(mask.sum()),
                    "delinquent": int(y.sum()),
                    "auc": float(roc_auc_score(y, p)),
                    "brier": float(brier_score_loss(y, p)),
                    "training_rows": train.height,
                }
            )
            reliability.append(_reliability(scorer, population, p, y))
    return Evaluation(summary=pl.DataFrame(rows), reliability=pl.concat(reliability))
