"""Purchase models of the CLV: BG/NBD, Pareto/NBD and NBD behind one small interface.

A purchase model says how many repeat purchases a customer with history (x, t_x, T) makes
next: `p_alive`, `purchases_if_alive` (and their product `expected_purchases`),
`unconditional_expected_purchases` and `probability_no_purchase`. `ClvModel` multiplies its
expected purchases by Gamma-Gamma's expected spend; spend knows nothing of the purchase model,
so Gamma-Gamma combines with any of them.

Each family lists its own fits to try (`fit_options`: the name a fit is recorded under, its
penalizer and prior), so the fallback chain - the configured family's fits in order, then NBD
without dropout - is written once, in `ClvModel`. `PURCHASE_MODELS` maps the configured
`[clv] purchase_model` to its class.

Conventions are lifetimes': `x` is the number of repeat purchase days, `t_x` (recency) and
`T` are in the data's time units. The BG/NBD and NBD scoring functions below are our own
vectorised numpy/scipy code, in log space so that extreme customers (hundreds of purchases,
recency close to T) never overflow; Pareto/NBD's are in `models.pareto_nbd`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar, Self

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1

from models.clv_mle import (
    Codes,
    DropoutPrior,
    FitFailed,
    bg_nbd_log_param_hessian,
    distinct_index,
    fit_bg_nbd,
    fit_bg_nbd_map,
    fit_with_lifetimes,
)
from models.pareto_nbd import (
    fit_pareto_nbd_lifetimes,
    pareto_nbd_log_likelihood,
    pareto_nbd_p_alive,
    pareto_nbd_purchases_if_alive,
    pareto_nbd_unconditional_expected_purchases,
)

# Penalizers tried, in order, when the unpenalized Pareto/NBD fit fails or is degenerate
# (BG/NBD falls back to its MAP fit instead); the Gamma-Gamma spend fit uses them too.
FALLBACK_PENALIZERS = (0.001, 0.01)
# A dropout shape (BG/NBD a, Pareto/NBD s) below this means no dropout is identifiable
# (lifetimes #258 #262).
MIN_DROPOUT_SHAPE_A = 1e-3
# A MAP fit whose mean dropout probability per purchase a / (a + b) stays below this keeps no
# meaningful dropout: the data pulled it down against the prior, so the nested NBD is used.
# Short CDNOW histories give 0.07-0.36, simulated no-dropout cohorts 0.003-0.004.
MIN_MAP_DROPOUT_PROBABILITY = 0.01
MAX_PARAMETER = 1e6


# --------------------------------------------------------------------------------------------
# Likelihoods and scoring (pure numpy/scipy; parameters as plain floats)
# --------------------------------------------------------------------------------------------


def bg_nbd_log_likelihood(
    params: dict[str, float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Per-row BG/NBD log-likelihood (Fader, Hardie & Lee 2005, eq. 6) in the data's time units.

    Computed in our units rather than lifetimes' rescaled ones, so the total is comparable with
    the published CDNOW value and with the nested NBD model.
    """
    r, alpha, a, b = params["r"], params["alpha"], params["a"], params["b"]
    # Gamma and beta function terms depend on the frequency only: once per distinct value.
    xs, ix = distinct_index(x)
    a12 = gammaln(r + xs) - gammaln(r) + r * np.log(alpha) + betaln(a, b + xs) - betaln(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_dropout = np.log(a) - np.log(b + xs - 1)
    a3 = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(x > 0, log_dropout[ix] - (r + x) * np.log(alpha + t_x), -np.inf)
    return a12[ix] + np.logaddexp(a3, a4)


def nbd_log_likelihood(params: dict[str, float], x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Per-row gamma-Poisson (NBD, no dropout) log-likelihood, nested in BG/NBD as a -> 0."""
    r, alpha = params["r"], params["alpha"]
    return gammaln(r + x) - gammaln(r) + r * np.log(alpha) - (r + x) * np.log(alpha + T)


def bg_nbd_p_alive(
    params: dict[str, float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """P(alive | x, t_x, T) for BG/NBD, as a logistic of a log-odds so it never overflows."""
    r, alpha, a, b = params["r"], params["alpha"], params["a"], params["b"]
    log_odds_dead = (
        (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
        + np.log(a)
        - np.log(b + np.maximum(x, 1) - 1)
    )
    return np.where(x > 0, expit(-log_odds_dead), 1.0)


def bg_nbd_purchases_if_alive(
    params: dict[str, float], t: float | np.ndarray, x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Expected repeat purchases in (T, T + t] of a customer known to be alive (FHL 2005 eq. 10).

    Eq. 10 equals P(alive) * (a+b+x-1)/(a-1) * [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(...)];
    this is the factor after P(alive). Euler's transformation turns the bracket into
    1 - (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z) with z = t/(alpha+T+t): its first two
    arguments no longer grow with x, so hyp2f1 stays near 1 where the textbook form overflows for
    frequent buyers. It depends on (x, T) only, not on recency, which lets the model evaluate
    the costly hyp2f1 once per distinct (frequency, T) pair.
    """
    r, alpha, b = params["r"], params["alpha"], params["b"]
    a = params["a"]
    # (a-1) divides a bracket that vanishes at a = 1; step off the removable singularity.
    if abs(a - 1.0) < 1e-7:
        a = 1.0 + 1e-7
    z = t / (alpha + T + t)
    c = a + b + x - 1
    hyp = hyp2f1(a + b - 1 - r, a - 1, c, z)
    log_tail = (a - 1) * np.log1p(-z)
    # hyp2f1 turns negative when c < 0 (x = 0 with a + b < 1, fitted on short histories):
    # no log then, and 1 - tail * hyp adds two positive terms, so nothing cancels.
    with np.errstate(invalid="ignore"):
        bracket = np.where(hyp > 0, -np.expm1(log_tail + np.log(hyp)), 1.0 - np.exp(log_tail) * hyp)
    return c / (a - 1) * bracket


def bg_nbd_expected_purchases(
    params: dict[str, float],
    t: float | np.ndarray,
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
) -> np.ndarray:
    """Conditional expected repeat purchases in (T, T + t] (FHL 2005 eq. 10), overflow-free."""
    return bg_nbd_p_alive(params, x, t_x, T) * bg_nbd_purchases_if_alive(params, t, x, T)


def bg_nbd_unconditional_expected_purchases(
    params: dict[str, float], t: float | np.ndarray
) -> np.ndarray:
    """E[X(t)]: expected repeat purchases in the first `t` time units after a first purchase.

    FHL 2005 eq. 7 is eq. 10 at x = t_x = T = 0 (P(alive) = 1 there), so the overflow-free
    conditional form is reused; a customer of age 0 has made no repeat purchase yet.
    """
    t = np.asarray(t, dtype=float)
    zero = np.zeros_like(t)
    return bg_nbd_expected_purchases(params, t, zero, zero, zero)


def nbd_unconditional_expected_purchases(
    params: dict[str, float], t: float | np.ndarray
) -> np.ndarray:
    """E[X(t)] without dropout: population mean rate r / alpha times t."""
    return params["r"] / params["alpha"] * np.asarray(t, dtype=float)


def nbd_expected_purchases(
    params: dict[str, float], t: float | np.ndarray, x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Conditional expected purchases in (T, T + t] without dropout: posterior rate times t."""
    return (params["r"] + x) / (params["alpha"] + T) * t


def numerical_hessian(
    total_log_likelihood: Callable[[np.ndarray], float], log_params: np.ndarray, step: float = 1e-4
) -> np.ndarray:
    """Hessian of a log-likelihood in log-parameters by central differences of its values.

    For the models without an analytic gradient (NBD fallback, Pareto/NBD).
    """
    k = log_params.size
    hessian = np.empty((k, k))
    eye = np.eye(k) * step
    for i in range(k):  # k <= 4 parameters, not customers
        for j in range(i, k):
            f = (
                total_log_likelihood(log_params + eye[i] + eye[j])
                - total_log_likelihood(log_params + eye[i] - eye[j])
                - total_log_likelihood(log_params - eye[i] + eye[j])
                + total_log_likelihood(log_params - eye[i] - eye[j])
            ) / (4 * step * step)
            hessian[i, j] = hessian[j, i] = f
    return hessian


# --------------------------------------------------------------------------------------------
# Fits: our own MLE and MAP (models.clv_mle), lifetimes only for penalized fits
# --------------------------------------------------------------------------------------------


def _fit_bg_nbd_lifetimes(
    x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray, penalizer: float
) -> dict[str, float]:
    """Fit BG/NBD with lifetimes on weighted (collapsed) rows; returns r, alpha, a, b."""
    from lifetimes import BetaGeoFitter

    fitter = BetaGeoFitter(penalizer_coef=penalizer)
    return fit_with_lifetimes(fitter, ("r", "alpha", "a", "b"), x, t_x, T, weights=weights)


def _fit_bg_nbd(
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    weights: np.ndarray,
    penalizer: float,
    codes: Codes | None = None,
    prior: DropoutPrior | None = None,
) -> dict[str, float]:
    """BG/NBD fit: our own MLE, our own MAP under `prior`, or lifetimes' penalized fit.

    Our MLE and lifetimes' maximise the same unpenalized likelihood (parameters agree to 7
    significant digits on CDNOW); lifetimes' penalty is defined on its internally rescaled
    parameters, so a configured penalizer keeps using it.
    """
    if prior is not None:
        return fit_bg_nbd_map(x, t_x, T, weights, prior, codes)
    if penalizer == 0:
        return fit_bg_nbd(x, t_x, T, weights, codes)
    return _fit_bg_nbd_lifetimes(x, t_x, T, weights, penalizer)


def fit_nbd(x: np.ndarray, T: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """Weighted maximum-likelihood NBD fit (our own; lifetimes has no plain NBD fitter).

    Optimised in log-parameters with an analytic gradient; bounds keep r and alpha finite when
    the data are nearly Poisson (r, alpha -> infinity with r / alpha fixed).
    """
    n = weights.sum()

    def objective(log_params: np.ndarray) -> tuple[float, np.ndarray]:
        r, alpha = np.exp(log_params)
        ll = nbd_log_likelihood({"r": r, "alpha": alpha}, x, T)
        d_r = digamma(r + x) - digamma(r) + np.log(alpha) - np.log(alpha + T)
        d_alpha = r / alpha - (r + x) / (alpha + T)
        grad = np.array([(weights * d_r).sum() * r, (weights * d_alpha).sum() * alpha])
        return -(weights * ll).sum() / n, -grad / n

    mean_rate = (weights * x).sum() / (weights * T).sum()
    start = np.log([1.0, 1.0 / max(mean_rate, 1e-9)])
    result = minimize(
        objective, start, jac=True, method="L-BFGS-B", bounds=[(-15.0, 15.0), (-15.0, 15.0)]
    )
    r, alpha = np.exp(result.x)
    return {"r": float(r), "alpha": float(alpha)}


# --------------------------------------------------------------------------------------------
# The interface and one class per family
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitOption:
    """One fit of a family's fallback chain: the name it is recorded under (`purchase_model_`
    and `models.model_runs.model`), its penalizer and, for a MAP fit, its prior."""

    name: str
    penalizer: float
    prior: DropoutPrior | None = None

    def describe(self, family: str) -> str:
        """How a rejected fit is named in `fallback_reason_`."""
        return self.name if self.prior is not None else f"{family}(penalizer={self.penalizer})"


@dataclass(frozen=True)
class PurchaseModel(ABC):
    """A fitted purchase model: its parameters and how it was fitted, and its predictions.

    Arrays are per customer (or per distinct (x, T) pair for `purchases_if_alive`, which does
    not depend on recency); `t` is a horizon in the data's time units.
    """

    params: dict[str, float]
    name: str
    penalizer: float = 0.0
    prior: DropoutPrior | None = None

    # The family's name, also the configured `[clv] purchase_model`.
    family: ClassVar[str]
    # Shape parameter of the dropout distribution, near 0 when no dropout is visible (None:
    # the family has no dropout).
    dropout_shape: ClassVar[str | None]

    @classmethod
    @abstractmethod
    def fit_options(cls, penalizer: float, prior: DropoutPrior) -> list[FitOption]:
        """The fits to try, in order, before falling back to NBD."""

    @classmethod
    @abstractmethod
    def fit(
        cls,
        x: np.ndarray,
        t_x: np.ndarray,
        T: np.ndarray,
        weights: np.ndarray,
        option: FitOption,
        codes: Codes | None = None,
    ) -> Self:
        """Fit on weighted (collapsed) rows; `codes` as `distinct_codes(x, t_x, T)` if known."""

    @abstractmethod
    def log_likelihood(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """Per-row log-likelihood in the data's time units."""

    @abstractmethod
    def p_alive(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """P(alive | x, t_x, T)."""

    @abstractmethod
    def purchases_if_alive(self, t: float | np.ndarray, x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """Expected repeat purchases in (T, T + t] of a customer alive at T."""

    @abstractmethod
    def unconditional_expected_purchases(self, t: float | np.ndarray) -> np.ndarray:
        """Expected repeat purchases of a new customer within `t` time units of joining."""

    def expected_purchases(
        self, t: float | np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
    ) -> np.ndarray:
        """Conditional expected repeat purchases in (T, T + t]: P(alive) x purchases if alive."""
        return self.p_alive(x, t_x, T) * self.purchases_if_alive(t, x, T)

    def probability_no_purchase(
        self, t: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
    ) -> np.ndarray:
        """P(no purchase in (T, T + t] | history), for models that drop customers only right
        after a purchase (BG/NBD) or never (NBD).

        An alive customer's next purchase comes at the posterior Poisson rate
        lambda ~ Gamma(r + x, alpha + T), so P(none | alive) = ((alpha + T) / (alpha + T + t))
        ** (r + x); a dead one never buys: P(none) = 1 - p_alive * (1 - P(none | alive)).
        Computed in log space with expm1, so customers with hundreds of purchases neither
        overflow nor round to 0 or 1 too early.
        """
        r, alpha = self.params["r"], self.params["alpha"]
        log_none_if_alive = (r + x) * (np.log(alpha + T) - np.log(alpha + T + t))
        return 1.0 - self.p_alive(x, t_x, T) * -np.expm1(log_none_if_alive)

    def log_param_hessian(
        self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray
    ) -> np.ndarray:
        """Hessian of the weighted log-likelihood in log-parameters (numerical by default)."""
        names = list(self.params)

        def total_log_likelihood(log_params: np.ndarray) -> float:
            shifted = self.with_params(dict(zip(names, np.exp(log_params), strict=True)))
            return float((weights * shifted.log_likelihood(x, t_x, T)).sum())

        return numerical_hessian(total_log_likelihood, np.log(np.array(list(self.params.values()))))

    def with_params(self, params: dict[str, float]) -> Self:
        """The same model at other parameters (interval draws, sensitivities)."""
        return replace(self, params=params)

    def dropout_problem(self) -> str | None:
        """Why the fit shows no identifiable dropout (None if it does)."""
        values = np.array(list(self.params.values()))
        if self.params[self.dropout_shape] < MIN_DROPOUT_SHAPE_A or np.any(values > MAX_PARAMETER):
            return f"dropout not identifiable (boundary parameters {self.params})"
        return None

    def problem(
        self,
        x: np.ndarray,
        t_x: np.ndarray,
        T: np.ndarray,
        pair_x: np.ndarray,
        pair_T: np.ndarray,
    ) -> tuple[str | None, np.ndarray]:
        """What disqualifies the fit (None if nothing), and its per-row log-likelihood.

        Expected purchases are checked at the distinct (frequency, T) pairs `pair_x`, `pair_T`.
        """
        values = np.array(list(self.params.values()))
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            return f"non-finite or non-positive parameters {self.params}", np.empty(0)
        dropout = self.dropout_problem()
        if dropout is not None:
            return dropout, np.empty(0)
        with np.errstate(all="ignore"):
            log_likelihood = self.log_likelihood(x, t_x, T)
            checks = [
                log_likelihood,
                self.p_alive(x, t_x, T),
                self.purchases_if_alive(365.0, pair_x, pair_T),
            ]
        if not all(np.all(np.isfinite(c)) for c in checks):
            return "non-finite likelihood or scores", log_likelihood
        return None, log_likelihood


@dataclass(frozen=True)
class BgNbd(PurchaseModel):
    """BG/NBD (Fader, Hardie & Lee 2005): a customer may drop out right after a purchase.

    Fitted by our own MLE (lifetimes' penalized fit under a configured penalizer); when that
    fit shows no dropout, by the MAP under a `DropoutPrior` on a and b ("bg_nbd_map").
    lifetimes' penalized fits are not tried as a fallback: their L2 penalty shrinks a and b
    towards the same boundary, and r and alpha with them.
    """

    family: ClassVar[str] = "bg_nbd"
    dropout_shape: ClassVar[str | None] = "a"

    @classmethod
    def fit_options(cls, penalizer: float, prior: DropoutPrior) -> list[FitOption]:
        return [FitOption(cls.family, penalizer), FitOption(f"{cls.family}_map", 0.0, prior)]

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        t_x: np.ndarray,
        T: np.ndarray,
        weights: np.ndarray,
        option: FitOption,
        codes: Codes | None = None,
    ) -> Self:
        try:
            params = _fit_bg_nbd(x, t_x, T, weights, option.penalizer, codes, option.prior)
        except FitFailed as error:
            # stalled on its way to a, b -> 0 or infinity: the boundary, which `problem` names
            if error.params is None:
                raise
            stopped = cls(error.params, option.name, option.penalizer, option.prior)
            if stopped.dropout_problem() is None:
                raise
            return stopped
        return cls(params, option.name, option.penalizer, option.prior)

    def log_likelihood(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        return bg_nbd_log_likelihood(self.params, x, t_x, T)

    def p_alive(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        return bg_nbd_p_alive(self.params, x, t_x, T)

    def purchases_if_alive(self, t: float | np.ndarray, x: np.ndarray, T: np.ndarray) -> np.ndarray:
        return bg_nbd_purchases_if_alive(self.params, t, x, T)

    def unconditional_expected_purchases(self, t: float | np.ndarray) -> np.ndarray:
        return bg_nbd_unconditional_expected_purchases(self.params, t)

    def log_param_hessian(
        self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray
    ) -> np.ndarray:
        """Analytic-gradient Hessian; for a MAP fit the posterior's, whose prior keeps the
        dropout directions finite at a boundary."""
        return bg_nbd_log_param_hessian(self.params, x, t_x, T, weights, self.prior)

    def dropout_problem(self) -> str | None:
        """A MAP fit must also keep a mean dropout probability a / (a + b) worth the name."""
        boundary = super().dropout_problem()
        if boundary is not None or self.prior is None:
            return boundary
        dropout = self.params["a"] / (self.params["a"] + self.params["b"])
        if dropout < MIN_MAP_DROPOUT_PROBABILITY:
            return (
                f"dropout negligible even under the prior (a / (a + b) = {dropout:.4f}, "
                f"parameters {self.params})"
            )
        return None


@dataclass(frozen=True)
class ParetoNbd(PurchaseModel):
    """Pareto/NBD (Schmittlein, Morrison & Colombo 1987): dropout at any moment.

    lifetimes' ParetoNBDFitter, unpenalized (or the configured penalizer) first, then
    penalized at FALLBACK_PENALIZERS ("pareto_nbd_penalized"). P(no purchase) has no closed
    form here: the customer may drop out in the middle of the window.
    """

    family: ClassVar[str] = "pareto_nbd"
    dropout_shape: ClassVar[str | None] = "s"

    @classmethod
    def fit_options(cls, penalizer: float, prior: DropoutPrior) -> list[FitOption]:
        return [
            FitOption(cls.family, penalizer),
            *(
                FitOption(f"{cls.family}_penalized", p)
                for p in FALLBACK_PENALIZERS
                if p > penalizer
            ),
        ]

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        t_x: np.ndarray,
        T: np.ndarray,
        weights: np.ndarray,
        option: FitOption,
        codes: Codes | None = None,
    ) -> Self:
        params = fit_pareto_nbd_lifetimes(x, t_x, T, weights, option.penalizer)
        return cls(params, option.name, option.penalizer, option.prior)

    def log_likelihood(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        return pareto_nbd_log_likelihood(self.params, x, t_x, T)

    def p_alive(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        return pareto_nbd_p_alive(self.params, x, t_x, T)

    def purchases_if_alive(self, t: float | np.ndarray, x: np.ndarray, T: np.ndarray) -> np.ndarray:
        return pareto_nbd_purchases_if_alive(self.params, t, x, T)

    def unconditional_expected_purchases(self, t: float | np.ndarray) -> np.ndarray:
        return pareto_nbd_unconditional_expected_purchases(self.params, t)

    def probability_no_purchase(
        self, t: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
    ) -> np.ndarray:
        # The churn baseline fits its own BG/NBD, so refuse rather than guess.
        raise ValueError(
            "probability_no_purchase is defined for the bg_nbd and nbd purchase models, "
            "not pareto_nbd: fit a ClvModel(purchase_model='bg_nbd') for churn baselines"
        )


@dataclass(frozen=True)
class Nbd(PurchaseModel):
    """Gamma-Poisson purchases without dropout (p_alive = 1): the last resort of every chain,
    nested in BG/NBD as a -> 0. Our own fit; it has nothing to fall back from."""

    family: ClassVar[str] = "nbd"
    dropout_shape: ClassVar[str | None] = None

    @classmethod
    def fit_options(cls, penalizer: float, prior: DropoutPrior) -> list[FitOption]:
        return []

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        t_x: np.ndarray,
        T: np.ndarray,
        weights: np.ndarray,
        option: FitOption,
        codes: Codes | None = None,
    ) -> Self:
        return cls(fit_nbd(x, T, weights), option.name, option.penalizer, option.prior)

    def log_likelihood(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        return nbd_log_likelihood(self.params, x, T)

    def p_alive(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        return np.ones_like(x)

    def purchases_if_alive(self, t: float | np.ndarray, x: np.ndarray, T: np.ndarray) -> np.ndarray:
        return nbd_expected_purchases(self.params, t, x, T)

    def unconditional_expected_purchases(self, t: float | np.ndarray) -> np.ndarray:
        return nbd_unconditional_expected_purchases(self.params, t)

    def dropout_problem(self) -> str | None:
        return None


# The configured `[clv] purchase_model` -> its family (pipelines.settings.ClvSettings offers
# bg_nbd and pareto_nbd); NBD is also every chain's last resort (`NO_DROPOUT_MODEL`).
PURCHASE_MODELS: dict[str, type[PurchaseModel]] = {
    model.family: model for model in (BgNbd, ParetoNbd, Nbd)
}
NO_DROPOUT_MODEL: type[PurchaseModel] = Nbd
