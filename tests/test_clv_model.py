"""ClvModel against published CDNOW figures, lifetimes' own methods and edge cases."""

from __future__ import annotations

import inspect
import math
import typing
from datetime import date

import numpy as np
import pandas as pd
import polars as pl
import pytest
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.datasets import load_cdnow_summary_data_with_monetary_value

from models import clv, purchase_models
from models.clv import ClvModel, InsufficientDataError
from models.purchase_models import PURCHASE_MODELS, PurchaseModel
from pipelines.settings import ClvSettings

AS_OF = date(1998, 6, 30)
NUMERIC_OUTPUTS = [c for c in clv.OUTPUT_COLUMNS if c not in ("customer_id", "next_order_date")]


def load_cdnow_summary() -> pl.DataFrame:
    """CDNOW sample (2,357 customers, weeks) as the upstream SQL would deliver it."""
    frame = load_cdnow_summary_data_with_monetary_value().reset_index()
    return pl.from_pandas(frame).with_columns(pl.col("customer_id").cast(pl.Utf8))


def simulate_no_dropout_cohort(n: int, seed: int) -> pl.DataFrame:
    """Gamma-heterogeneous Poisson buyers who never drop out, observed for only ~10 weeks."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(shape=1.5, scale=0.3, size=n)  # purchases per week
    T = rng.uniform(8.0, 12.0, size=n)
    frequency = rng.poisson(rate * T)
    # Given x events in (0, T], the last one is at T times the max of x uniforms.
    recency = np.where(frequency > 0, T * rng.uniform(size=n) ** (1 / np.maximum(frequency, 1)), 0)
    spend = rng.gamma(shape=4.0, scale=10.0, size=n)
    return pl.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "frequency": frequency,
            "recency": recency,
            "T": T,
            "monetary_value": np.where(frequency > 0, spend, 0.0),
        }
    )


@pytest.fixture(scope="module")
def cdnow() -> pl.DataFrame:
    return load_cdnow_summary()


@pytest.fixture(scope="module")
def cdnow_model(cdnow: pl.DataFrame) -> ClvModel:
    return ClvSettings().model(time_unit_days=7.0).fit(cdnow)


@pytest.fixture(scope="module")
def cdnow_scores(cdnow_model: ClvModel, cdnow: pl.DataFrame) -> pl.DataFrame:
    return cdnow_model.predict(cdnow, as_of=AS_OF)


@pytest.fixture(scope="module")
def lifetimes_fits(cdnow: pl.DataFrame) -> tuple[BetaGeoFitter, GammaGammaFitter]:
    """Uncollapsed lifetimes fits: the reference our collapsed, weighted fit must match."""
    frame = cdnow.to_pandas()
    bgf = BetaGeoFitter().fit(frame["frequency"], frame["recency"], frame["T"])
    repeat = frame[frame["frequency"] > 0]
    ggf = GammaGammaFitter().fit(repeat["frequency"], repeat["monetary_value"])
    return bgf, ggf


def _assert_finite(scores: pl.DataFrame) -> None:
    values = scores.select(NUMERIC_OUTPUTS).to_numpy()
    assert np.all(np.isfinite(values))
    p_alive = scores["p_alive"].to_numpy()
    assert np.all((p_alive >= 0) & (p_alive <= 1))


def test_cdnow_parameters_match_published(cdnow_model: ClvModel) -> None:
    # Fader, Hardie & Lee (2005) BG/NBD; Fader & Hardie note 025 Gamma-Gamma.
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    for name, value in published.items():
        assert cdnow_model.purchase_params_[name] == pytest.approx(value, rel=0.01)
    assert cdnow_model.log_likelihood_ == pytest.approx(-9582.4, abs=0.1)
    for name, value in {"p": 6.25, "q": 3.74, "v": 15.44}.items():
        assert cdnow_model.spend_params_[name] == pytest.approx(value, rel=0.01)
    assert cdnow_model.purchase_model_ == "bg_nbd"
    assert cdnow_model.spend_model_ == "gamma_gamma"
    assert cdnow_model.fallback_reason_ is None
    assert cdnow_model.n_customers_ == 2357
    assert cdnow_model.n_repeat_customers_ == 946
    assert cdnow_model.n_patterns_ < cdnow_model.n_customers_
    assert cdnow_model.metrics_["log_likelihood"] == cdnow_model.log_likelihood_
    assert -1 < cdnow_model.metrics_["frequency_spend_correlation"] < 1


def test_collapsed_weighted_fit_equals_uncollapsed(
    cdnow_model: ClvModel, lifetimes_fits: tuple[BetaGeoFitter, GammaGammaFitter]
) -> None:
    bgf, ggf = lifetimes_fits
    for name in ("r", "alpha", "a", "b"):
        assert cdnow_model.purchase_params_[name] == pytest.approx(bgf.params_[name], rel=1e-4)
    for name in ("p", "q", "v"):
        assert cdnow_model.spend_params_[name] == pytest.approx(ggf.params_[name], rel=1e-4)


def test_hardie_conditional_expectation() -> None:
    # Hardie's BG/NBD spreadsheet: x=2, t_x=30.43, T=38.86, next 39 weeks -> 1.226.
    params = {"r": 0.242594, "alpha": 4.413532, "a": 0.792886, "b": 2.425752}
    expected = clv.bg_nbd_expected_purchases(
        params, 39.0, np.array([2.0]), np.array([30.43]), np.array([38.86])
    )
    assert expected[0] == pytest.approx(1.226, abs=5e-4)


def test_scoring_matches_lifetimes_methods(
    cdnow: pl.DataFrame, lifetimes_fits: tuple[BetaGeoFitter, GammaGammaFitter]
) -> None:
    bgf, ggf = lifetimes_fits
    params = {k: float(bgf.params_[k]) for k in ("r", "alpha", "a", "b")}
    spend_params = {k: float(ggf.params_[k]) for k in ("p", "q", "v")}
    x, t_x, T, m = (cdnow[c].cast(pl.Float64).to_numpy() for c in clv.SUMMARY_COLUMNS[1:])
    for t in (1.0, 12.86, 39.0, 52.14):
        ours = clv.bg_nbd_expected_purchases(params, t, x, t_x, T)
        theirs = bgf.conditional_expected_number_of_purchases_up_to_time(t, x, t_x, T)
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    np.testing.assert_allclose(
        clv.bg_nbd_p_alive(params, x, t_x, T),
        bgf.conditional_probability_alive(x, t_x, T),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        clv.gamma_gamma_expected_spend(spend_params, x, m),
        ggf.conditional_expected_average_profit(x, m),
        rtol=1e-6,
    )


def test_clv_matches_lifetimes_customer_lifetime_value(
    cdnow: pl.DataFrame,
    cdnow_scores: pl.DataFrame,
    lifetimes_fits: tuple[BetaGeoFitter, GammaGammaFitter],
) -> None:
    bgf, ggf = lifetimes_fits
    frame = cdnow.to_pandas()
    # lifetimes: `time` in months, `discount_rate` monthly, freq "W" = 4.345 weeks per month.
    monthly_rate = 1.10 ** (1 / 12) - 1
    theirs = ggf.customer_lifetime_value(
        bgf,
        frame["frequency"],
        frame["recency"],
        frame["T"],
        frame["monetary_value"],
        time=12,
        discount_rate=monthly_rate,
        freq="W",
    )
    # Our parameters come from the collapsed fit (equal to ~1e-5), hence rtol 1e-4 here.
    np.testing.assert_allclose(cdnow_scores["clv"].to_numpy(), theirs.to_numpy(), rtol=1e-4)


def test_clv_matches_lifetimes_with_identical_parameters(
    cdnow: pl.DataFrame,
    cdnow_model: ClvModel,
) -> None:
    bgf_ours = BetaGeoFitter()
    bgf_ours.params_ = pd.Series(cdnow_model.purchase_params_)
    bgf_ours.predict = bgf_ours.conditional_expected_number_of_purchases_up_to_time
    ggf_ours = GammaGammaFitter()
    ggf_ours.params_ = pd.Series(cdnow_model.spend_params_)
    frame = cdnow.to_pandas()
    theirs = ggf_ours.customer_lifetime_value(
        bgf_ours,
        frame["frequency"],
        frame["recency"],
        frame["T"],
        frame["monetary_value"],
        time=12,
        discount_rate=1.10 ** (1 / 12) - 1,
        freq="W",
    )
    ours = cdnow_model.predict(cdnow, AS_OF)["clv"].to_numpy()
    np.testing.assert_allclose(ours, theirs.to_numpy(), rtol=1e-6)


@pytest.fixture(scope="module")
def cdnow_pareto_model(cdnow: pl.DataFrame) -> ClvModel:
    return (
        ClvSettings()
        .model(time_unit_days=7.0, purchase_model="pareto_nbd", n_bootstrap=50)
        .fit(cdnow)
    )


def test_pareto_nbd_cdnow_parameters_match_published(cdnow_pareto_model: ClvModel) -> None:
    # Fader, Hardie & Lee (2005), CDNOW 39-week calibration: Pareto/NBD log-likelihood -9595.0.
    published = {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}
    assert cdnow_pareto_model.purchase_model_ == "pareto_nbd"
    assert cdnow_pareto_model.fallback_reason_ is None
    assert set(cdnow_pareto_model.purchase_params_) == set(published)
    for name, value in published.items():
        assert cdnow_pareto_model.purchase_params_[name] == pytest.approx(value, rel=0.01)
    assert cdnow_pareto_model.log_likelihood_ == pytest.approx(-9595.0, abs=0.1)


def test_pareto_nbd_scores_match_lifetimes(
    cdnow: pl.DataFrame, cdnow_pareto_model: ClvModel
) -> None:
    from lifetimes import ParetoNBDFitter

    fitter = ParetoNBDFitter()
    fitter.params_ = pd.Series(cdnow_pareto_model.purchase_params_)
    x, t_x, T = (cdnow[c].cast(pl.Float64).to_numpy() for c in ("frequency", "recency", "T"))
    scores = cdnow_pareto_model.predict(cdnow, AS_OF)
    _assert_finite(scores)
    np.testing.assert_allclose(
        scores["p_alive"].to_numpy(), fitter.conditional_probability_alive(x, t_x, T), rtol=1e-9
    )
    horizon = 365.0 / 7.0
    np.testing.assert_allclose(
        scores["expected_purchases_365d"].to_numpy(),
        fitter.conditional_expected_number_of_purchases_up_to_time(horizon, x, t_x, T),
        rtol=1e-9,
    )
    np.testing.assert_allclose(
        cdnow_pareto_model.unconditional_expected_purchases(np.array([39.0, 78.0])),
        fitter.expected_number_of_purchases_up_to_time(np.array([39.0, 78.0])),
        rtol=1e-9,
    )
    point = cdnow_pareto_model.predict_clv(cdnow)
    np.testing.assert_allclose(point["clv"].to_numpy(), scores["clv"].to_numpy())


def test_pareto_nbd_refuses_a_churn_probability_it_cannot_derive(
    cdnow: pl.DataFrame, cdnow_pareto_model: ClvModel
) -> None:
    with pytest.raises(ValueError, match=r"not pareto_nbd"):
        cdnow_pareto_model.probability_no_purchase(cdnow, 26.0)


@pytest.fixture(scope="module")
def cdnow_nbd_model(cdnow: pl.DataFrame) -> ClvModel:
    return ClvSettings().model(time_unit_days=7.0, purchase_model="nbd", n_bootstrap=50).fit(cdnow)


def test_every_configurable_purchase_model_is_registered() -> None:
    configurable = typing.get_args(ClvSettings.model_fields["purchase_model"].annotation)
    assert set(configurable) <= set(PURCHASE_MODELS)
    for name, family in PURCHASE_MODELS.items():
        assert issubclass(family, PurchaseModel) and not inspect.isabstract(family)
        assert family.family == name
    # The fits each family tries before NBD, under the names models.model_runs records.
    prior = clv.DEFAULT_DROPOUT_PRIOR
    chains = {name: family.fit_options(0.0, prior) for name, family in PURCHASE_MODELS.items()}
    assert {name: [o.name for o in chain] for name, chain in chains.items()} == {
        "bg_nbd": ["bg_nbd", "bg_nbd_map"],
        "pareto_nbd": ["pareto_nbd", "pareto_nbd_penalized", "pareto_nbd_penalized"],
        "nbd": [],
    }
    assert [o.penalizer for o in chains["pareto_nbd"]] == [0.0, 0.001, 0.01]
    assert chains["bg_nbd"][1].prior == prior
    assert [o.name for o in PURCHASE_MODELS["pareto_nbd"].fit_options(0.001, prior)] == [
        "pareto_nbd",
        "pareto_nbd_penalized",
    ]


@pytest.mark.parametrize("name", list(PURCHASE_MODELS))
def test_purchase_model_satisfies_the_interface_and_combines_with_gamma_gamma(
    name: str, cdnow: pl.DataFrame, cdnow_model: ClvModel, request: pytest.FixtureRequest
) -> None:
    fixture = {
        "bg_nbd": "cdnow_model",
        "pareto_nbd": "cdnow_pareto_model",
        "nbd": "cdnow_nbd_model",
    }
    model: ClvModel = request.getfixturevalue(fixture[name])
    purchase = model.purchase_
    assert type(purchase) is PURCHASE_MODELS[name]
    assert (model.purchase_model_, model.purchase_family_) == (name, name)
    assert model.purchase_params_ is purchase.params and model.metrics_["purchase_model"] == name
    x, t_x, T, m = (cdnow[c].cast(pl.Float64).to_numpy() for c in clv.SUMMARY_COLUMNS[1:])

    # The fit's log-likelihood (over collapsed weighted rows) is the customers' total.
    total = purchase.log_likelihood(x, t_x, T).sum()
    assert total == pytest.approx(model.log_likelihood_, rel=1e-9)
    p_alive = purchase.p_alive(x, t_x, T)
    assert np.all((p_alive > 0) & (p_alive <= 1))
    newcomer = np.zeros(1)  # first purchase today: nothing to have dropped out after
    assert purchase.p_alive(newcomer, newcomer, newcomer)[0] == pytest.approx(1.0, abs=1e-12)
    expected = purchase.expected_purchases(39.0, x, t_x, T)
    np.testing.assert_array_equal(expected, p_alive * purchase.purchases_if_alive(39.0, x, T))
    np.testing.assert_array_equal(expected, model.expected_purchases(cdnow, 39.0))
    new_customer = purchase.unconditional_expected_purchases(np.array([0.0, 13.0, 52.0]))
    assert new_customer[0] == 0 and np.all(np.diff(new_customer) > 0)
    assert purchase.with_params(dict(purchase.params)) == purchase
    faster = purchase.with_params({**purchase.params, "r": 2 * purchase.params["r"]})
    assert type(faster) is type(purchase) and faster.name == purchase.name
    assert faster.expected_purchases(39.0, x, t_x, T).sum() > expected.sum()
    if name == "pareto_nbd":
        with pytest.raises(ValueError, match="not pareto_nbd"):
            purchase.probability_no_purchase(26.0, x, t_x, T)
    else:
        none = purchase.probability_no_purchase(26.0, x, t_x, T)
        assert np.all((none > 0) & (none < 1))

    # Gamma-Gamma is fitted apart from the purchase model: the same spend fit under each ...
    assert model.spend_model_ == "gamma_gamma"
    assert model.spend_params_ == cdnow_model.spend_params_
    # ... and CLV is the purchase model's discounted monthly purchases times its order value,
    # here rebuilt through the interface alone, month by month.
    month_days, discount = clv.discounted_monthly_weights(365, 0.10)
    cumulative = [purchase.expected_purchases(d / 7.0, x, t_x, T) for d in month_days]
    monthly = np.diff(np.vstack([np.zeros_like(x), *cumulative]), axis=0)
    spend = clv.gamma_gamma_expected_spend(model.spend_params_, np.where(m > 0, x, 0.0), m)
    np.testing.assert_allclose(
        model.predict_clv(cdnow)["clv"].to_numpy(), (discount @ monthly) * spend, rtol=1e-12
    )


def test_unknown_purchase_model_is_named(cdnow: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"bg_nbd, pareto_nbd.*'mbg'"):
        ClvSettings().model(purchase_model="mbg").fit(cdnow)


def test_predict_shape_and_ranges(cdnow: pl.DataFrame, cdnow_scores: pl.DataFrame) -> None:
    assert cdnow_scores.columns == list(clv.OUTPUT_COLUMNS)
    assert cdnow_scores["customer_id"].to_list() == cdnow["customer_id"].to_list()
    _assert_finite(cdnow_scores)
    assert (cdnow_scores["expected_purchases_365d"] >= cdnow_scores["expected_purchases_90d"]).all()
    one_time = cdnow_scores.filter(cdnow["frequency"] == 0)
    assert (one_time["p_alive"] == 1.0).all()
    assert one_time["expected_order_value"].n_unique() == 1  # population mean
    dates = cdnow_scores.filter(pl.col("next_order_date").is_not_null())["next_order_date"]
    assert (dates > AS_OF).all()
    assert cdnow_scores.filter(pl.col("next_order_date").is_null())["p_alive"].max() < (
        clv.P_ALIVE_FLOOR
    )


def test_interval_contains_point_and_is_informative(cdnow_scores: pl.DataFrame) -> None:
    low, point, high = (cdnow_scores[c].to_numpy() for c in ("clv_low", "clv", "clv_high"))
    assert np.all(low <= point) and np.all(point <= high)
    assert np.all(low >= 0)
    # Parameter uncertainty on 2,357 customers: intervals are a few per cent, not zero or huge.
    relative_width = np.median((high - low) / point)
    assert 0.01 < relative_width < 0.5


def test_linearised_interval_matches_exact_draws(
    cdnow: pl.DataFrame, cdnow_model: ClvModel, cdnow_scores: pl.DataFrame
) -> None:
    # predict propagates purchase-parameter draws to log CLV to first order; rescoring every
    # draw exactly must give nearly the same interval bounds.
    customers = clv._Customers(*clv._as_arrays(cdnow))
    names = list(cdnow_model.purchase_params_)
    centre = np.array(list(cdnow_model.purchase_params_.values()))
    # (customers x draws) -> one row per draw
    spend = cdnow_model._expected_spend(cdnow_model.spend_param_draws_, customers).T
    n_draws = min(len(spend), len(cdnow_model.purchase_log_param_draws_))
    exact = (
        np.array(
            [
                cdnow_model._discounted_purchases(
                    cdnow_model.purchase_.with_params(
                        dict(zip(names, centre * np.exp(d), strict=True))
                    ),
                    customers,
                )
                for d in cdnow_model.purchase_log_param_draws_[:n_draws]
            ]
        )
        * spend[:n_draws]
    )
    tail = (1 - cdnow_model.interval) / 2
    low, high = np.quantile(exact, [tail, 1 - tail], axis=0)
    np.testing.assert_allclose(cdnow_scores["clv_low"].to_numpy(), low, rtol=0.03)
    np.testing.assert_allclose(cdnow_scores["clv_high"].to_numpy(), high, rtol=0.03)


def test_extreme_customers_stay_finite(cdnow_model: ClvModel) -> None:
    extremes = pl.DataFrame(
        {
            "customer_id": ["heavy_recent", "heavy_gone", "one_time_old", "recency_eq_T", "huge"],
            "frequency": [500, 500, 0, 3, 5000],
            "recency": [199.9, 10.0, 0.0, 40.0, 1000.0],
            "T": [200.0, 200.0, 10_000.0, 40.0, 1000.0],
            "monetary_value": [50.0, 50.0, 0.0, 20.0, 1e6],
        }
    )
    scores = cdnow_model.predict(extremes, AS_OF)
    _assert_finite(scores)
    by_id = {row["customer_id"]: row for row in scores.iter_rows(named=True)}
    assert by_id["heavy_recent"]["p_alive"] > 0.99
    assert by_id["heavy_recent"]["expected_purchases_365d"] > 100
    assert by_id["heavy_gone"]["p_alive"] < 1e-6
    assert by_id["heavy_gone"]["next_order_date"] is None
    # 5 purchases a week for 1,000 weeks, still active: about 5 x 52 in the next year.
    assert 200 < by_id["huge"]["expected_purchases_365d"] < 261


def test_short_history_without_dropout_fits_and_scores() -> None:
    cohort = simulate_no_dropout_cohort(3000, seed=7)
    model = ClvSettings().model(n_bootstrap=50).fit(cohort)
    # No dropout in the data: BG/NBD runs to a -> 0 at every penalizer, NBD is what is left.
    assert model.purchase_model_ == "nbd"
    assert "bg_nbd(penalizer=0.0): dropout not identifiable" in model.fallback_reason_
    # Simulated truth: rate ~ Gamma(shape r = 1.5, rate alpha = 1 / 0.3).
    assert model.purchase_params_["r"] == pytest.approx(1.5, rel=0.2)
    assert model.purchase_params_["alpha"] == pytest.approx(1 / 0.3, rel=0.2)
    assert math.isfinite(model.log_likelihood_)
    scores = model.predict(cohort, AS_OF)
    _assert_finite(scores)
    # True mean rate is 0.45 a week, so about 40 purchases a year per alive customer on average.
    mean_365d = scores["expected_purchases_365d"].mean()
    assert 5 < mean_365d < 40


def test_nbd_fallback_when_bg_nbd_cannot_be_fitted(
    cdnow: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    def always_fails(*args: object) -> dict[str, float]:
        raise ValueError("The model did not converge.")

    monkeypatch.setattr(purchase_models, "_fit_bg_nbd", always_fails)
    model = ClvSettings().model(n_bootstrap=50).fit(cdnow)
    assert model.purchase_model_ == "nbd"
    assert set(model.purchase_params_) == {"r", "alpha"}
    # Both BG/NBD fits of the chain were tried (MLE, then MAP) before NBD.
    assert "bg_nbd_map: ValueError" in model.fallback_reason_
    # The nested model cannot beat BG/NBD's -9582.4 on CDNOW, where dropout is real.
    assert model.log_likelihood_ < -9582.4
    scores = model.predict(cdnow, AS_OF)
    _assert_finite(scores)
    assert (scores["p_alive"] == 1.0).all()
    # The fallback is the very model `purchase_model="nbd"` fits.
    chosen = ClvSettings().model(purchase_model="nbd", n_bootstrap=50).fit(cdnow)
    assert chosen.purchase_model_ == "nbd" and chosen.fallback_reason_ is None
    assert chosen.purchase_params_ == model.purchase_params_


def test_boundary_bg_nbd_is_rejected(cdnow: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    boundary = {"r": 0.5, "alpha": 3.0, "a": 1e-9, "b": 5.0}
    monkeypatch.setattr(purchase_models, "_fit_bg_nbd", lambda *args: dict(boundary))
    model = ClvSettings().model(n_bootstrap=20).fit(cdnow)
    assert model.purchase_model_ == "nbd"
    assert "not identifiable" in model.fallback_reason_


def test_spend_falls_back_to_empirical_mean_when_q_below_one(
    cdnow: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    # q <= 1 means Gamma-Gamma has no population mean: one-time buyers would get infinite value.
    monkeypatch.setattr(clv, "_fit_gamma_gamma", lambda *args: {"p": 6.0, "q": 0.9, "v": 15.0})
    model = ClvSettings().model(n_bootstrap=20).fit(cdnow)
    assert model.spend_model_ == "empirical_mean"
    assert "q <= 1" in model.fallback_reason_
    scores = model.predict(cdnow, AS_OF)
    _assert_finite(scores)
    repeat_mean = cdnow.filter(pl.col("frequency") > 0)["monetary_value"].mean()
    one_time = scores.filter(cdnow["frequency"] == 0)["expected_order_value"]
    assert one_time.to_numpy() == pytest.approx(repeat_mean)


def test_too_few_repeat_buyers_raises(cdnow: pl.DataFrame) -> None:
    few = pl.concat(
        [cdnow.filter(pl.col("frequency") > 0).head(10), cdnow.filter(pl.col("frequency") == 0)]
    )
    with pytest.raises(InsufficientDataError, match=r"only 10 of \d+ customers"):
        ClvSettings().model().fit(few)


def test_missing_columns_are_named(cdnow: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="missing column\\(s\\): recency, monetary_value"):
        ClvSettings().model().fit(cdnow.drop("recency", "monetary_value"))


def test_recency_above_T_is_rejected(cdnow: pl.DataFrame) -> None:
    broken = cdnow.with_columns(
        pl.when(pl.col("customer_id") == "1")
        .then(99.0)
        .otherwise(pl.col("recency"))
        .alias("recency")
    )
    with pytest.raises(ValueError, match=r"recency > T, e\.g\. customer_id='1'"):
        ClvSettings().model().fit(broken)


def test_first_purchase_on_the_as_of_day_is_scored_and_changes_no_parameter(
    cdnow: pl.DataFrame, cdnow_model: ClvModel
) -> None:
    """A customer first seen on the as-of day has T = 0: no information, but a row to score."""
    newcomers = pl.DataFrame(
        {
            "customer_id": ["new-1", "new-2"],
            "frequency": [0, 0],
            "recency": [0.0, 0.0],
            "T": [0.0, 0.0],
            "monetary_value": [0.0, 0.0],
        }
    ).cast({name: dtype for name, dtype in cdnow.schema.items()})
    with_newcomers = pl.concat([cdnow, newcomers])
    model = ClvSettings().model(time_unit_days=7.0).fit(with_newcomers)
    for name, value in cdnow_model.purchase_params_.items():
        assert model.purchase_params_[name] == pytest.approx(value, rel=1e-6)
    scores = model.predict(newcomers, as_of=AS_OF)
    _assert_finite(scores)
    assert scores["p_alive"].to_list() == [1.0, 1.0]
    assert (scores["expected_purchases_365d"] > 0).all()


def test_unfitted_predict_raises(cdnow: pl.DataFrame) -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        ClvSettings().model().predict(cdnow, AS_OF)
