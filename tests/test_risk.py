"""Credit risk: exact aging, countback DSO, delinquency model vs the bureau, portfolio, alerts."""

import shutil
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from features.receivables import (
    build_invoice_settlement,
    build_payment_behaviour,
    training_snapshots,
)
from models.delinquency import (
    _MISSING_TEXT,
    _REASONS,
    delinquency_class,
    delinquency_score,
)
from pipelines.cli import app
from pipelines.customer_value.assets import run_as_of_date
from pipelines.ingest.assets import staging_assets
from pipelines.resources import Inbox, Warehouse
from pipelines.risk.assets import invoice_settlement, receivables_aging, receivables_dso
from pipelines.risk.checks import aging_buckets_sum_to_total_open, aging_reconciles_with_ledger
from pipelines.settings import RiskSettings, default_settings_resources
from synthetic import FILE_GROUPS, generate_demo_data
from tests.conftest import write_csv

runner = CliRunner()
BUCKETS = ["not_due", "dpd_1_30", "dpd_31_60", "dpd_61_90", "dpd_91_180", "dpd_over_180"]
RISK_COLUMNS = {
    "open_exposure", "max_days_past_due", "credit_limit", "delinquency_probability",
    "delinquency_score", "delinquency_class", "expected_loss", "risk_adjusted_clv",
}  # fmt: skip


