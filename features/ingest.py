"""Inbox → ``raw.*`` → typed ``staging.*`` with row-level quarantine.

Every row read from a file is either in staging or in ``quarantine.rejected_rows`` with its
file, line and reason: counts reconcile (raw = staged + quarantined). A problem with a whole
file (unreadable, missing a required column) raises :class:`InboxError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from features.contracts import Column, Contract

SUPPORTED_SUFFIXES = (".csv", ".parquet", ".xlsx")
LINEAGE_COLUMNS = ("source_file", "line_number")


class InboxError(ValueError):
    """A whole input file cannot be used; the message names the file (and column)."""


@dataclass(frozen=True)
class StagingResult:
    table: str
    files: tuple[str, ...]
    raw_rows: int
    staged_rows: int
    quarantined_rows: int
    reasons: dict[str, int]

    @property
    def present(self) -> bool:
        return bool(self.files)


def discover_files(inbox: Path, contract: Contract) -> list[Path]:
    """Files of a group: inbox paths starting with the group prefix, in name order.

    Name order is load order, so a later delivery (``invoices_2024-06.csv`` after
    ``invoices_2024-05.csv``) wins when the same key appears twice.
    """
    folder, stem = contract.group.split("/")
    directory = inbox / folder
    if not directory.is_dir():
        return []
    return sorted(
        path
        for path in directory.rglob(f"{stem}*")
        if path.is_file() and path.suffix.lower() in SUPPORTED_SUFFIXES
    )


def read_raw_file(path: Path, contract: Contract, inbox: Path) -> pl.DataFrame:
    """Read one export as text columns plus its lineage (file relative to inbox, 1-based line)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pl.read_csv(path, infer_schema=False, encoding="utf8")
        elif suffix == ".parquet":
            frame = pl.read_parquet(path)
        else:
            frame = pl.read_excel(path, engine="openpyxl", infer_schema_length=0)
    except Exception as error:
        raise InboxError(f"{path}: cannot be read as {suffix[1:]}: {error}") from error
    frame = frame.rename({name: name.strip().lower() for name in frame.columns})
    missing = [name for name in contract.required_columns if name not in frame.columns]
    if missing:
        raise InboxError(
            f"{path}: missing required column(s) {', '.join(missing)} "
            f"for {contract.group}; found {', '.join(frame.columns)}"
        )
    relative = str(path.relative_to(inbox)) if path.is_relative_to(inbox) else str(path)
    return frame.select(
        pl.lit(relative).alias("source_file"),
        (pl.int_range(pl.len(), dtype=pl.Int64) + 2).alias("line_number"),
        *[
            pl.col(name).cast(pl.String)
            if name in frame.columns
            else pl.lit(None, pl.String).alias(name)
            for name in contract.column_names
        ],
    )


def load_raw(con: duckdb.DuckDBPyConnection, inbox: Path, contract: Contract) -> list[Path]:
    """Replace ``raw.<table>`` with every row of the group's files (all text)."""
    files = discover_files(inbox, contract)
    frames = [read_raw_file(path, contract, inbox) for path in files]
    raw = (
        pl.concat(frames, how="vertical")
        if frames
        else pl.DataFrame(
            schema={name: pl.String for name in (*LINEAGE_COLUMNS, *contract.column_names)}
        ).with_columns(pl.col("line_number").cast(pl.Int64))
    )
    con.register("raw_frame", raw)
    try:
        con.execute(f"create or replace table raw.{contract.table} as select * from raw_frame")
    finally:
        con.unregister("raw_frame")
    return files


_SQL_TYPES = {
    "string": "varchar",
    "date": "date",
    "decimal": "decimal(18, 2)",
    "number": "double",
    "integer": "bigint",
    "boolean": "boolean",
}
_TRUE = "('true', 't', '1', 'yes', 'y')"
_FALSE = "('false', 'f', '0', 'no', 'n')"


def _typed_expression(column: Column) -> str:
    text = f"nullif(trim({column.name}), '')"
    if column.type == "string":
        return f"lower({text})" if column.allowed else text
    if column.type == "boolean":
        return (
            f"case when lower({text}) in {_TRUE} then true "
            f"when lower({text}) in {_FALSE} then false end"
        )
    return f"try_cast({text} as {_SQL_TYPES[column.type]})"


