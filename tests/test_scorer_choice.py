"""Choosing the scorer that ships: the rule, the shared scorecard, and real CDNOW purchases."""

from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score

from models.delinquency import BEHAVIOUR_FEATURES
from models.scorecard import NotEnoughEvidence, grouped_folds
from models.selection import Candidate, bootstrap_auc, choose_scorer, rank_mapped
from pipelines.churn.assets import churn_evaluation, churn_scores, churn_snapshots
from pipelines.customer_value.assets import run_as_of_date
from pipelines.ingest.assets import staging_assets
from pipelines.resources import Inbox, Warehouse
from pipelines.risk.assets import invoice_settlement, payment_behaviour, receivables_aging
from pipelines.settings import RiskSettings, default_settings_resources
from tests.conftest import run_cli
from tests.test_clv_pipeline import cdnow_transactions, write_invoices

# --- the rule ------------------------------------------------------------------------------------


def test_bootstrap_auc_is_scikit_learns_auc_with_an_interval() -> None:
    rng = np.random.default_rng(3)
    observed = rng.random(400) < 0.3
    predicted = np.round(rng.random(400) + 0.4 * observed, 1)  # many ties
    auc, low, high = bootstrap_auc(observed, predicted)
    assert auc == pytest.approx(roc_auc_score(observed, predicted), abs=1e-12)
    assert low < auc < high and high - low < 0.2
    assert bootstrap_auc(observed, predicted) == (auc, low, high)  # fixed seed
    # a larger holdout narrows the interval
    big = rng.random(40_000) < 0.3
    _, big_low, big_high = bootstrap_auc(big, rng.random(40_000) + 0.4 * big)
    assert big_high - big_low < (high - low) / 3


def test_every_candidate_gets_the_interval_of_its_own_bootstrap() -> None:
    """The resamples are drawn once and shared: each candidate's interval is still exactly the
    one its own bootstrap gives, for a full holdout and one capped below 1,000 resamples."""
    rng = np.random.default_rng(5)
    for customers in (500, 25_000):
        observed = rng.random(customers) < 0.4
        candidates = [
            Candidate("sharp", "one_column", rng.random(customers) + observed),
            Candidate("tied", "one_column", np.round(rng.random(customers) + 0.3 * observed, 1)),
            Candidate("coin", "baseline", rng.random(customers), is_probability=True),
        ]
        summary = choose_scorer(observed, candidates, robust="coin").summary
        for candidate in candidates:
            row = summary.filter(pl.col("scorer") == candidate.name).row(0, named=True)
            own = bootstrap_auc(observed, candidate.predicted)
            assert (row["roc_auc"], row["roc_auc_low"], row["roc_auc_high"]) == own


def _candidates(observed: np.ndarray, supervised_noise: float) -> list[Candidate]:
    rng = np.random.default_rng(0)
    signal = observed + rng.normal(0, 1.0, len(observed))
    return [
        Candidate(
            "supervised", "supervised", signal + rng.normal(0, supervised_noise, len(signal))
        ),
        Candidate("recency_days", "one_column", signal),
        Candidate("frequency", "one_column", rng.random(len(signal))),
    ]


def test_a_model_that_loses_to_a_one_column_ranking_never_ships() -> None:
    observed = (np.arange(2000) % 3 == 0).astype(int)
    choice = choose_scorer(observed, _candidates(observed, 2.0), robust="recency_days")
    auc = dict(choice.summary.select("scorer", "roc_auc").iter_rows())
    assert auc["supervised"] < auc["recency_days"] and choice.chosen == "recency_days"
    assert "the supervised model ranked" in choice.reason
    # the same scores: a tie goes to the simpler scorer
    same = [Candidate("supervised", "supervised", c.predicted) for c in _candidates(observed, 0)]
    tie = choose_scorer(observed, [same[0], *_candidates(observed, 0)[1:]], robust="recency_days")
    assert tie.chosen == "recency_days"


