"""The lake's published tables: versions made current in one step, checked, and never mixed.

Real DuckDB warehouses and Parquet files; no Spark is needed to write or read them.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import duckdb
import pytest

from features.publish import (
    PublishError,
    lake_current,
    lake_publication,
    publish_snapshot,
)
from features.warehouse import ensure_layout


def _warehouse(path: Path, customers: int) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    ensure_layout(con)
    con.execute(
        "create or replace table marts.customer_360 as select 'C' || range as customer_id, "
        "'TAX' || range as tax_id, range::hugeint * 10 as lifetime_revenue, "
        "'{\"a\": 1}'::json as detail from range($n)",
        {"n": customers},
    )
    return con


def _publish(con: duckdb.DuckDBPyConnection, root: Path, run_id: str, **options) -> None:
    publish_snapshot(
        con,
        root / "warehouse.duckdb",
        root / "published" / "warehouse.duckdb",
        run_id=run_id,
        as_of_date=date(2025, 6, 30),
        lake=root / "lake",
        **options,
    )


def _versions(lake: Path) -> list[str]:
    published = lake / "published"
    return sorted(p.name.split("-", 1)[1] for p in published.iterdir() if not p.is_symlink())


def test_each_publication_becomes_current_and_the_one_before_stays(tmp_path: Path):
    con = _warehouse(tmp_path / "warehouse.duckdb", 3)
    _publish(con, tmp_path, "run-1")
    con.execute("insert into marts.customer_360 values ('C9', 'TAX9', 90, '{}')")
    _publish(con, tmp_path, "run-2")
    lake = tmp_path / "lake"
    manifest = lake_publication(lake)
    assert manifest is not None and manifest["run_id"] == "run-2"
    assert manifest["tables"]["marts.customer_360"] == {"path": "marts/customer_360", "rows": 4}
    assert _versions(lake) == ["run-1", "run-2"]
    parquet = str(lake_current(lake) / "marts" / "customer_360" / "*.parquet")
    rows = con.execute(
        "select column_name, column_type from (describe select * from read_parquet(?))", [parquet]
    ).fetchall()
    # no tax id leaves; hugeint and JSON as types every reader takes, not a lossy double
    assert rows == [
        ("customer_id", "VARCHAR"),
        ("lifetime_revenue", "DECIMAL(38,0)"),
        ("detail", "VARCHAR"),
    ]
    assert con.execute(
        f"select sum(lifetime_revenue) from read_parquet('{parquet}')"
    ).fetchall() == [(120,)]

    _publish(con, tmp_path, "run-3")
    assert _versions(lake) == ["run-2", "run-3"]  # older than the one before: deleted


def test_a_failed_publication_leaves_the_lake_as_it_was(tmp_path: Path):
    con = _warehouse(tmp_path / "warehouse.duckdb", 3)
    _publish(con, tmp_path, "run-1")
    before = os.readlink(lake_current(tmp_path / "lake"))
    # the snapshot cannot be swapped in: a folder with a file stands where it goes
    snapshot = tmp_path / "published" / "warehouse.duckdb"
    snapshot.unlink()
    snapshot.mkdir()
    (snapshot / "in-the-way").write_text("")
    with pytest.raises(OSError):
        _publish(con, tmp_path, "run-2")
    assert os.readlink(lake_current(tmp_path / "lake")) == before
    assert _versions(tmp_path / "lake") == ["run-1"]
    assert lake_publication(tmp_path / "lake")["run_id"] == "run-1"


def test_an_erasure_keeps_no_older_version(tmp_path: Path):
    con = _warehouse(tmp_path / "warehouse.duckdb", 3)
    _publish(con, tmp_path, "run-1")
    _publish(con, tmp_path, "run-2")
    con.execute("delete from marts.customer_360 where customer_id = 'C1'")
    _publish(con, tmp_path, "run-2", keep_previous_lake_version=False)
    lake = tmp_path / "lake"
    assert _versions(lake) == ["run-2"]
    parquet = str(lake / "published" / "*" / "marts" / "customer_360" / "*.parquet")
    assert con.execute(
        f"select count(*) from read_parquet('{parquet}') where customer_id = 'C1'"
    ).fetchall() == [(0,)]


def test_publishing_without_a_lake_writes_none(tmp_path: Path):
    con = _warehouse(tmp_path / "warehouse.duckdb", 3)
    publish_snapshot(
        con,
        tmp_path / "warehouse.duckdb",
        tmp_path / "published" / "warehouse.duckdb",
        run_id="run-1",
        as_of_date=date(2025, 6, 30),
    )
    assert not (tmp_path / "lake").exists()
    with pytest.raises(PublishError):  # the working file itself is never a publication target
        publish_snapshot(
            con,
            tmp_path / "warehouse.duckdb",
            tmp_path / "warehouse.duckdb",
            run_id="run-1",
            as_of_date=date(2025, 6, 30),
            lake=tmp_path / "lake",
        )
    assert not (tmp_path / "lake").exists()
