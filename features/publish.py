"""Publishing: what leaves the working warehouse, and how.

DuckDB lets one process write a file, or many processes read it, never both. Readers therefore
never open the working warehouse: they open the published snapshot, a separate file that no
process ever writes in place. Publishing writes a new file next to it and renames it over the
old one (``os.replace`` is atomic on POSIX and Windows), so a reader opens either the previous
snapshot or the new one, whole, and never meets a lock.

The snapshot holds what readers need and nothing else (``PUBLISHED_TABLES``, the one list):
marts, scores, evaluations, segment and history tables, and the bookkeeping ``crm-intel status``
reads. Raw, staging and quarantined rows stay in the working warehouse; of the contacts only
those who gave marketing consent leave it, and tax ids leave it nowhere. The selected tables are
written into a new DuckDB file (``create table ... as select``), never copied as file bytes: a
copy with tables dropped afterwards would still carry their old blocks. The new file is then
opened read-only and its tables and row counts compared with the selection before it is
swapped in, so a bad copy fails the run instead of reaching readers.

With the SQL stages on Spark (``[engine] kind = "spark"``) the same selection is also written
to the lake, for readers on the cluster: one Parquet folder per table under
``<lake>/published/<version>/<schema>/<table>``, with a ``_publication.json`` that names the run,
the as-of date and each table's rows. A version is written and checked under a temporary name,
then ``<lake>/published/current`` (a symbolic link, swapped with ``os.replace``) points at it:
a reader that opens ``current`` sees one whole publication. The version before stays for
readers still in it; older ones are deleted.

Exports (``features.spreadsheet``) are the other way data leaves: CSV cells that a spreadsheet
would evaluate as formulas are neutralised by ``neutralise_formulas`` here.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import date, datetime
from fnmatch import fnmatchcase
from pathlib import Path

import duckdb
import polars as pl

from features.warehouse import parquet_select

PUBLISHED_FOLDER = "published"
TEMP_MARKER = ".tmp-"
SNAPSHOT_ALIAS = "published_snapshot"
# the lake's published tables: <lake>/published/<version>/..., current -> the newest version
LAKE_PUBLISHED = "published"
LAKE_CURRENT = "current"
LAKE_MANIFEST = "_publication.json"
# a run's scratch inside the lake (features.spark_sql): copies of the ledger, stage results
LAKE_WORK = "_work"


class PublishError(RuntimeError):
    """The snapshot could not be written or did not match the working warehouse."""


@dataclass(frozen=True)
class PublishedTable:
    """One rule of the published selection: which tables, rows and columns leave, and for whom.

    ``pattern`` is ``schema.table`` in the working warehouse (``*`` matches any part of a name);
    the first rule that matches a table decides it. Without ``columns`` every column leaves
    except ``WITHHELD_COLUMNS``; ``rows`` is a SQL condition on the rows that leave.
    """

    pattern: str
    reader: str
    columns: tuple[str, ...] | None = None
    rows: str | None = None
    published_as: str | None = None


# The published snapshot, table by table. Everything not listed stays in the working warehouse:
# raw.* and staging.* (every delivered row, contacts without consent included), quarantine
# contents, feature tables, ops.loaded_files (validation samples of delivered values).
PUBLISHED_TABLES: tuple[PublishedTable, ...] = (
    PublishedTable(
        "staging.contacts",
        "`crm-intel segments export`: the campaign list, consenting contacts only",
        columns=(
            "contact_id",
            "customer_id",
            "first_name",
            "last_name",
            "email",
            "phone",
            "role",
            "consent_updated_at",
        ),
        rows="marketing_consent",
        published_as="marts.consenting_contacts",
    ),
    PublishedTable(
        "marts.*",
        "everyone: customer 360, segments, receivables, portfolio risk, alerts, and the history "
        "tables keyed by as-of date (customer_360_history, segment_migration, segment_moves)",
    ),
    PublishedTable("models.*_scores", "analysts: every customer's RFM, CLV, churn, risk scores"),
    PublishedTable("models.*_evaluation", "analysts: how each scorer did on the holdout"),
    PublishedTable("models.*_reliability", "analysts: predicted against observed rates"),
    PublishedTable("models.clv_*", "analysts: the CLV backtest and its tracking"),
    PublishedTable("models.model_runs", "analysts, notebooks: every fit's parameters, metrics"),
    PublishedTable("ops.runs", "readers and `status`: which run and as-of date a snapshot is"),
    PublishedTable("ops.publications", "readers and `status`: what was published when"),
    PublishedTable("ops.run_failures", "`status`: recent failed runs"),
    PublishedTable("ops.data_quality", "`report`: rows staged and quarantined per file, counts"),
    PublishedTable("features.invoice_settlement_state", "`status`: how settlement was refreshed"),
    PublishedTable(
        "quarantine.rejected_rows",
        "`status` while a run writes: rejected rows per table and reason, never their content",
        columns=("run_id", "staging_table", "reason", "rejected_at"),
    ),
)

# Identifiers no reader needs: every published table joins on customer_id, and tax ids only
# serve to match bureau reports to accounts, which happens inside the run.
WITHHELD_COLUMNS = frozenset({"tax_id"})


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


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _tables(con: duckdb.DuckDBPyConnection, database: str) -> list[str]:
    return [
        f"{schema}.{table}"
        for schema, table in con.execute(
            "select schema_name, table_name from duckdb_tables() "
            "where database_name = ? and not internal order by 1, 2",
            [database],
        ).fetchall()
    ]


def _table_row_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    counts = {}
    for name in _tables(con, con.sql("select current_database()").fetchall()[0][0]):
        schema, table = name.split(".", 1)
        counts[name] = con.sql(f"select count(*) from {schema}.{_quote(table)}").fetchall()[0][0]
    return counts


def published_selection(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """The snapshot's tables, each with the query over the working warehouse that fills it."""
    database = con.sql("select current_database()").fetchall()[0][0]
    selection: dict[str, str] = {}
    for name in _tables(con, database):
        rule = next((r for r in PUBLISHED_TABLES if fnmatchcase(name, r.pattern)), None)
        if rule is None:
            continue
        schema, table = name.split(".", 1)
        source = f"{_quote(database)}.{schema}.{_quote(table)}"
        present = [
            row[0]
            for row in con.execute(
                "select column_name from duckdb_columns() where database_name = ? "
                "and schema_name = ? and table_name = ? order by column_index",
                [database, schema, table],
            ).fetchall()
        ]
        if rule.columns is not None:
            missing = [column for column in rule.columns if column not in present]
            if missing:
                raise PublishError(f"{name} has no column {', '.join(missing)} to publish")
            columns = list(rule.columns)
        else:
            columns = [column for column in present if column not in WITHHELD_COLUMNS]
        published_as = rule.published_as or name
        if published_as in selection:
            raise PublishError(f"two tables would be published as {published_as}")
        query = f"select {', '.join(map(_quote, columns))} from {source}"
        selection[published_as] = query + (f" where {rule.rows}" if rule.rows else "")
    return selection


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


