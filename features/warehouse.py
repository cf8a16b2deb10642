"""Warehouse layout: schemas, the shared bookkeeping tables, and the SQL-file runner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb

SCHEMAS = ("raw", "staging", "features", "models", "marts", "quarantine", "ops")
SQL_DIR = Path(__file__).parent / "sql"

BOOKKEEPING_DDL = (
    """
    create table if not exists ops.runs (
        run_id varchar primary key,
        as_of_date date not null,
        as_of_source varchar not null,
        started_at timestamp not null
    )""",
    """
    create table if not exists ops.source_files (
        run_id varchar, file_group varchar, source_file varchar, rows bigint,
        loaded_at timestamp
    )""",
    """
    create table if not exists ops.loaded_files (
        content_hash varchar not null,
        file_group varchar not null,
        source_file varchar not null,
        size_bytes bigint,
        mapping varchar,
        decimal_mark varchar,
        date_format varchar,
        rows bigint,
        rejected_rows bigint,
        outcome varchar not null,
        detail varchar,
        validation json,
        load_sequence bigint,
        run_id varchar,
        loaded_at timestamp
    )""",
    """
    create table if not exists quarantine.rejected_rows (
        run_id varchar,
        staging_table varchar not null,
        source_file varchar not null,
        line_number bigint not null,
        reason varchar not null,
        detail varchar,
        raw_record json,
        rejected_at timestamp not null
    )""",
    # the loaded file (content hash) a rejected row came from; added after the first release
    "alter table quarantine.rejected_rows add column if not exists load_id varchar",
    """
    create table if not exists models.model_runs (
        run_id varchar not null,
        model varchar not null,
        as_of_date date not null,
        parameters json,
        metrics json,
        data_fingerprint varchar,
        created_at timestamp not null
    )""",
    # every snapshot published for readers (features/publish.py)
    """
    create table if not exists ops.publications (
        run_id varchar not null,
        as_of_date date not null,
        snapshot_path varchar not null,
        size_bytes bigint,
        tables bigint,
        published_at timestamp not null
    )""",
    # every failed run, written by the run-failure sensor and by `crm-intel run`
    """
    create table if not exists ops.run_failures (
        run_id varchar primary key,
        job_name varchar,
        failed_steps varchar,
        reason varchar,
        failed_at timestamp not null
    )""",
)


def ensure_layout(con: duckdb.DuckDBPyConnection) -> None:
    """Create the schemas and bookkeeping tables if this is a new warehouse."""
    for schema in SCHEMAS:
        con.execute(f"create schema if not exists {schema}")
    for ddl in BOOKKEEPING_DDL:
        con.execute(ddl)


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Statements inside commit together or, on any error, not at all: readers never see a
    table half replaced."""
    con.execute("begin transaction")
    try:
        yield
    except BaseException:
        con.execute("rollback")
        raise
    con.execute("commit")


@contextmanager
def perfect_hash_groups(con: duckdb.DuckDBPyConnection, bits: int = 22) -> Iterator[None]:
    """Let DuckDB group by dense integer keys of up to ``bits`` bits in an array (no hashing).

    DuckDB's perfect hash aggregate indexes an array by the key's offset from its minimum, but
    by default only for keys spanning 12 bits. Grouping a million rows' worth of
    ``customer_key`` that way costs a fraction of a hash table over text ids. Each thread
    allocates one slot per key value in the range, so the limit is raised only around the
    statements that want it: 22 bits = 4M customers, a few hundred MB at most.
    """
    previous = con.sql("select current_setting('perfect_ht_threshold')").fetchall()[0][0]
    con.execute(f"set perfect_ht_threshold = {int(bits)}")
    try:
        yield
    finally:
        con.execute(f"set perfect_ht_threshold = {int(previous)}")


def write_frame(con: duckdb.DuckDBPyConnection, table: str, frame: Any) -> None:
    """Replace ``table`` with the rows of a polars (or Arrow) frame."""
    con.register("frame_to_write", frame)
    try:
        con.execute(f"create or replace table {table} as select * from frame_to_write")
    finally:
        con.unregister("frame_to_write")


