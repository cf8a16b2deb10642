"""Warehouse layout: schemas, the shared bookkeeping tables, the SQL-file runner, and the
run lock that lets one run at a time write a warehouse."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import duckdb
import polars as pl

# The code a table or a fit was made by: every source file of the pure layer. A change to any
# feature, SQL file or model rebuilds what was kept (staging tables, churn and delinquency fits)
# rather than reusing what older code made.
_SOURCES = sorted(
    path
    for folder in ("features", "models")
    for path in (Path(__file__).resolve().parents[1] / folder).rglob("*")
    if path.suffix in (".py", ".sql") and path.is_file()
)
CODE_VERSION = hashlib.sha256(
    b"".join(path.name.encode() + path.read_bytes() for path in _SOURCES)
).hexdigest()[:16]

SCHEMAS = ("raw", "staging", "features", "models", "marts", "quarantine", "ops")
SQL_DIR = Path(__file__).parent / "sql"


@dataclass(frozen=True)
class Migration:
    """One numbered change of the warehouse's layout, applied once, in order, before any step.

    Statements are idempotent (``if not exists``), so a warehouse written before versions were
    recorded takes every migration safely. A statement SQL cannot make idempotent (renaming a
    column only where it exists) is a function of the connection. A new change is a new entry
    at the end; an applied entry is never edited.
    """

    version: int
    description: str
    statements: tuple[str | Callable[[duckdb.DuckDBPyConnection], None], ...]


def rename_columns(renames: dict[str, str]) -> Callable[[duckdb.DuckDBPyConnection], None]:
    """A migration step renaming each ``old`` column to ``new`` in every table that has it.

    Tables kept across runs (the ``*_history`` tables) keep their rows under the new name; the
    others are rebuilt by the next run anyway and are renamed so readers see one name meanwhile.
    """

    def rename(con: duckdb.DuckDBPyConnection) -> None:
        found = con.execute(
            "select t.schema_name, t.table_name, c.column_name "
            "from duckdb_tables() as t join duckdb_columns() as c using (table_oid) "
            "where t.database_name = current_database() and list_contains($old, c.column_name)",
            {"old": list(renames)},
        ).fetchall()
        for schema, table, column in found:
            con.execute(
                f'alter table "{schema}"."{table}" rename column "{column}" to "{renames[column]}"'
            )

    return rename


# The CLV horizon is [clv] horizon_days, not always twelve months: its columns say "clv" and the
# horizon travels in clv_horizon_days.
CLV_HORIZON_NEUTRAL_NAMES = {
    "clv_12m": "clv",
    "clv_12m_low": "clv_low",
    "clv_12m_high": "clv_high",
    "clv_12m_total": "clv_total",
    "clv_12m_avg": "clv_avg",
    "clv_12m_change": "clv_change",
    "previous_clv_12m": "previous_clv",
    "expected_credit_exposure_12m": "expected_credit_exposure",
}


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "bookkeeping tables: runs, loaded files, quarantine, model runs, publications, "
        "failures, run status, erasures",
        (
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
            # every run that opened the warehouse: 'running' until it ends; a run whose process died
            # (killed, out of memory, reboot) is marked 'killed' by the next run (see begin_run)
            """
        create table if not exists ops.run_status (
            run_id varchar primary key,
            status varchar not null,
            pid bigint,
            started_at timestamp not null,
            ended_at timestamp,
            detail varchar
        )""",
            # erased customers and contacts (features/erasure.py): the tombstones that keep a
            # re-delivered file from bringing them back; identifiers only as SHA-256 in erasure_keys
            """
        create table if not exists ops.erasures (
            erasure_id varchar primary key,
            kind varchar not null,
            subject_id varchar not null,
            erased_at timestamp not null,
            rows_removed json
        )""",
            """
        create table if not exists ops.erasure_keys (
            erasure_id varchar not null,
            key_column varchar not null,
            key_sha256 varchar not null
        )""",
        ),
    ),
    Migration(
        2,
        "quarantined rows name the loaded file (content hash) they came from",
        ("alter table quarantine.rejected_rows add column if not exists load_id varchar",),
    ),
    Migration(
        3,
        "risk alerts take the window-start exposure from the aging and the window's documents; "
        "the aging rebuilt as of the window start is gone",
        ("drop table if exists features.receivable_items_previous",),
    ),
    Migration(
        4,
        "CLV columns named without a horizon (clv, clv_low, clv_high and their totals); the "
        "horizon is published next to them in clv_horizon_days",
        (rename_columns(CLV_HORIZON_NEUTRAL_NAMES),),
    ),
    Migration(
        5,
        "every step of every run with its start, duration, rows written and outcome, whatever "
        "Dagster instance ran it",
        (
            """
        create table if not exists ops.step_runs (
            run_id varchar not null,
            step varchar not null,
            started_at timestamp,
            seconds double,
            rows bigint,
            outcome varchar not null
        )""",
        ),
    ),
    Migration(
        6,
        "churn and delinquency fits kept between nights, and each run's refit decision",
        (
            """
        create table if not exists models.kept_fits (
            model varchar primary key,
            run_id varchar not null,
            as_of_date date not null,
            fitted_at timestamp not null,
            settings_key varchar not null,
            code_version varchar not null,
            history_fingerprint varchar not null,
            customers bigint not null,
            chosen varchar not null,
            note varchar,
            scorer blob
        )""",
            """
        create table if not exists models.fit_plans (
            run_id varchar not null,
            model varchar not null,
            refit boolean not null,
            reason varchar not null,
            settings_key varchar not null,
            customers bigint not null,
            kept_run_id varchar,
            kept_as_of date
        )""",
        ),
    ),
    Migration(
        7,
        "each staging table's last build and what it was built from, so a night with nothing new "
        "for it keeps it as it is",
        (
            """
        create table if not exists ops.staging_builds (
            staging_table varchar primary key,
            build_key varchar not null,
            run_id varchar not null,
            built_at timestamp not null,
            raw_rows bigint not null,
            staged_rows bigint not null,
            superseded_rows bigint not null,
            skipped_rules varchar[] not null
        )""",
        ),
    ),
    Migration(
        8,
        "how each staging table was last brought up to date (kept, merged or rebuilt) and what a "
        "merge of new loads into it must find unchanged",
        (
            "alter table ops.staging_builds add column if not exists mode varchar",
            "alter table ops.staging_builds add column if not exists base_key varchar",
            "alter table ops.staging_builds add column if not exists loads varchar[]",
            "alter table ops.staging_builds add column if not exists upstream varchar",
            "alter table ops.staging_builds add column if not exists epoch varchar",
        ),
    ),
    Migration(
        9,
        "drop ops.source_files: nothing writes it, every loaded file's record is in "
        "ops.loaded_files",
        ("drop table if exists ops.source_files",),
    ),
    Migration(
        10,
        "each run's refit decision says how many training cutoffs it reused from the training "
        "cache and how many it built",
        (
            "alter table models.fit_plans add column if not exists cutoffs_reused integer",
            "alter table models.fit_plans add column if not exists cutoffs_built integer",
        ),
    ),
    Migration(
        11,
        "every SQL stage another engine (Spark) ran, with its time by phase: Spark's own work "
        "and what running beside the DuckDB file costs (copies, loads, bookkeeping)",
        (
            """
        create table if not exists ops.engine_stages (
            run_id varchar not null,
            step varchar not null,
            stage_number integer not null,
            stage varchar not null,
            output_table varchar,
            tables_copied varchar[] not null,
            input_check_seconds double not null,
            copy_seconds double not null,
            translate_seconds double not null,
            spark_seconds double not null,
            load_seconds double not null,
            keep_seconds double not null
        )""",
        ),
    ),
)


@dataclass(frozen=True)
class RunLedger:
    """A bookkeeping table that several steps, or the run machinery outside the job's steps,
    append to: no one asset owns it, so it is declared here instead (every other table of the
    warehouse is an asset's, see ``python -m pipelines.definitions``)."""

    written_by: str
    read_by: str


# The migrations create them; what writes and reads each one.
RUN_LEDGERS: dict[str, RunLedger] = {
    "ops.loaded_files": RunLedger(
        "every staging step, one row per file it loads or refuses",
        "the staging steps (which files are new, how earlier ones were read), invoice "
        "settlement (what changed since its last build), ops/data_quality",
    ),
    "quarantine.rejected_rows": RunLedger(
        "every staging step, its own table's rejected rows",
        "ops/data_quality, `crm-intel run` and `status`, the published snapshot (no row content)",
    ),
    "models.model_runs": RunLedger(
        "each fit: CLV scores, the CLV backtest, the churn and delinquency scorer choices and "
        "scores, one row per model and run",
        "the report, notebooks, the published snapshot",
    ),
    "ops.publications": RunLedger(
        "ops/published_snapshot and `crm-intel erase` (which republishes), one row per snapshot",
        "`crm-intel status`, the run lock (a killed run that published keeps its rows), the report",
    ),
    "ops.run_status": RunLedger(
        "the run lock, when a run starts and ends (begin_run, end_run)",
        "the run lock (which runs died)",
    ),
    "ops.run_failures": RunLedger(
        "the run-failure sensor and `crm-intel run`, one row per failed run",
        "`crm-intel status`, the published snapshot",
    ),
    "ops.erasures": RunLedger(
        "`crm-intel erase`, one row per erased customer or contact",
        "whoever audits erasures (what, when, rows removed)",
    ),
    "ops.erasure_keys": RunLedger(
        "`crm-intel erase`: the erased identifiers' SHA-256",
        "every staging step (tombstoned rows never staged again)",
    ),
    "ops.step_runs": RunLedger(
        "two job hooks (pipelines/ops/step_runs.py), one row per step of every run",
        "`crm-intel status --steps`, bench/bench_nightly.py",
    ),
    "ops.engine_stages": RunLedger(
        'the same hooks, one row per SQL stage a step ran on Spark ([engine] kind "spark")',
        "`crm-intel status --steps`, bench/bench_nightly.py",
    ),
    "models.kept_fits": RunLedger(
        "the churn and delinquency scores steps on a night that refits, one row per model",
        "the same steps on the nights in between (features/model_store.py)",
    ),
    "models.fit_plans": RunLedger(
        "churn snapshots and delinquency training, one row per model and run: refit or not, why, "
        "and on a refit how many training cutoffs came from the training cache",
        "the later churn and delinquency steps of the same run, `crm-intel status`",
    ),
    "ops.staging_builds": RunLedger(
        "every staging step that rebuilds or merges into its table, one row per staging table",
        "the same step on the next night (features/ingest.py: unchanged inputs keep the table)",
    ),
    "ops.schema_migrations": RunLedger(
        "ensure_layout, one row per migration applied", "ensure_layout"
    ),
}


def ensure_layout(con: duckdb.DuckDBPyConnection) -> None:
    """Create the schemas and apply the migrations this warehouse has not had yet, in order.

    Runs whenever a step opens the warehouse, so the layout is current before any asset body;
    each migration and its record in ``ops.schema_migrations`` commit together.
    """
    for schema in SCHEMAS:
        con.execute(f"create schema if not exists {schema}")
    con.execute(
        "create table if not exists ops.schema_migrations ("
        "version integer primary key, description varchar not null, "
        "applied_at timestamp not null)"
    )

    def applied() -> int:
        query = "select coalesce(max(version), 0) from ops.schema_migrations"
        return con.sql(query).fetchall()[0][0]

    for migration in MIGRATIONS:
        if migration.version <= applied():
            continue
        try:
            with transaction(con):
                for statement in migration.statements:
                    if callable(statement):
                        statement(con)
                    else:
                        con.execute(statement)
                con.execute(
                    "insert into ops.schema_migrations values (?, ?, ?)",
                    [migration.version, migration.description, datetime.now()],
                )
        except duckdb.Error:
            if migration.version > applied():  # not another connection applying it meanwhile
                raise


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


class SqlStages(Protocol):
    """Another engine that runs a connection's SQL stages (features.spark_sql.SparkStages): it
    leaves ``table`` in the connection as the DuckDB statement would have written it."""

    def materialize(
        self,
        con: duckdb.DuckDBPyConnection,
        table: str,
        name: str,
        text: str,
        params: dict[str, Any],
        *,
        temporary: bool,
    ) -> None: ...

    def score(
        self,
        customers: pl.DataFrame,
        score: Callable[[pl.DataFrame], pl.DataFrame],
        schema: dict[str, Any],
    ) -> pl.DataFrame: ...


# connections whose SQL stages run on another engine ([engine] kind = "spark")
_STAGES_ELSEWHERE: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, SqlStages] = (
    weakref.WeakKeyDictionary()
)