def test_the_supervised_model_ships_when_it_ranks_best() -> None:
    observed = (np.arange(2000) % 3 == 0).astype(int)
    candidates = _candidates(observed, 0.0)
    better = Candidate("supervised", "supervised", observed * 2.0 + candidates[1].predicted)
    choice = choose_scorer(observed, [better, *candidates[1:]], robust="recency_days")
    assert choice.chosen == "supervised" and not choice.too_few_positives
    assert choice.summary.filter(pl.col("chosen"))["choice_reason"][0].startswith("highest")


def test_too_few_positives_ship_the_robust_ranking_and_say_so() -> None:
    observed = np.zeros(500, dtype=int)
    observed[:12] = 1
    candidates = _candidates(observed, 0.0)
    perfect = Candidate("supervised", "supervised", observed.astype(float))
    choice = choose_scorer(observed, [perfect, *candidates[1:]], robust="frequency")
    assert choice.chosen == "frequency" and choice.too_few_positives
    assert choice.summary["too_few_positives"].all()
    assert (choice.summary["positives"] == 12).all()
    assert "too few to judge: 12 events" in choice.reason
    # one class: nothing to grade at all, still the robust ranking
    none = choose_scorer(np.zeros(50, dtype=int), candidates_for(50), robust="frequency")
    assert none.chosen == "frequency" and none.summary["roc_auc"].null_count() == 3


def candidates_for(n: int) -> list[Candidate]:
    return _candidates(np.zeros(n, dtype=int), 0.0)


def test_rank_mapped_keeps_the_rankings_order_and_the_references_levels() -> None:
    rng = np.random.default_rng(5)
    ranking = rng.random(1000)
    reference = rng.beta(2, 5, 1000)
    mapped = rank_mapped(ranking, reference)
    assert (np.argsort(mapped, kind="stable") == np.argsort(ranking, kind="stable")).all()
    assert mapped.mean() == pytest.approx(reference.mean(), abs=0.01)
    with_null = rank_mapped(np.r_[np.nan, ranking[:9]], reference)
    assert np.isnan(with_null[0]) and np.isfinite(with_null[1:]).all()


# --- the shared scorecard ------------------------------------------------------------------------


def _ledger_snapshots(customers: int, late_customers: int, seed: int = 0) -> pl.DataFrame:
    """Snapshots where lateness drives delinquency and size (amounts invoiced) drives nothing."""
    rng = np.random.default_rng(seed)
    frame = pl.DataFrame(
        {name: rng.random(customers) * 10 for name in BEHAVIOUR_FEATURES}
        | {"customer_id": [f"C{i}" for i in range(customers)]}
    )
    late = np.zeros(customers)
    late[rng.choice(customers, late_customers, replace=False)] = 1
    return frame.with_columns(
        share_paid_late=pl.Series(np.clip(late * 0.6 + rng.random(customers) * 0.4, 0, 1)),
        current_days_past_due=pl.Series(late * rng.integers(0, 60, customers)),
        delinquent=pl.Series(late.astype(bool)),
    )


def test_the_scorecard_is_a_scikit_learn_estimator_sized_to_its_events() -> None:
    many = _ledger_snapshots(4000, 1200)
    model = RiskSettings().model()
    with pytest.raises(NotFittedError):
        model.predict_proba(many)
    fitted = clone(model).fit(many)
    assert len(fitted.feature_names_) == len(BEHAVIOUR_FEATURES)  # 1,200 events allow them all
    assert fitted.regularization_ == 1.0  # 75 events a column: abundant, no search
    few = _ledger_snapshots(3000, 25)
    small = clone(model).fit(few)
    # 25 events: two columns at ten events each, the strongest alone
    assert len(small.feature_names_) == 2 and "share_paid_late" in small.feature_names_
    assert small.regularization_ in (0.01, 0.1, 1.0, 10.0)  # 12 events a column: searched
    assert roc_auc_score(few["delinquent"], small.predict_proba(few)) > 0.9
    with pytest.raises(NotEnoughEvidence, match="only 6"):
        clone(model).fit(_ledger_snapshots(3000, 6))


