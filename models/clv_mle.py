"""Our own maximum-likelihood fits of BG/NBD and Gamma-Gamma, with analytic gradients.

They maximise exactly the likelihoods lifetimes maximises (unpenalized), so the parameters agree
with `BetaGeoFitter` / `GammaGammaFitter` to the optimiser's tolerance, but they are built for
large customer bases:

- every term that depends on the frequency alone (log-gamma, digamma, beta functions) is computed
  once per distinct frequency and gathered by index, so a million customers cost a few hundred
  special-function evaluations per iteration instead of millions;
- logarithms of the data (log(alpha + T) is not, but log m, log x are) are taken once;
- the gradient is analytic, so L-BFGS-B needs one likelihood-and-gradient pass per step instead
  of lifetimes' autograd tape, and no Hessian is computed unless the interval asks for it;
- above WARM_START_ROWS rows the optimiser runs on a random subset first, and the full data only
  see a few quasi-Newton steps that start from the subset's Hessian (4-7 passes at a million
  customers instead of ~30), falling back to L-BFGS-B on the full data if they do not converge.

Parameters are optimised in logs (positive by construction). Bounds of exp(+-BOUND) let a fit
run to the edge of the parameter space without overflowing; the caller detects the edge (a -> 0
means no visible dropout) and falls back.

`fit_bg_nbd_map` adds a weakly informative prior on BG/NBD's dropout shapes (`DropoutPrior`) to
the same likelihood, for histories too short to identify dropout by likelihood alone.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from typing import Any

import numpy as np
import polars as pl
from scipy.optimize import minimize
from scipy.special import digamma, expit, gammaln, log_expit

from models.threads import bounded_blas_threads

# exp(+-25) spans 1e-11 .. 7e10: wide enough for any identifiable fit, finite at the boundary.
LOG_BOUND = 25.0
# Optimiser tolerances: tight enough for 8 significant digits on CDNOW and generated data.
OPTIONS = {"ftol": 1e-15, "gtol": 1e-10, "maxiter": 2000, "maxcor": 20}
# A warm start only has to land within the subset's sampling error of the optimum (~1e-2).
WARM_START_OPTIONS = {"ftol": 1e-12, "gtol": 1e-6, "maxiter": 2000, "maxcor": 20}
# Above this many rows a fit first runs on a random subset of this size (warm start).
WARM_START_ROWS = 50_000
# Newton steps on the full data after the warm start: stop when the next step would move no
# log-parameter by more than this (the distance left to the optimum), give up after this many.
NEWTON_STEP_TOL = 1e-9
MAX_NEWTON_STEPS = 25


# Row-wise sums over more rows than this run in ROW_CHUNKS chunks on a thread pool (numpy
# releases the GIL inside its loops). The chunking is fixed, not set by the core count, so the
# sums - and the fitted parameters - are the same on every machine.
PARALLEL_ROWS = 200_000
ROW_CHUNKS = 4


_LIFETIMES_LOCK = threading.Lock()


class FitFailed(ArithmeticError):
    """The optimiser stopped without converging (caller falls back to the next model).

    ``log_params`` is where it stopped, and ``params`` the model's parameters there when the
    fit knows them: an optimiser that stalls on a likelihood still rising towards infinite
    parameters has found the boundary, which the caller may name as such.
    """

    def __init__(self, message: str, log_params: np.ndarray | None = None) -> None:
        super().__init__(message)
        self.log_params = log_params
        self.params: dict[str, float] | None = None


def distinct_index(values: np.ndarray, unit: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values (sorted) and, per row, the index of its value.

    Values that are whole multiples of 1 / ``unit`` (durations counted in days, expressed in
    weeks: ``unit`` 7) take a counting pass over the whole numbers; others a hash join against
    the distinct values. Both are linear in the rows, where np.unique's argsort is not (for a
    million durations: about 5 ms, 17-35 ms and 125 ms).
    """
    with np.errstate(invalid="ignore"):  # NaN or huge values fail the checks below
        whole = np.rint(values * unit).astype(np.int64)
    if values.size and whole.min() >= 0 and whole.max() <= 4 * values.size + 1024:
        # Small non-negative whole numbers (frequencies, days, packed pair keys): count them.
        present = np.bincount(whole) > 0
        index = (np.cumsum(present) - 1)[whole]
        distinct = np.empty(int(present.sum()), dtype=values.dtype)
        distinct[index] = values
        # Exact only if every row holds its whole number's value bit for bit (a day in weeks
        # may be d / 7 or d * (1 / 7), but one of them throughout) and the order is kept.
        if np.array_equal(distinct[index], values) and np.all(distinct[1:] > distinct[:-1]):
            return distinct, index
    series = pl.Series("value", values)
    distinct = series.unique().sort()
    lookup = pl.DataFrame([distinct, pl.Series("index", np.arange(distinct.len(), dtype=np.int64))])
    index = pl.DataFrame([series]).join(lookup, on="value", how="left", maintain_order="left")
    if index["index"].null_count():
        # Signed zeros or NaNs that hash apart from their sorted twin: take the exact route.
        return np.unique(values, return_inverse=True)
    return distinct.to_numpy(), index["index"].to_numpy()


