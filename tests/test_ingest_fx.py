"""FX warnings: silent when every amount is in the base currency and no FX file is delivered;
a warning (and unknown_currency quarantine) only when a foreign amount has no rate."""

import logging
from pathlib import Path

import dagster as dg
import duckdb

from pipelines.ingest.assets import staging_assets
from pipelines.resources import Inbox, Warehouse
from pipelines.settings import default_settings_resources
from synthetic import generate_demo_data

GROUPS = frozenset({"crm/accounts", "invoices/invoices"})


def _warnings(inbox: Path, warehouse: Path) -> list[str]:
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        staging_assets,
        resources={
            **default_settings_resources(),
            "warehouse": Warehouse(path=str(warehouse)),
            "inbox": Inbox(path=str(inbox)),
        },
        instance=instance,
    )
    assert result.success
    return [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if not entry.is_dagster_event and entry.level >= logging.WARNING
    ]


def test_base_currency_only_and_no_fx_file_warns_about_nothing_fx(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    generate_demo_data(inbox, customers=80, seed=11, include=GROUPS)
    assert not (inbox / "fx").exists()
    warnings = _warnings(inbox, tmp_path / "w.duckdb")
    assert not [w for w in warnings if "fx" in w.lower() or "currenc" in w.lower()]
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        assert con.sql("select count(*) from quarantine.rejected_rows").fetchall() == [(0,)]
        assert con.sql("select count(*) from staging.fx_rates").fetchall() == [(0,)]


def test_a_foreign_amount_without_rate_is_quarantined_and_warned(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    generate_demo_data(inbox, customers=80, seed=11, include=GROUPS, faults=("unknown_currency",))
    warnings = _warnings(inbox, tmp_path / "w.duckdb")
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        quarantined = con.sql(
            "select count(*) from quarantine.rejected_rows where reason = 'unknown_currency'"
        ).fetchall()[0][0]
        staged_foreign = con.sql(
            "select count(*) from staging.invoices where upper(currency) <> 'EUR'"
        ).fetchall()[0][0]
    assert quarantined > 0 and staged_foreign == 0
    fx_warnings = [w for w in warnings if "no FX rate" in w]
    assert len(fx_warnings) == 1
    assert fx_warnings[0].startswith(f"{quarantined} invoices/invoices row(s)")