def test_reasons_never_name_size_and_never_past_due_without_arrears() -> None:
    snapshots = _ledger_snapshots(3000, 600)
    model = RiskSettings().model().fit(snapshots)
    speakable, _ = model.speakable()
    said = {n for n, s in zip(model.feature_names_, speakable, strict=True) if s}
    assert not said & {"invoices_12m", "invoiced_12m", "open_amount", "open_invoices"}
    reasons = model.reasons(snapshots, min_contribution=0.0)
    nothing_due = snapshots["current_days_past_due"] == 0
    assert not reasons.filter(nothing_due).str.contains("days past due").any()
    assert reasons.filter(~nothing_due).str.contains("days past due").any()


# --- real purchases: the CDNOW sample ------------------------------------------------------------

CDNOW_HORIZON_DAYS = 180


@pytest.fixture(scope="module")
def cdnow_invoices(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame]:
    inbox = tmp_path_factory.mktemp("cdnow_choice")
    transactions = cdnow_transactions().with_columns(
        pl.format("T{}", pl.int_range(pl.len())).alias("invoice_id"),
        pl.lit("invoice").alias("document_type"),
    )
    write_invoices(inbox, transactions)
    return inbox, transactions


def _churn_run(inbox: Path, warehouse: Path, as_of: str) -> None:
    stage = {"config": {"horizon_days": CDNOW_HORIZON_DAYS}}
    result = dg.materialize(
        [
            *staging_assets,
            run_as_of_date,
            # tonight's churn payment features are the credit-risk stage's
            invoice_settlement,
            receivables_aging,
            payment_behaviour,
            churn_snapshots,
            churn_evaluation,
            churn_scores,
        ],
        resources={
            **default_settings_resources(),
            "warehouse": Warehouse(path=str(warehouse)),
            "inbox": Inbox(path=str(inbox)),
        },
        run_config={"resources": {"run": {"config": {"as_of": as_of}}, "churn": stage}},
    )
    assert result.success


@pytest.mark.parametrize(
    ("as_of", "label_horizon"), [("1997-05-31", 60), ("1997-09-30", CDNOW_HORIZON_DAYS)]
)
def test_on_real_purchases_the_shipped_churn_scorer_ranks_with_the_best_single_column(
    cdnow_invoices: tuple[Path, pl.DataFrame], tmp_path: Path, as_of: str, label_horizon: int
) -> None:
    inbox, transactions = cdnow_invoices
    warehouse = tmp_path / "warehouse.duckdb"
    _churn_run(inbox, warehouse, as_of)
    day = date.fromisoformat(as_of)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        evaluation = con.sql("select * from models.churn_evaluation").pl()
        scored = con.sql(
            "select s.customer_id, s.churn_probability, f.recency_days, f.frequency, "
            "f.net_revenue from models.churn_scores s join features.churn_snapshots f "
            "on f.customer_id = s.customer_id and f.cutoff_date = $d",
            params={"d": day},
        ).pl()
    chosen = evaluation.filter(pl.col("chosen"))
    assert chosen.height == 1 and (evaluation["horizon_days"] == label_horizon).all()
    # a short history leaves no cutoff with the configured horizon: the reason says so, and
    # no supervised model trained on other labels is among the candidates
    if label_horizon < CDNOW_HORIZON_DAYS:
        assert "validated on 60-day labels, not 180" in chosen["choice_reason"][0]
        assert "supervised" not in evaluation["scorer"].to_list()
    # what really happened in the 180 days after the as-of date
    bought = transactions.filter(
        pl.col("issue_date").is_between(day + timedelta(days=1), day + timedelta(days=180))
    )["customer_id"].unique()
    churned = ~scored["customer_id"].is_in(bought.implode())
    shipped = roc_auc_score(churned, scored["churn_probability"])
    single = {
        "recency_days": bootstrap_auc(churned, scored["recency_days"].to_numpy()),
        "frequency": bootstrap_auc(churned, -scored["frequency"].cast(pl.Float64).to_numpy()),
        "net_revenue": bootstrap_auc(churned, -scored["net_revenue"].to_numpy()),
    }
    best, (best_auc, best_low, _) = max(single.items(), key=lambda item: item[1][0])
    assert churned.sum() > 500 and shipped >= best_low, (shipped, best, best_auc, best_low)
    # P(alive)-based levels fall with recency: not one probability for everyone
    assert scored["churn_probability"].n_unique() > 100


