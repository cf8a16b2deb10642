"""One calibrated logistic scorecard for churn and delinquency, sized to the evidence.

A scorecard is a logistic regression on point-in-time snapshots (log of counts and amounts,
clipped trends, median-filled nulls with a missing-value indicator, one-hot categories),
calibrated with scikit-learn's ``CalibratedClassifierCV`` on folds grouped by customer.

Sized to the evidence: the number of model columns is at most the number of events of the rarer
class over ``events_per_column`` (the events-per-variable rule of credit scoring and clinical
prediction models, 10 by default); when there are more candidate columns the strongest by
univariate AUC on the training rows are kept. The L2 strength is chosen by grouped
cross-validated log loss while the events are fewer than 50 per column; with more, the penalty
barely moves the fit and C = 1 is kept. Fewer than ``min_events`` events: no fit at all
(``NotEnoughEvidence``).

Reasons: a linear model's log-odds is a sum of per-column terms, so a customer's reason is a
column whose term, coefficient x (value - training mean) / training standard deviation, pushes
their log-odds up the most. A column is only ever a reason when its fitted coefficient points the
documented way and it has words; size alone (amounts invoiced, number of invoices) has no words.
The churn and delinquency models are this class with their own feature lists and words.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from models.reasons import say_reasons, strongest_terms
from models.threads import bounded_blas_threads

# Inverse L2 strengths tried by cross-validation (standardised columns).
REGULARIZATION_GRID = (0.01, 0.1, 1.0, 10.0)
# From this many events per model column on, the penalty barely moves the fit: C = 1 is kept
# and the search (a dozen extra fits) is skipped.
ABUNDANT_EVENTS_PER_COLUMN = 50
# Rows used to pick the strength and screen columns; the final fit uses every row.
SEARCH_ROWS = 50_000


class NotEnoughEvidence(ValueError):
    """Too few events of the rarer class to fit a scorecard that can be trusted."""


@dataclass(frozen=True)
class ScorecardSpec:
    """What a scorecard may use and how it speaks: feature lists, transforms, reason words."""

    label: str
    reasons_column: str
    features: tuple[str, ...]
    categorical: frozenset[str] = frozenset()
    log_features: frozenset[str] = frozenset()
    clipped: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    zero_when_null: frozenset[str] = frozenset()
    # feature -> (direction in which it raises risk, +1 higher is riskier; words)
    reasons: Mapping[str, tuple[int, pl.Expr]] = field(default_factory=dict)
    # missing values that are themselves a reason
    missing_reasons: Mapping[str, str] = field(default_factory=dict)


def univariate_auc(matrix: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC AUC of each column of ``matrix`` alone (ties averaged), vectorised over columns."""
    ranks = rankdata(matrix, axis=0)
    positives = labels.astype(bool)
    n1, n0 = positives.sum(), (~positives).sum()
    return (ranks[positives].sum(axis=0) - n1 * (n1 + 1) / 2) / (n1 * n0)


