"""Customer lifetime value: a purchase model x Gamma-Gamma spend, behind our own interface.

The purchase model (BG/NBD by default, Pareto/NBD, or NBD without dropout) is a
`models.purchase_models.PurchaseModel`: `ClvModel` fits the configured family's fallback chain
and then only asks the fitted object for P(alive) and expected purchases. Gamma-Gamma spend is
fitted on its own and combines with any purchase model.

lifetimes (archived) is used only for penalized fits (a configured penalizer, the Pareto/NBD
and Gamma-Gamma fallbacks) and Pareto/NBD, in `_fit_gamma_gamma_lifetimes` here and in
`models.purchase_models` / `models.pareto_nbd`; the default unpenalized fits and the BG/NBD MAP
fit are our own (`models.clv_mle`). Scoring, likelihoods, the NBD fallback and the CLV
discounting are our own vectorised numpy/scipy code, written in log space so that extreme
customers (hundreds of purchases, recency close to T) never overflow.

Conventions are lifetimes': `frequency` is the number of repeat purchase days, `recency` and
`T` are in time units of `time_unit_days` days, `monetary_value` is the mean spend of repeat
purchases (0 when frequency is 0).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from functools import cached_property

import numpy as np
import polars as pl
from scipy.special import gammaln

from models.clv_mle import (
    Codes,
    DropoutPrior,
    distinct_codes,
    distinct_index,
    fit_gamma_gamma,
    fit_with_lifetimes,
    gamma_gamma_log_param_hessian,
)
from models.purchase_models import (
    FALLBACK_PENALIZERS,
    MAX_PARAMETER,
    NO_DROPOUT_MODEL,
    PURCHASE_MODELS,
    FitOption,
    PurchaseModel,
)

# Earlier homes of the purchase models' functions, still importable from here.
from models.purchase_models import bg_nbd_expected_purchases as bg_nbd_expected_purchases
from models.purchase_models import bg_nbd_log_likelihood as bg_nbd_log_likelihood
from models.purchase_models import bg_nbd_p_alive as bg_nbd_p_alive
from models.purchase_models import bg_nbd_purchases_if_alive as bg_nbd_purchases_if_alive
from models.purchase_models import (
    bg_nbd_unconditional_expected_purchases as bg_nbd_unconditional_expected_purchases,
)
from models.purchase_models import fit_nbd as _fit_nbd  # noqa: F401
from models.purchase_models import nbd_expected_purchases as nbd_expected_purchases
from models.purchase_models import numerical_hessian as _numerical_hessian  # noqa: F401
from models.threads import bounded_blas_threads

SUMMARY_COLUMNS = ("customer_id", "frequency", "recency", "T", "monetary_value")
OUTPUT_COLUMNS = (
    "customer_id",
    "expected_purchases_90d",
    "expected_purchases_365d",
    "p_alive",
    "expected_order_value",
    "clv",
    "clv_low",
    "clv_high",
    "clv_horizon_days",
    "next_order_date",
)

# lifetimes' customer_lifetime_value steps one month as 4.345 weeks; we keep its month so our
# CLV equals lifetimes' for weekly data (365.25 / 12 = 30.4375 days would differ by 0.07 %).
DAYS_PER_MONTH = 4.345 * 7.0
# Below this P(alive) a customer is treated as gone: no next order date is predicted.
P_ALIVE_FLOOR = 1e-3
# Keeps next_order_date a valid date for customers whose expected wait is centuries.
MAX_WAIT_DAYS = 36_525
# Prior of the BG/NBD MAP fit: PyMC-Marketing's BetaGeoModel defaults (see DropoutPrior).
DEFAULT_DROPOUT_PRIOR = DropoutPrior()
# Largest standard deviation allowed for a log-parameter draw: a flat likelihood direction
# (near-singular Hessian at a boundary) would otherwise give meaningless intervals.
MAX_LOG_PARAM_SD = 1.0


class InsufficientDataError(ValueError):
    """Raised when there are too few repeat buyers to identify the CLV models."""


# --------------------------------------------------------------------------------------------
# Spend and discounting (pure numpy/scipy; parameters as plain floats)
# --------------------------------------------------------------------------------------------


def gamma_gamma_log_likelihood(
    params: dict[str, float], x: np.ndarray, m: np.ndarray
) -> np.ndarray:
    """Per-row Gamma-Gamma log-likelihood of mean spend `m` over `x` purchases (Hardie note 025)."""
    p, q, v = params["p"], params["q"], params["v"]
    px = p * x
    # Gamma function terms depend on the frequency only: once per distinct value.
    xs, ix = distinct_index(x)
    per_x = gammaln(p * xs + q) - gammaln(p * xs) - gammaln(q) + q * np.log(v) + p * xs * np.log(xs)
    return per_x[ix] + (px - 1) * np.log(m) - (px + q) * np.log(x * m + v)


def gamma_gamma_expected_spend(
    params: dict[str, float], x: np.ndarray, m: np.ndarray
) -> np.ndarray:
    """Gamma-Gamma E[spend per order | x, m]: credibility blend of own mean and population mean.

    At x = 0 this is the population mean v p / (q - 1), as wanted for one-time buyers.
    """
    p, q, v = params["p"], params["q"], params["v"]
    return (v * p + p * x * m) / (p * x + q - 1)


def discounted_monthly_weights(
    horizon_days: float, annual_discount_rate: float
) -> tuple[np.ndarray, np.ndarray]:
    """Month-end times (days) and discount factors, as lifetimes' customer_lifetime_value.

    The horizon is a whole number of months (rounded, at least one); the annual rate becomes the
    equivalent monthly rate, and each month's purchases are discounted by (1 + rate)^month.
    """
    n_months = max(1, round(horizon_days / DAYS_PER_MONTH))
    months = np.arange(1, n_months + 1, dtype=float)
    monthly_rate = (1.0 + annual_discount_rate) ** (1.0 / 12.0) - 1.0
    return months * DAYS_PER_MONTH, (1.0 + monthly_rate) ** -months


# --------------------------------------------------------------------------------------------
# Gamma-Gamma fits: lifetimes only for a penalized fit
# --------------------------------------------------------------------------------------------


def _fit_gamma_gamma_lifetimes(
    x: np.ndarray, m: np.ndarray, weights: np.ndarray, penalizer: float
) -> dict[str, float]:
    """Fit Gamma-Gamma with lifetimes on weighted (collapsed) repeat-buyer rows; returns p, q, v."""
    from lifetimes import GammaGammaFitter

    fitter = GammaGammaFitter(penalizer_coef=penalizer)
    return fit_with_lifetimes(fitter, ("p", "q", "v"), x, m, weights=weights)


def _fit_gamma_gamma(
    x: np.ndarray, m: np.ndarray, weights: np.ndarray, penalizer: float
) -> dict[str, float]:
    """Gamma-Gamma fit: our own fast MLE when unpenalized, lifetimes' penalized fit otherwise."""
    if penalizer == 0:
        return fit_gamma_gamma(x, m, weights)
    return _fit_gamma_gamma_lifetimes(x, m, weights, penalizer)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _validate_summary(
    summary: pl.DataFrame,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fail early, naming the missing columns or the first offending customer.

    Returns frequency, recency, T and monetary_value as float arrays.
    """
    missing = [c for c in SUMMARY_COLUMNS if c not in summary.columns]
    if missing:
        raise ValueError(f"customer summary is missing column(s): {', '.join(missing)}")
    if summary.height == 0:
        raise ValueError("customer summary has no rows")
    arrays = _as_arrays(summary)
    if not summary.select(SUMMARY_COLUMNS).null_count().sum_horizontal().item() and _plausible(
        *arrays
    ):
        _check_unique_ids(summary["customer_id"])
        return arrays
    numeric = ["frequency", "recency", "T", "monetary_value"]
    checks = {
        "null values": pl.any_horizontal(pl.col([*numeric, "customer_id"]).is_null()),
        "non-finite values": ~pl.all_horizontal(pl.col(numeric).cast(pl.Float64).is_finite()),
        "frequency not a non-negative integer": (pl.col("frequency") < 0)
        | (pl.col("frequency").cast(pl.Float64).round() != pl.col("frequency").cast(pl.Float64)),
        "recency < 0 or recency > T": (pl.col("recency") < 0) | (pl.col("recency") > pl.col("T")),
        "T < 0": pl.col("T") < 0,
        "recency != 0 with frequency == 0": (pl.col("frequency") == 0) & (pl.col("recency") != 0),
        "monetary_value < 0": pl.col("monetary_value") < 0,
    }
    # One pass counts every problem; only a failing check filters again, to name a customer.
    counts = summary.select(
        *(cond.fill_null(True).sum().alias(problem) for problem, cond in checks.items())
    ).row(0, named=True)
    for problem, condition in checks.items():
        if not counts[problem]:
            continue
        bad = summary.filter(condition.fill_null(True))
        if bad.height:
            raise ValueError(
                f"customer summary: {bad.height} row(s) with {problem}, "
                f"e.g. customer_id={bad['customer_id'][0]!r}"
            )
    _check_unique_ids(summary["customer_id"])
    return arrays


def _plausible(x: np.ndarray, t_x: np.ndarray, T: np.ndarray, m: np.ndarray) -> bool:
    """Every row passes the checks of `_validate_summary` (vectorised, no message)."""
    with np.errstate(invalid="ignore"):
        return bool(
            np.isfinite(x).all()
            and np.isfinite(t_x).all()
            and np.isfinite(T).all()
            and np.isfinite(m).all()
            and (x >= 0).all()
            and (x == np.round(x)).all()
            and (t_x >= 0).all()
            and (t_x <= T).all()
            and ((x > 0) | (t_x == 0)).all()
            and (m >= 0).all()
        )


def _check_unique_ids(ids: pl.Series) -> None:
    # Ids in strictly increasing order (the summary SQL sorts them) are unique: one linear pass
    # instead of hashing a million strings; any other order is counted.
    if (ids.slice(1) > ids.slice(0, ids.len() - 1)).all():
        return
    n_unique = ids.n_unique()
    if n_unique != ids.len():
        raise ValueError(
            f"customer summary: customer_id not unique ({ids.len() - n_unique} duplicates)"
        )


def _as_arrays(summary: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    cols = summary.select(pl.col("frequency", "recency", "T", "monetary_value").cast(pl.Float64))
    return tuple(cols[c].to_numpy() for c in cols.columns)  # type: ignore[return-value]


def _log_param_covariance(hessian: np.ndarray) -> tuple[np.ndarray, bool]:
    """Inverse of the observed information (minus the Hessian) in log-parameters.

    Returns the covariance and whether it had to be regularised (Hessian not negative definite
    or a standard deviation above MAX_LOG_PARAM_SD, typical at a boundary).
    """
    k = hessian.shape[0]
    information = -hessian
    if not np.all(np.isfinite(information)):
        return np.eye(k) * MAX_LOG_PARAM_SD**2, True
    eigval, eigvec = np.linalg.eigh((information + information.T) / 2)
    floor = 1.0 / MAX_LOG_PARAM_SD**2
    regularised = bool(np.any(eigval < floor))
    eigval = np.maximum(eigval, floor)
    return (eigvec / eigval) @ eigvec.T, regularised


def _collapse_patterns(
    x: np.ndarray, t_x: np.ndarray, T: np.ndarray, unit: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Codes]:
    """Distinct (frequency, recency, T) rows, sorted, with the number of customers behind each.

    Sorted so that the fit sums in a fixed order and a rerun gives bit-identical parameters.
    Also returns the rows' `Codes` (distinct frequency, T and recency values and indices), which
    the packed key below already holds.
    """
    recency_values, recency_index = distinct_index(t_x, unit)
    T_values, T_index = distinct_index(T, unit)
    n_recency, n_T = recency_values.size, T_values.size
    x_int = x.astype(np.int64)
    if (int(x_int.max()) + 1) * n_recency * n_T >= 2**63:
        # Too many distinct values to pack into one int64 key: sort the rows themselves.
        rows = np.stack([x, t_x, T], axis=1)
        distinct, weight = np.unique(rows, axis=0, return_counts=True)
        px, ptx, pT = distinct.T
        return px, ptx, pT, weight.astype(np.float64), distinct_codes(px, ptx, pT)
    # frequency is a validated non-negative integer: the three ranks pack into one int64 key,
    # and sorting the keys (no argsort) groups identical rows; each key decodes back to its row.
    # polars sorts on every core (about 15 ms for a million keys against numpy's 50)
    key = pl.Series((x_int * n_recency + recency_index) * n_T + T_index).sort().to_numpy()
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    weight = np.diff(np.append(starts, key.size)).astype(np.float64)
    key = key[starts]
    T_code = key % n_T
    recency_code = (key // n_T) % n_recency
    frequency = (key // (n_T * n_recency)).astype(np.float64)
    # Frequencies come out sorted: their distinct values are where they change.
    new_frequency = np.concatenate(([True], frequency[1:] != frequency[:-1]))
    frequency_code = np.cumsum(new_frequency) - 1
    codes = (
        (frequency[new_frequency], frequency_code),
        (T_values, T_code),
        (recency_values, recency_code),
    )
    return frequency, recency_values[recency_code], T_values[T_code], weight, codes


@dataclass(frozen=True)
class _Customers:
    """Customer arrays plus their distinct (frequency, T) pairs.

    Expected purchases of an alive customer depend on (x, T) only; a million customers have a
    few tens of thousands of such pairs, so the hyp2f1-heavy part is evaluated per pair and
    gathered back by `pair_index`.
    """

    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray
    m: np.ndarray
    # days per time unit: durations counted in days index faster (see distinct_index)
    unit: float = 1.0

    @cached_property
    def pair_index(self) -> np.ndarray:
        """Per customer, the index of its (x, T) pair in `pair_x` / `pair_T`."""
        T_values, T_index = distinct_index(self.T, self.unit)
        return distinct_index(self.x.astype(np.int64) * T_values.size + T_index)[1]

    @cached_property
    def pair_x(self) -> np.ndarray:
        pair_x = np.empty(int(self.pair_index.max()) + 1 if self.x.size else 0)
        pair_x[self.pair_index] = self.x
        return pair_x

    @cached_property
    def pair_T(self) -> np.ndarray:
        pair_T = np.empty_like(self.pair_x)
        pair_T[self.pair_index] = self.T
        return pair_T


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class ClvModel:
    """Purchase model (BG/NBD MLE or MAP, Pareto/NBD, NBD fallback) x Gamma-Gamma spend -> CLV.

    Every `[clv]` setting is a required keyword: `pipelines.settings.ClvSettings.model()` builds
    the model from the one place that holds their defaults.

    Parameters
    ----------
    time_unit_days : float
        Days per time unit of `recency` and `T` (7 = weeks, as in the CDNOW literature).
    horizon_days : int
        CLV horizon; rounded to whole months of `DAYS_PER_MONTH` days, as lifetimes does.
    annual_discount_rate : float
        Converted to the equivalent monthly rate for monthly discounting.
    penalizer : float
        L2 penalizer of the first BG/NBD and Gamma-Gamma fit (lifetimes' `penalizer_coef`).
    interval : float
        Central probability of the `clv_low` / `clv_high` interval.
    n_bootstrap : int
        Parameter draws for the interval.
    min_repeat_customers : int
        Below this many repeat buyers `fit` raises `InsufficientDataError`.
    purchase_model : {"bg_nbd", "pareto_nbd", "nbd"}
        A key of `models.purchase_models.PURCHASE_MODELS`: BG/NBD (our own fast fit),
        Pareto/NBD (lifetimes' ParetoNBDFitter: a customer may drop out at any time, not only
        right after a purchase; slower to fit) or NBD (no dropout at all).
    random_state : int
        Seed of the parameter draws, so reruns give identical intervals.
    dropout_prior : DropoutPrior
        Prior on BG/NBD's a and b for the MAP fit used when the MLE sits on the no-dropout
        boundary (default: PyMC-Marketing's phi ~ Uniform(0, 1), kappa ~ Pareto(1, 1)).

    Notes
    -----
    Fitting collapses identical (frequency, recency, T) rows into weighted rows: same
    likelihood, far fewer rows. Gamma-Gamma sees one row per repeat buyer, in input order
    (identical frequency and spend are rare with amounts in cents).

    The fitted purchase model is `purchase_` (a `PurchaseModel`); `purchase_model_`,
    `purchase_params_`, `purchase_penalizer_` and `purchase_prior_` describe it for the record.
    Fallback order for purchases, recorded in `purchase_model_` and `fallback_reason_`, each
    family listing its own fits (`PurchaseModel.fit_options`):
    (1) the chosen model (BG/NBD or Pareto/NBD) with `penalizer`; (2) BG/NBD: the MAP fit under
    `dropout_prior` ("bg_nbd_map", prior in `purchase_prior_`); Pareto/NBD: penalizer 0.001,
    then 0.01 ("pareto_nbd_penalized", lifetimes' penalized fitter); (3) our own NBD fit without
    dropout ("nbd": p_alive = 1). A fit is rejected when the optimiser fails, a parameter is
    non-finite, the dropout shape (BG/NBD a, Pareto/NBD s) is < 1e-3 or any parameter > 1e6
    (dropout not identifiable), or its scores are non-finite; a MAP fit also when its mean
    dropout probability a / (a + b) is below 1 % (the data pulled dropout down against the
    prior: none to speak of). lifetimes' penalized BG/NBD fits are not tried: their L2 penalty
    shrinks a and b towards the same boundary, and r and alpha with them.
    The unpenalized BG/NBD and Gamma-Gamma fits are our own (`models.clv_mle`): the same
    maximum-likelihood estimate as lifetimes, found with analytic gradients. Spend falls back from
    Gamma-Gamma (penalized as above) to "empirical_mean" (own mean for repeat buyers, the
    weighted mean for the rest) when q <= 1 leaves the population mean undefined.

    Repeat buyers whose repeat spend is not positive (credit notes larger than their repeat
    invoices) are left out of the spend fit and scored as if their spend were unobserved: the
    population mean order value. They are counted in `n_nonpositive_spend_customers_`.

    Interval: parametric draws, not refits. `n_bootstrap` log-parameter vectors are drawn from
    the asymptotic normal distribution of the maximum-likelihood estimate (inverse observed
    information of the total log-likelihood, in log-parameters so draws stay positive); for a
    MAP fit, from the normal approximation of the posterior at its mode (the Hessian includes
    the prior). Spend
    is evaluated exactly per draw; the discounted purchase count is propagated through its
    first-order expansion in log-parameters (one extra scoring per purchase parameter), which
    keeps 100k customers x 200 draws to a few seconds (on CDNOW the bounds are within 2 % of
    rescoring every draw exactly). The point estimate is kept inside its interval. The interval
    covers parameter uncertainty only, not the customer's own purchase randomness.
    """

    def __init__(
        self,
        *,
        time_unit_days: float,
        horizon_days: int,
        annual_discount_rate: float,
        penalizer: float,
        interval: float,
        n_bootstrap: int,
        min_repeat_customers: int,
        purchase_model: str,
        random_state: int = 0,
        dropout_prior: DropoutPrior = DEFAULT_DROPOUT_PRIOR,
    ) -> None:
        self.time_unit_days = time_unit_days
        self.horizon_days = horizon_days
        self.annual_discount_rate = annual_discount_rate
        self.penalizer = penalizer
        self.interval = interval
        self.n_bootstrap = n_bootstrap
        self.random_state = random_state
        self.min_repeat_customers = min_repeat_customers
        self.purchase_model = purchase_model
        self.dropout_prior = dropout_prior

    # ---------------------------------------------------------------- fit

    def fit(self, summary: pl.DataFrame) -> ClvModel:
        """Fit purchase and spend models on a customer summary; returns self."""
        started = time.perf_counter()
        frequency, recency, T_all, monetary = _validate_summary(summary)
        if not 0 < self.interval < 1:
            raise ValueError(f"interval must be in (0, 1), got {self.interval}")
        if self.purchase_model not in PURCHASE_MODELS:
            raise ValueError(
                f"purchase_model must be one of {', '.join(PURCHASE_MODELS)}, "
                f"got {self.purchase_model!r}"
            )
        if self.time_unit_days <= 0 or self.horizon_days <= 0 or self.n_bootstrap < 1:
            raise ValueError("time_unit_days, horizon_days and n_bootstrap must be positive")
        self.n_customers_ = summary.height
        repeat_buyer = frequency > 0
        # Credit notes can wipe out a repeat buyer's spend; those customers say nothing about
        # order value, so they stay out of the Gamma-Gamma fit and are scored as if no spend
        # had been observed (see _expected_spend).
        spender = repeat_buyer & (monetary > 0)
        self.n_repeat_customers_ = int(repeat_buyer.sum())
        if self.n_repeat_customers_ < self.min_repeat_customers:
            raise InsufficientDataError(
                f"only {self.n_repeat_customers_} of {self.n_customers_} customers made a repeat "
                f"purchase; at least min_repeat_customers={self.min_repeat_customers} are needed "
                "to fit BG/NBD and Gamma-Gamma"
            )
        n_spenders = int(spender.sum())
        if n_spenders < self.min_repeat_customers:
            raise InsufficientDataError(
                f"only {n_spenders} repeat buyers have a positive repeat spend after credit "
                f"notes; at least min_repeat_customers={self.min_repeat_customers} are needed "
                "to fit Gamma-Gamma"
            )
        self.n_nonpositive_spend_customers_ = self.n_repeat_customers_ - n_spenders
        # One spend row per repeat buyer: with amounts in cents, identical (frequency, spend)
        # rows are rare, so collapsing them saves nothing. They are put in (frequency, spend)
        # order all the same: the likelihood's sums then add in one order whatever order the
        # summary came in, so the fit is a function of the customers, to the last bit.
        order = np.lexsort((monetary[spender], frequency[spender]))
        rx, rm = frequency[spender][order], monetary[spender][order]
        rw = np.ones_like(rx)
        reasons: list[str] = []
        spend_reasons: list[str] = []
        # The spend fit needs nothing from the purchase fit: it runs on a thread of its own
        # while the purchase rows are collapsed and fitted (numpy releases the GIL in its
        # loops). One BLAS thread for both, set here once: threadpool_limits entered and left
        # from two threads at a time could otherwise restore the wrong value.
        with (
            bounded_blas_threads(),
            ThreadPoolExecutor(max_workers=1) as spend_thread,
        ):
            spend = spend_thread.submit(self._fit_spend, rx, rm, rw, spend_reasons)
            x, t_x, T, w, codes = _collapse_patterns(frequency, recency, T_all, self.time_unit_days)
            self.n_patterns_ = x.size
            self._fit_purchases(x, t_x, T, w, codes, reasons)
            spend.result()
        reasons += spend_reasons
        self.fallback_reason_ = "; ".join(reasons) if reasons else None

        # Kept for the parameter-uncertainty step, which only the CLV interval needs.
        self._fit_rows = ((x, t_x, T, w), (rx, rm, rw))

        with np.errstate(invalid="ignore", divide="ignore"):
            correlation = np.corrcoef(rx, rm)[0, 1] if n_spenders > 1 else float("nan")
        self.metrics_ = {
            "log_likelihood": self.log_likelihood_,
            "n_customers": self.n_customers_,
            "n_repeat_customers": self.n_repeat_customers_,
            "n_patterns": self.n_patterns_,
            "n_spend_customers": n_spenders,
            "n_nonpositive_spend_customers": self.n_nonpositive_spend_customers_,
            "frequency_spend_correlation": float(correlation),
            "spend_log_likelihood": self.spend_log_likelihood_,
            "fit_seconds": time.perf_counter() - started,
            "purchase_model": self.purchase_model_,
            "purchase_penalizer": self.purchase_penalizer_,
            "purchase_prior": self.purchase_prior_.describe() if self.purchase_prior_ else None,
            "spend_model": self.spend_model_,
            "fallback_reason": self.fallback_reason_,
        }
        return self

    def estimate_parameter_uncertainty(self) -> ClvModel:
        """Draw parameters for the CLV interval (see Notes); `predict` calls it when needed.

        Kept apart from `fit` because only the interval needs it: a caller that wants point
        scores (`predict_clv`) does not pay for the observed information matrix.
        """
        self._check_fitted()
        started = time.perf_counter()
        rng = np.random.default_rng(self.random_state)
        self._draw_parameters(rng, *self._fit_rows)
        self.metrics_["interval_regularised"] = self.interval_regularised_
        self.metrics_["uncertainty_seconds"] = time.perf_counter() - started
        return self

    @property
    def purchase_model_(self) -> str:
        """Name of the purchase fit kept, as recorded in `models.model_runs` ("bg_nbd",
        "bg_nbd_map", "pareto_nbd", "pareto_nbd_penalized" or "nbd")."""
        return self.purchase_.name

    @property
    def purchase_family_(self) -> str:
        """The purchase model actually fitted, without the "_penalized" or "_map" suffix."""
        return self.purchase_.family

    @property
    def purchase_params_(self) -> dict[str, float]:
        return self.purchase_.params

    @property
    def purchase_penalizer_(self) -> float:
        return self.purchase_.penalizer

    @property
    def purchase_prior_(self) -> DropoutPrior | None:
        return self.purchase_.prior

    def _fit_purchases(
        self,
        x: np.ndarray,
        t_x: np.ndarray,
        T: np.ndarray,
        w: np.ndarray,
        codes: Codes,
        reasons: list[str],
    ) -> None:
        family = PURCHASE_MODELS[self.purchase_model]
        # Distinct (frequency, T) pairs, where expected purchases are checked for finiteness.
        (xs, ix), (Ts, iT), _ = codes
        pair_key = pl.Series(ix * Ts.size + iT).unique().to_numpy()
        pair_x, pair_T = xs[pair_key // Ts.size], Ts[pair_key % Ts.size]
        # The family's own fits in the order tried; NBD without dropout comes last.
        for option in family.fit_options(self.penalizer, self.dropout_prior):
            try:
                fitted = family.fit(x, t_x, T, w, option, codes)
            except (ValueError, ArithmeticError, np.linalg.LinAlgError) as error:
                # lifetimes' ConvergenceError subclasses ValueError.
                problem = f"{type(error).__name__}"
            else:
                problem, log_likelihood = fitted.problem(x, t_x, T, pair_x, pair_T)
            if problem is None:
                self.purchase_ = fitted
                self.log_likelihood_ = float(w @ log_likelihood)
                return
            reasons.append(f"{option.describe(family.family)}: {problem}")
        self.purchase_ = NO_DROPOUT_MODEL.fit(
            x, t_x, T, w, FitOption(NO_DROPOUT_MODEL.family, 0.0), codes
        )
        self.log_likelihood_ = float((w * self.purchase_.log_likelihood(x, t_x, T)).sum())

    def _fit_spend(self, x: np.ndarray, m: np.ndarray, w: np.ndarray, reasons: list[str]) -> None:
        penalizers = [self.penalizer, *(p for p in FALLBACK_PENALIZERS if p > self.penalizer)]
        for penalizer in penalizers:
            try:
                params = _fit_gamma_gamma(x, m, w, penalizer)
            except (ValueError, ArithmeticError, np.linalg.LinAlgError) as error:
                reasons.append(f"gamma_gamma(penalizer={penalizer}): {type(error).__name__}")
                continue
            values = np.array(list(params.values()))
            if np.all(np.isfinite(values)) and params["q"] > 1 and np.all(values < MAX_PARAMETER):
                self.spend_model_ = "gamma_gamma"
                self.spend_params_ = params
                self.spend_log_likelihood_ = float(
                    (w * gamma_gamma_log_likelihood(params, x, m)).sum()
                )
                return
            reasons.append(
                f"gamma_gamma(penalizer={penalizer}): q <= 1 or non-finite parameters {params}"
            )
        self.spend_model_ = "empirical_mean"
        self.spend_params_ = {"mean": float((w * m).sum() / w.sum())}
        self.spend_log_likelihood_ = float("nan")

    def _draw_parameters(
        self,
        rng: np.random.Generator,
        patterns: tuple[np.ndarray, ...],
        repeat: tuple[np.ndarray, ...],
    ) -> None:
        """Draw log-parameters from the asymptotic normal of the MLE or MAP (see class Notes)."""
        x, t_x, T, w = patterns
        centre = np.log(np.array(list(self.purchase_params_.values())))
        # A MAP fit draws from the posterior's normal approximation (its Hessian includes the
        # prior, which keeps the dropout directions finite at a boundary).
        hessian = self.purchase_.log_param_hessian(x, t_x, T, w)
        cov, regularised = _log_param_covariance(hessian)
        self.purchase_log_param_draws_ = rng.multivariate_normal(
            np.zeros_like(centre), cov, size=self.n_bootstrap
        )
        self.interval_regularised_ = regularised

        if self.spend_model_ != "gamma_gamma":
            self.spend_param_draws_ = None
            return
        rx, rm, rw = repeat
        spend_centre = np.log(np.array(list(self.spend_params_.values())))
        spend_hessian = gamma_gamma_log_param_hessian(self.spend_params_, rx, rm, rw)
        spend_cov, spend_regularised = _log_param_covariance(spend_hessian)
        self.interval_regularised_ = regularised or spend_regularised
        # q <= 1 has no population mean; keep the first n_bootstrap draws with q > 1.
        draws = np.exp(rng.multivariate_normal(spend_centre, spend_cov, size=4 * self.n_bootstrap))
        draws = draws[draws[:, 1] > 1.0][: self.n_bootstrap]
        self.spend_param_draws_ = draws if len(draws) else np.exp(spend_centre)[None, :]

    # ---------------------------------------------------------------- predict

    def _check_fitted(self) -> None:
        if not hasattr(self, "purchase_"):
            raise RuntimeError("ClvModel is not fitted yet: call fit(summary) first")

    @staticmethod
    def _expected_purchases(purchase: PurchaseModel, t: float, c: _Customers) -> np.ndarray:
        """P(alive) per customer x purchases if alive, evaluated per distinct (x, T) pair."""
        if_alive = purchase.purchases_if_alive(t, c.pair_x, c.pair_T)[c.pair_index]
        return purchase.p_alive(c.x, c.t_x, c.T) * if_alive

    def _discounted_purchases(self, purchase: PurchaseModel, c: _Customers) -> np.ndarray:
        """Sum over months of discounted expected purchases in that month."""
        month_end_days, discount = discounted_monthly_weights(
            self.horizon_days, self.annual_discount_rate
        )
        total = np.zeros_like(c.pair_x)
        previous = np.zeros_like(c.pair_x)
        for days, factor in zip(month_end_days, discount, strict=True):  # months, not customers
            cumulative = purchase.purchases_if_alive(days / self.time_unit_days, c.pair_x, c.pair_T)
            total += factor * (cumulative - previous)
            previous = cumulative
        return purchase.p_alive(c.x, c.t_x, c.T) * total[c.pair_index]

    def _expected_spend(self, params: dict[str, float] | np.ndarray, c: _Customers) -> np.ndarray:
        # A repeat buyer whose credit notes cancelled all repeat spend (m = 0) counts as having
        # no observed spend: the Gamma-Gamma posterior then is the population mean.
        x = np.where(c.m > 0, c.x, 0.0)
        if self.spend_model_ == "empirical_mean":
            return np.where(x > 0, c.m, self.spend_params_["mean"])
        if isinstance(params, np.ndarray):  # (n_draws, 3) -> (n_customers, n_draws)
            p, q, v = params.T
            x, m = x[:, None], c.m[:, None]
            return p * (v + x * m) / (p * x + q - 1)
        return gamma_gamma_expected_spend(params, x, c.m)

    def _clv_interval(
        self, c: _Customers, discounted: np.ndarray, clv: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        names = list(self.purchase_params_)
        centre = np.array(list(self.purchase_params_.values()))
        step = 1e-4
        log_discounted = np.log(np.maximum(discounted, 1e-300))
        gradient = np.empty((len(names), c.x.size))
        for i, name in enumerate(names):  # parameters, not customers
            shifted = dict(zip(names, centre, strict=True))
            shifted[name] = float(centre[i] * np.exp(step))
            bumped = self._discounted_purchases(self.purchase_.with_params(shifted), c)
            gradient[i] = (np.log(np.maximum(bumped, 1e-300)) - log_discounted) / step
        gradient[:, discounted <= 1e-300] = 0.0
        alpha_tail = (1 - self.interval) / 2
        low = np.empty_like(clv)
        high = np.empty_like(clv)
        draws = self.purchase_log_param_draws_
        if self.spend_param_draws_ is not None:
            draws = draws[: len(self.spend_param_draws_)]
        chunk = 20_000  # bounds the (customers x draws) matrix to ~32 MB
        # Customers as rows, draws as columns: the quantile then works on contiguous rows.
        # One BLAS thread: a (chunk x 4) @ (4 x draws) product gains nothing from threads.
        with bounded_blas_threads():
            for start in range(0, c.x.size, chunk):  # chunks, not customers
                part = slice(start, start + chunk)
                sub = _Customers(c.x[part], c.t_x[part], c.T[part], c.m[part])
                log_factor = np.clip(gradient[:, part].T @ draws.T, -50, 50)
                purchases = discounted[part, None] * np.exp(log_factor)
                if self.spend_param_draws_ is None:
                    spend = self._expected_spend(self.spend_params_, sub)[:, None]
                else:
                    spend = self._expected_spend(self.spend_param_draws_[: len(draws)], sub)
                low[part], high[part] = np.quantile(
                    purchases * spend, [alpha_tail, 1 - alpha_tail], axis=1
                )
        return np.minimum(low, clv), np.maximum(high, clv)

    def expected_purchases(self, summary: pl.DataFrame, t: float) -> np.ndarray:
        """Expected repeat purchases of each customer in the next `t` time units."""
        self._check_fitted()
        customers = _Customers(*_validate_summary(summary), unit=self.time_unit_days)
        return self._expected_purchases(self.purchase_, t, customers)

    def unconditional_expected_purchases(self, t: float | np.ndarray) -> np.ndarray:
        """Expected repeat purchases of a new customer within `t` time units of joining."""
        self._check_fitted()
        return self.purchase_.unconditional_expected_purchases(t)

    def probability_no_purchase(self, summary: pl.DataFrame, t: float) -> np.ndarray:
        """P(no purchase in the next `t` time units | history): the BG/NBD churn probability.

        Defined for the bg_nbd and nbd purchase models (see
        `PurchaseModel.probability_no_purchase`); a Pareto/NBD fit raises ValueError, as
        a customer may drop out in the middle of the window, which has no closed form here.
        """
        self._check_fitted()
        x, t_x, T, _ = _validate_summary(summary)
        return self.purchase_.probability_no_purchase(t, x, t_x, T)

    def predict_clv(self, summary: pl.DataFrame) -> pl.DataFrame:
        """Point CLV only: `customer_id`, `expected_order_value`, `clv`.

        What lifetimes' `customer_lifetime_value` gives, without the interval, the other
        horizons and the next order date that `predict` adds.
        """
        self._check_fitted()
        c = _Customers(*_validate_summary(summary), unit=self.time_unit_days)
        order_value = self._expected_spend(self.spend_params_, c)
        clv = self._discounted_purchases(self.purchase_, c) * order_value
        return pl.DataFrame(
            {
                "customer_id": summary["customer_id"],
                "expected_order_value": order_value,
                "clv": clv,
            }
        )

    def predict(self, summary: pl.DataFrame, as_of: date) -> pl.DataFrame:
        """Score every customer of `summary` as of `as_of`; one row per input customer.

        `next_order_date` = as_of + (alpha + T) / (r + x) time units: the reciprocal of the
        posterior mean purchase rate of the customer if still alive (dropout is reported by
        p_alive, not folded in), capped at MAX_WAIT_DAYS; null when p_alive < P_ALIVE_FLOOR.
        `clv`, `clv_low` and `clv_high` cover the next `clv_horizon_days` (= `horizon_days`).
        """
        self._check_fitted()
        x, t_x, T, m = _validate_summary(summary)
        if not hasattr(self, "purchase_log_param_draws_"):
            self.estimate_parameter_uncertainty()
        c = _Customers(x, t_x, T, m, unit=self.time_unit_days)
        purchase = self.purchase_
        params = purchase.params
        p_alive = purchase.p_alive(c.x, c.t_x, c.T)
        purchases_90d = self._expected_purchases(purchase, 90.0 / self.time_unit_days, c)
        purchases_365d = self._expected_purchases(purchase, 365.0 / self.time_unit_days, c)
        order_value = self._expected_spend(self.spend_params_, c)
        discounted = self._discounted_purchases(purchase, c)
        clv = discounted * order_value
        clv_low, clv_high = self._clv_interval(c, discounted, clv)

        wait_days = (params["alpha"] + T) / (params["r"] + x) * self.time_unit_days
        wait_days = np.minimum(np.round(wait_days), MAX_WAIT_DAYS)
        wait_days = np.where(p_alive < P_ALIVE_FLOOR, np.nan, wait_days)

        scores = pl.DataFrame(
            {
                "customer_id": summary["customer_id"],
                "expected_purchases_90d": purchases_90d,
                "expected_purchases_365d": purchases_365d,
                "p_alive": p_alive,
                "expected_order_value": order_value,
                "clv": clv,
                "clv_low": clv_low,
                "clv_high": clv_high,
                # the horizon travels with the value: a changed [clv] horizon_days is visible
                "clv_horizon_days": pl.repeat(
                    self.horizon_days, summary.height, dtype=pl.Int32, eager=True
                ),
                "wait_days": pl.Series(wait_days).fill_nan(None).cast(pl.Int64),
            }
        )
        scores = scores.with_columns(
            (pl.lit(as_of) + pl.duration(days=pl.col("wait_days"))).alias("next_order_date")
        ).select(OUTPUT_COLUMNS)
        numeric = scores.select(pl.exclude("customer_id", "next_order_date"))
        if not numeric.select(pl.all_horizontal(pl.all().is_finite()).all()).item():
            raise FloatingPointError("CLV scoring produced non-finite values; please report")
        return scores