def _run(inbox: Path, warehouse: Path) -> str:
    result = runner.invoke(app, ["run", "--inbox", str(inbox), "--warehouse", str(warehouse)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.fixture(scope="module")
def risk_run(demo_inbox: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole nightly job (every blocking check included) on the 1,500-customer inbox."""
    warehouse = tmp_path_factory.mktemp("risk") / "warehouse.duckdb"
    _run(demo_inbox, warehouse)
    return warehouse


def _query(warehouse: Path, sql: str) -> pl.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.sql(sql).pl()


# --- exact receivables on a hand-written ledger ----------------------------------------------


@pytest.fixture(scope="module")
def ledger_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    inbox = tmp_path_factory.mktemp("ledger")
    write_csv(
        inbox / "invoices/invoices.csv",
        """
invoice_id,customer_id,issue_date,due_date,amount,currency,document_type
I1,C1,2024-01-10,2024-02-09,100.00,EUR,invoice
I2,C1,2024-05-01,2024-05-31,50.00,EUR,invoice
I3,C1,2024-06-20,,200.00,EUR,invoice
CN1,C1,2024-06-01,,30.00,EUR,credit_note
I4,C2,2024-03-01,2024-03-31,40.00,EUR,invoice
CN2,C2,2024-04-02,,-25.00,EUR,credit_note
I5,C2,2024-04-10,2024-05-10,10.00,EUR,invoice
I6,C3,2023-11-01,2023-12-01,500.00,EUR,invoice
I7,C3,2024-07-02,2024-08-01,999.00,EUR,invoice
""",
    )
    write_csv(
        inbox / "invoices/payments.csv",
        """
payment_id,invoice_id,payment_date,amount,currency
P1,I2,2024-06-10,20.00,EUR
P2,I1,2024-07-05,10.00,EUR
P3,I4,2024-03-20,40.00,EUR
P4,I5,2024-05-01,10.00,EUR
P5,I6,2024-01-15,123.45,EUR
P7,I5,2024-05-02,5.00,EUR
""",
    )
    warehouse = inbox.parent / "ledger.duckdb"
    result = dg.materialize(
        [
            *staging_assets,
            run_as_of_date,
            invoice_settlement,
            receivables_aging,
            receivables_dso,
            aging_buckets_sum_to_total_open,
            aging_reconciles_with_ledger,
        ],
        resources={
            **default_settings_resources(),
            "warehouse": Warehouse(path=str(warehouse)),
            "inbox": Inbox(path=str(inbox)),
        },
        run_config={"resources": {"run": {"config": {"as_of": "2024-06-30"}}}},
    )
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    metadata = next(
        event.materialization.metadata
        for event in result.get_asset_materialization_events()
        if event.asset_key == dg.AssetKey(["marts", "receivables_aging"])
    )
    assert metadata["unmatched_payments"].value == 0
    return warehouse


def test_aging_applies_credit_oldest_first_to_the_cent(ledger_warehouse: Path) -> None:
    aging = _query(ledger_warehouse, "select * from marts.receivables_aging order by customer_id")
    rows = {row["customer_id"]: row for row in aging.iter_rows(named=True)}
    # C1: credit note 30 clears the oldest due invoice I1 first (100 -> 70, 142 days past due);
    # I2 is 30 days past due after a 20 payment; I3 has no due date: issue + 30 days, not due.
    # The payment on I1 dated after the as-of date is not known yet.
    assert {k: float(rows["C1"][k]) for k in [*BUCKETS, "unapplied_credit", "total_open"]} == {
        "not_due": 200.0, "dpd_1_30": 30.0, "dpd_31_60": 0.0, "dpd_61_90": 0.0,
        "dpd_91_180": 70.0, "dpd_over_180": 0.0, "unapplied_credit": 0.0, "total_open": 300.0,
    }  # fmt: skip
    assert rows["C1"]["max_days_past_due"] == 142
    # C2: everything paid; the credit note and a 5.00 second payment on I5 are credit on account.
    assert float(rows["C2"]["unapplied_credit"]) == float(rows["C2"]["total_open"]) == -30.0
    assert sum(float(rows["C2"][k]) for k in BUCKETS) == 0
    # C3: partly paid 212 days past due; the invoice issued after the as-of date is left out.
    assert float(rows["C3"]["dpd_over_180"]) == float(rows["C3"]["total_open"]) == 376.55
    assert rows["C3"]["max_days_past_due"] == 212


def test_countback_dso_on_the_hand_written_ledger(ledger_warehouse: Path) -> None:
    dso = dict(
        _query(ledger_warehouse, "select customer_id, dso_days from features.receivables_dso")
        .filter(pl.col("customer_id").is_not_null())
        .iter_rows()
    )
    # C1 owes 300: June's 200 of sales (31 days), May's 50 (30 days), three months without
    # sales (31 + 30 + 30 days), then half of January's 100 (half of 31 days).
    assert dso["C1"] == pytest.approx(31 + 30 + 31 + 30 + 30 + 15.5)
    assert "C2" not in dso  # nothing owed, no DSO


# --- the whole stage on generated data --------------------------------------------------------


def test_aging_reconciles_with_an_independent_ledger_total(risk_run: Path) -> None:
    independent = _query(
        risk_run,
        """with as_of as (select max(as_of_date) as d from ops.runs),
           billed as (
               select customer_id, sum(amount) as billed from staging.invoices, as_of
               where issue_date <= as_of.d group by customer_id),
           paid as (
               select i.customer_id, sum(p.amount) as paid
               from staging.payments p join staging.invoices i using (invoice_id), as_of
               where p.payment_date <= as_of.d and i.issue_date <= as_of.d
               group by i.customer_id)
           select customer_id, billed - coalesce(paid, 0) as ledger_open
           from billed left join paid using (customer_id)
           where billed - coalesce(paid, 0) <> 0""",
    )
    aging = _query(risk_run, "select * from marts.receivables_aging")
    joined = aging.join(independent, on="customer_id", how="full", coalesce=True)
    assert joined.height == aging.height == independent.height > 100
    assert (joined["total_open"] == joined["ledger_open"]).all()  # decimals: to the cent
    bucket_sum = aging.select(pl.sum_horizontal([*BUCKETS, "unapplied_credit"])).to_series()
    assert (bucket_sum == aging["total_open"]).all()


def test_the_shipped_delinquency_scorer_is_the_best_on_the_holdout(risk_run: Path) -> None:
    evaluation = _query(risk_run, "select * from models.delinquency_evaluation")
    whole = evaluation.filter(pl.col("population") == "all")
    assert set(whole["scorer"]) == {
        "supervised",
        "bureau_delinquency_score",
        "share_paid_late",
        "avg_days_late",
        "worst_days_past_due_12m",
        "current_days_past_due",
    }
    assert not whole["too_few_positives"].any() and (whole["positives"] >= 20).all()
    chosen = whole.filter(pl.col("chosen"))
    # nothing that ships loses to a plain ranking on its own holdout
    assert chosen.height == 1 and chosen["roc_auc"][0] == whole["roc_auc"].max()
    assert (whole["roc_auc_low"] <= whole["roc_auc"]).all()
    assert (whole["roc_auc"] <= whole["roc_auc_high"]).all()
    # on the generator, where bureau and payment history both carry signal, the scorecard
    # combining them beats the bureau score alone, on the customers with a report too
    covered = {
        row["scorer"]: row
        for row in evaluation.filter(pl.col("population") == "with_bureau_report").iter_rows(
            named=True
        )
    }
    ours, bureau = covered["supervised"], covered["bureau_delinquency_score"]
    assert ours["customers"] == bureau["customers"] > 500
    assert ours["roc_auc"] > bureau["roc_auc_high"]
    reliability = _query(
        risk_run,
        "select * from models.delinquency_reliability "
        "where scorer = 'supervised' and population = 'all'",
    )
    assert reliability["customers"].sum() == whole["customers"][0]
    # calibrated: the customer-weighted gap between predicted and observed rates is small
    gap = (reliability["mean_predicted"] - reliability["observed_rate"]).abs()
    assert (gap * reliability["customers"]).sum() / reliability["customers"].sum() < 0.08


def test_customer_360_carries_scores_classes_and_reasons(risk_run: Path) -> None:
    mart = _query(risk_run, "select * from marts.customer_360")
    assert set(mart.columns) >= RISK_COLUMNS
    scored = mart.filter(pl.col("delinquency_probability").is_not_null())
    assert scored.height > 1000
    assert scored["delinquency_probability"].is_between(0, 1).all()
    expected_class = delinquency_class(scored["delinquency_score"].to_numpy(), [70, 60, 50, 35])
    assert (scored["delinquency_class"].to_numpy() == expected_class).all()
    risky = scored.filter(pl.col("delinquency_probability") > 0.5)
    assert risky.height > 0 and risky["delinquency_reasons"].str.len_chars().min() > 0
    # the riskiest customers' exposure is already past due; reasons say so in words
    assert risky["delinquency_reasons"].str.contains("days past due").mean() > 0.5
    # reasons agree with the aging row: the days past due said are the customer's, nothing
    # past due or overdue is said to a customer with nothing past due, and size is no reason
    said = scored.with_columns(
        days=pl.col("delinquency_reasons").str.extract(r"an invoice is (\d+) days past due")
    ).filter(pl.col("days").is_not_null())
    assert said.height > 0
    assert (said["days"].cast(pl.Int64) == said["max_days_past_due"]).all()
    current = scored.filter(pl.col("max_days_past_due") == 0)["delinquency_reasons"]
    assert current.len() > 100 and not current.str.contains(r"an invoice is|\d overdue").any()
    assert not scored["delinquency_reasons"].str.contains("invoiced|\\d open").any()
    lgd = 0.45
    expected = (
        scored["open_exposure"].cast(pl.Float64) * scored["delinquency_probability"] * lgd
    ).to_numpy()
    assert np.allclose(scored["expected_loss"].to_numpy(), expected)
    with_clv = scored.filter(pl.col("clv").is_not_null())
    assert (with_clv["risk_adjusted_clv"] <= with_clv["clv"] + 1e-9).all()


def test_delinquency_reasons_are_each_customers_strongest_speakable_terms(
    risk_run: Path,
) -> None:
    with duckdb.connect(str(risk_run), read_only=True) as con:
        snapshots = training_snapshots(con)
        current = con.sql("select * from features.payment_behaviour order by customer_id").pl()
    model = RiskSettings().model().fit(snapshots)
    said = model.reasons(current, min_contribution=0.2)
    # the reference, customer by customer: every model column ranked by its log-odds term;
    # the three strongest that may be said and reach 0.2 are said, in that order
    names = model.feature_names_
    coefficients = model.model_.named_steps["logit"].coef_[0]
    terms = model.model_.named_steps["scale"].transform(model._matrix(current)) * coefficients
    with_reasons = 0
    for row in range(0, current.height, 3):  # building the reference, not pipeline maths
        speakable = []
        for position in np.argsort(-terms[row], kind="stable"):
            name = str(names[position])
            feature = name.removeprefix("missingindicator_")
            if name != feature and feature in _MISSING_TEXT and coefficients[position] > 0:
                speakable.append((position, pl.lit(_MISSING_TEXT[feature])))
            elif name in _REASONS and np.sign(coefficients[position]) == _REASONS[name][0]:
                speakable.append((position, _REASONS[name][1]))
        texts = [
            current[row].select(words).item()
            for position, words in speakable[:3]
            if terms[row, position] >= 0.2
        ]
        expected = "; ".join(text for text in texts if text)
        assert said[row] == expected, current[row, "customer_id"]
        with_reasons += expected != ""
    assert with_reasons > 100


def test_portfolio_risk_splits_the_same_exposure_every_way(risk_run: Path) -> None:
    portfolio = _query(risk_run, "select * from marts.portfolio_risk")
    assert set(portfolio["dimension"]) == {
        "portfolio", "sector", "region", "rfm_segment", "delinquency_class", "bureau_rating",
    }  # fmt: skip
    totals = portfolio.group_by("dimension").agg(
        pl.col("exposure").sum(), pl.col("customers").sum()
    )
    assert totals["exposure"].n_unique() == 1 and totals["customers"].n_unique() == 1
    total = portfolio.filter(pl.col("dimension") == "portfolio").row(0, named=True)
    customers = _query(risk_run, "select * from marts.customer_risk")
    assert total["exposure"] == customers["open_exposure"].sum()
    assert total["expected_loss"] == pytest.approx(customers["expected_loss"].sum())
    assert total["customers_over_credit_limit"] == customers["over_credit_limit"].sum()
    assert 0 < total["herfindahl_index"] < total["top10_exposure_share"] < 1
    # concentration by its definition, for the portfolio and for each sector
    sectors = _query(risk_run, "select customer_id, sector from staging.accounts")
    expected = (
        customers.join(sectors, on="customer_id", how="left")
        .with_columns(exposure=pl.col("open_exposure").cast(pl.Float64))
        .group_by(pl.col("sector").fill_null("(unknown)").alias("dimension_value"))
        .agg(
            top10=pl.col("exposure").sort(descending=True).head(10).sum()
            / pl.col("exposure").sum(),
            herfindahl=((pl.col("exposure") / pl.col("exposure").sum()) ** 2).sum(),
        )
    )
    got = portfolio.filter(pl.col("dimension") == "sector").join(expected, on="dimension_value")
    assert got.height == expected.height > 1
    assert np.allclose(got["top10_exposure_share"], got["top10"], rtol=1e-12)
    assert np.allclose(got["herfindahl_index"], got["herfindahl"], rtol=1e-12)
    exposure = customers["open_exposure"].cast(pl.Float64)
    assert total["top10_exposure_share"] == pytest.approx(
        exposure.sort(descending=True).head(10).sum() / exposure.sum(), rel=1e-12
    )
    assert total["herfindahl_index"] == pytest.approx(
        ((exposure / exposure.sum()) ** 2).sum(), rel=1e-12
    )
    assert total["dso_days"] > 0
    equity = _query(risk_run, "select * from marts.customer_equity").row(0, named=True)
    assert 0 < equity["customer_equity_net"] < equity["customer_equity_gross"]


def test_alerts_name_the_date_and_the_change(risk_run: Path) -> None:
    alerts = _query(risk_run, "select * from marts.risk_alerts")
    assert set(alerts["alert_type"]) >= {
        "bureau_rating_downgrade", "days_past_due_60", "over_credit_limit",
    }  # fmt: skip
    assert alerts["change"].null_count() == 0 and alerts["alert_date"].null_count() == 0
    as_of = alerts["as_of_date"][0]
    assert (alerts["alert_date"] <= as_of).all()
    over = alerts.filter(pl.col("alert_type") == "over_credit_limit")["customer_id"]
    risk = _query(risk_run, "select customer_id, over_credit_limit from marts.customer_risk")
    assert risk.filter(pl.col("customer_id").is_in(over.implode()))["over_credit_limit"].all()


# Every invoice, payment and credit-report fact dated after $cutoff is changed, removed or added;
# nothing dated on or before it. Payments and credit notes after the cutoff against invoices
# issued before it are what a ledger settled as of the run date would leak.
PERTURB_AFTER_CUTOFF = """
    update staging.payments set amount = amount / 2 where payment_date > $cutoff;
    insert into staging.payments by name
        select * replace (payment_id || '-P2' as payment_id, payment_date + 3 as payment_date)
        from staging.payments where payment_date > $cutoff;
    insert into staging.payments by name
        select 'P-LATE-' || invoice_id as payment_id, invoice_id,
               $cutoff + 1 + (hash(invoice_id) % 40)::integer as payment_date, amount
        from staging.invoices as i
        where document_type = 'invoice' and issue_date <= $cutoff
            and not exists (select 1 from staging.payments as p where p.invoice_id = i.invoice_id);
    insert into staging.invoices by name
        select * replace (invoice_id || '-CN' as invoice_id, 'credit_note' as document_type,
                          -amount / 2 as amount,
                          $cutoff + 1 + (hash(invoice_id) % 20)::integer as issue_date)
        from staging.invoices where issue_date > $cutoff - 60 and issue_date <= $cutoff;
    update staging.invoices set amount = amount * 3 where issue_date > $cutoff;
    delete from staging.invoices where issue_date > $cutoff and hash(invoice_id) % 3 = 0;
    update staging.credit_reports set failure_score = failure_score - 50,
        delinquency_score = delinquency_score - 40, credit_limit = credit_limit / 4,
        legal_events = legal_events + 2
        where report_date > $cutoff;
"""


def _training_features(con: duckdb.DuckDBPyConnection, cutoffs: list[date]) -> pl.DataFrame:
    """The delinquency training features, built exactly as the delinquency_training asset does."""
    build_payment_behaviour(
        con,
        "features.payment_behaviour_history",
        cutoffs,
        default_payment_terms_days=30,
        settlement_tolerance=1.0,
    )
    return con.sql(
        "select * from features.payment_behaviour_history order by cutoff_date, customer_id"
    ).pl()


def test_perturbing_facts_after_a_cutoff_leaves_its_delinquency_features_unchanged(
    risk_run: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.duckdb"
    shutil.copy(risk_run, copy)
    with duckdb.connect(str(copy)) as con:
        cutoffs = sorted(
            r[0]
            for r in con.sql(
                "select distinct cutoff_date from features.payment_behaviour_history"
            ).fetchall()
        )
        cutoff = cutoffs[-2]
        before = _training_features(con, cutoffs)
        for statement in filter(str.strip, PERTURB_AFTER_CUTOFF.split(";")):
            con.execute(statement, {"cutoff": cutoff}).fetchall()
        after = _training_features(con, cutoffs)
    at_cutoff = pl.col("cutoff_date") <= cutoff
    assert before.filter(pl.col("cutoff_date") == cutoff).height > 500
    assert_frame_equal(before.filter(at_cutoff), after.filter(at_cutoff), check_exact=True)
    # the perturbation is real: the later cutoff, which may see it, did change
    assert not before.filter(~at_cutoff).equals(after.filter(~at_cutoff))


@pytest.fixture(scope="module")
def no_bureau_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    inbox = tmp_path_factory.mktemp("no_bureau")
    generate_demo_data(
        inbox, customers=800, seed=11, include=frozenset(FILE_GROUPS) - {"credit/reports"}
    )
    warehouse = inbox.parent / "no_bureau.duckdb"
    return warehouse, _run(inbox, warehouse)


def test_without_credit_reports_finance_tables_are_still_built(
    no_bureau_run: tuple[Path, str],
) -> None:
    warehouse, output = no_bureau_run
    assert "bureau features missing" in output
    with duckdb.connect(str(warehouse), read_only=True) as con:
        aging = con.sql("select count(*) from marts.receivables_aging").fetchall()[0][0]
        dimensions = {
            r[0] for r in con.sql("select dimension from marts.portfolio_risk").fetchall()
        }
        ratings = con.sql(
            "select distinct dimension_value from marts.portfolio_risk "
            "where dimension = 'bureau_rating'"
        ).fetchall()
        scored, limits = con.sql(
            "select count(delinquency_probability), count(credit_limit) from marts.customer_360"
        ).fetchall()[0]
        bureau_used = con.sql(
            "select parameters->>'bureau_used' from models.model_runs where model = 'delinquency'"
        ).fetchall()[0][0]
        scorers = {
            r[0] for r in con.sql("select scorer from models.delinquency_evaluation").fetchall()
        }
    assert aging > 0 and scored > 0 and limits == 0
    assert dimensions >= {"portfolio", "sector", "delinquency_class"}
    assert ratings == [("(no report)",)]
    assert bureau_used == "false"
    assert "bureau_delinquency_score" not in scorers and "supervised" in scorers


# --- pure pieces ---------------------------------------------------------------------------------


def test_score_is_monotone_with_documented_anchors() -> None:
    probability = np.array([0.0, 1 / 11, 1 / 21, 1 / 6, 0.5, 1.0])
    assert delinquency_score(probability).tolist() == [100, 60, 70, 50, 27, 1]
    grid = np.linspace(0, 1, 101)
    assert (np.diff(delinquency_score(grid)) <= 0).all()
    scores = np.array([100, 70, 69, 50, 49, 35, 34])
    assert delinquency_class(scores, [70, 60, 50, 35]).tolist() == [
        "A",
        "A",
        "B",
        "C",
        "D",
        "D",
        "E",
    ]


def test_model_names_missing_columns() -> None:
    frame = pl.DataFrame({"customer_id": ["C1"], "delinquent": [True], "tenure_days": [3]})
    with pytest.raises(ValueError, match="avg_days_late"):
        RiskSettings().model().fit(frame)


def test_model_refuses_a_single_class() -> None:
    from models.delinquency import BEHAVIOUR_FEATURES

    frame = pl.DataFrame(
        {"customer_id": [f"C{i}" for i in range(9)], "delinquent": [False] * 9}
        | {name: np.arange(9.0) for name in BEHAVIOUR_FEATURES}
    )
    with pytest.raises(ValueError, match="one class"):
        RiskSettings().model().fit(frame)


def test_settlement_uses_payments_and_matched_credit_notes(
    ledger_warehouse: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "ledger.duckdb"
    shutil.copy(ledger_warehouse, copy)
    with duckdb.connect(str(copy)) as con:
        build_invoice_settlement(con, date(2024, 6, 30), 30, 1.0)
        settled = dict(
            con.sql("select invoice_id, settled_date from features.invoice_settlement").fetchall()
        )
    # The credit note CN1 corrects C1's latest earlier invoice, I2: 50 - 30 is paid on 06-10.
    # I4 was paid in full before CN2 (also matched to it); I5 is overpaid; I1 and I6 are open.
    assert settled["I2"] == date(2024, 6, 10)
    assert settled["I4"] == date(2024, 3, 20) and settled["I5"] == date(2024, 5, 1)
    assert settled["I1"] is None and settled["I6"] is None
    assert "I7" not in settled  # issued after the as-of date
