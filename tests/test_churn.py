"""Churn: point-in-time snapshots, holdout against BG/NBD, degrade, reasons in words."""

import re
import shutil
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sklearn.metrics import roc_auc_score

from features.churn import build_churn_snapshots, scoring_frame, training_frame
from features.customer import lifetimes_summary
from features.receivables import build_payment_behaviour
from models.churn import PurchaseBaseline, churn_risk_band
from models.selection import top_decile_lift
from pipelines.churn.assets import churn_evaluation, churn_scores, churn_snapshots
from pipelines.customer_value.assets import run_as_of_date
from pipelines.ingest.assets import staging_assets
from pipelines.resources import Inbox, Warehouse
from pipelines.risk.assets import invoice_settlement, payment_behaviour, receivables_aging
from pipelines.settings import ChurnSettings, ClvSettings, RiskSettings, default_settings_resources

CUTOFF = date(2025, 3, 1)
AS_OF = date(2025, 12, 31)
# Everything dated after CUTOFF is changed, removed or added; nothing on or before it.
PERTURB_AFTER_CUTOFF = """
    update staging.invoices set amount = amount * 3 where issue_date > $cutoff;
    delete from staging.invoices where issue_date > $cutoff and hash(invoice_id) % 2 = 0;
    insert into staging.invoices by name
        select * replace (invoice_id || '-CN' as invoice_id, 'credit_note' as document_type,
                          -amount / 2 as amount,
                          $cutoff + 1 + (hash(invoice_id) % 20)::integer as issue_date)
        from staging.invoices where issue_date > $cutoff - 30 and issue_date <= $cutoff;
    delete from staging.payments where payment_date > $cutoff;
    delete from staging.activities where occurred_at > $cutoff;
    insert into staging.activities by name
        select * replace (activity_id || '-T' as activity_id, 'ticket' as type,
                          occurred_at + 61 as occurred_at)
        from staging.activities where occurred_at > $cutoff - 60 and occurred_at <= $cutoff;
    delete from staging.opportunities where created_at > $cutoff;
    update staging.opportunities set won = not coalesce(won, false), closed_at = $cutoff + 5
        where closed_at > $cutoff or closed_at is null;
    update staging.credit_reports set failure_score = failure_score - 50
        where report_date > $cutoff;
"""


def _snapshots(con: duckdb.DuckDBPyConnection) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Features at CUTOFF and at AS_OF, built by the pipeline's own builder."""
    risk = RiskSettings()
    terms = {
        "default_payment_terms_days": risk.default_payment_terms_days,
        "settlement_tolerance": risk.settlement_tolerance,
    }
    # the credit-risk stage's payment behaviour as of AS_OF, which the as-of snapshot takes
    build_payment_behaviour(
        con, "features.payment_behaviour_today", [AS_OF], whole_ledger=True, **terms
    )
    build_churn_snapshots(
        con,
        [CUTOFF],
        AS_OF,
        180,
        baseline=PurchaseBaseline(ClvSettings().model(purchase_model="bg_nbd", n_bootstrap=1)),
        payment_behaviour_today="features.payment_behaviour_today",
        scoring_horizon_days=180,
        **terms,
    )
    query = "select * from features.churn_snapshots where cutoff_date = $c order by customer_id"
    return tuple(con.sql(query, params={"c": c}).pl() for c in (CUTOFF, AS_OF))


