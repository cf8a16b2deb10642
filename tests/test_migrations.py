"""The warehouse layout is versioned: numbered migrations, applied once, in order."""

from datetime import date
from pathlib import Path

import duckdb

from features.history import append_history
from features.warehouse import MIGRATIONS, ensure_layout, materialize_sql


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


def test_clv_columns_lose_their_horizon_and_history_continues_under_the_new_names(
    tmp_path: Path,
) -> None:
    """A warehouse whose history holds clv_12m: the rows stay, under clv, and the next as-of
    date's customer_360 appends to the same columns (only the horizon column is new)."""
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create schema marts")
        con.execute(
            "create table marts.customer_360_history as select 'C1' as customer_id, "
            "date '2024-01-31' as as_of_date, 'Champions' as rfm_segment, 120.0 as clv_12m, "
            "100.0 as clv_12m_low, 150.0 as clv_12m_high, 'r1' as run_id"
        )
        con.execute(
            "create table marts.portfolio_risk_history as select date '2024-01-31' as as_of_date, "
            "'portfolio' as dimension, 120.0 as clv_12m, 'r1' as run_id"
        )
        con.execute("create table marts.segment_moves (customer_id varchar, clv_12m_change double)")
    with duckdb.connect(str(path)) as con:
        ensure_layout(con)
        assert _versions(con) == [m.version for m in MIGRATIONS]
        history = con.sql("select * from marts.customer_360_history").pl()
        portfolio = con.sql("select * from marts.portfolio_risk_history").pl()
        moves = con.sql("select * from marts.segment_moves").columns
        con.execute(
            "create table marts.customer_360 as select 'C1' as customer_id, "
            "date '2024-02-29' as as_of_date, 'At risk' as rfm_segment, 80.0 as clv, "
            "60.0 as clv_low, 90.0 as clv_high, 365 as clv_horizon_days"
        )
        appended = append_history(
            con,
            "marts.customer_360",
            "marts.customer_360_history",
            as_of_date=date(2024, 2, 29),
            run_id="r2",
        )
        materialize_sql(con, "features.segment_transitions", "feat_segment_transitions")
        transition = con.sql(
            "select from_segment, to_segment, previous_clv, clv, previous_clv_horizon_days, "
            "clv_horizon_days from features.segment_transitions"
        ).fetchall()
    assert history.columns == [
        "customer_id", "as_of_date", "rfm_segment", "clv", "clv_low", "clv_high", "run_id"
    ]  # fmt: skip
    assert history.row(0)[3:6] == (120.0, 100.0, 150.0)
    assert portfolio["clv"].to_list() == [120.0]
    assert moves == ["customer_id", "clv_change"]
    assert appended.added_columns == ("clv_horizon_days",)
    assert transition == [("Champions", "At risk", 120.0, 80.0, None, 365)]
