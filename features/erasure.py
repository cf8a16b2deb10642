"""Erasure of a customer or contact from every schema of the working warehouse, remembered.

Which tables hold a person is read from DuckDB's catalogue, not from a list, so a table added
later is covered the day it appears: every column named after an identifier
(``IDENTIFYING_COLUMNS``) is matched, wherever it is. A customer takes with it its contacts and
their e-mails, its tax ids, its invoices (and so the payments and settlements keyed by
``invoice_id``) and its integer ``customer_key``; a contact takes its e-mail. Quarantined rows
whose delivered record names any of these values go too, and free text elsewhere (validation
samples, failure messages) has the identifiers replaced by ``[erased]``.

The erasure is remembered in ``ops.erasures`` (what was erased, when, rows removed per table) and
``ops.erasure_keys`` (SHA-256 of each identifier, never the e-mail or tax id itself). Ingestion
checks every new file against those hashes (``tombstoned_lines_sql``): a matching row never
reaches raw or staging and is quarantined as ``erased`` with a redacted record.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb

from features.warehouse import ensure_layout, table_exists, transaction

ERASED_REASON = "erased"
REDACTED = "[erased]"
# The tombstones themselves: they keep the erased ids on purpose (hashed where personal).
ERASURE_TABLES = frozenset({"ops.erasures", "ops.erasure_keys"})
# Columns that name a person or a record only that person has, by column name, in any table.
IDENTIFYING_COLUMNS = ("customer_id", "contact_id", "email", "tax_id", "invoice_id", "customer_key")
SUBJECT_COLUMN = {"customer": "customer_id", "contact": "contact_id"}
# What else an erased subject takes with it, found in tables that hold both columns.
DERIVED_COLUMNS = {
    "customer": ("contact_id", "email", "tax_id", "invoice_id", "customer_key"),
    "contact": ("email",),
}
# Remembered (hashed) against re-delivery; customer_key is renumbered every run, so not kept.
TOMBSTONE_COLUMNS = ("customer_id", "contact_id", "email", "tax_id", "invoice_id")
# Replaced inside free text; invoice ids alone identify no one and are only matched as keys.
REDACTED_COLUMNS = ("customer_id", "contact_id", "email", "tax_id")
_TEXT_TYPES = ("VARCHAR", "JSON")


@dataclass(frozen=True)
class Erasure:
    """One erased customer or contact: what went, from where, and which files delivered it."""

    erasure_id: str
    kind: str
    subject_id: str
    erased_at: datetime
    rows_removed: dict[str, int]
    redacted: dict[str, int]
    source_files: tuple[str, ...]


def key_hash_sql(expression: str) -> str:
    """The tombstone hash of an identifier: case and surrounding blanks never matter."""
    return f"sha256(lower(trim(({expression})::varchar)))"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _tables(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
    """Every base table of the working database: ``schema.table`` -> {column: type}."""
    rows = con.sql(
        """select c.schema_name, c.table_name, c.column_name, c.data_type
           from duckdb_columns() c
           join duckdb_tables() t
             on t.database_name = c.database_name and t.schema_name = c.schema_name
            and t.table_name = c.table_name
           where c.database_name = current_database() and not t.temporary
           order by c.schema_name, c.table_name, c.column_index"""
    ).fetchall()
    tables: dict[str, dict[str, str]] = {}
    for schema, table, column, data_type in rows:
        tables.setdefault(f"{schema}.{table}", {})[column] = data_type
    return {name: columns for name, columns in tables.items() if name not in ERASURE_TABLES}


def _qualified(name: str) -> str:
    schema, table = name.split(".", 1)
    return f"{_identifier(schema)}.{_identifier(table)}"


def _match_condition(columns: Iterable[str]) -> str:
    """Rows of a table holding any erased value in one of its identifying columns."""
    return " or ".join(
        f"lower(trim({_identifier(c)}::varchar)) in "
        f"(select value from erased_values where key_column = '{c}')"
        for c in columns
    )


def _collect_values(
    con: duckdb.DuckDBPyConnection, tables: dict[str, dict[str, str]], kind: str, subject: str
) -> None:
    """Fill temp ``erased_values`` with the subject's id and every identifier tied to it."""
    subject_column = SUBJECT_COLUMN[kind]
    con.execute("create or replace temp table erased_values (key_column varchar, value varchar)")
    con.execute(
        "insert into erased_values values (?, lower(trim(?)))", [subject_column, subject]
    ).fetchall()
    for name, columns in tables.items():
        if subject_column not in columns:
            continue
        for derived in DERIVED_COLUMNS[kind]:
            if derived in columns:
                con.execute(
                    f"""insert into erased_values
                        select distinct '{derived}', lower(trim({_identifier(derived)}::varchar))
                        from {_qualified(name)}
                        where lower(trim({_identifier(subject_column)}::varchar)) = lower(trim(?))
                          and {_identifier(derived)} is not null""",
                    [subject],
                ).fetchall()
    con.execute(
        "create or replace temp table erased_values as select distinct * from erased_values"
    )


