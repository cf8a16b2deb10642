"""Asset-level tests: real materializations against a DuckDB file under tmp_path."""

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from features.customer import customer_summary_sql
from features.warehouse import SQL_DIR, perfect_hash_groups
from pipelines.customer_value.assets import customer_summary, rfm_scores, run_as_of_date
from pipelines.definitions import run_config_for
from pipelines.ingest.assets import staging_assets
from pipelines.ingest.checks import invoice_ids_unique, invoices_not_empty
from pipelines.resources import (
    DEFAULT_MEMORY_SHARE,
    Inbox,
    Warehouse,
    machine_memory_bytes,
)
from pipelines.settings import default_settings_resources, load_settings
from tests.conftest import staged_metadata


def _materialize(
    inbox: Path, warehouse: Path, as_of: str | None = None
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*staging_assets, run_as_of_date, customer_summary, rfm_scores],
        resources={
            **default_settings_resources(),
            "warehouse": Warehouse(path=str(warehouse)),
            "inbox": Inbox(path=str(inbox)),
        },
        run_config={"resources": {"run": {"config": {"as_of": as_of}}}} if as_of else None,
        selection=None,
    )


def test_ingest_and_rfm_assets_write_their_tables(demo_inbox: Path, tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    result = _materialize(demo_inbox, warehouse)
    assert result.success
    invoices = staged_metadata(result, "invoices")
    assert invoices["dagster/row_count"].value > 0
    assert invoices["quarantined_rows"].value == 0
    with duckdb.connect(str(warehouse), read_only=True) as con:
        summary_rows = con.sql("select count(*) from features.customer_summary").fetchall()[0][0]
        rfm_rows = con.sql("select count(*) from models.rfm_scores").fetchall()[0][0]
        max_issue = con.sql("select max(issue_date) from staging.invoices").fetchall()[0][0]
        as_of = con.sql("select as_of_date from ops.runs").fetchall()[0][0]
    assert summary_rows == rfm_rows > 0
    assert as_of == max_issue


def test_customer_summary_is_one_query_that_matches_the_text_id_grouping(
    demo_inbox: Path, tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    assert _materialize(demo_inbox, warehouse).success
    with duckdb.connect(str(warehouse)) as con:
        as_of = con.sql("select as_of_date from ops.runs").fetchall()[0][0]
        # the same facts grouped by the text id instead of the integer key
        by_text_id = con.sql(
            """
            select customer_id, min(day), max(day), count(*), sum(spend)
            from (select customer_id, issue_date as day, sum(amount) as spend
                  from staging.invoices where document_type = 'invoice' and issue_date <= $as_of
                  group by all)
            group by all order by customer_id
            """,
            params={"as_of": as_of},
        ).fetchall()
        summary = con.sql(
            "select customer_id, first_purchase_date, last_purchase_date, purchase_days, "
            "gross_revenue from features.customer_summary"
        ).fetchall()
        assert [row[:4] for row in summary] == [row[:4] for row in by_text_id]
        assert [row[4] for row in summary] == pytest.approx([float(row[4]) for row in by_text_id])
        # the file as it is on disk runs as it is, pasted into a DuckDB shell: no placeholders
        pasted = (SQL_DIR / "feat_customer_summary.sql").read_text()
        assert pasted == customer_summary_sql()
        before = con.sql("select current_setting('perfect_ht_threshold')").fetchall()[0][0]
        with perfect_hash_groups(con):
            plan = con.execute("explain " + pasted, {"as_of": as_of}).fetchall()[0][1]
            rerun = con.execute(pasted, {"as_of": as_of}).fetchall()
        assert "Perfect Hash Group By" in plan
        assert con.sql("select current_setting('perfect_ht_threshold')").fetchall()[0][0] == before
        stored = con.sql("select * from features.customer_summary order by customer_id").fetchall()
        assert rerun == stored


def test_as_of_uses_no_later_fact(demo_inbox: Path, tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    assert _materialize(demo_inbox, warehouse, as_of="2024-06-30").success
    with duckdb.connect(str(warehouse), read_only=True) as con:
        latest, older_customers = con.sql(
            "select max(last_purchase_date), count(*) from features.customer_summary"
        ).fetchall()[0]
        expected = con.sql(
            "select count(distinct customer_id) from staging.invoices "
            "where issue_date <= date '2024-06-30' and document_type = 'invoice'"
        ).fetchall()[0][0]
    assert str(latest) <= "2024-06-30"
    assert older_customers == expected


def test_blocking_checks_stop_the_run_on_empty_invoices(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "invoices").mkdir(parents=True)
    (inbox / "invoices/invoices.csv").write_text(
        "invoice_id,customer_id,issue_date,amount\nI1,C1,not-a-date,10\n"
    )
    result = dg.materialize(
        [*staging_assets, invoices_not_empty, invoice_ids_unique, run_as_of_date],
        resources={
            **default_settings_resources(),
            "warehouse": Warehouse(path=str(tmp_path / "w.duckdb")),
            "inbox": Inbox(path=str(inbox)),
        },
        # open the file gate so the row is quarantined and the blocking check is what stops us
        run_config={
            "resources": {"ingest": {"config": {"reject_threshold": 1.0, "validate_files": False}}}
        },
        raise_on_error=False,
    )
    assert not result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["invoices_not_empty"] is False
    # the as-of asset never ran: a blocking check stops its downstream
    assert not result.asset_materializations_for_node("ops__run_as_of")


@pytest.mark.parametrize("as_of", ["2024-02-30", "yesterday"])
def test_bad_as_of_fails_with_a_clear_message(demo_inbox: Path, tmp_path: Path, as_of: str) -> None:
    """The settings refuse the date before the step runs; the failure names the format."""
    with pytest.raises(Exception) as failure:
        _materialize(demo_inbox, tmp_path / "w.duckdb", as_of=as_of)
    causes: list[str] = []
    error: BaseException | None = failure.value
    while error is not None and len(causes) < 10:
        causes.append(str(error))
        error = error.__cause__ or error.__context__
    assert any("YYYY-MM-DD" in cause and as_of in cause for cause in causes), causes


def test_without_a_limit_duckdb_gets_a_share_of_the_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unset, DuckDB's limit is DEFAULT_MEMORY_SHARE of the machine, not its own 80 %: the run's
    Python side needs the rest."""
    monkeypatch.delenv("CRM_INTEL_DUCKDB_MEMORY_LIMIT", raising=False)
    with Warehouse(path=str(tmp_path / "w.duckdb")).connect() as con:
        applied = con.sql("select current_setting('memory_limit')").fetchall()[0][0]
    share = machine_memory_bytes() * DEFAULT_MEMORY_SHARE
    with duckdb.connect(config={"memory_limit": f"{int(share) // 2**20}MiB"}) as ref:
        expected = ref.sql("select current_setting('memory_limit')").fetchall()[0][0]
    with duckdb.connect() as own_default:
        duckdb_default = own_default.sql("select current_setting('memory_limit')").fetchall()[0][0]
    assert applied == expected
    assert applied != duckdb_default


def test_duckdb_memory_limit_and_spill_folder_reach_the_run(
    demo_inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared server caps DuckDB by environment; the CLI's run config must carry it."""
    spill = tmp_path / "spill"
    monkeypatch.setenv("CRM_INTEL_DUCKDB_MEMORY_LIMIT", "1GiB")
    monkeypatch.setenv("CRM_INTEL_DUCKDB_TEMP_DIRECTORY", str(spill))
    monkeypatch.setenv("CRM_INTEL_DUCKDB_RETAINED_MEMORY", "64MiB")
    run_config = run_config_for(
        load_settings(), warehouse=str(tmp_path / "w.duckdb"), inbox=str(demo_inbox)
    )
    warehouse_config = run_config["resources"]["warehouse"]["config"]
    with Warehouse(**warehouse_config).connect() as con:
        applied = con.sql(
            "select current_setting('memory_limit'), current_setting('temp_directory'), "
            "current_setting('preserve_insertion_order'), "
            "current_setting('block_allocator_memory'), "
            "current_setting('allocator_flush_threshold')"
        ).fetchall()[0]
    with duckdb.connect(config={"memory_limit": "1GiB", "block_allocator_memory": "64MiB"}) as ref:
        expected_limit, expected_retained = ref.sql(
            "select current_setting('memory_limit'), current_setting('block_allocator_memory')"
        ).fetchall()[0]
    # as the benches run: tables whose order matters are written with an ORDER BY
    assert applied[:4] == (expected_limit, str(spill), False, expected_retained)
    assert applied[4] == "64MiB"  # no allocator flush below the retained memory
    # Dagster accepts the same run config for a real materialization.
    result = dg.materialize(
        [*staging_assets, run_as_of_date],
        resources={**default_settings_resources(), "warehouse": Warehouse(), "inbox": Inbox()},
        run_config={"resources": run_config["resources"]},
    )
    assert result.success
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        assert con.sql("select count(*) from ops.runs").fetchall()[0][0] == 1