def run_stages_on(con: duckdb.DuckDBPyConnection, stages: SqlStages | None) -> None:
    """From now on ``materialize_sql`` on ``con`` runs on ``stages`` (None: on DuckDB again)."""
    if stages is None:
        _STAGES_ELSEWHERE.pop(con, None)
    else:
        _STAGES_ELSEWHERE[con] = stages


def used_params(text: str, params: dict[str, Any]) -> dict[str, Any]:
    """The ``$parameters`` of ``params`` that ``text`` uses: DuckDB refuses unused ones."""
    return {key: value for key, value in params.items() if f"${key}" in text}


def run_sql(con: duckdb.DuckDBPyConnection, name: str, **params: Any) -> None:
    """Run one SQL file with named ``$parameters``; only the parameters it uses are bound."""
    text = sql_text(name)
    con.execute(text, used_params(text, params)).fetchall()


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
    return materialize_query(
        con,
        table,
        name,
        text,
        used_params(text, params),
        temporary=temporary,
        uncompressed=uncompressed,
    )


def materialize_query(
    con: duckdb.DuckDBPyConnection,
    table: str,
    name: str,
    text: str,
    used: dict[str, Any] | None = None,
    *,
    temporary: bool = False,
    uncompressed: tuple[str, ...] = (),
) -> int:
    """``materialize_sql`` for a SELECT built in code (staging's typing and checks, written
    from the contracts), on the connection's engine; ``name`` names the stage in the asset's
    metadata. Returns the table's rows."""
    used = used or {}
    elsewhere = _STAGES_ELSEWHERE.get(con)
    if elsewhere is not None:
        elsewhere.materialize(con, table, name, text, used, temporary=temporary)
        return row_count(con, table)
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