def _redaction_pattern(con: duckdb.DuckDBPyConnection) -> str | None:
    """A regular expression for the subject's identifiers as whole words of free text."""
    values = [
        row[0]
        for row in con.execute(
            "select value from erased_values where list_contains(?, key_column) "
            "order by length(value) desc",
            [list(REDACTED_COLUMNS)],
        ).fetchall()
        if row[0]
    ]
    if not values:
        return None
    alternatives = "|".join(re.escape(value) for value in values)
    return rf"(?i)(^|[^0-9a-z_])(?:{alternatives})($|[^0-9a-z_])"


def erase_subject(con: duckdb.DuckDBPyConnection, kind: str, subject_id: str) -> Erasure:
    """Remove one customer or contact from every table and record its tombstone.

    Runs inside the caller's transaction; set-based: one statement per table (and per text
    column for redaction), never a loop over rows.
    """
    if kind not in SUBJECT_COLUMN:
        raise ValueError(f"kind must be one of {sorted(SUBJECT_COLUMN)}, got {kind!r}")
    tables = _tables(con)
    _collect_values(con, tables, kind, subject_id)
    source_files: set[str] = set()
    rows_removed: dict[str, int] = {}
    for name, columns in tables.items():
        keys = [c for c in IDENTIFYING_COLUMNS if c in columns]
        if not keys:
            continue
        condition = _match_condition(keys)
        if name.startswith("raw.") and "source_file" in columns:
            source_files.update(
                row[0]
                for row in con.sql(
                    f"select distinct source_file from {_qualified(name)} where {condition}"
                ).fetchall()
            )
        removed = con.execute(f"delete from {_qualified(name)} where {condition}").fetchall()[0][0]
        if removed:
            rows_removed[name] = removed
    # a quarantined row is a delivered record: any erased value in it makes it the person's
    for name, columns in tables.items():
        if not name.startswith("quarantine."):
            continue
        for column, data_type in columns.items():
            if data_type != "JSON":
                continue
            removed = con.execute(
                f"""delete from {_qualified(name)} q where exists (
                        select 1 from erased_values e
                        where contains(lower(q.{_identifier(column)}::varchar),
                                       '"' || e.value || '"'))"""
            ).fetchall()[0][0]
            if removed:
                rows_removed[name] = rows_removed.get(name, 0) + removed
    redacted: dict[str, int] = {}
    pattern = _redaction_pattern(con)
    for name, columns in tables.items() if pattern else ():
        for column, data_type in columns.items():
            if data_type not in _TEXT_TYPES or column in IDENTIFYING_COLUMNS:
                continue
            quoted = _identifier(column)
            changed = con.execute(
                f"""update {_qualified(name)}
                    set {quoted} = regexp_replace({quoted}::varchar, $pattern,
                                                  '\\1{REDACTED}\\2', 'g')::{data_type}
                    where regexp_matches({quoted}::varchar, $pattern)""",
                {"pattern": pattern},
            ).fetchall()[0][0]
            if changed:
                redacted[f"{name}.{column}"] = changed
    erasure = Erasure(
        erasure_id=str(uuid.uuid4()),
        kind=kind,
        subject_id=subject_id,
        erased_at=datetime.now(),
        rows_removed=rows_removed,
        redacted=redacted,
        source_files=tuple(sorted(source_files)),
    )
    con.execute(
        "insert into ops.erasures values (?, ?, ?, ?, ?)",
        [
            erasure.erasure_id,
            kind,
            subject_id,
            erasure.erased_at,
            json.dumps({"rows_removed": rows_removed, "redacted": redacted}),
        ],
    ).fetchall()
    con.execute(
        f"""insert into ops.erasure_keys
            select distinct ?, key_column, {key_hash_sql("value")}
            from erased_values where list_contains(?, key_column)""",
        [erasure.erasure_id, list(TOMBSTONE_COLUMNS)],
    ).fetchall()
    con.execute("drop table erased_values")
    return erasure


def erase(
    con: duckdb.DuckDBPyConnection, customers: Sequence[str], contacts: Sequence[str] = ()
) -> list[Erasure]:
    """Erase customers, then contacts, in one transaction: all of them or, on error, none."""
    ensure_layout(con)
    with transaction(con):
        return [erase_subject(con, "customer", c) for c in customers] + [
            erase_subject(con, "contact", c) for c in contacts
        ]


def has_tombstones(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether anything was ever erased: ingestion skips the hashing when nothing was."""
    return (
        table_exists(con, "ops.erasure_keys")
        and con.sql("select count(*) from ops.erasure_keys").fetchall()[0][0] > 0
    )


def tombstoned_lines_sql(columns: Iterable[str], source: str) -> str | None:
    """A SELECT of ``load_id, source_file, line_number`` of the rows of ``source`` that match a
    tombstone (a semi-join per identifying column on its hash); None if no column can match."""
    available = set(columns)
    parts = [
        f"""select s.load_id, s.source_file, s.line_number, '{column}' as matched
            from {source} s
            semi join (select key_sha256 from ops.erasure_keys where key_column = '{column}') k
              on k.key_sha256 = {key_hash_sql(f"s.{column}")}"""
        for column in TOMBSTONE_COLUMNS
        if column in available
    ]
    if not parts:
        return None
    union = "\nunion all\n".join(parts)
    return (
        "select load_id, source_file, line_number, string_agg(distinct matched, ', ' "
        f"order by matched) as matched from ({union}) group by all"
    )