def test_perturbing_facts_after_a_cutoff_leaves_its_features_unchanged(
    full_run: tuple[Path, str], tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(full_run[0], warehouse)
    with duckdb.connect(str(warehouse)) as con:
        before, before_today = _snapshots(con)
        for statement in filter(str.strip, PERTURB_AFTER_CUTOFF.split(";")):
            con.execute(statement, {"cutoff": CUTOFF}).fetchall()
        after, after_today = _snapshots(con)
    assert before.height > 1000
    assert_frame_equal(before, after, check_exact=False, rtol=1e-9)
    # the perturbation is real: the as-of snapshot, which may see it, did change
    assert not before_today.equals(after_today)


def test_bg_nbd_probability_of_no_purchase_is_consistent(full_run: tuple[Path, str]) -> None:
    with duckdb.connect(str(full_run[0]), read_only=True) as con:
        summary = lifetimes_summary(con.sql("select * from features.customer_summary").pl(), 7.0)
    model = ClvSettings().model(n_bootstrap=1).fit(summary)
    p_alive = model.predict(summary, AS_OF)["p_alive"].to_numpy()
    never_again = model.probability_no_purchase(summary, 1e9)
    none_soon = model.probability_no_purchase(summary, 1e-9)
    none_26 = model.probability_no_purchase(summary, 26.0)
    none_52 = model.probability_no_purchase(summary, 52.0)
    np.testing.assert_allclose(never_again, 1 - p_alive, atol=1e-6)
    np.testing.assert_allclose(none_soon, 1.0, atol=1e-6)
    assert np.all(none_52 <= none_26) and np.all((none_26 >= 0) & (none_26 <= 1))
    # fewer expected purchases, more likely none: rank agreement with the model's own forecast
    expected = model.expected_purchases(summary, 26.0)
    assert np.corrcoef(-expected, none_26)[0, 1] > 0.5


def test_the_shipped_scorer_is_the_best_on_the_holdout(
    full_run: tuple[Path, str], demo_inbox: Path
) -> None:
    with duckdb.connect(str(full_run[0]), read_only=True) as con:
        evaluation = con.sql("select * from models.churn_evaluation where population = 'all'").pl()
        choice = con.sql(
            "select parameters->>'chosen', metrics from models.model_runs "
            "where model = 'churn_choice'"
        ).fetchall()
        scores = con.sql(
            "select customer_id, churn_probability, churn_risk_band, churn_model_version "
            "from marts.customer_360 where churn_probability is not null"
        ).pl()
        reliability = con.sql("select * from models.churn_reliability").pl()
    # every candidate graded: the supervised model, BG/NBD and the plain rankings
    assert set(evaluation["scorer"]) >= {
        "supervised",
        "bg_nbd_churn_probability",
        "recency_days",
        "frequency",
        "net_revenue",
    }
    assert (evaluation["positives"] >= 20).all() and not evaluation["too_few_positives"].any()
    assert (evaluation["roc_auc_low"] < evaluation["roc_auc"]).all()
    assert (evaluation["roc_auc"] < evaluation["roc_auc_high"]).all()
    chosen = evaluation.filter(pl.col("chosen"))
    assert chosen.height == 1 and chosen["roc_auc"][0] == evaluation["roc_auc"].max()
    assert chosen["choice_reason"][0].startswith("highest holdout ROC AUC")
    assert choice[0][0] == chosen["scorer"][0]
    assert {"pr_auc", "brier", "top_decile_lift"} <= set(evaluation.columns)
    assert reliability["customers"].sum() == 2 * evaluation["customers"][0]  # two probabilities
    assert scores["churn_model_version"].str.starts_with(f"churn-{chosen['scorer'][0]}-").all()
    # graded against the generator's truth: who had really dropped out by the as-of date
    truth = pl.read_parquet(demo_inbox / "truth/customers.parquet").select(
        "customer_id", dropped=(pl.col("dropout_date") <= AS_OF).fill_null(False)
    )
    graded = scores.join(truth, on="customer_id")
    assert roc_auc_score(graded["dropped"], graded["churn_probability"]) > 0.85


def test_reasons_are_plain_words_with_the_customers_own_facts(
    full_run: tuple[Path, str],
) -> None:
    with duckdb.connect(str(full_run[0]), read_only=True) as con:
        rows = con.sql(
            "select churn_reasons, churn_risk_band, churn_probability, recency_days, "
            "account_status from marts.customer_360 where churn_reasons is not null"
        ).pl()
    high = rows.filter(pl.col("churn_risk_band") == "high")
    assert high.height > 50 and (high["churn_reasons"].str.len_chars() > 0).all()
    for text in rows["churn_reasons"]:
        reasons = text.split("; ") if text else []
        assert len(reasons) <= 3 and len(set(reasons)) == len(reasons)
        # words a marketer reads: no column names, no code, no raw floats
        assert not re.search(r"_|missingindicator|\d\.\d{3}|nan|None", text)
    recency = high.filter(pl.col("churn_reasons").str.contains("no order in"))
    said = recency["churn_reasons"].str.extract(r"no order in (\d+) days").cast(pl.Int64)
    assert recency.height > 0 and (said == recency["recency_days"]).all()
    closed = rows.filter(pl.col("account_status") == "closed")
    # closed accounts are flagged and left out of scoring: no probability
    assert closed.height > 0 and (closed["churn_risk_band"] == "closed").all()
    assert closed["churn_probability"].null_count() == closed.height
    assert (closed["churn_reasons"] == "account closed in the CRM").all()


def test_invoices_only_still_scores_and_names_missing_groups(
    invoices_only_inbox: Path, tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
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
            "inbox": Inbox(path=str(invoices_only_inbox)),
        },
    )
    assert result.success
    scores = result.asset_materializations_for_node("models__churn_scores")[0].metadata
    missing = scores["missing_feature_groups"].value
    assert set(missing) == {"engagement", "opportunities", "payments", "bureau", "firmographics"}
    assert missing["engagement"] == "no CRM activities"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        model = ChurnSettings().model(missing).fit(training_frame(con))
        assert model.groups_ == ["purchases", "bg_nbd"]
        scored, probabilities, invoiced = con.sql(
            "select count(*), count(churn_probability), "
            "(select count(distinct customer_id) from staging.invoices) from models.churn_scores"
        ).fetchall()[0]
    assert scored == probabilities == invoiced