def _write_selection(
    con: duckdb.DuckDBPyConnection, selection: dict[str, str], temporary: Path
) -> None:
    """Fill a new DuckDB file with the selected rows, checkpointed and closed."""
    path = str(temporary).replace("'", "''")
    con.execute(f"attach '{path}' as {SNAPSHOT_ALIAS}").fetchall()
    try:
        for schema in sorted({name.split(".", 1)[0] for name in selection}):
            con.execute(f"create schema {SNAPSHOT_ALIAS}.{schema}").fetchall()
        for name, query in selection.items():
            schema, table = name.split(".", 1)
            con.execute(
                f"create table {SNAPSHOT_ALIAS}.{schema}.{_quote(table)} as {query}"
            ).fetchall()
        con.execute(f"checkpoint {SNAPSHOT_ALIAS}").fetchall()
    finally:
        con.execute(f"detach database if exists {SNAPSHOT_ALIAS}").fetchall()


def publish_snapshot(
    con: duckdb.DuckDBPyConnection,
    warehouse: Path,
    target: Path,
    *,
    run_id: str,
    as_of_date: date,
    lake: Path | None = None,
    keep_previous_lake_version: bool = True,
) -> Publication:
    """Write the published selection of the working warehouse (open on ``con``) to ``target``,
    and with ``lake`` the same tables to the lake (``write_lake_version``).

    The publication is recorded in ``ops.publications`` before the copy, so the snapshot carries
    its own record: a reader can tell which run and as-of date it is looking at. The lake's
    version is written and checked before the snapshot is swapped in, and made current right
    after, so a failure leaves both as they were. ``keep_previous_lake_version=False`` deletes
    every other version (an erasure: no version may still hold the erased).
    """
    if target.resolve() == warehouse.resolve():
        raise PublishError(f"the snapshot path {target} is the working warehouse itself")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    temporary = target.with_name(f"{target.name}{TEMP_MARKER}{run_id}")
    lake_version = None
    published_at = datetime.now()
    con.execute("delete from ops.publications where run_id = ?", [run_id]).fetchall()
    con.execute(
        "insert into ops.publications values (?, ?, ?, null, null, ?)",
        [run_id, as_of_date, str(target), published_at],
    ).fetchall()
    try:
        selection = published_selection(con)
        expected = {
            name: con.sql(f"select count(*) from ({query})").fetchall()[0][0]
            for name, query in selection.items()
        }
        if lake is not None:
            lake_version = write_lake_version(
                con, selection, expected, lake, run_id, as_of_date, published_at
            )
        _write_selection(con, selection, temporary)
        if Path(f"{temporary}.wal").exists():
            raise PublishError(f"{temporary}.wal is left after the checkpoint: the copy is open")
        _fsync(temporary)
        with duckdb.connect(str(temporary), read_only=True) as snapshot:
            copied = _table_row_counts(snapshot)
        if copied != expected:
            differing = sorted(
                name
                for name in expected.keys() | copied.keys()
                if expected.get(name) != copied.get(name)
            )
            raise PublishError(f"snapshot differs from the published selection in {differing[:5]}")
        size = temporary.stat().st_size
        os.replace(temporary, target)
        _fsync(target.parent)
        if lake_version is not None:
            make_lake_version_current(lake_version, keep_previous=keep_previous_lake_version)
    except BaseException:
        if lake_version is not None and not _is_current(lake_version):
            shutil.rmtree(lake_version, ignore_errors=True)
        temporary.unlink(missing_ok=True)
        Path(f"{temporary}.wal").unlink(missing_ok=True)
        con.execute("delete from ops.publications where run_id = ?", [run_id]).fetchall()
        raise
    # size and table count go to the working record only: the snapshot is already sealed
    con.execute(
        "update ops.publications set size_bytes = ?, tables = ? where run_id = ?",
        [size, len(expected), run_id],
    ).fetchall()
    return Publication(run_id, as_of_date, target, size, len(expected), published_at)