def grouped_folds(
    labels: np.ndarray, groups: np.ndarray, folds: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-validation folds that never split a customer and share out the customers with an
    event evenly, so every fold sees both classes (scikit-learn's StratifiedGroupKFold, without
    its Python loop over groups, which takes seconds at 100,000 customers).

    ``groups`` are integer codes, one per customer; the assignment is deterministic.
    """
    _, codes = np.unique(groups, return_inverse=True)
    with_event = np.bincount(codes, weights=labels) > 0
    # customers with an event first, then the others, dealt round-robin to the folds
    order = np.lexsort((np.arange(len(with_event)), ~with_event))
    fold_of_group = np.empty(len(with_event), dtype=np.int64)
    fold_of_group[order] = np.arange(len(with_event)) % folds
    fold = fold_of_group[codes]
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(folds)]


def _sample(rows: int, limit: int) -> np.ndarray:
    """A fixed, evenly spread subset of row positions (all rows when ``rows <= limit``)."""
    if rows <= limit:
        return np.arange(rows)
    return np.linspace(0, rows - 1, limit).astype(np.int64)


class CalibratedScorecard(ClassifierMixin, BaseEstimator):
    """Calibrated logistic scorecard over the features of ``spec`` (a class attribute).

    Parameters
    ----------
    features : tuple[str, ...] | None
        The features to use; None = every feature of the spec present in the training data.
        One feature gives the calibrated version of a plain one-column ranking.
    regularization : float | str
        Inverse L2 strength ``C``; ``"auto"`` picks it from ``REGULARIZATION_GRID`` by
        cross-validated log loss on folds grouped by customer.
    calibration : str
        ``"sigmoid"`` (Platt) or ``"isotonic"``, passed to ``CalibratedClassifierCV``.
    folds : int
        Cross-validation folds, grouped by customer so one customer's snapshots never sit on
        both sides, and stratified so every fold sees both classes (``grouped_folds``).
    events_per_column : int
        At most (events of the rarer class) / this many model columns.
    min_events : int
        Fewer events of the rarer class than this: not fitted.
    """

    spec: ScorecardSpec

    def __init__(
        self,
        features: tuple[str, ...] | None = None,
        regularization: float | str = "auto",
        *,
        calibration: str,
        folds: int = 3,
        events_per_column: int = 10,
        min_events: int = 10,
    ) -> None:
        self.features = features
        self.regularization = regularization
        self.calibration = calibration
        self.folds = folds
        self.events_per_column = events_per_column
        self.min_events = min_events

    # --- input ---------------------------------------------------------------------------------

    def _validate_columns(self, frame: pl.DataFrame, required: list[str] | tuple[str, ...]) -> None:
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise ValueError(f"{self.spec.label} data is missing columns: {', '.join(missing)}")

    def _usable_features(self, frame: pl.DataFrame) -> list[str]:
        """The features to fit: as asked, or every spec feature with a known value."""
        if self.features is not None:
            self._validate_columns(frame, self.features)
            return list(self.features)
        return [
            c
            for c in self.spec.features
            if c in frame.columns and frame[c].null_count() < frame.height
        ]

    def _transformed(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Numeric features on the model's scale (log, clip) with nulls kept; categories 0/1."""
        spec, columns = self.spec, []
        for name in self.numeric_features_:
            values = pl.col(name).cast(pl.Float64).fill_nan(None)
            if name in spec.zero_when_null:
                values = values.fill_null(0.0)
            if name in spec.log_features:
                values = values.clip(lower_bound=0).log1p()
            if name in spec.clipped:
                values = values.clip(*spec.clipped[name])
            columns.append(values.alias(name))
        for name, levels in self.categories_.items():
            columns += [
                (pl.col(name) == level).fill_null(False).cast(pl.Float64).alias(f"{name}={level}")
                for level in levels
            ]
        return frame.select(columns)

    def _full_matrix(
        self, frame: pl.DataFrame, transformed: pl.DataFrame | None = None
    ) -> np.ndarray:
        """Every candidate column: nulls filled with the training median plus a missing-value
        indicator for each feature that had nulls in training (scikit-learn's SimpleImputer with
        add_indicator, done in polars because the imputer's masked median is slow on millions
        of rows). ``transformed`` is ``_transformed(frame)`` when the caller already has it.

        Row-major (C order), as the solver and the scoring read it: a column-major copy would
        be transposed once more on the way, a second pass over a million-row matrix."""
        if transformed is None:
            transformed = self._transformed(frame)
        filled = [pl.col(n).fill_null(self.medians_[n]) for n in self.numeric_features_]
        categories = [c for c in transformed.columns if c not in self.medians_]
        indicators = [
            pl.col(n).is_null().cast(pl.Float64).alias(f"missingindicator_{n}")
            for n in self.missing_indicators_
        ]
        return transformed.select(*filled, *categories, *indicators).to_numpy(order="c")

    def _kept(self, full: np.ndarray) -> np.ndarray:
        """The columns kept by the fit, in ``feature_names_`` order, C-contiguous; ``full``
        itself when every column is kept (no copy)."""
        if len(self.kept_columns_) == full.shape[1]:
            return full
        return np.ascontiguousarray(full[:, self.kept_columns_])

    def _matrix(self, frame: pl.DataFrame) -> np.ndarray:
        """The model matrix: the columns kept by the fit, in ``feature_names_`` order."""
        return self._kept(self._full_matrix(frame))

    # --- fit -----------------------------------------------------------------------------------

    def fit(self, X: pl.DataFrame, y: np.ndarray | None = None) -> CalibratedScorecard:
        """Fit on point-in-time snapshots with ``customer_id`` and the features; the label is
        ``y`` or, when None, the spec's label column of ``X``."""
        spec = self.spec
        self._validate_columns(X, ["customer_id", *([spec.label] if y is None else [])])
        features = self._usable_features(X)
        if not features:
            raise NotEnoughEvidence(f"no {spec.label} feature has a known value")
        labels = np.asarray(X[spec.label] if y is None else y).astype(np.int8)
        if len(labels) == 0 or labels.min() == labels.max():
            raise NotEnoughEvidence(
                f"{spec.label} training data has only one class: nothing to learn"
            )
        self.events_ = int(min(labels.sum(), len(labels) - labels.sum()))
        if self.events_ < self.min_events:
            raise NotEnoughEvidence(
                f"only {self.events_} {spec.label} events of the rarer class in the training "
                f"data; a scorecard needs at least {self.min_events}"
            )
        self.numeric_features_ = [c for c in features if c not in spec.categorical]
        self.categories_ = {
            c: sorted(X[c].drop_nulls().unique().to_list())
            for c in features
            if c in spec.categorical
        }
        transformed = self._transformed(X)
        numeric = transformed.select(self.numeric_features_)
        # medians from all training rows, also for the calibration folds: a median moves the
        # filled-in value of a few rows, not the out-of-fold probabilities the calibration needs
        self.medians_ = {
            n: float(v) if v is not None else 0.0
            for n, v in numeric.median().row(0, named=True).items()
        }
        self.missing_indicators_ = [
            n for n, nulls in numeric.null_count().row(0, named=True).items() if nulls
        ]
        names = [
            *self.numeric_features_,
            *(f"{c}={level}" for c, levels in self.categories_.items() for level in levels),
            *(f"missingindicator_{n}" for n in self.missing_indicators_),
        ]
        full = self._full_matrix(X, transformed)
        del transformed, numeric
        groups = (X["customer_id"].rank("dense") - 1).cast(pl.Int64).to_numpy()
        search = _sample(len(labels), SEARCH_ROWS)
        self.kept_columns_ = self._columns_within_budget(full[search], labels[search])
        self.feature_names_ = [names[c] for c in self.kept_columns_]
        matrix = self._kept(full)
        del full
        # A few dozen columns: threaded BLAS only adds contention on a shared machine.
        with bounded_blas_threads():
            if self.regularization != "auto":
                self.regularization_ = float(self.regularization)
            elif self.events_ >= ABUNDANT_EVENTS_PER_COLUMN * matrix.shape[1]:
                self.regularization_ = 1.0
            else:
                self.regularization_ = self._cross_validated_strength(
                    matrix[search], labels[search], groups[search]
                )
            splits = grouped_folds(labels, groups, self.folds)
            # ensemble=False: calibrate on out-of-fold predictions, then refit one model on all
            # rows, so reasons come from the same single model that makes the probabilities.
            self.calibrated_ = CalibratedClassifierCV(
                self._logit(self.regularization_),
                method=self.calibration,
                cv=splits,
                ensemble=False,
            ).fit(matrix, labels)
        self.model_ = self.calibrated_.calibrated_classifiers_[0].estimator
        self.coefficients_ = dict(
            zip(
                self.feature_names_, self.model_.named_steps["logit"].coef_[0].tolist(), strict=True
            )
        )
        self.classes_ = np.array([0, 1])
        self.training_rows_ = len(labels)
        self.base_rate_ = float(labels.mean())
        return self

    @staticmethod
    def _logit(strength: float) -> Pipeline:
        # newton-cholesky: few, exact steps; with many more rows than columns it fits several
        # times faster than lbfgs to the same coefficients
        return Pipeline(
            [
                ("scale", StandardScaler()),
                ("logit", LogisticRegression(C=strength, solver="newton-cholesky")),
            ]
        )

    def _columns_within_budget(self, matrix: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Column positions to keep: all when the events allow, else the strongest alone."""
        budget = max(1, self.events_ // self.events_per_column)
        if matrix.shape[1] <= budget:
            return np.arange(matrix.shape[1])
        strength = np.abs(univariate_auc(matrix, labels) - 0.5)
        strength[np.ptp(matrix, axis=0) == 0] = -1.0  # constant columns carry nothing
        return np.sort(np.argsort(-strength, kind="stable")[:budget])

    def _cross_validated_strength(
        self,
        matrix: np.ndarray,
        labels: np.ndarray,
        groups: np.ndarray,
    ) -> float:
        """The grid's C with the lowest out-of-fold log loss (ties: the stronger penalty)."""
        losses = np.zeros(len(REGULARIZATION_GRID))
        for train, test in grouped_folds(labels, groups, self.folds):  # a few folds
            for position, strength in enumerate(REGULARIZATION_GRID):  # a few strengths
                model = self._logit(strength).fit(matrix[train], labels[train])
                predicted = model.predict_proba(matrix[test])[:, 1]
                losses[position] += log_loss(labels[test], predicted, labels=[0, 1]) * len(test)
        return float(REGULARIZATION_GRID[int(np.argmin(losses))])

    # --- predict -------------------------------------------------------------------------------

    def _check(self, frame: pl.DataFrame) -> None:
        check_is_fitted(self, "calibrated_")
        self._validate_columns(frame, self.numeric_features_ + list(self.categories_))

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

    def predict_proba(self, frame: pl.DataFrame) -> np.ndarray:
        """Calibrated probability of the event, one per row (a 1-d array)."""
        self._check(frame)
        return self._probability(self._matrix(frame))

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        return (self.predict_proba(frame) >= 0.5).astype(np.int8)

    def reasons(
        self, frame: pl.DataFrame, top: int = 3, min_contribution: float = 0.1
    ) -> pl.Series:
        """Up to ``top`` plain-words reasons per row, the strongest push towards the event first.

        A reason is a column whose log-odds term relative to the average training customer,
        coefficient x standardised value, is at least ``min_contribution``.
        """
        self._check(frame)
        return self._reasons(frame, self._matrix(frame), top, min_contribution)

    def predict_with_reasons(
        self, frame: pl.DataFrame, top: int = 3, min_contribution: float = 0.1
    ) -> tuple[np.ndarray, pl.Series]:
        """``predict_proba`` and ``reasons`` from one model matrix (scoring needs both)."""
        self._check(frame)
        matrix = self._matrix(frame)
        return self._probability(matrix), self._reasons(frame, matrix, top, min_contribution)

    def speakable(self) -> tuple[np.ndarray, list[pl.Expr | None]]:
        """Which model columns may be read out as a reason, and their words."""
        check_is_fitted(self, "calibrated_")
        spec = self.spec
        coefficients = self.model_.named_steps["logit"].coef_[0]
        speakable = np.zeros(len(self.feature_names_), dtype=bool)
        words: list[pl.Expr | None] = []
        for position, name in enumerate(self.feature_names_):  # columns, not customers
            feature = name.removeprefix("missingindicator_")
            if name != feature:
                text = spec.missing_reasons.get(feature)
                speakable[position] = text is not None and coefficients[position] > 0
                words.append(pl.lit(text) if speakable[position] else None)
            elif name in spec.reasons:
                speakable[position] = np.sign(coefficients[position]) == spec.reasons[name][0]
                words.append(spec.reasons[name][1])
            else:  # categories and features without words (size, e.g. amounts invoiced)
                words.append(None)
        return speakable, words

    def _reasons(
        self, frame: pl.DataFrame, matrix: np.ndarray, top: int, min_contribution: float
    ) -> pl.Series:
        speakable, words = self.speakable()
        columns = np.flatnonzero(speakable)  # the others are never ranked
        if len(columns) == 0:
            return pl.repeat("", frame.height, dtype=pl.String, eager=True).alias(
                self.spec.reasons_column
            )
        weights, offsets = self._terms()
        terms = np.ascontiguousarray(matrix[:, columns]) * weights[columns] - offsets[columns]
        # one extra rank so a reason said twice (two columns with one wording) still leaves
        # ``top`` distinct reasons
        order, strength = strongest_terms(terms, min(top + 1, len(columns)))
        return say_reasons(
            frame,
            order,
            strength,
            [words[position] for position in columns],
            top=top,
            min_contribution=min_contribution,
            name=self.spec.reasons_column,
        )