@pytest.mark.parametrize("calibration", ["sigmoid", "isotonic"])
def test_fast_scoring_matches_scikit_learn(full_run: tuple[Path, str], calibration: str) -> None:
    with duckdb.connect(str(full_run[0]), read_only=True) as con:
        model = ChurnSettings(calibration=calibration).model().fit(training_frame(con))
        current = scoring_frame(con, AS_OF)
    probability, reasons = model.predict_with_reasons(current)
    # the scaler folded into the weights gives scikit-learn's own calibrated probabilities
    matrix = model._matrix(current)
    expected = model.calibrated_.predict_proba(matrix)[:, 1]
    np.testing.assert_allclose(probability, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.predict_proba(current), expected, rtol=1e-9, atol=1e-12)
    # reasons follow the log-odds terms: the first reason said is the strongest speakable one
    assert reasons.equals(model.reasons(current))
    terms = model.model_.named_steps["logit"].coef_[0] * model.model_.named_steps[
        "scale"
    ].transform(matrix)
    said = reasons.str.split("; ")
    assert said.list.len().max() <= 3 and (reasons.str.len_chars() > 0).mean() > 0.5
    pushed = (terms.max(axis=1) >= 0.1).sum()
    assert (reasons.str.len_chars() > 0).sum() <= pushed


@pytest.mark.parametrize(
    ("probability", "band"),
    [(0.0, "low"), (0.29, "low"), (0.3, "medium"), (0.59, "medium"), (0.6, "high"), (1.0, "high")],
)
def test_risk_band_cut_points(probability: float, band: str) -> None:
    assert churn_risk_band(np.array([probability]), [0.3, 0.6])[0] == band


def test_top_decile_lift() -> None:
    observed = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1] * 10)
    perfect = observed + np.linspace(0, 0.1, observed.size)
    assert top_decile_lift(observed, perfect) == pytest.approx(5.0)
    assert top_decile_lift(observed, -perfect) == pytest.approx(0.0)