def score_per_customer(
    con: duckdb.DuckDBPyConnection,
    customers: pl.DataFrame,
    score: Callable[[pl.DataFrame], pl.DataFrame],
    schema: dict[str, Any],
) -> pl.DataFrame:
    """``score`` applied to ``customers`` on the connection's engine, rows in their order.

    With the SQL stages on Spark the customers are scored on its executors, ``score`` (a
    ``functools.partial`` of a module-level function, which scores each row alone) broadcast
    once; ``schema`` is its output's. Otherwise, and for no customers, here.
    """
    elsewhere = _STAGES_ELSEWHERE.get(con)
    if elsewhere is None or customers.height == 0:
        return score(customers)
    return elsewhere.score(customers, score, schema)


def append_sql(con: duckdb.DuckDBPyConnection, table: str, name: str, **params: Any) -> None:
    """Add the rows of ``sql/<name>.sql`` to ``table`` (created by the first call), on the
    connection's engine like ``materialize_sql``."""
    if not table_exists(con, table):
        materialize_sql(con, table, name, **params)
    elif con in _STAGES_ELSEWHERE:
        materialize_sql(con, "appended_rows", name, temporary=True, **params)
        con.execute(f"insert into {table} select * from appended_rows").fetchall()
        con.execute("drop table appended_rows")
    else:
        text = sql_text(name)
        con.execute(f"insert into {table} {text}", used_params(text, params)).fetchall()


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


