"""Every generated fault lands in quarantine with its reason; good rows all stage; reruns are
no-ops. Real Dagster materializations of the staging assets on a generated faulty inbox."""

from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from pipelines.customer_value.assets import run_as_of_date
from pipelines.ingest.assets import staging_assets
from pipelines.ingest.checks import (
    as_of_not_in_the_future,
    facts_after_as_of,
    invoice_customers_known,
    invoice_ids_unique,
    payments_reference_invoices,
)
from pipelines.resources import Inbox, Warehouse
from pipelines.settings import default_settings_resources
from synthetic import FAULT_KINDS, generate_demo_data
from tests.conftest import staged_metadata

GROUPS = frozenset({"crm/accounts", "invoices/invoices", "invoices/payments"})
DATA_SCHEMAS = ("raw", "staging", "quarantine", "ops")


def _materialize(inbox: Path, warehouse: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*staging_assets, invoice_ids_unique, invoice_customers_known, payments_reference_invoices],
        resources={
            **default_settings_resources(),
            "warehouse": Warehouse(path=str(warehouse)),
            "inbox": Inbox(path=str(inbox)),
        },
    )


def _snapshot(warehouse: Path) -> dict[str, list[tuple]]:
    """Every row of every data table (ops.runs is per-run bookkeeping, not touched here)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = con.sql(
            "select table_schema || '.' || table_name from information_schema.tables "
            f"where table_schema in {DATA_SCHEMAS} order by 1"
        ).fetchall()
        return {t: con.sql(f"select * from {t} order by all").fetchall() for (t,) in tables}


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("faulty")
    generate_demo_data(
        root / "inbox", customers=300, seed=11, include=GROUPS, faults=FAULT_KINDS, fault_rate=0.01
    )
    warehouse = root / "warehouse.duckdb"
    first = _materialize(root / "inbox", warehouse)
    before = _snapshot(warehouse)
    second = _materialize(root / "inbox", warehouse)
    return {
        "first": first,
        "second": second,
        "before": before,
        "after": _snapshot(warehouse),
        "truth": pl.read_csv(root / "inbox/truth/faults.csv"),
        "warehouse": warehouse,
    }


def _rejected(warehouse: Path) -> pl.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.sql(
            "select source_file as file, line_number, reason, raw_record "
            "from quarantine.rejected_rows"
        ).pl()


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_is_quarantined_with_its_reason(faulty: dict, kind: str) -> None:
    expected = faulty["truth"].filter(pl.col("reason") == kind)
    assert expected.height > 0
    rejected = _rejected(faulty["warehouse"]).filter(pl.col("reason") == kind)
    assert sorted(rejected.select("file", "line_number").rows()) == sorted(
        expected.select("file", "line_number").rows()
    )
    # the raw values are kept with the row
    assert rejected["raw_record"].null_count() == 0


def test_only_faulty_rows_are_rejected(faulty: dict) -> None:
    rejected = _rejected(faulty["warehouse"]).select("file", "line_number", "reason")
    truth = faulty["truth"].select("file", "line_number", "reason")
    assert sorted(rejected.rows()) == sorted(truth.rows())


@pytest.mark.parametrize("table", ["accounts", "invoices", "payments"])
def test_raw_rows_are_staged_or_quarantined(faulty: dict, table: str) -> None:
    metadata = staged_metadata(faulty["first"], table)
    raw, staged = metadata["raw_rows"].value, metadata["dagster/row_count"].value
    quarantined = metadata["quarantined_rows"].value
    assert raw == staged + quarantined
    assert metadata["superseded_rows"].value == 0
    truth = faulty["truth"].filter(pl.col("file").str.starts_with(f"invoices/{table}"))
    assert quarantined == truth.height
    reasons = metadata["quarantine_reasons"].value
    assert reasons == dict(truth.group_by("reason").len().rows())


def test_warehouse_checks_pass_once_faults_are_quarantined(faulty: dict) -> None:
    assert faulty["first"].success
    evaluations = faulty["first"].get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == {
        "invoice_ids_unique",
        "invoice_customers_known",
        "payments_reference_invoices",
    }
    assert all(e.passed for e in evaluations)


def test_loading_the_same_inbox_twice_changes_no_table(faulty: dict) -> None:
    assert faulty["second"].success
    assert faulty["after"] == faulty["before"]
    assert faulty["before"]["raw.invoices"]  # the comparison is over real rows
    second = staged_metadata(faulty["second"], "invoices")
    assert second["new_files"].value == []
    with duckdb.connect(str(faulty["warehouse"]), read_only=True) as con:
        outcomes = con.sql(
            "select file_group, outcome, count(*) from ops.loaded_files group by all order by 1"
        ).fetchall()
    assert outcomes == [
        ("crm/accounts", "loaded", 1),
        ("invoices/invoices", "loaded", 1),
        ("invoices/payments", "loaded", 1),
    ]


def test_a_file_over_the_reject_threshold_fails_the_run_naming_file_and_reasons(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    generate_demo_data(
        inbox,
        customers=100,
        seed=3,
        include=frozenset({"crm/accounts", "invoices/invoices"}),
        faults=("bad_date", "unknown_customer"),
        fault_rate=0.1,  # about 17% of the file's rows are bad: over the 10% default
    )
    result = dg.materialize(
        staging_assets,
        resources={
            **default_settings_resources(),
            "warehouse": Warehouse(path=str(tmp_path / "w.duckdb")),
            "inbox": Inbox(path=str(inbox)),
        },
        raise_on_error=False,
    )
    assert not result.success
    failure = result.failure_data_for_node("staging__invoices").user_failure_data
    assert failure.description.startswith("invoices/invoices.csv: ")
    assert "reject_threshold 10.0%" in failure.description
    assert "top reasons: " in failure.description
    assert "bad_date" in failure.description and "unknown_customer" in failure.description
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        # nothing of the refused file was kept: its first load created no table at all
        assert con.sql(
            "select count(*) from information_schema.tables where table_name = 'invoices'"
        ).fetchall() == [(0,)]
        assert con.sql(
            "select outcome from ops.loaded_files where file_group = 'invoices/invoices'"
        ).fetchall() == [("refused",)]


@pytest.fixture(scope="module")
def small_inbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    inbox = tmp_path_factory.mktemp("small") / "inbox"
    generate_demo_data(inbox, customers=150, seed=5, include=GROUPS)
    return inbox


def _run_with_as_of(inbox: Path, warehouse: Path, as_of: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*staging_assets, run_as_of_date, as_of_not_in_the_future, facts_after_as_of],
        resources={
            **default_settings_resources(),
            "warehouse": Warehouse(path=str(warehouse)),
            "inbox": Inbox(path=str(inbox)),
        },
        run_config={"resources": {"run": {"config": {"as_of": as_of}}}},
        raise_on_error=False,
    )


def test_facts_after_a_past_as_of_are_reported_not_blocking(
    small_inbox: Path, tmp_path: Path
) -> None:
    warehouse = tmp_path / "w.duckdb"
    result = _run_with_as_of(small_inbox, warehouse, "2024-06-30")
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["as_of_not_in_the_future"].passed
    later = checks["facts_after_as_of"]
    assert not later.passed and later.severity == dg.AssetCheckSeverity.WARN
    with duckdb.connect(str(warehouse), read_only=True) as con:
        invoices, payments = con.sql(
            "select (select count(*) from staging.invoices where issue_date > '2024-06-30'), "
            "(select count(*) from staging.payments where payment_date > '2024-06-30')"
        ).fetchall()[0]
    assert invoices > 0 and payments > 0
    assert later.metadata["invoices_after_as_of"].value == invoices
    assert later.metadata["payments_after_as_of"].value == payments


def test_an_as_of_in_the_future_stops_the_run(small_inbox: Path, tmp_path: Path) -> None:
    result = _run_with_as_of(small_inbox, tmp_path / "w.duckdb", "2999-01-01")
    assert not result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"as_of_not_in_the_future": False, "facts_after_as_of": True}
