"""The CLI as a user meets it: help, version, JSON, exit codes, progress, refusals, plurals.

Refusals are checked to happen before any step: no warehouse file appears. The two runs here
fail fast on a small invoices-only inbox (one invoice dated 2099 fails a blocking check).
"""

import importlib.metadata
import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.wording import plural
from synthetic import FAULT_KINDS, generate_demo_data

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(arg) for arg in args])


def first_invoice(inbox: Path) -> date:
    with duckdb.connect() as con:
        return con.sql(
            f"select min(issue_date) from read_csv('{inbox}/invoices/invoices.csv')"
        ).fetchall()[0][0]


@pytest.mark.parametrize(
    "command", [[], ["run"], ["backfill"], ["status"], ["config", "show"], ["segments"]]
)
def test_dash_h_is_help_everywhere(command: list[str]) -> None:
    result = invoke(*command, "-h")
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output and "--help" in result.output and "-h" in result.output


def test_version_comes_from_the_installed_distribution() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"crm-intel {importlib.metadata.version('crm-intel')}"


def test_config_show_json_is_the_effective_settings(tmp_path: Path) -> None:
    settings = tmp_path / "crm-intel.toml"
    settings.write_text("[clv]\nhorizon_days = 180\n")
    result = invoke("config", "show", "--json", "--config", settings)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["source"] == str(settings)
    assert shown["settings"]["clv"]["horizon_days"] == 180
    assert shown["settings"]["churn"]["calibration"] == "sigmoid"


def test_bad_settings_are_refused_by_config_show_and_before_a_run(tmp_path: Path) -> None:
    settings = tmp_path / "crm-intel.toml"
    settings.write_text("[clv]\ninterval = 1.5\nhorizon_days = -5\n")
    shown = invoke("config", "show", "--config", settings)
    assert shown.exit_code == 1
    assert f"bad settings in {settings}" in shown.output
    assert "[clv] interval = 1.5: must be a number > 0 and < 1" in shown.output
    assert "[clv] horizon_days = -5: must be a whole number >= 1" in shown.output
    (tmp_path / "inbox").mkdir()
    warehouse = tmp_path / "warehouse.duckdb"
    run = invoke(
        "run", "--inbox", tmp_path / "inbox", "--warehouse", warehouse, "--config", settings
    )
    assert run.exit_code == 1 and "[clv] interval = 1.5" in run.output
    assert not warehouse.exists()