def record_step_run(
    con: duckdb.DuckDBPyConnection,
    *,
    run_id: str,
    step: str,
    started_at: datetime | None,
    seconds: float | None,
    rows: int | None,
    outcome: str,
) -> None:
    """Keep one step's timing in ``ops.step_runs``; a retried step keeps its last attempt."""
    con.execute("delete from ops.step_runs where run_id = ? and step = ?", [run_id, step])
    con.execute(
        "insert into ops.step_runs values (?, ?, ?, ?, ?, ?)",
        [run_id, step, started_at, seconds, rows, outcome],
    ).fetchall()


# ops.engine_stages' phases (its ``<phase>_seconds`` columns), in the words readers print
ENGINE_STAGE_PHASES = {
    "spark": "Spark's own work",
    "copy": "copies to the lake",
    "load": "loads into DuckDB",
    "input_check": "input checks",
    "keep": "keeping outputs in Spark",
    "translate": "translation",
}


def engine_stage_seconds(
    con: duckdb.DuckDBPyConnection, run_id: str, by: Literal["step", "stage"]
) -> dict[str, dict[str, float]]:
    """One run's ``ops.engine_stages`` summed by step or by stage: for each, how many stages
    ran (``stages``) and their seconds by phase (``ENGINE_STAGE_PHASES``)."""
    sums = ", ".join(f"sum({phase}_seconds)" for phase in ENGINE_STAGE_PHASES)
    return {
        key: {"stages": count, **dict(zip(ENGINE_STAGE_PHASES, seconds, strict=True))}
        for key, count, *seconds in con.execute(
            f"select {by}, count(*), {sums} from ops.engine_stages where run_id = ? group by {by}",
            [run_id],
        ).fetchall()
    }