def row_chunks(n_rows: int) -> list[slice]:
    """ROW_CHUNKS contiguous slices of the rows above PARALLEL_ROWS, else one."""
    if n_rows <= PARALLEL_ROWS:
        return [slice(0, n_rows)]
    bounds = np.linspace(0, n_rows, ROW_CHUNKS + 1).astype(int)
    return [slice(int(a), int(b)) for a, b in pairwise(bounds)]


@cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(ROW_CHUNKS, os.cpu_count() or 1))


def sum_over_chunks(partial: Callable[[slice], tuple], parts: list[slice]) -> tuple:
    """Element-wise sum of ``partial(part)`` over the parts, in order (deterministic)."""
    results = [partial(parts[0])] if len(parts) == 1 else list(_pool().map(partial, parts))
    return tuple(sum(values[1:], values[0]) for values in zip(*results, strict=True))


def _minimise(
    objective, start: np.ndarray, what: str, options: dict[str, float] = OPTIONS
) -> np.ndarray:
    bounds = [(-LOG_BOUND, LOG_BOUND)] * start.size
    # One BLAS thread: the dot products here are single vectors, and OpenBLAS threads waiting
    # for a busy second core made each step 5-7x slower on the shared 2-core machine.
    with bounded_blas_threads():
        result = minimize(
            objective, start, jac=True, method="L-BFGS-B", bounds=bounds, options=options
        )
    if not np.all(np.isfinite(result.x)) or not np.isfinite(result.fun):
        raise FitFailed(f"{what}: non-finite optimum")
    # L-BFGS-B often ends with "abnormal termination in line search" once the objective is flat
    # to machine precision; that is convergence, so judge by the projected gradient instead.
    grad = result.jac * ((result.x > -LOG_BOUND + 1e-9) & (result.x < LOG_BOUND - 1e-9))
    if not result.success and np.max(np.abs(grad)) > 1e-5:
        raise FitFailed(f"{what}: {result.message}", log_params=result.x)
    return result.x


