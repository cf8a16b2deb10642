"""Publishing: a complete read-only copy of the warehouse, swapped in by one atomic rename.

DuckDB lets one process write a file, or many processes read it, never both. Readers therefore
never open the working warehouse: they open the published snapshot, a separate file that no
process ever writes in place. Publishing writes a new file next to it and renames it over the
old one (``os.replace`` is atomic on POSIX and Windows), so a reader opens either the previous
snapshot or the new one, whole, and never meets a lock.

The copy is the working file itself, taken right after a CHECKPOINT: a checkpoint writes every
committed change into the file and empties the write-ahead log, and the publishing connection
is the only one open on it (one writer, the DuckDB pool). Measured against DuckDB's own
``COPY FROM DATABASE`` it is 100x faster (see BENCHMARKS.md); the copy is then opened
read-only and its tables and row counts compared with the working warehouse before it is
swapped in, so a bad copy fails the run instead of reaching readers.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import duckdb

PUBLISHED_FOLDER = "published"
TEMP_MARKER = ".tmp-"


class PublishError(RuntimeError):
    """The snapshot could not be written or did not match the working warehouse."""


@dataclass(frozen=True)
class Publication:
    run_id: str
    as_of_date: date
    snapshot_path: Path
    size_bytes: int
    tables: int
    published_at: datetime


def default_snapshot_path(warehouse: Path) -> Path:
    """``published/<file name>`` beside the working warehouse."""
    return warehouse.parent / PUBLISHED_FOLDER / warehouse.name


def _table_row_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    tables = con.sql(
        "select schema_name, table_name from duckdb_tables() "
        "where database_name = current_database() and not internal order by 1, 2"
    ).fetchall()
    return {
        f"{schema}.{table}": con.sql(f'select count(*) from {schema}."{table}"').fetchall()[0][0]
        for schema, table in tables
    }


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Delete half-written snapshots a killed run left beside ``target``."""
    stale = sorted(target.parent.glob(f"{target.name}{TEMP_MARKER}*"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def publish_snapshot(
    con: duckdb.DuckDBPyConnection,
    warehouse: Path,
    target: Path,
    *,
    run_id: str,
    as_of_date: date,
) -> Publication:
    """Copy the working warehouse (open on ``con``) to ``target`` atomically.

    The publication is recorded in ``ops.publications`` before the copy, so the snapshot carries
    its own record: a reader can tell which run and as-of date it is looking at.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    temporary = target.with_name(f"{target.name}{TEMP_MARKER}{run_id}")
    published_at = datetime.now()
    con.execute("delete from ops.publications where run_id = ?", [run_id]).fetchall()
    con.execute(
        "insert into ops.publications values (?, ?, ?, null, null, ?)",
        [run_id, as_of_date, str(target), published_at],
    ).fetchall()
    try:
        con.execute("checkpoint").fetchall()
        wal = Path(f"{warehouse}.wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise PublishError(
                f"{wal} still holds changes after CHECKPOINT: another connection is writing the "
                "working warehouse, so a file copy would miss them"
            )
        expected = _table_row_counts(con)
        shutil.copyfile(warehouse, temporary)
        _fsync(temporary)
        with duckdb.connect(str(temporary), read_only=True) as snapshot:
            copied = _table_row_counts(snapshot)
        if copied != expected:
            differing = sorted(
                name
                for name in expected.keys() | copied.keys()
                if expected.get(name) != copied.get(name)
            )
            raise PublishError(f"snapshot differs from the working warehouse in {differing[:5]}")
        size = temporary.stat().st_size
        os.replace(temporary, target)
        _fsync(target.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        con.execute("delete from ops.publications where run_id = ?", [run_id]).fetchall()
        raise
    # size and table count go to the working record only: the snapshot is already sealed
    con.execute(
        "update ops.publications set size_bytes = ?, tables = ? where run_id = ?",
        [size, len(expected), run_id],
    ).fetchall()
    return Publication(run_id, as_of_date, target, size, len(expected), published_at)


def published_as_of(snapshot: Path) -> tuple[str, date, datetime] | None:
    """(run_id, as_of_date, published_at) of the snapshot at ``snapshot``, None if there is none."""
    if not snapshot.is_file():
        return None
    with duckdb.connect(str(snapshot), read_only=True) as con:
        rows = con.sql(
            "select run_id, as_of_date, published_at from ops.publications "
            "order by published_at desc limit 1"
        ).fetchall()
    return rows[0] if rows else None