def total_engine_seconds(groups: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The stage count and seconds by phase over ``engine_stage_seconds``' groups."""
    return {
        key: sum(group[key] for group in groups.values())
        for key in ("stages", *ENGINE_STAGE_PHASES)
    }


def seconds_beside_spark(phases: Mapping[str, float]) -> float:
    """What running beside the DuckDB file cost: every phase but Spark's own work."""
    return sum(phases[phase] for phase in ENGINE_STAGE_PHASES if phase != "spark")


def record_engine_stages(
    con: duckdb.DuckDBPyConnection, *, run_id: str, step: str, stages: Sequence[Any]
) -> None:
    """Keep the SQL stages one step ran on Spark (``features.spark_sql.StageTiming``, in order)
    in ``ops.engine_stages``; a retried step keeps its last attempt."""
    con.execute("delete from ops.engine_stages where run_id = ? and step = ?", [run_id, step])
    if not stages:
        return
    con.executemany(
        "insert into ops.engine_stages values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            [
                run_id,
                step,
                number,
                stage.stage,
                stage.table,
                list(stage.tables_copied),
                stage.input_check_seconds,
                stage.copy_seconds,
                stage.translate_seconds,
                stage.spark_seconds,
                stage.load_seconds,
                stage.keep_seconds,
            ]
            for number, stage in enumerate(stages, start=1)
        ],
    )


def parquet_select(con: duckdb.DuckDBPyConnection, query: str) -> str:
    """``query``'s columns for a Parquet file every reader takes alike (Spark included): the
    types Parquet has no twin for widened, hugeint to decimal(38), unsigned integers to bigint,
    JSON to text (DuckDB writes hugeint as a double, losing digits)."""
    select = []
    for column, data_type, *_ in con.execute(f"describe {query}").fetchall():
        name = '"' + column.replace('"', '""') + '"'
        if data_type == "HUGEINT":
            select.append(f"{name}::decimal(38, 0) as {name}")
        elif data_type == "JSON":
            select.append(f"{name}::varchar as {name}")
        elif data_type.startswith("U") and data_type.endswith("INT"):
            select.append(f"{name}::bigint as {name}")
        else:
            select.append(name)
    return ", ".join(select)


def fingerprint(con: duckdb.DuckDBPyConnection, query: str) -> str:
    """A cheap, order-independent fingerprint of a query's rows, to tie a fit to its data."""
    rows = con.sql(f"select count(*), sum(hash(q))::varchar from ({query}) q").fetchall()[0]
    return f"{rows[0]}:{rows[1]}"


# --- one run per warehouse ---------------------------------------------------------------------

RUN_LOCK_SUFFIX = ".run.lock"
# Tables whose rows of a killed run stay: they describe files whose rows were committed (the rows
# stay, so their record does too), a failure that was reported, or the steps it got through.
RUN_RECORDS_KEPT = frozenset(
    {
        "ops.run_status",
        "ops.run_failures",
        "ops.step_runs",
        "ops.engine_stages",
        "ops.loaded_files",
        "ops.source_files",
        "quarantine.rejected_rows",
    }
)