def _newton_steps(objective, start: np.ndarray, hessian: np.ndarray) -> np.ndarray | None:
    """Quasi-Newton steps from `start`; None unless they converge.

    `hessian` (of the mean objective) comes from a random subset of the rows; it is within
    sampling error of the full data's, so even unchanged each step would shrink the distance to
    the full-data optimum by that relative error (a few per cent); BFGS updates make it faster
    still. The same optimum as L-BFGS-B on the full data, in a handful of passes.
    """
    try:
        np.linalg.cholesky(hessian)
    except np.linalg.LinAlgError:
        return None  # not a minimum of the subset: let L-BFGS-B handle it
    log_params = start
    value, gradient = objective(log_params)
    for _ in range(MAX_NEWTON_STEPS):
        step = np.linalg.solve(hessian, gradient)
        # The Newton step estimates the distance to the optimum: close enough, stop here.
        if np.max(np.abs(step)) < NEWTON_STEP_TOL:
            return log_params
        candidate = log_params - step
        if np.any(np.abs(candidate) >= LOG_BOUND):
            return None
        candidate_value, candidate_gradient = objective(candidate)
        # Near the optimum the mean objective moves by less than its rounding noise (~1e-13
        # relative over a million rows): allow for that noise, catch any real increase.
        if not np.isfinite(candidate_value) or candidate_value > value + 1e-10 * abs(value):
            return None
        # BFGS update: the secant pair corrects the subset's Hessian towards the full data's,
        # so the steps speed up instead of shrinking by a fixed factor.
        change = candidate_gradient - gradient
        curvature = change @ -step
        if curvature > 0:
            h_step = hessian @ step
            hessian = (
                hessian
                + np.outer(change, change) / curvature
                - np.outer(h_step, h_step) / (step @ h_step)
            )
        log_params, value, gradient = candidate, candidate_value, candidate_gradient
    return None


def _optimum(objective_on, n_rows: int, start: np.ndarray, what: str) -> np.ndarray:
    """Log-parameters at the optimum of `objective_on(rows)` (rows None = all rows).

    Above WARM_START_ROWS, L-BFGS-B runs on a random subset of the rows; its optimum is within
    sampling error of the full one, so Newton steps with the subset's Hessian finish the job on
    the full data in a few passes instead of dozens. The answer is the full-data optimum.
    """
    if n_rows <= WARM_START_ROWS:
        return _minimise(objective_on(None), start, what)
    rows = np.sort(np.random.default_rng(0).choice(n_rows, WARM_START_ROWS, replace=False))
    subset = objective_on(rows)
    start = _minimise(subset, start, what, WARM_START_OPTIONS)
    # _hessian_from_gradient returns -n * H of a mean objective; n = 1 and a sign flip give H.
    hessian = -_hessian_from_gradient(subset, start, 1.0)
    full = objective_on(None)
    # One BLAS thread, as in _minimise: the dot products are single vectors.
    with bounded_blas_threads():
        polished = _newton_steps(full, start, hessian)
    return polished if polished is not None else _minimise(full, start, what)


# Distinct values of frequency, T and recency, each with every row's index into them.
Codes = tuple[tuple[np.ndarray, np.ndarray], ...]