def write_lake_version(
    con: duckdb.DuckDBPyConnection,
    selection: dict[str, str],
    expected: dict[str, int],
    lake: Path,
    run_id: str,
    as_of_date: date,
    published_at: datetime,
) -> Path:
    """Write the published selection as a new version folder of ``<lake>/published``, each table
    one Parquet folder, and check its row counts; it is not current yet."""
    published = lake / LAKE_PUBLISHED
    published.mkdir(parents=True, exist_ok=True)
    for stale in published.glob(f"{TEMP_MARKER}*"):  # a killed run's half-written version
        shutil.rmtree(stale, ignore_errors=True)
    stamp = published_at.strftime("%Y%m%dT%H%M%S%f")
    temporary = published / f"{TEMP_MARKER}{stamp}"
    try:
        for name, query in selection.items():
            folder = temporary / name.replace(".", "/")
            folder.mkdir(parents=True)
            file = str(folder / "part-0.parquet").replace("'", "''")
            con.execute(
                f"copy (select {parquet_select(con, f'({query})')} from ({query})) "
                f"to '{file}' (format parquet)"
            ).fetchall()
        written = {
            name: con.execute(
                "select count(*) from read_parquet(?)",
                [str(temporary / name.replace(".", "/") / "*.parquet")],
            ).fetchall()[0][0]
            for name in selection
        }
        if written != expected:
            differing = sorted(name for name in expected if expected[name] != written.get(name))
            raise PublishError(f"the lake's tables differ from the selection in {differing[:5]}")
        manifest = {
            "run_id": run_id,
            "as_of_date": as_of_date.isoformat(),
            "published_at": published_at.isoformat(),
            "tables": {
                name: {"path": name.replace(".", "/"), "rows": rows}
                for name, rows in written.items()
            },
        }
        (temporary / LAKE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        version = published / f"{stamp}-{run_id}"
        os.replace(temporary, version)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return version


def _is_current(version: Path) -> bool:
    current = version.parent / LAKE_CURRENT
    return current.is_symlink() and os.readlink(current) == version.name


def make_lake_version_current(version: Path, *, keep_previous: bool = True) -> None:
    """Point ``<lake>/published/current`` at ``version`` in one step; delete the versions older
    than the one it pointed at before (all others unless ``keep_previous``)."""
    published = version.parent
    current = published / LAKE_CURRENT
    previous = os.readlink(current) if current.is_symlink() else None
    link = published / f"{TEMP_MARKER}{LAKE_CURRENT}"
    link.unlink(missing_ok=True)
    link.symlink_to(version.name, target_is_directory=True)
    os.replace(link, current)
    _fsync(published)
    kept = {version.name} | ({previous} if keep_previous and previous else set())
    for folder in published.iterdir():
        if folder.is_dir() and not folder.is_symlink() and folder.name not in kept:
            shutil.rmtree(folder, ignore_errors=True)


def lake_current(lake: Path) -> Path:
    """The folder lake readers open: the current version's tables, ``<schema>/<table>``."""
    return lake / LAKE_PUBLISHED / LAKE_CURRENT


def remove_lake_scratch(lake: Path) -> None:
    """Delete a run's scratch from the lake (its copies of the ledger; rebuilt by every run)."""
    shutil.rmtree(lake / LAKE_WORK, ignore_errors=True)


def remove_lake_publications(lake: Path) -> None:
    """Delete every published version and the run's scratch from the lake."""
    remove_lake_scratch(lake)
    shutil.rmtree(lake / LAKE_PUBLISHED, ignore_errors=True)  # the link inside is not followed


def lake_publication(lake: Path) -> dict | None:
    """The manifest of the lake's current publication, None if there is none."""
    manifest = lake_current(lake) / LAKE_MANIFEST
    return json.loads(manifest.read_text()) if manifest.is_file() else None


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


def newer_snapshot_reason(snapshot: Path, as_of_date: date) -> str | None:
    """Why a run as of ``as_of_date`` must not replace ``snapshot``; None when it may.

    Readers expect the newest as-of date: a rerun or backfill of an earlier date fills the
    working warehouse and its history, and leaves the newer snapshot where it is. A file there
    that is no snapshot (unreadable, or without a publication) may be replaced.
    """
    try:
        published = published_as_of(snapshot)
    except duckdb.Error:
        return None
    if published is None or published[1] <= as_of_date:
        return None
    run_id, published_date, _ = published
    return (
        f"not published: {snapshot} holds as of {published_date} (run {run_id}), newer than this "
        f"run's {as_of_date}; readers keep {published_date}. `crm-intel run --publish` "
        "(or [publish] replace_newer = true) replaces it"
    )


def is_duckdb_file(path: Path) -> bool:
    """True when ``path`` is a DuckDB database (its header carries the magic bytes at 8)."""
    try:
        with path.open("rb") as handle:
            return handle.read(12)[8:12] == b"DUCK"
    except OSError:
        return False


# A text cell starting with one of these is evaluated by Excel, LibreOffice or Google Sheets
# (OWASP "CSV injection"); tab and carriage return hide a formula behind whitespace.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_formulas(frame: pl.DataFrame) -> pl.DataFrame:
    """Prefix ``'`` to every text cell a spreadsheet would evaluate; numbers stay numbers."""
    triggered = "^[" + "".join("\\" + c if c in "-\\]^" else c for c in FORMULA_TRIGGERS) + "]"
    return frame.with_columns(
        pl.when(pl.col(name).str.contains(triggered))
        .then(pl.lit("'") + pl.col(name))
        .otherwise(pl.col(name))
        .alias(name)
        for name, dtype in frame.schema.items()
        if dtype == pl.String
    )