def run_lock_path(warehouse: str | Path) -> Path:
    """``<warehouse>.run.lock`` beside the warehouse file: every process names the same file."""
    path = Path(warehouse).resolve()
    return path.with_name(path.name + RUN_LOCK_SUFFIX)


@dataclass(frozen=True)
class RunLockHolder:
    """Who holds a warehouse's run lock, as the holder wrote it into the lock file."""

    run_id: str
    pid: int
    host: str
    started_by: str
    started_at: str

    def describe(self) -> str:
        return (
            f"run {self.run_id} (pid {self.pid} on {self.host}, {self.started_by}, "
            f"started {self.started_at})"
        )


class WarehouseBusyError(RuntimeError):
    """Another run holds the warehouse's run lock."""

    def __init__(
        self, warehouse: str | Path, holder: RunLockHolder | None, waited_seconds: float = 0.0
    ) -> None:
        self.warehouse = str(warehouse)
        self.holder = holder
        who = holder.describe() if holder else "another run that is just starting"
        waited = f" (still after waiting {waited_seconds:.0f}s)" if waited_seconds else ""
        super().__init__(
            f"warehouse {warehouse} is in use by {who}{waited}: one run per warehouse at a time"
        )


def read_run_lock_holder(warehouse: str | Path) -> RunLockHolder | None:
    """What the last holder wrote into the lock file; None if nothing readable is there.

    Only meaningful while the lock is held: a released lock file is emptied, a killed holder's
    text stays until the next run takes the lock.
    """
    try:
        text = run_lock_path(warehouse).read_text()
        return RunLockHolder(**json.loads(text))
    except (OSError, ValueError, TypeError):
        return None


class RunLock:
    """An exclusive ``flock`` on ``<warehouse>.run.lock``, held by this process for one run.

    The kernel drops a flock when the last descriptor of its open file closes, which happens
    when the process ends however it ends (SIGKILL and out-of-memory kills included): a dead
    run never leaves the warehouse locked, and no stale-lock cleanup is needed. Taken again in
    the same process for the same run (the CLI takes it before Dagster starts the run, the
    Warehouse resource inside the run) it is counted, not locked twice: a second open file of
    the same process would be refused by flock.
    """

    def __init__(self, path: Path, descriptor: int, holder: RunLockHolder) -> None:
        self.path = path
        self.holder = holder
        self._descriptor = descriptor
        self._depth = 1

    def release(self) -> None:
        with _HELD_GUARD:
            self._depth -= 1
            if self._depth > 0:
                return
            _HELD.pop(self.path, None)
        os.ftruncate(self._descriptor, 0)
        os.close(self._descriptor)  # closing drops the flock


_HELD: dict[Path, RunLock] = {}
_HELD_GUARD = threading.Lock()


def _describe_process() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:2]]) if sys.argv else "python"


def _holder_of_busy_lock(warehouse: str | Path) -> RunLockHolder | None:
    # the holder writes right after locking: an empty file means it is between the two
    for _ in range(5):
        holder = read_run_lock_holder(warehouse)
        if holder is not None:
            return holder
        time.sleep(0.1)
    return None


def acquire_run_lock(
    warehouse: str | Path,
    run_id: str,
    *,
    started_by: str | None = None,
    wait_seconds: float = 0.0,
    on_wait: Callable[[RunLockHolder | None], None] | None = None,
    poll_seconds: float = 0.5,
) -> RunLock:
    """Take the warehouse's run lock for ``run_id``, or raise WarehouseBusyError naming its holder.

    With ``wait_seconds`` the lock is tried again every ``poll_seconds`` until then;
    ``on_wait`` is told once who is being waited for.
    """
    path = run_lock_path(warehouse)
    with _HELD_GUARD:
        held = _HELD.get(path)
        if held is not None:
            if held.holder.run_id != run_id:
                raise WarehouseBusyError(warehouse, held.holder)
            held._depth += 1
            return held
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_seconds
    told = False
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = _holder_of_busy_lock(warehouse)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                os.close(descriptor)
                raise WarehouseBusyError(warehouse, holder, wait_seconds) from None
            if on_wait is not None and not told:
                on_wait(holder)
                told = True
            time.sleep(min(poll_seconds, remaining))
    holder = RunLockHolder(
        run_id=run_id,
        pid=os.getpid(),
        host=socket.gethostname(),
        started_by=started_by or _describe_process(),
        started_at=datetime.now().isoformat(sep=" ", timespec="seconds"),
    )
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, json.dumps(asdict(holder)).encode(), 0)
    lock = RunLock(path, descriptor, holder)
    with _HELD_GUARD:
        _HELD[path] = lock
    return lock


