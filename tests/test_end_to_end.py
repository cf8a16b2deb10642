"""`crm-intel run` end to end on small generated inboxes, then what marketers pull from it."""

import json
from pathlib import Path

import duckdb
import polars as pl
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.settings import ClvSettings
from tests.conftest import run_cli

runner = CliRunner()
MART_COLUMNS = {
    "customer_id", "as_of_date", "recency_days", "frequency", "monetary", "r_score", "f_score",
    "m_score", "rfm_segment", "expected_purchases_90d", "expected_purchases_365d", "p_alive",
    "expected_order_value", "clv", "clv_low", "clv_high", "clv_horizon_days", "next_order_date",
}  # fmt: skip


def test_customer_360_has_every_customer_once(full_run: tuple[Path, str], demo_inbox: Path) -> None:
    warehouse, output = full_run
    accounts = pl.read_csv(demo_inbox / "crm/accounts.csv")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        mart = con.sql("select * from marts.customer_360").pl()
        segments = con.sql("select * from marts.segment_summary").pl()
        runs = con.sql("select model, parameters from models.model_runs").fetchall()
        max_issue = con.sql("select max(issue_date) from staging.invoices").fetchall()[0][0]
    assert set(mart.columns) >= MART_COLUMNS
    assert mart.height == mart["customer_id"].n_unique() == accounts.height
    assert mart["as_of_date"].unique().to_list() == [max_issue]
    assert segments["customers"].sum() == mart.height
    assert {model for model, _ in runs} >= {"gamma_gamma"}
    purchasers = mart.filter(pl.col("frequency") > 0)
    assert purchasers["clv"].is_finite().all()
    assert purchasers["p_alive"].is_between(0, 1).all()
    assert purchasers["clv_horizon_days"].unique().to_list() == [ClvSettings().horizon_days]
    assert "total CLV over 365 days" in output and "Champions" in output


def test_summary_puts_value_and_credit_risk_side_by_side(full_run: tuple[Path, str]) -> None:
    """The run summary prints the equity and receivables figures the warehouse holds."""
    warehouse, output = full_run
    with duckdb.connect(str(warehouse), read_only=True) as con:
        gross, net, exposure = con.sql(
            "select customer_equity_gross, customer_equity_net, open_exposure "
            "from marts.customer_equity"
        ).fetchall()[0]
        aging_total = con.sql("select sum(total_open) from marts.receivables_aging").fetchall()[0][
            0
        ]
    assert net <= gross
    assert f"{gross:,.2f} gross, {net:,.2f} net of expected credit loss" in output
    assert f"open receivables: {exposure:,.2f}" in output
    assert exposure == aging_total


def test_clv_recovers_true_parameters(full_run: tuple[Path, str], demo_inbox: Path) -> None:
    """BG/NBD through the whole pipeline against the generator's truth (1,500 customers)."""
    warehouse, _ = full_run
    truth = json.loads((demo_inbox / "truth/parameters.json").read_text())["parameters"]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        fitted = json.loads(
            con.sql("select parameters from models.model_runs where model = 'bg_nbd'").fetchall()[
                0
            ][0]
        )
    # Population means are what the CLV uses; they are identified far better than r, alpha
    # or a, b alone at this size (see BENCHMARKS.md for recovery at 100k customers).
    assert fitted["r"] / fitted["alpha"] == pytest.approx(truth["r"] / truth["alpha"], rel=0.15)
    assert fitted["a"] / (fitted["a"] + fitted["b"]) == pytest.approx(
        truth["a"] / (truth["a"] + truth["b"]), rel=0.30
    )


def test_segment_export_respects_consent(
    full_run: tuple[Path, str], demo_inbox: Path, tmp_path: Path
) -> None:
    warehouse, _ = full_run
    contacts = pl.read_csv(demo_inbox / "crm/contacts.csv", infer_schema=False)
    consenting = set(contacts.filter(pl.col("marketing_consent") == "true")["contact_id"])
    listing = runner.invoke(app, ["segments", "list", "--warehouse", str(warehouse)])
    assert listing.exit_code == 0 and "Champions" in listing.output
    for file_format in ("csv", "xlsx"):
        out = tmp_path / f"champions.{file_format}"
        result = runner.invoke(
            app,
            ["segments", "export", "champions", "--out", str(out), "--format", file_format,
             "--warehouse", str(warehouse)],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        exported = (
            pl.read_csv(out) if file_format == "csv" else pl.read_excel(out, engine="openpyxl")
        )
        assert exported.height > 0
        assert set(exported["contact_id"]) <= consenting
        assert set(exported["rfm_segment"]) == {"Champions"}
    unknown = runner.invoke(
        app,
        [
            "segments",
            "export",
            "nope",
            "--out",
            str(tmp_path / "x.csv"),
            "--warehouse",
            str(warehouse),
        ],
    )
    assert unknown.exit_code == 1 and "unknown segment" in unknown.output


def test_invoices_only_inbox_runs(invoices_only_inbox: Path, tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    run_cli(invoices_only_inbox, warehouse)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        customers, named = con.sql(
            "select count(*), count(name) from marts.customer_360"
        ).fetchall()[0]
        invoiced = con.sql("select count(distinct customer_id) from staging.invoices").fetchall()[
            0
        ][0]
    assert customers == invoiced and named == 0


def test_rerun_for_a_past_date_is_reproducible(demo_inbox: Path, tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    query = (
        "select customer_id, rfm_segment, clv, open_exposure, delinquency_probability, "
        "risk_adjusted_clv from marts.customer_360 order by customer_id"
    )
    run_cli(demo_inbox, warehouse, "--as-of", "2025-03-31")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        first = con.sql(query).pl()
        assert (
            con.sql("select max(last_purchase_date) from marts.customer_360")
            .fetchall()[0][0]
            .isoformat()
            <= "2025-03-31"
        )
    run_cli(demo_inbox, warehouse, "--as-of", "2025-03-31")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        second = con.sql(query).pl()
        # nothing new since the first run: the nightly refresh re-settled no one
        refresh = con.sql(
            "select mode, customers_resettled from features.invoice_settlement_state"
        ).fetchall()
    assert first.equals(second)
    assert refresh == [("incremental", 0)]


def test_bad_settings_file_fails_before_running(demo_inbox: Path, tmp_path: Path) -> None:
    settings = tmp_path / "crm-intel.toml"
    settings.write_text("[clv]\nhorizon = 365\n")
    result = runner.invoke(
        app, ["run", "--inbox", str(demo_inbox), "--warehouse", str(tmp_path / "w.duckdb"),
              "--config", str(settings)],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "[clv] has no key 'horizon'; valid keys:" in result.output
    assert "horizon_days" in result.output
    shown = runner.invoke(app, ["config", "show"])
    assert shown.exit_code == 0 and "time_unit_days = 7.0" in shown.output


def test_inbox_without_invoices_fails_and_says_why(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "crm").mkdir(parents=True)
    result = runner.invoke(
        app, ["run", "--inbox", str(inbox), "--warehouse", str(tmp_path / "w.duckdb")]
    )
    assert result.exit_code == 1
    assert "no invoices/invoices* file" in result.output
