"""Pareto/NBD (Schmittlein, Morrison & Colombo 1987): the optional purchase model of ClvModel.

Likelihood, P(alive) and conditional expected purchases follow Fader, Hardie & Lee's note
"A note on deriving the Pareto/NBD model and related expressions" (2005) and lifetimes'
`ParetoNBDFitter`, in log space. Parameters under lifetimes' names: purchase rate
lambda ~ Gamma(r, alpha), dropout rate mu ~ Gamma(s, beta). Unlike BG/NBD, a customer can drop
out at any moment, not only right after a purchase.

Only the fit goes through lifetimes (`fit_pareto_nbd_lifetimes`), so it can be replaced.
`models.purchase_models.ParetoNbd` puts these functions behind the purchase-model interface.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, hyp2f1

from models.clv_mle import fit_with_lifetimes

PARAMETERS = ("r", "alpha", "s", "beta")


def _log_a0(params: dict[str, float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """log A0 of the Pareto/NBD likelihood (the integral over the unobserved dropout time)."""
    r, alpha, s, beta = (params[k] for k in PARAMETERS)
    if alpha < beta:
        smaller, larger, second = alpha, beta, r + x
    else:
        smaller, larger, second = beta, alpha, s + 1.0
    gap = larger - smaller
    rsx = r + s + x
    q_recency = larger + t_x
    q_age = larger + T
    log_p_recency = np.log(hyp2f1(rsx, second, rsx + 1.0, gap / q_recency))
    log_p_age = np.log(hyp2f1(rsx, second, rsx + 1.0, gap / q_age))
    # A0 = [F(recency) / q_recency^rsx - F(age) / q_age^rsx] / rsx-free factor; the difference
    # of two positive terms, taken in log space as log(e^u - e^v) = u + log(-expm1(v - u)).
    u = log_p_recency - rsx * np.log(q_recency)
    v = log_p_age - rsx * np.log(q_age)
    with np.errstate(divide="ignore"):
        return u + np.log(-np.expm1(v - u))


def pareto_nbd_log_likelihood(
    params: dict[str, float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Per-row Pareto/NBD log-likelihood, in the data's time units."""
    r, alpha, s, beta = (params[k] for k in PARAMETERS)
    head = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
    dropped = np.log(s) - np.log(r + s + x) + _log_a0(params, x, t_x, T)
    return head + np.logaddexp(alive, dropped)


def pareto_nbd_p_alive(
    params: dict[str, float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """P(alive | x, t_x, T): the "alive" term's share of the likelihood."""
    r, alpha, s, beta = (params[k] for k in PARAMETERS)
    alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
    dropped = np.log(s) - np.log(r + s + x) + _log_a0(params, x, t_x, T)
    return np.exp(alive - np.logaddexp(alive, dropped))


def pareto_nbd_purchases_if_alive(
    params: dict[str, float], t: float | np.ndarray, x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Expected purchases in (T, T + t] of a customer alive at T; depends on (x, T) only.

    Posterior mean rate (r + x) / (alpha + T) times the expected time alive within t,
    (beta + T) / (s - 1) * [1 - ((beta + T) / (beta + T + t))^(s - 1)], written with expm1 so
    that s = 1 (where it becomes (beta + T) log(1 + t / (beta + T))) is not a 0/0.
    """
    r, alpha, s, beta = (params[k] for k in PARAMETERS)
    log_ratio = np.log1p(t / (beta + T))
    if abs(s - 1.0) < 1e-9:
        time_alive = (beta + T) * log_ratio
    else:
        time_alive = (beta + T) * -np.expm1(-(s - 1.0) * log_ratio) / (s - 1.0)
    return (r + x) / (alpha + T) * time_alive


def pareto_nbd_unconditional_expected_purchases(
    params: dict[str, float], t: float | np.ndarray
) -> np.ndarray:
    """E[X(t)] of a new customer: the conditional form at x = T = 0 (alive at 0 for sure)."""
    t = np.asarray(t, dtype=float)
    return pareto_nbd_purchases_if_alive(params, t, np.zeros_like(t), np.zeros_like(t))


def fit_pareto_nbd_lifetimes(
    x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray, penalizer: float
) -> dict[str, float]:
    """Fit Pareto/NBD with lifetimes on weighted (collapsed) rows; returns r, alpha, s, beta."""
    from lifetimes import ParetoNBDFitter

    fitter = ParetoNBDFitter(penalizer_coef=penalizer)
    return fit_with_lifetimes(fitter, PARAMETERS, x, t_x, T, weights=weights)
