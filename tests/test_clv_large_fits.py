"""The large-data paths of the CLV fit: warm start + Newton steps, and the id uniqueness check."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from models import clv_mle
from models.churn import PurchaseBaseline
from pipelines.settings import ClvSettings

# Above the warm-start threshold, so the subset + Newton path runs.
N_CUSTOMERS = 60_000
TRUTH = {"r": 0.8, "alpha": 6.0, "a": 0.7, "b": 3.0}


def simulate_bg_nbd(n: int, seed: int) -> pl.DataFrame:
    """BG/NBD buyers with continuous ages: a customer drops out right after a purchase with
    probability p, buys at Poisson rate lambda until then."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(TRUTH["r"], 1.0 / TRUTH["alpha"], size=n)
    p_drop = rng.beta(TRUTH["a"], TRUTH["b"], size=n)
    T = rng.uniform(5.0, 60.0, size=n)
    # Purchases in (0, T] if nobody dropped, and the repeat purchase after which this one drops.
    arrivals = rng.poisson(rate * T)
    last_before_dropout = rng.geometric(p_drop)
    x = np.minimum(arrivals, last_before_dropout)
    # The x-th of `arrivals` uniform purchase times in (0, T].
    t_x = np.where(x > 0, T * rng.beta(np.maximum(x, 1), arrivals - x + 1), 0.0)
    spend = rng.gamma(4.0, 1.0 / rng.gamma(3.0, 1.0 / 40.0, size=n), size=n)
    return pl.DataFrame(
        {
            "customer_id": [f"c{i:06d}" for i in range(n)],
            "frequency": x,
            "recency": t_x,
            "T": T,
            "monetary_value": np.where(x > 0, spend, 0.0),
        }
    )


@pytest.fixture(scope="module")
def customers() -> pl.DataFrame:
    return simulate_bg_nbd(N_CUSTOMERS, seed=7)


def _arrays(customers: pl.DataFrame) -> tuple[np.ndarray, ...]:
    frame = customers.select(pl.all().exclude("customer_id").cast(pl.Float64))
    return tuple(frame[c].to_numpy() for c in frame.columns)


def test_newton_steps_reach_the_full_data_optimum(customers: pl.DataFrame) -> None:
    x, t_x, T, _ = _arrays(customers)
    weights = np.ones_like(x)
    params = clv_mle.fit_bg_nbd(x, t_x, T, weights)
    # Recovered within sampling error of the truth ...
    for name, value in TRUTH.items():
        assert params[name] == pytest.approx(value, rel=0.2)
    # ... and at the full data's optimum: the gradient vanishes there, in log-parameters.
    scale = 10.0 / T.max()
    objective = clv_mle._bg_nbd_objective(x, t_x * scale, T * scale, weights)
    log_params = np.log([params["r"], params["alpha"] * scale, params["a"], params["b"]])
    assert np.max(np.abs(objective(log_params)[1])) < 1e-9
    # L-BFGS-B on the full data from the same point goes nowhere.
    polished = clv_mle._minimise(objective, log_params, "BG/NBD")
    assert np.max(np.abs(polished - log_params)) < 1e-6


def test_newton_steps_converge_from_the_subset_optimum(customers: pl.DataFrame) -> None:
    """The Newton path itself, not its L-BFGS-B fallback, produces the large-data answer."""
    x, t_x, T, _ = _arrays(customers)
    weights = np.ones_like(x)
    scale = 10.0 / T.max()
    full = clv_mle._bg_nbd_objective(x, t_x * scale, T * scale, weights)
    rows = np.sort(np.random.default_rng(0).choice(x.size, 5_000, replace=False))
    subset = clv_mle._bg_nbd_objective(x[rows], t_x[rows] * scale, T[rows] * scale, weights[rows])
    start = clv_mle._minimise(subset, np.zeros(4), "BG/NBD")
    hessian = -clv_mle._hessian_from_gradient(subset, start, 1.0)
    steps = clv_mle._newton_steps(full, start, hessian)
    assert steps is not None
    assert np.max(np.abs(full(steps)[1])) < 1e-9
    # A Hessian that is no minimum's is refused (the caller then runs L-BFGS-B).
    assert clv_mle._newton_steps(full, start, -hessian) is None


def test_gamma_gamma_large_fit_is_at_the_optimum() -> None:
    # Gamma-Gamma generating process (Fader & Hardie note 025): p = 4, q = 3, v = 40.
    rng = np.random.default_rng(3)
    x = rng.integers(1, 15, size=N_CUSTOMERS).astype(float)
    nu = rng.gamma(3.0, 1.0 / 40.0, size=N_CUSTOMERS)
    m = rng.gamma(4.0 * x, 1.0 / (nu * x))
    weights = np.ones_like(x)
    params = clv_mle.fit_gamma_gamma(x, m, weights)
    assert params["p"] == pytest.approx(4.0, rel=0.1)
    scale = 1.0 / m.mean()
    objective = clv_mle._gamma_gamma_objective(x, m * scale, weights)
    log_params = np.log([params["p"], params["q"], params["v"] * scale])
    assert np.max(np.abs(objective(log_params)[1])) < 1e-9


def test_model_fit_on_large_data_matches_its_parts(customers: pl.DataFrame) -> None:
    model = ClvSettings().model().fit(customers)
    x, t_x, T, m = _arrays(customers)
    assert model.purchase_params_ == pytest.approx(
        clv_mle.fit_bg_nbd(x, t_x, T, np.ones_like(x)), rel=1e-9
    )
    spenders = (x > 0) & (m > 0)
    assert model.metrics_["n_spend_customers"] == spenders.sum()
    assert model.metrics_["frequency_spend_correlation"] == pytest.approx(
        np.corrcoef(x[spenders], m[spenders])[0, 1]
    )


@pytest.mark.parametrize("shuffle", [False, True])
def test_duplicate_customer_ids_are_refused(customers: pl.DataFrame, shuffle: bool) -> None:
    small = customers.head(500)
    duplicated = pl.concat([small, small.slice(10, 1)]).sort("customer_id")
    if shuffle:
        duplicated = duplicated.sample(fraction=1.0, shuffle=True, seed=1)
    with pytest.raises(ValueError, match=r"customer_id not unique \(1 duplicates\)"):
        ClvSettings().model().fit(duplicated)


def test_fits_do_not_depend_on_the_order_customers_arrive_in(customers: pl.DataFrame) -> None:
    """A warehouse keeps no row order: threads or partitions hand the same customers over in
    another order on another night. The CLV fit and the churn baseline (a capped sample of the
    customers) must come out the same to the last bit."""
    shuffled = customers.sample(fraction=1.0, shuffle=True, seed=11)
    fits = [ClvSettings().model(n_bootstrap=1).fit(frame) for frame in (customers, shuffled)]
    assert fits[0].purchase_params_ == fits[1].purchase_params_
    assert fits[0].spend_params_ == fits[1].spend_params_
    correlations = [fit.metrics_["frequency_spend_correlation"] for fit in fits]
    assert correlations[0] == correlations[1]

    baseline = PurchaseBaseline(
        ClvSettings().model(purchase_model="bg_nbd", n_bootstrap=1), fit_customers=20_000
    )
    scores = [
        pl.concat([frame.select("customer_id"), baseline.score(frame, 180)], how="horizontal")
        for frame in (customers, shuffled)
    ]
    assert scores[0].equals(scores[1].sort("customer_id"))