def holds_run_lock(warehouse: str | Path, run_id: str) -> bool:
    """Whether this process holds the warehouse's run lock for ``run_id``."""
    with _HELD_GUARD:
        held = _HELD.get(run_lock_path(warehouse))
    return held is not None and held.holder.run_id == run_id


@contextmanager
def hold_run_lock(
    warehouse: str | Path,
    run_id: str,
    *,
    started_by: str | None = None,
    wait_seconds: float = 0.0,
    on_wait: Callable[[RunLockHolder | None], None] | None = None,
) -> Iterator[RunLock]:
    """The run lock for the duration of a ``with`` block (see acquire_run_lock)."""
    lock = acquire_run_lock(
        warehouse, run_id, started_by=started_by, wait_seconds=wait_seconds, on_wait=on_wait
    )
    try:
        yield lock
    finally:
        lock.release()


def begin_run(con: duckdb.DuckDBPyConnection, run_id: str, pid: int) -> list[str]:
    """Record ``run_id`` as running; mark runs that never ended as killed. Returns those runs.

    Only the holder of the run lock calls this, so no other run is alive: another run still
    'running' is a process that died before it could end. Its rows in run-keyed tables (as-of
    date, model fits, an unfinished publication, history rows) are deleted, so a half run never
    passes for a finished one; what it loaded stays with the rows it committed
    (RUN_RECORDS_KEPT). A run that died after it published keeps its rows: readers have them.
    """
    now = datetime.now()
    with transaction(con):
        orphans = [
            row[0]
            for row in con.execute(
                "select run_id from ops.run_status where status = 'running' and run_id <> ? "
                "order by started_at",
                [run_id],
            ).fetchall()
        ]
        published = {
            row[0]
            for row in con.execute(
                "select run_id from ops.publications where size_bytes is not null"
            ).fetchall()
        }
        unfinished = [orphan for orphan in orphans if orphan not in published]
        if unfinished:
            for table in _run_keyed_tables(con):
                if table not in RUN_RECORDS_KEPT:
                    con.execute(
                        f"delete from {table} where list_contains(?, run_id)", [unfinished]
                    ).fetchall()
        for orphan in orphans:
            detail = (
                "stopped after publishing; its results stand"
                if orphan in published
                else "stopped before it ended; its run-keyed rows were removed at the next run"
            )
            con.execute(
                "update ops.run_status set status = 'killed', ended_at = ?, detail = ? "
                "where run_id = ?",
                [now, detail, orphan],
            ).fetchall()
        con.execute(
            "insert or replace into ops.run_status values (?, 'running', ?, ?, null, null)",
            [run_id, pid, now],
        ).fetchall()
    return orphans


def end_run(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """The run ended in its own process (succeeded or failed): it is no orphan."""
    con.execute(
        "update ops.run_status set status = 'ended', ended_at = ? "
        "where run_id = ? and status = 'running'",
        [datetime.now(), run_id],
    ).fetchall()


def _run_keyed_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [
        row[0]
        for row in con.sql(
            """select c.table_schema || '.' || c.table_name
               from information_schema.columns c
               join information_schema.tables t
                 on t.table_catalog = c.table_catalog and t.table_schema = c.table_schema
                and t.table_name = c.table_name
               where c.column_name = 'run_id' and t.table_type = 'BASE TABLE'
                 and c.table_catalog = current_database()
               order by 1"""
        ).fetchall()
    ]