def sql_text(name: str, fragments: dict[str, str] | None = None) -> str:
    """The text of ``features/sql/<name>.sql`` (one statement per file).

    ``fragments`` fills ``/*key*/`` markers with SQL that depends on a setting's value, such as
    one column per month, which a ``$parameter`` cannot express.
    """
    text = (SQL_DIR / f"{name}.sql").read_text()
    for key, fragment in (fragments or {}).items():
        marker = f"/*{key}*/"
        if marker not in text:
            raise ValueError(f"{name}.sql has no {marker} marker")
        text = text.replace(marker, fragment)
    return text


def run_sql(con: duckdb.DuckDBPyConnection, name: str, **params: Any) -> None:
    """Run one SQL file with named ``$parameters``; only the parameters it uses are bound."""
    text = sql_text(name)
    used = {key: value for key, value in params.items() if f"${key}" in text}
    con.execute(text, used).fetchall()


def materialize_sql(
    con: duckdb.DuckDBPyConnection,
    table: str,
    name: str,
    *,
    temporary: bool = False,
    uncompressed: tuple[str, ...] = (),
    fragments: dict[str, str] | None = None,
    **params: Any,
) -> int:
    """Replace ``table`` with the result of the SELECT in ``sql/<name>.sql``; returns its rows.

    ``temporary`` makes it a temp table, private to this connection and dropped with it.
    ``uncompressed`` names columns stored without compression: unique text ids barely compress,
    and DuckDB's analysis of how to compress them can be half the cost of writing a large table.
    ``fragments`` fill the file's ``/*key*/`` markers (``sql_text``).
    """
    text = sql_text(name, fragments)
    used = {key: value for key, value in params.items() if f"${key}" in text}
    kind = "temp table" if temporary else "table"
    if not uncompressed:
        con.execute(f"create or replace {kind} {table} as {text}", used).fetchall()
        return row_count(con, table)
    # a create-table-as cannot choose a column's compression: declare the columns (their types
    # from the bound query), then insert, in one transaction so readers never see it empty
    columns = con.execute(f"describe {text}", used).fetchall()
    declared = ", ".join(
        f'"{column}" {column_type}'
        + (" using compression uncompressed" if column in uncompressed else "")
        for column, column_type, *_ in columns
    )
    with transaction(con):
        con.execute(f"create or replace {kind} {table} ({declared})").fetchall()
        con.execute(f"insert into {table} {text}", used).fetchall()
    return row_count(con, table)


def table_exists(con: duckdb.DuckDBPyConnection, qualified_name: str) -> bool:
    schema, table = qualified_name.split(".")
    rows = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [schema, table],
    ).fetchall()
    return rows[0][0] > 0


def row_count(con: duckdb.DuckDBPyConnection, qualified_name: str) -> int:
    return con.sql(f"select count(*) from {qualified_name}").fetchall()[0][0]


def record_model_run(
    con: duckdb.DuckDBPyConnection,
    *,
    run_id: str,
    model: str,
    as_of_date: date,
    parameters: dict[str, Any],
    metrics: dict[str, Any],
    data_fingerprint: str,
) -> None:
    """Append one fit to ``models.model_runs``; a rerun of the same run and model replaces it."""
    con.execute("delete from models.model_runs where run_id = ? and model = ?", [run_id, model])
    con.execute(
        "insert into models.model_runs values (?, ?, ?, ?, ?, ?, ?)",
        [
            run_id,
            model,
            as_of_date,
            json.dumps(parameters, default=str),
            json.dumps(metrics, default=str),
            data_fingerprint,
            datetime.now(),
        ],
    ).fetchall()


def fingerprint(con: duckdb.DuckDBPyConnection, query: str) -> str:
    """A cheap, order-independent fingerprint of a query's rows, to tie a fit to its data."""
    rows = con.sql(f"select count(*), sum(hash(q))::varchar from ({query}) q").fetchall()[0]
    return f"{rows[0]}:{rows[1]}"