def distinct_codes(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> Codes:
    """`Codes` of frequency, T and recency (in that order), for `fit_bg_nbd`."""
    return distinct_index(x), distinct_index(T), distinct_index(t_x)


def _bg_nbd_objective(
    x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray, codes: Codes | None = None
):
    """Mean negative BG/NBD log-likelihood and its gradient, as functions of log(r, alpha, a, b).

    Up to a constant that does not depend on the parameters (per-customer likelihoods in other
    time units differ by x log(scale) only). `codes` (see `distinct_codes`) saves recomputing
    what the caller already knows; its distinct values may include some no row uses.
    """
    n = weights.sum()
    (xs, ix), (Ts, iT), (txs, itx) = codes if codes is not None else distinct_codes(x, t_x, T)
    w_by_x = np.bincount(ix, weights=weights, minlength=xs.size)
    w_by_T = np.bincount(iT, weights=weights, minlength=Ts.size)
    wx_by_T = np.bincount(iT, weights=weights * x, minlength=Ts.size)
    repeat = x > 0
    # Rows without repeat purchases have no "dropped after the last purchase" term.
    wr, xr, ixr, iTr, itxr = weights[repeat], x[repeat], ix[repeat], iT[repeat], itx[repeat]
    parts = row_chunks(wr.size)

    def objective(log_params: np.ndarray) -> tuple[float, np.ndarray]:
        r, alpha, a, b = np.exp(log_params)
        # Per distinct frequency: gamma and beta function terms of eq. 6.
        psi_abx = digamma(a + b + xs)
        ll_x = gammaln(r + xs) - gammaln(r) + gammaln(b + xs) - gammaln(a + b + xs)
        ll_x += gammaln(a + b) - gammaln(b)
        d_r_x = digamma(r + xs) - digamma(r)
        d_a_x = digamma(a + b) - psi_abx
        d_b_x = digamma(b + xs) - psi_abx - digamma(b) + digamma(a + b)
        with np.errstate(divide="ignore", invalid="ignore"):
            # -inf (or NaN when b < 1) at x = 0: only repeat rows gather it.
            log_dropout_x = np.log(a) - np.log(b + xs - 1)
        # Per distinct T / t_x.
        log_alpha_T = np.log(alpha + Ts)
        log_alpha_tx = np.log(alpha + txs)
        # "Alive at T" term, -(r + x) log(alpha + T), summed through per-T weights.
        ll = (w_by_x * ll_x).sum() + n * r * np.log(alpha)
        ll -= r * (w_by_T @ log_alpha_T) + wx_by_T @ log_alpha_T
        inv_T = 1.0 / (alpha + Ts)
        inv_tx = 1.0 / (alpha + txs)

        def repeat_rows(part: slice) -> tuple[float, float, float, np.ndarray]:
            # Per repeat row: log-odds that the customer dropped after the last purchase; the
            # row's likelihood is the alive term times 1 + exp(log-odds).
            w, i_x, i_T, i_tx = wr[part], ixr[part], iTr[part], itxr[part]
            log_ratio = log_alpha_T[i_T] - log_alpha_tx[i_tx]
            r_x = r + xr[part]
            log_odds = log_dropout_x[i_x] + r_x * log_ratio
            # log(1 + e^z) and the logistic e^z / (1 + e^z) from one exponential, overflow-free.
            small = np.exp(-np.abs(log_odds))
            ll_part = w @ (np.maximum(log_odds, 0.0) + np.log1p(small))
            w_dropped = w * np.where(log_odds >= 0, 1.0, small) / (1.0 + small)
            return (
                ll_part,
                w_dropped @ log_ratio,
                (w_dropped * r_x) @ (inv_T[i_T] - inv_tx[i_tx]),
                np.bincount(i_x, weights=w_dropped, minlength=xs.size),
            )

        ll_rows, d_r_rows, d_alpha_rows, dropped_by_x = sum_over_chunks(repeat_rows, parts)
        ll += ll_rows
        d_r = (w_by_x @ d_r_x) + n * np.log(alpha) - w_by_T @ log_alpha_T + d_r_rows
        d_alpha = n * r / alpha - (r * w_by_T + wx_by_T) @ inv_T + d_alpha_rows
        d_a = (w_by_x @ d_a_x) + dropped_by_x.sum() / a
        with np.errstate(divide="ignore"):
            inv_b = np.where(xs > 0, 1.0 / (b + xs - 1), 0.0)
        d_b = (w_by_x @ d_b_x) - dropped_by_x @ inv_b
        grad = np.array([d_r * r, d_alpha * alpha, d_a * a, d_b * b])
        return -ll / n, -grad / n

    return objective


def fit_bg_nbd(
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    weights: np.ndarray,
    codes: Codes | None = None,
) -> dict[str, float]:
    """Weighted maximum-likelihood BG/NBD (Fader, Hardie & Lee 2005, eq. 6); r, alpha, a, b.

    `x`, `t_x`, `T` are frequency, recency and age in one time unit; `weights` count the
    customers behind each (collapsed) row; `codes` as `distinct_codes(x, t_x, T)` if known.
    """
    # Time rescaled so that alpha starts near the data's order of magnitude, as lifetimes does;
    # the likelihood changes by a constant only.
    scale = 10.0 / max(float(T.max()), 1e-9)
    T_s, t_x_s = T * scale, t_x * scale
    (xs, ix), (Ts, iT), (txs, itx) = codes if codes is not None else distinct_codes(x, t_x, T)
    Ts, txs = Ts * scale, txs * scale

    def objective_on(rows: np.ndarray | None):
        if rows is None:
            return _bg_nbd_objective(x, t_x_s, T_s, weights, ((xs, ix), (Ts, iT), (txs, itx)))
        subset_codes = ((xs, ix[rows]), (Ts, iT[rows]), (txs, itx[rows]))
        return _bg_nbd_objective(x[rows], t_x_s[rows], T_s[rows], weights[rows], subset_codes)

    def named(log_params: np.ndarray) -> dict[str, float]:
        r, alpha, a, b = np.exp(log_params)
        return {"r": float(r), "alpha": float(alpha / scale), "a": float(a), "b": float(b)}

    try:
        return named(_optimum(objective_on, x.size, np.zeros(4), "BG/NBD"))
    except FitFailed as error:
        if error.log_params is not None:
            error.params = named(error.log_params)
        raise


@dataclass(frozen=True)
class DropoutPrior:
    """Weakly informative prior on BG/NBD's dropout shapes a and b, for a MAP fit.

    PyMC-Marketing's `BetaGeoModel` parametrisation and defaults: the mean dropout probability
    per purchase phi = a / (a + b) ~ Beta(phi_alpha, phi_beta) (Uniform(0, 1) by default) and
    the concentration kappa = a + b ~ Pareto(kappa_alpha, kappa_m). r and alpha keep flat
    priors: they are identified by purchase counts alone, and a prior on alpha would depend on
    the time unit. The MAP is the posterior mode in the unconstrained coordinates PyMC samples
    in (logit phi, log(kappa - kappa_m)); its log-Jacobian makes the density vanish at phi -> 0
    and kappa -> kappa_m, which keeps dropout off the no-dropout boundary (a -> 0, b -> inf)
    where the maximum-likelihood estimate sits when the history is too short to show churn.
    """

    phi_alpha: float = 1.0
    phi_beta: float = 1.0
    kappa_alpha: float = 1.0
    kappa_m: float = 1.0

    def describe(self) -> dict[str, str]:
        """The prior as recorded with the fit's parameters."""
        return {
            "phi_dropout": f"Beta({self.phi_alpha:g}, {self.phi_beta:g})",
            "kappa_dropout": f"Pareto(alpha={self.kappa_alpha:g}, m={self.kappa_m:g})",
            "a": "phi_dropout * kappa_dropout",
            "b": "(1 - phi_dropout) * kappa_dropout",
            "r, alpha": "flat",
            "mode_coordinates": "log r, log alpha, logit phi_dropout, log(kappa_dropout - m)",
        }

    def to_log_params(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log(r, alpha, a, b) at MAP coordinates `u`, and d log-params / d u (4 x 4)."""
        phi = expit(u[2])
        excess = np.exp(u[3])
        kappa = self.kappa_m + excess
        log_kappa = np.log(kappa)
        log_params = np.array(
            [u[0], u[1], log_expit(u[2]) + log_kappa, log_expit(-u[2]) + log_kappa]
        )
        jacobian = np.eye(4)
        jacobian[2:, 2:] = [[1.0 - phi, excess / kappa], [-phi, excess / kappa]]
        return log_params, jacobian

    def from_params(self, a: float, b: float) -> tuple[float, float]:
        """MAP coordinates (logit phi, log(kappa - m)) of the dropout shapes a, b."""
        return float(np.log(a) - np.log(b)), float(np.log(max(a + b - self.kappa_m, 1e-12)))

    def log_density(self, u: np.ndarray) -> tuple[float, np.ndarray]:
        """Log prior density in MAP coordinates (with log-Jacobian), and its gradient."""
        phi = expit(u[2])
        excess = np.exp(u[3])
        kappa = self.kappa_m + excess
        value = (
            self.phi_alpha * log_expit(u[2])
            + self.phi_beta * log_expit(-u[2])
            - (self.kappa_alpha + 1.0) * np.log(kappa)
            + u[3]
        )
        grad = np.zeros(4)
        grad[2] = self.phi_alpha - (self.phi_alpha + self.phi_beta) * phi
        grad[3] = 1.0 - (self.kappa_alpha + 1.0) * excess / kappa
        return float(value), grad


def _bg_nbd_map_objective(likelihood_objective, prior: DropoutPrior, n: float):
    """Mean negative log posterior and its gradient in MAP coordinates (see `DropoutPrior`)."""

    def objective(u: np.ndarray) -> tuple[float, np.ndarray]:
        log_params, jacobian = prior.to_log_params(u)
        value, grad = likelihood_objective(log_params)
        log_prior, prior_grad = prior.log_density(u)
        return value - log_prior / n, grad @ jacobian - prior_grad / n

    return objective


def fit_bg_nbd_map(
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    weights: np.ndarray,
    prior: DropoutPrior,
    codes: Codes | None = None,
) -> dict[str, float]:
    """Weighted MAP BG/NBD: the likelihood of `fit_bg_nbd` plus `prior` on a and b.

    The prior is added once to the summed log-likelihood, so its weight does not depend on how
    the customers were collapsed into weighted rows; everything else (time rescaling, per
    distinct value terms, warm start on a subset) is the MLE's.
    """
    scale = 10.0 / max(float(T.max()), 1e-9)
    T_s, t_x_s = T * scale, t_x * scale
    (xs, ix), (Ts, iT), (txs, itx) = codes if codes is not None else distinct_codes(x, t_x, T)
    Ts, txs = Ts * scale, txs * scale

    def objective_on(rows: np.ndarray | None):
        if rows is None:
            likelihood = _bg_nbd_objective(x, t_x_s, T_s, weights, ((xs, ix), (Ts, iT), (txs, itx)))
            return _bg_nbd_map_objective(likelihood, prior, weights.sum())
        subset_codes = ((xs, ix[rows]), (Ts, iT[rows]), (txs, itx[rows]))
        likelihood = _bg_nbd_objective(x[rows], t_x_s[rows], T_s[rows], weights[rows], subset_codes)
        # The subset stands in for all rows: the prior keeps its weight against the full data.
        return _bg_nbd_map_objective(likelihood, prior, weights.sum() * rows.size / x.size)

    u = _optimum(objective_on, x.size, np.zeros(4), "BG/NBD MAP")
    r, alpha, a, b = np.exp(prior.to_log_params(u)[0])
    return {"r": float(r), "alpha": float(alpha / scale), "a": float(a), "b": float(b)}


def _gamma_gamma_objective(x: np.ndarray, m: np.ndarray, weights: np.ndarray):
    """Mean negative Gamma-Gamma log-likelihood (up to a constant) and gradient in log(p, q, v)."""
    n = weights.sum()
    xs, ix = distinct_index(x)
    w_by_x = np.bincount(ix, weights=weights)
    wx = weights * x
    x_m = x * m
    # Data-only part of the likelihood: p * sum w x log(x m) - sum w log m.
    sum_wx_log_xm = wx @ np.log(x_m)
    parts = row_chunks(x.size)

    def objective(log_params: np.ndarray) -> tuple[float, np.ndarray]:
        p, q, v = np.exp(log_params)
        px = p * xs
        psi_pxq = digamma(px + q)

        def rows(part: slice) -> tuple[float, float, float, float]:
            log_xm_v = np.log(x_m[part] + v)
            inv_xm_v = 1.0 / (x_m[part] + v)
            w, w_x = weights[part], wx[part]
            return w_x @ log_xm_v, w @ log_xm_v, w_x @ inv_xm_v, w @ inv_xm_v

        wx_log, w_log, wx_inv, w_inv = sum_over_chunks(rows, parts)
        ll = (
            w_by_x @ (gammaln(px + q) - gammaln(px))
            - n * gammaln(q)
            + n * q * np.log(v)
            + p * sum_wx_log_xm
            - p * wx_log
            - q * w_log
        )
        d_p = w_by_x @ (xs * (psi_pxq - digamma(px))) + sum_wx_log_xm - wx_log
        d_q = w_by_x @ psi_pxq - n * digamma(q) + n * np.log(v) - w_log
        d_v = n * q / v - p * wx_inv - q * w_inv
        grad = np.array([d_p * p, d_q * q, d_v * v])
        return -ll / n, -grad / n

    return objective


def fit_gamma_gamma(x: np.ndarray, m: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """Weighted maximum-likelihood Gamma-Gamma (Fader & Hardie note 025) on repeat buyers; p, q, v.

    `x` is the number of repeat purchases (> 0) and `m` their mean spend (> 0).
    """
    # Spend rescaled to mean 1 so that v starts near its order of magnitude.
    scale = 1.0 / max(float(np.average(m, weights=weights)), 1e-12)
    m_s = m * scale

    def objective_on(rows: np.ndarray | None):
        if rows is None:
            return _gamma_gamma_objective(x, m_s, weights)
        return _gamma_gamma_objective(x[rows], m_s[rows], weights[rows])

    p, q, v = np.exp(_optimum(objective_on, x.size, np.zeros(3), "Gamma-Gamma"))
    return {"p": float(p), "q": float(q), "v": float(v / scale)}


def _hessian_from_gradient(objective, log_params: np.ndarray, n: float) -> np.ndarray:
    """Hessian of the total log-likelihood by central differences of the analytic gradient."""
    step = 1e-5
    k = log_params.size
    hessian = np.empty((k, k))
    with bounded_blas_threads():
        for i in range(k):  # k <= 4 parameters
            shift = np.zeros(k)
            shift[i] = step
            hessian[i] = (objective(log_params + shift)[1] - objective(log_params - shift)[1]) / (
                2 * step
            )
    # objective returns the mean *negative* log-likelihood: scale and flip the sign.
    return -n * (hessian + hessian.T) / 2


def bg_nbd_log_param_hessian(
    params: dict[str, float],
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    weights: np.ndarray,
    prior: DropoutPrior | None = None,
) -> np.ndarray:
    """Hessian of the weighted BG/NBD log-likelihood (or log posterior) in log(r, alpha, a, b).

    Time rescaling only shifts log(alpha), so the Hessian in log-parameters is the same in any
    time unit; the fit's scaled objective is reused. With a `prior` (a MAP fit) it is the
    posterior's Hessian in the MAP coordinates, carried to log-parameters by the Jacobian
    (J^-T H J^-1): the normal approximation of the posterior around its mode, expressed where
    the CLV interval draws its parameters.
    """
    scale = 10.0 / max(float(T.max()), 1e-9)
    log_params = np.log([params["r"], params["alpha"] * scale, params["a"], params["b"]])
    objective = _bg_nbd_objective(x, t_x * scale, T * scale, weights)
    if prior is None:
        return _hessian_from_gradient(objective, log_params, weights.sum())
    u = np.array([log_params[0], log_params[1], *prior.from_params(params["a"], params["b"])])
    posterior = _bg_nbd_map_objective(objective, prior, weights.sum())
    hessian_u = _hessian_from_gradient(posterior, u, weights.sum())
    inverse_jacobian = np.linalg.inv(prior.to_log_params(u)[1])
    return inverse_jacobian.T @ hessian_u @ inverse_jacobian


def gamma_gamma_log_param_hessian(
    params: dict[str, float], x: np.ndarray, m: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Hessian of the weighted Gamma-Gamma log-likelihood in log(p, q, v) at `params`."""
    scale = 1.0 / max(float(np.average(m, weights=weights)), 1e-12)
    log_params = np.log([params["p"], params["q"], params["v"] * scale])
    objective = _gamma_gamma_objective(x, m * scale, weights)
    return _hessian_from_gradient(objective, log_params, weights.sum())


def fit_with_lifetimes(
    fitter: Any, names: tuple[str, ...], *columns: np.ndarray, weights: np.ndarray
) -> dict[str, float]:
    """Fit a lifetimes fitter on weighted (collapsed) rows; return its parameters by name.

    lifetimes prints the optimizer state before raising ConvergenceError and warns on every
    boundary step; the caller's fallback chain reports what matters, so keep logs clean.
    Redirecting stdout and catching warnings change process-wide state, so the spend and
    purchase fits (run on two threads) take turns here.
    """
    with _LIFETIMES_LOCK, contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitter.fit(*columns, weights=weights)
    return {k: float(fitter.params_[k]) for k in names}
