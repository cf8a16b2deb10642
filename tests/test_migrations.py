"""The warehouse layout is versioned: numbered migrations, applied once, in order."""

from pathlib import Path

import duckdb

from features.warehouse import MIGRATIONS, ensure_layout


def _versions(con: duckdb.DuckDBPyConnection) -> list[int]:
    rows = con.sql("select version from ops.schema_migrations order by version").fetchall()
    return [row[0] for row in rows]


def test_migrations_are_numbered_in_order_without_gaps() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def test_a_new_warehouse_gets_every_migration_once(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        ensure_layout(con)
        ensure_layout(con)  # every step opens the warehouse: the second time changes nothing
        assert _versions(con) == [m.version for m in MIGRATIONS]
        columns = {row[0] for row in con.sql("describe quarantine.rejected_rows").fetchall()}
    assert "load_id" in columns


def test_a_warehouse_from_before_versions_is_brought_up_to_date(tmp_path: Path) -> None:
    """A warehouse without the migrations table: the idempotent migrations apply from the start."""
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:
        for schema in ("features", "quarantine", "ops"):
            con.execute(f"create schema {schema}")
        con.execute(
            "create table quarantine.rejected_rows (run_id varchar, staging_table varchar, "
            "source_file varchar, line_number bigint, reason varchar, detail varchar, "
            "raw_record json, rejected_at timestamp)"
        )
        con.execute(
            "insert into quarantine.rejected_rows values "
            "('r1', 'invoices', 'a.csv', 7, 'bad date', null, null, now())"
        )
        con.execute("create table features.receivable_items_previous (x int)")
    with duckdb.connect(str(path)) as con:
        ensure_layout(con)
        assert _versions(con) == [m.version for m in MIGRATIONS]
        kept = con.sql("select line_number, load_id from quarantine.rejected_rows").fetchall()
        gone = con.sql(
            "select count(*) from duckdb_tables() where table_name = 'receivable_items_previous'"
        ).fetchall()[0][0]
    assert kept == [(7, None)]
    assert gone == 0