def test_as_of_outside_the_data_is_refused_before_any_step(
    demo_inbox: Path, tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    first, today = first_invoice(demo_inbox), date.today()
    valid = f"valid: {first} to {today}"
    future = invoke("run", "--inbox", demo_inbox, "--warehouse", warehouse, "--as-of",
                    today + timedelta(days=1))  # fmt: skip
    assert future.exit_code == 1
    assert "is in the future" in future.output and valid in future.output
    early = invoke("run", "--inbox", demo_inbox, "--warehouse", warehouse, "--as-of", "2020-01-01")
    assert early.exit_code == 1
    assert f"before the data starts: the first invoice is dated {first}" in early.output
    assert valid in early.output
    backfill = invoke("backfill", "--start", "2020-01-01", "--end", "2020-02-01", "--every",
                      "month", "--inbox", demo_inbox, "--warehouse", warehouse)  # fmt: skip
    assert backfill.exit_code == 1 and "--start 2020-01-01 is before the data starts" in (
        backfill.output
    )
    assert not warehouse.exists()  # no run started


def test_as_of_range_comes_from_staging_when_the_warehouse_has_it(
    full_run: tuple[Path, str], demo_inbox: Path, tmp_path: Path
) -> None:
    warehouse, _ = full_run
    with duckdb.connect(str(warehouse), read_only=True) as con:
        staged_first = con.sql("select min(issue_date) from staging.invoices").fetchall()[0][0]
    empty_inbox = tmp_path / "empty"
    empty_inbox.mkdir()  # nothing to scan: the date can only come from staging
    result = invoke(
        "run", "--inbox", empty_inbox, "--warehouse", warehouse, "--as-of", "2020-01-01"
    )
    assert result.exit_code == 1
    assert f"the first invoice is dated {staged_first}" in result.output


def test_unknown_faults_and_formats_are_refused_with_the_valid_ones(tmp_path: Path) -> None:
    faults = invoke("demo-data", "--out", tmp_path / "inbox", "--faults", "bad_date,bogus")
    assert faults.exit_code == 1 and isinstance(faults.exception, SystemExit)
    assert "unknown fault kind 'bogus'" in faults.output
    assert f"valid: {', '.join(FAULT_KINDS)}" in faults.output
    file_format = invoke("demo-data", "--out", tmp_path / "inbox", "--format", "xls")
    assert file_format.exit_code == 1 and isinstance(file_format.exception, SystemExit)
    assert "choose one of csv, parquet" in file_format.output
    assert "Traceback" not in faults.output + file_format.output
    assert not (tmp_path / "inbox").exists()


def test_counts_have_their_plurals(tmp_path: Path) -> None:
    assert plural(1, "customer") == "1 customer"
    assert plural(2_000, "customer") == "2,000 customers"
    assert plural(1, "activity", "activities") == "1 activity"
    assert plural(0, "activity", "activities") == "0 activities"
    result = invoke("demo-data", "--out", tmp_path / "inbox", "--customers", 50, "--seed", 1)
    assert result.exit_code == 0, result.output
    assert "wrote 50 customers, " in result.output and " 1 customers" not in result.output


def test_no_progress_display_when_not_a_terminal(full_run: tuple[Path, str]) -> None:
    _, output = full_run  # CliRunner's streams are not terminals
    assert "\r" not in output and "[1/" not in output
    assert "crm-intel run finished in" in output


def test_status_json_of_a_published_run_exits_0(full_run: tuple[Path, str]) -> None:
    warehouse, _ = full_run
    result = invoke("status", "--json", "--warehouse", warehouse)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["last_run"]["state"] == "published"
    assert report["published"]["run_id"] == report["last_run"]["run_id"]
    assert report["quarantined_rows"] == sum(row["rows"] for row in report["quarantine"])
    # a first night refits both scorers and builds every training cutoff: none kept yet
    fits = {fit["model"]: fit for fit in report["scorer_fits"]}
    for model in ("churn", "delinquency"):
        assert fits[model]["refit"] and fits[model]["cutoffs_reused"] == 0, fits
        assert fits[model]["cutoffs_built"] > 0, fits
    text = invoke("status", "--warehouse", warehouse).output
    assert f"training cutoffs: 0 reused, {fits['churn']['cutoffs_built']} built" in text


@pytest.fixture(scope="module")
def failing_inbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Invoices of 100 customers and one dated 2099: the future-dated check fails the run."""
    inbox = tmp_path_factory.mktemp("failing_inbox")
    generate_demo_data(inbox, customers=100, seed=5, include=frozenset({"invoices/invoices"}))
    with (inbox / "invoices/invoices.csv").open("a") as invoices:
        invoices.write("INV099999999,C0000001,2099-01-01,2099-01-31,100.00,EUR,invoice\n")
    (inbox / "crm-intel.toml").write_text("[ingest]\nvalidate_files = false\n")
    return inbox


@pytest.fixture(scope="module")
def failed_run(failing_inbox: Path, tmp_path_factory: pytest.TempPathFactory):
    """A run that fails at a blocking check, with the progress display forced on."""
    warehouse = tmp_path_factory.mktemp("failed_run") / "warehouse.duckdb"
    result = invoke("run", "--inbox", failing_inbox, "--warehouse", warehouse, "--progress",
                    "--config", failing_inbox / "crm-intel.toml")  # fmt: skip
    return warehouse, result


def test_forced_progress_names_steps_in_business_words(failed_run) -> None:
    _, result = failed_run
    assert result.exit_code == 1
    assert "\r[0/" in result.output  # one line, redrawn in place
    assert "invoices (inbox): Invoices and credit notes from accounting" in result.output
    assert "staging__" not in result.output  # no step keys, in the display or the failure
    assert (
        "check on invoices (inbox): no future dated invoices "
        "(staging/invoices_no_future_dated_invoices)" in result.output
    )


def test_status_exits_1_after_a_failed_run_and_says_so(failed_run) -> None:
    warehouse, _ = failed_run
    text = invoke("status", "--warehouse", warehouse)
    assert text.exit_code == 1
    assert "FAILED at staging/invoices_no_future_dated_invoices" in text.output
    assert "the last run" in text.output and "failed" in text.output
    as_json = invoke("status", "--json", "--warehouse", warehouse)
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert report["last_run"]["state"] == "failed"
    assert "no_future_dated_invoices" in report["last_run"]["reason"]


def test_verbose_tells_each_step_with_its_duration(failing_inbox: Path, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    shutil.copytree(failing_inbox, inbox)
    result = invoke("run", "--inbox", inbox, "--warehouse", tmp_path / "w.duckdb", "--verbose",
                    "--config", inbox / "crm-intel.toml")  # fmt: skip
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert any("started  invoices (inbox)" in line for line in lines)
    assert any(
        "finished invoices (inbox) in " in line and line.rstrip().endswith("s") for line in lines
    )
    assert any(
        "FAILED   check on invoices (inbox): no future dated invoices" in line for line in lines
    )
    assert any("not run  as-of date (an earlier step failed)" in line for line in lines)
    assert "STEP_START" not in result.output  # Dagster's raw stream is for --debug
