"""Shared fixtures: small generated inboxes, written once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
from typer.testing import CliRunner

from features.warehouse import ensure_layout
from pipelines.cli import app
from synthetic import generate_demo_data

SMALL_CUSTOMERS = 1500


@pytest.fixture
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    """An empty warehouse file with the schemas and ops tables."""
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    ensure_layout(connection)
    yield connection
    connection.close()


@pytest.fixture(scope="session")
def demo_inbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete inbox (CRM, invoices, payments, bureau) with known truth."""
    inbox = tmp_path_factory.mktemp("inbox")
    generate_demo_data(inbox, customers=SMALL_CUSTOMERS, seed=7)
    return inbox


@pytest.fixture(scope="session")
def invoices_only_inbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only the indispensable source: invoice exports."""
    inbox = tmp_path_factory.mktemp("invoices_only")
    generate_demo_data(
        inbox, customers=SMALL_CUSTOMERS, seed=7, include=frozenset({"invoices/invoices"})
    )
    return inbox


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.lstrip())
    return path


def staged_metadata(result: dg.ExecuteInProcessResult, table: str) -> dict[str, Any]:
    """Metadata of ``staging.<table>``'s materialization (its step also writes ``raw.<table>``)."""
    return next(
        materialization.metadata
        for materialization in result.asset_materializations_for_node(f"staging__{table}")
        if materialization.asset_key == dg.AssetKey(["staging", table])
    )


def run_cli(inbox: Path, warehouse: Path, *extra: str) -> str:
    """``crm-intel run`` in-process; fails the test with the CLI's output if it fails."""
    result = CliRunner().invoke(
        app, ["run", "--inbox", str(inbox), "--warehouse", str(warehouse), *extra]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.fixture(scope="session")
def full_run(demo_inbox: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One full pipeline run on the demo inbox: (warehouse path, CLI output)."""
    warehouse = tmp_path_factory.mktemp("e2e") / "warehouse.duckdb"
    return warehouse, run_cli(demo_inbox, warehouse)