def _problem_expressions(column: Column) -> list[str]:
    """SQL expressions yielding 'reason:column' when the raw value breaks the contract."""
    text = f"nullif(trim({column.name}), '')"
    typed = _typed_expression(column)
    problems = []
    if column.required:
        problems.append(f"case when {text} is null then 'missing_required:{column.name}' end")
    bad_kind = {"date": "bad_date", "boolean": "bad_boolean"}.get(column.type, "bad_number")
    if column.type != "string":
        problems.append(
            f"case when {text} is not null and {typed} is null then '{bad_kind}:{column.name}' end"
        )
    if column.allowed:
        allowed = ", ".join(f"'{value}'" for value in column.allowed)
        problems.append(
            f"case when {text} is not null and {typed} not in ({allowed}) "
            f"then 'not_allowed:{column.name}' end"
        )
    if column.minimum is not None:
        problems.append(
            f"case when {typed} < {column.minimum} then 'negative_amount:{column.name}' end"
        )
    return problems


def typed_select(contract: Contract, source: str) -> str:
    """SELECT over a raw table: typed canonical columns plus the list of contract problems."""
    typed = ",\n    ".join(f"{_typed_expression(c)} as {c.name}" for c in contract.columns)
    problems = ",\n        ".join(p for c in contract.columns for p in _problem_expressions(c))
    record = ", ".join(f"{name} := {name}" for name in contract.column_names)
    return f"""
select
    source_file,
    line_number,
    {typed},
    list_filter([
        {problems}
    ], lambda problem: problem is not null) as problems,
    to_json(struct_pack({record})) as raw_record
from {source}"""


# Business rules that are not plain column types, applied to rows that passed the contract.
_NORMALISE: dict[str, dict[str, str]] = {
    "invoices": {
        "document_type": "coalesce(document_type, 'invoice')",
        # A credit note may arrive signed either way; we store it negative.
        "amount": "case when document_type = 'credit_note' then -abs(amount) else amount end",
    },
}


def build_staging(
    con: duckdb.DuckDBPyConnection, contract: Contract, run_id: str, files: list[Path]
) -> StagingResult:
    """Type ``raw.<table>`` into ``staging.<table>``; bad and superseded rows go to quarantine.

    Duplicate keys: the row from the latest file (name order), then the latest line, wins;
    the others are quarantined as ``duplicate_key`` so nothing disappears without a trace.
    """
    table = contract.table
    key = ", ".join(contract.key)
    normalise = _NORMALISE.get(table, {})
    final_columns = ", ".join(
        f"{normalise[name]} as {name}" if name in normalise else name
        for name in contract.column_names
    )
    con.execute(
        f"create or replace temp table typed_rows as {typed_select(contract, f'raw.{table}')}"
    )
    con.execute(
        f"""
        create or replace temp table ranked_rows as
        select *, row_number() over (
            partition by {key} order by source_file desc, line_number desc
        ) as key_rank
        from typed_rows where len(problems) = 0
        """
    )
    con.execute("delete from quarantine.rejected_rows where staging_table = ?", [table])
    con.execute(
        f"""
        insert into quarantine.rejected_rows
        select ?, ?, source_file, line_number, split_part(problems[1], ':', 1),
               array_to_string(problems, '; '), raw_record, now()
        from typed_rows where len(problems) > 0
        union all
        select ?, ?, source_file, line_number, 'duplicate_key',
               'superseded by a later row with the same {key}', raw_record, now()
        from ranked_rows where key_rank > 1
        """,
        [run_id, table, run_id, table],
    )
    con.execute(
        f"""
        create or replace table staging.{table} as
        select {final_columns}, source_file, line_number
        from ranked_rows where key_rank = 1
        order by {key}
        """
    )
    raw_rows = con.sql(f"select count(*) from raw.{table}").fetchall()[0][0]
    staged_rows = con.sql(f"select count(*) from staging.{table}").fetchall()[0][0]
    reasons = dict(
        con.execute(
            "select reason, count(*) from quarantine.rejected_rows where staging_table = ? "
            "group by reason order by 2 desc",
            [table],
        ).fetchall()
    )
    con.execute("drop table typed_rows")
    con.execute("drop table ranked_rows")
    return StagingResult(
        table=table,
        files=tuple(str(f) for f in files),
        raw_rows=raw_rows,
        staged_rows=staged_rows,
        quarantined_rows=sum(reasons.values()),
        reasons=reasons,
    )


def ingest_group(
    con: duckdb.DuckDBPyConnection, inbox: Path, contract: Contract, run_id: str
) -> StagingResult:
    """Load one file group end to end; a missing required source is an :class:`InboxError`."""
    files = load_raw(con, inbox, contract)
    if not files and contract.required_source:
        raise InboxError(
            f"no {contract.group}* file (.csv, .parquet or .xlsx) in inbox {inbox}: "
            "invoices are the one indispensable source"
        )
    return build_staging(con, contract, run_id, files)