# --- the generator's regimes that break naive models ---------------------------------------------


@pytest.fixture(scope="module")
def regime_inboxes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from synthetic import generate_demo_data

    inboxes = {}
    for regime in ("few_delinquent", "short_history"):
        inboxes[regime] = tmp_path_factory.mktemp(regime)
        generate_demo_data(inboxes[regime], customers=1500, seed=7, regime=regime)
    return inboxes


def test_few_delinquent_customers_ship_a_ranking_that_holds_up_after_the_as_of_date(
    regime_inboxes: dict[str, Path], tmp_path: Path
) -> None:
    from bench.scoring import delinquency_outcomes, load_ledger

    inbox, as_of = regime_inboxes["few_delinquent"], date(2025, 9, 30)
    warehouse = tmp_path / "warehouse.duckdb"
    output = run_cli(inbox, warehouse, "--as-of", as_of.isoformat())
    with duckdb.connect(str(warehouse), read_only=True) as con:
        evaluation = con.sql(
            "select * from models.delinquency_evaluation where population = 'all'"
        ).pl()
        scored = con.sql(
            "select customer_id, delinquency_probability, share_paid_late, avg_days_late, "
            "worst_days_past_due_12m, current_days_past_due from models.delinquency_scores "
            "join features.payment_behaviour using (customer_id)"
        ).pl()
    chosen = evaluation.filter(pl.col("chosen")).row(0, named=True)
    # a handful of delinquent customers in the holdout: said, and no fitted model is trusted
    assert chosen["positives"] < 20 and chosen["too_few_positives"]
    assert chosen["kind"] != "supervised" and "too few" in output
    assert scored["delinquency_probability"].null_count() == 0
    # graded on what happened in the 90 days after the as-of date
    with duckdb.connect() as con:
        load_ledger(con, inbox)
        outcome = delinquency_outcomes(con, as_of)
    graded = scored.join(outcome, on="customer_id")
    late = graded["delinquent"].to_numpy()
    shipped, _, shipped_high = bootstrap_auc(late, graded["delinquency_probability"].to_numpy())
    best = max(
        roc_auc_score(late, graded[column].fill_null(graded[column].median()))
        for column in ("share_paid_late", "avg_days_late", "worst_days_past_due_12m")
    )
    # a handful of late payers: the best single column lies within the shipped scorer's interval
    assert late.sum() >= 3 and best <= shipped_high, (shipped, shipped_high, best)


def test_a_short_history_says_what_it_could_validate_and_guesses_nothing(
    regime_inboxes: dict[str, Path], tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    output = run_cli(regime_inboxes["short_history"], warehouse)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        churn = con.sql(
            "select horizon_days, choice_reason from models.churn_evaluation where chosen"
        ).fetchall()
        delinquency = con.sql(
            "select count(delinquency_probability), count(delinquency_class), "
            "min(delinquency_unknown_reason) from models.delinquency_scores"
        ).fetchall()[0]
        p_alive = con.sql("select count(distinct p_alive) from marts.customer_360").fetchall()
    ((horizon, reason),) = churn
    assert horizon < 180 and f"validated on {horizon}-day labels, not 180" in reason
    assert "churn labels over" in output
    # no 90-day labels yet: no delinquency probability or class, and the reason is there
    assert delinquency[:2] == (0, 0) and "no labels at the 90-day horizon" in delinquency[2]
    # five months of purchases still leave dropout in the CLV model: P(alive) is not 1 for all
    assert p_alive[0][0] > 100


def test_folds_never_split_a_customer_and_share_out_the_events() -> None:
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 500, 5000)
    labels = (rng.random(5000) < 0.02).astype(int)
    folds = grouped_folds(labels, groups, 3)
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(5000))
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        assert labels[test].sum() > 0 and labels[train].sum() > 0
    with_event = [len(set(groups[test][labels[test] == 1])) for _, test in folds]
    assert max(with_event) - min(with_event) <= 1
