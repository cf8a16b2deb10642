"""Inbox → ``raw.*`` (accumulated per loaded file) → typed ``staging.*`` with row quarantine.

Incremental and idempotent:

- Each file is identified by the SHA-256 of its bytes. ``ops.loaded_files`` records every file
  seen (hash, rows, mapping, outcome). A file whose content was already loaded is not loaded
  again, even under another name (outcome ``duplicate``).
- ``raw.<table>`` accumulates the text rows of every loaded file (``load_id`` = content hash);
  it is never rebuilt, so superseded versions stay there as history.
- ``staging.<table>`` and that table's part of ``quarantine.rejected_rows`` are rebuilt from
  raw every run, deterministically, so loading the same inbox twice changes nothing.

Which row wins: within one file a repeated key is a fault (the first line stands, later ones
are quarantined as ``duplicate_key``); across files the file loaded latest wins (files of one
run load in path order), so a corrected re-delivery of the same ids replaces the old rows; a
row delivered again unchanged (a cumulative re-export) keeps its first load, so staging says
which rows really changed (``load_id``). A rejected row never replaces a good one. Counts reconcile:
raw = staged + quarantined + superseded.

A problem with a whole file raises :class:`InboxError` naming the file.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl

from features.contracts import (
    CONTRACTS,
    CONTRACTS_BY_TABLE,
    Contract,
    sql_quote,
    typed_expression,
    typed_select,
)
from features.erasure import ERASED_REASON, has_tombstones, tombstoned_lines_sql
from features.mappings import INBOX_MAPPINGS_FOLDER, Mapping, canonical_mapping, load_mappings
from features.warehouse import CODE_VERSION, materialize_query, table_exists

SUPPORTED_SUFFIXES = (".csv", ".parquet", ".xlsx")
LINEAGE_COLUMNS = ("load_id", "source_file", "line_number")
# Inbox folders that never hold exports.
_NOT_EXPORTS = ("truth", INBOX_MAPPINGS_FOLDER)
_DELIMITERS = (",", ";", "\t", "|")


# A clean row repeating the key of an earlier line of its own file.
DUPLICATE_KEY_REASON = "duplicate_key"

# Staging tables whose rows also carry the customer's integer key (see build_customer_keys).
CUSTOMER_KEYED_TABLES = frozenset({"invoices"})


# Longest piece of a file's content an error message or failure record quotes: a broken quote
# in a 3 MB export must not put the rest of the file on stderr and into ops.run_failures.
EXCERPT_CHARS = 200
# Longest whole message: several refused files are named in one error.
_MESSAGE_CHARS = 4000


def data_quality_inputs() -> tuple[dict[str, list[str]], dict[str, str]]:
    """``ops_data_quality.sql``'s parameters, each contract's file group paired with its staging
    table, and its ``staged_loads`` fragment, the load id of every staged row: a query over a
    list of tables is written out, since no SQL reads a table a value names."""
    params = {
        "file_groups": [contract.group for contract in CONTRACTS],
        "staging_tables": [contract.table for contract in CONTRACTS],
    }
    staged = " union all ".join(
        f"select load_id from staging.{table}" for table in params["staging_tables"]
    )
    return params, {"staged_loads": staged}


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` on one line, cut to about ``limit`` characters (its start and its end)."""
    text = text.replace("\r", "").replace("\n", "\\n")
    if len(text) <= limit:
        return text
    head, tail = text[: limit * 3 // 4], text[-(limit // 4) :]
    return f"{head} … [{len(text) - len(head) - len(tail):,} characters left out] … {tail}"


class InboxError(ValueError):
    """A whole input file cannot be used; the message names the file (and column).

    Messages are capped, so no error quotes more than a short piece of an export.
    """

    def __init__(self, message: str) -> None:
        super().__init__(
            excerpt(message, _MESSAGE_CHARS) if len(message) > _MESSAGE_CHARS else message
        )


class RejectThresholdError(InboxError):
    """Too large a share of a file was rejected: the file is refused, the run fails."""


@dataclass(frozen=True, kw_only=True)
class IngestOptions:
    """The ``[ingest]`` settings, as the pure loader sees them.

    No defaults: ``pipelines.settings.IngestSettings.options()`` builds them from the one place
    that holds the defaults and what each value means.
    """

    base_currency: str
    reject_threshold: float  # a file with a larger share of rejected rows is refused
    settle_seconds: float  # a file modified more recently is still being written
    mappings_dir: Path | None
    validate: bool  # Great Expectations gate on every newly loaded file
    validation_sample_rows: int


@dataclass(frozen=True)
class StagingResult:
    table: str
    # how staging was brought up to date: kept, merged (new loads only) or rebuilt from raw
    build: str
    files: tuple[str, ...]
    raw_rows: int
    staged_rows: int
    quarantined_rows: int
    reasons: dict[str, int]
    superseded_rows: int = 0
    new_files: tuple[str, ...] = ()
    duplicate_files: tuple[str, ...] = ()
    skipped_rules: tuple[str, ...] = ()
    validations: dict[str, dict] = field(default_factory=dict)
    # What the run must say about its files: sheets left out, amounts rounded, files refused.
    warnings: tuple[str, ...] = ()
    # Loaded files no longer in the inbox whose rows are still staged: (file, load id, rows).
    gone_files: tuple[tuple[str, str, int], ...] = ()

    @property
    def present(self) -> bool:
        return bool(self.files)


@dataclass(frozen=True)
class InboxFile:
    path: Path
    relative: str
    mapping: Mapping
    # Where a link in the inbox leads when that is outside the inbox: such a file is refused.
    outside_target: Path | None = None


@dataclass
class LoadNotes:
    """What a loaded file's record and the run's warnings say beyond its row count."""

    sheets: dict[str, int] = field(default_factory=dict)  # sheet loaded -> rows
    sheets_not_loaded: dict[str, str] = field(default_factory=dict)  # sheet -> why
    rounded: dict[str, int] = field(default_factory=dict)  # decimal column -> values rounded
    warnings: list[str] = field(default_factory=list)

    def record(self) -> dict:
        """The notes as they go into the file's validation report (``ops.loaded_files``)."""
        notes: dict = {}
        if self.sheets:
            notes["sheets"] = self.sheets
        if self.sheets_not_loaded:
            notes["sheets_not_loaded"] = self.sheets_not_loaded
        if self.rounded:
            notes["rounded_to_cent"] = self.rounded
        return notes


# --- finding files -------------------------------------------------------------------------


def _relative(path: Path, inbox: Path) -> str:
    return path.relative_to(inbox).as_posix() if path.is_relative_to(inbox) else str(path)


def inbox_mappings(inbox: Path, options: IngestOptions) -> list[Mapping]:
    return load_mappings(inbox / INBOX_MAPPINGS_FOLDER, options.mappings_dir)


def discover_files(
    inbox: Path, contract: Contract, mappings: list[Mapping] | None = None
) -> list[InboxFile]:
    """Files of a group, in path order: those a mapping claims, and those named after the group.

    A file claimed by a mapping of another group is that group's, even if its name starts with
    this group's prefix. A link to a file outside the inbox is not among them: the inbox is
    the boundary of what a run reads (:func:`ingest_group` refuses such links and says so).
    """
    return [f for f in _group_files(inbox, contract, mappings) if f.outside_target is None]


def _group_files(
    inbox: Path, contract: Contract, mappings: list[Mapping] | None
) -> list[InboxFile]:
    if not inbox.is_dir():
        return []
    mappings = mappings if mappings is not None else load_mappings(inbox / INBOX_MAPPINGS_FOLDER)
    canonical = canonical_mapping(contract.group)
    boundary = inbox.resolve()
    found = []
    for path in sorted(inbox.rglob("*")):
        relative = _relative(path, inbox)
        if (
            not path.is_file()
            or path.suffix.lower() not in SUPPORTED_SUFFIXES
            or relative.split("/")[0] in _NOT_EXPORTS
        ):
            continue
        mapping = next((m for m in mappings if m.matches(relative)), None)
        if mapping is None and relative.startswith(contract.group):
            mapping = canonical
        if mapping is not None and mapping.group == contract.group:
            target = path.resolve()
            outside = None if target.is_relative_to(boundary) else target
            found.append(InboxFile(path, relative, mapping, outside))
    return found


# --- reading one file ----------------------------------------------------------------------


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _check_settled(file: InboxFile, settle_seconds: float) -> None:
    age = time.time() - file.path.stat().st_mtime
    if settle_seconds > 0 and age < settle_seconds:
        raise InboxError(
            f"{file.relative}: still being written (modified {age:.0f}s ago, "
            f"[ingest] settle_seconds = {settle_seconds:g}); run again once the export is done"
        )


def _first_line(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.readline(1 << 20)


def _sniff_delimiter(header: str) -> str:
    return max(_DELIMITERS, key=header.count)


def _check_last_line(file: InboxFile, delimiter: str, encoding: str, header_fields: int) -> None:
    """A CSV whose last line lacks its newline and fields was cut off mid-write."""
    with file.path.open("rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - (1 << 16)))
        tail = handle.read()
    if tail.endswith((b"\n", b"\r")):
        return
    last = tail.splitlines()[-1].decode(encoding, errors="replace")
    fields = len(next(csv.reader([last], delimiter=delimiter), []))
    if fields < header_fields:
        raise InboxError(
            f"{file.relative}: truncated last line ({fields} of {header_fields} fields and no "
            "line end): the file was cut off or is still being written"
        )


def _unreadable(file: InboxFile, error: Exception) -> InboxError:
    """The reader's error as a file error quoting a short excerpt of it.

    Raise it ``from None``: a run failure reports the innermost cause of an error, and the
    reader's own message may hold the rest of the file.
    """
    kind = file.path.suffix.lower().lstrip(".")
    # the reader's message may quote rows of the file (a broken quote: the rest of the file)
    message = excerpt(str(error))
    if kind == "csv" and ("utf" in message.lower() or "invalid" in message.lower()):
        message = f"not valid {file.mapping.encoding} text or not a CSV: {message}"
    return InboxError(f"{file.relative}: cannot be read as {kind}: {message}")


def _header_key(header: str) -> str:
    return header.strip().lstrip("\ufeff").lower()


def _column_targets(
    file: InboxFile, headers: list[str], contract: Contract, where: str = ""
) -> dict[str, str]:
    """Export header -> the canonical column it feeds (headers that feed none are left out).

    Two headers feeding one column (``amount`` twice, or ``Amount`` and ``Amount Incl. VAT``
    through a mapping) fail the file: which one holds the value cannot be told, and keeping
    either would drop the other without a word.
    """
    feeding: dict[str, list[tuple[int, str]]] = {}
    for position, header in enumerate(headers, start=1):
        key = _header_key(header)
        target = file.mapping.columns.get(key, key if key in contract.column_names else None)
        if target is not None:
            feeding.setdefault(target, []).append((position, header))
    clashes = [
        f"{target} ({' and '.join(f'{excerpt(h, 60)!r} in column {n}' for n, h in found)})"
        for target, found in feeding.items()
        if len(found) > 1
    ]
    if clashes:
        raise InboxError(
            f"{file.relative}{where}: duplicate column {'; '.join(clashes)} "
            f"(mapping '{file.mapping.name}'): one value per column, so the file is not "
            "loaded; remove the extra column or map it to another name"
        )
    return {found[0][1]: target for target, found in feeding.items()}


def _read_csv(file: InboxFile, contract: Contract) -> pl.LazyFrame:
    """A CSV export as text columns, scanned lazily: the rows are parsed while streamed."""
    mapping = file.mapping
    encoding = mapping.encoding.lower().replace("_", "-")
    first = _first_line(file.path)
    try:
        header = first.decode(encoding).lstrip("\ufeff")
    except (UnicodeDecodeError, LookupError) as error:
        raise InboxError(
            f"{file.relative}: header is not valid {mapping.encoding} ({error}); "
            "set encoding in the file's mapping"
        ) from error
    delimiter = mapping.delimiter or _sniff_delimiter(header)
    headers = next(csv.reader([header.rstrip("\r\n")], delimiter=delimiter), [])
    # the reader renames a repeated header (amount_duplicated_0): judge the header as written
    _column_targets(file, headers, contract)
    _check_last_line(file, delimiter, encoding, len(headers))
    try:
        if encoding in ("utf-8", "utf8"):
            return pl.scan_csv(file.path, infer_schema=False, separator=delimiter, encoding="utf8")
        # other encodings are rare and small (CRM exports): decoded whole, then read as UTF-8
        text = file.path.read_bytes().decode(encoding)
        return pl.read_csv(text.encode("utf-8"), infer_schema=False, separator=delimiter).lazy()
    except UnicodeDecodeError as error:
        raise InboxError(
            f"{file.relative}: not valid {mapping.encoding} ({error}); "
            "set encoding in the file's mapping"
        ) from error
    except Exception as error:
        raise _unreadable(file, error) from None


def _as_text(frame: pl.DataFrame, mapping: Mapping) -> pl.DataFrame:
    """Typed cells (XLSX, Parquet) as the text the mapping's CSV would hold."""
    date_format = mapping.date_format or "%Y-%m-%d"
    columns = []
    for name, dtype in frame.schema.items():
        column = pl.col(name)
        if dtype.is_temporal():
            columns.append(column.dt.to_string(date_format))
        elif dtype.is_float() and mapping.decimal == ",":
            columns.append(column.cast(pl.String).str.replace(".", ",", literal=True))
        else:
            columns.append(column.cast(pl.String))
    return frame.select(columns)


def _sheet_headers(file: InboxFile) -> dict[str, list[str]]:
    """Each sheet's first row as written (the XLSX reader renames a repeated header)."""
    import openpyxl

    try:
        book = openpyxl.load_workbook(file.path, read_only=True)
    except Exception as error:
        raise _unreadable(file, error) from None
    try:
        return {
            sheet.title: [
                "" if value is None else str(value)
                for value in next(sheet.iter_rows(max_row=1, values_only=True), ())
            ]
            for sheet in book.worksheets
        }
    finally:
        book.close()


def _read_workbook(
    file: InboxFile, contract: Contract, notes: LoadNotes
) -> list[tuple[str, pl.LazyFrame]]:
    """The sheets of an XLSX export: the one its mapping names, or else every sheet.

    Every sheet is loaded unless the mapping names one, so no sheet's rows vanish unseen; the
    sheets must then have the same columns. Sheets left out are in ``notes`` (a warning and the
    file's record); blank ones only in the record.
    """
    headers = _sheet_headers(file)
    named = file.mapping.sheet
    written = {sheet: found for sheet, found in headers.items() if any(h.strip() for h in found)}
    if named is not None:
        if named not in headers:
            raise InboxError(
                f"{file.relative}: no sheet '{named}' (named by mapping '{file.mapping.name}'); "
                f"sheets: {', '.join(repr(s) for s in headers)}"
            )
        chosen = [named]
        why = f"mapping '{file.mapping.name}' names sheet '{named}'"
    else:
        chosen = list(written)
        why = ""
        if not chosen:
            raise InboxError(f"{file.relative}: no sheet has a header row (empty workbook)")
    for sheet in headers:
        if sheet not in chosen:
            notes.sheets_not_loaded[sheet] = why if sheet in written else "blank"
    first = chosen[0]
    expected = {_header_key(h) for h in headers[first] if h.strip()}
    for sheet in chosen:
        where = f" sheet '{sheet}'"
        _column_targets(file, headers[sheet], contract, where)
        found = {_header_key(h) for h in headers[sheet] if h.strip()}
        if found != expected:
            missing, extra = sorted(expected - found), sorted(found - expected)
            differences = [f"no column {excerpt(', '.join(missing))}"] if missing else []
            differences += [f"extra column {excerpt(', '.join(extra))}"] if extra else []
            raise InboxError(
                f"{file.relative}{where}: other columns than sheet '{first}' "
                f"({'; '.join(differences)}): every sheet of a workbook is loaded, so all must "
                f"have the same columns; or name the one to load in a mapping (sheet = "
                f'"{first}")'
            )
    try:
        frames = pl.read_excel(
            file.path,
            engine="openpyxl",
            sheet_name=chosen,
            infer_schema_length=10_000,
            raise_if_empty=False,
        )
    except Exception as error:
        raise _unreadable(file, error) from None
    parts = []
    for sheet in chosen:
        notes.sheets[sheet] = frames[sheet].height
        # rows of several sheets are told apart by the sheet in their source_file
        label = f"{file.relative}[{sheet}]" if len(chosen) > 1 else file.relative
        parts.append((label, _as_text(frames[sheet], file.mapping).lazy()))
    left_out = {s: w for s, w in notes.sheets_not_loaded.items() if w != "blank"}
    if left_out:
        notes.warnings.append(
            f"{file.relative}: sheet(s) {', '.join(repr(s) for s in left_out)} not loaded ({why})"
        )
    return parts


def _read_any(
    file: InboxFile, contract: Contract, notes: LoadNotes
) -> list[tuple[str, pl.LazyFrame]]:
    """The export's parts (one per loaded XLSX sheet), each with the name its rows carry."""
    suffix = file.path.suffix.lower()
    if file.path.stat().st_size == 0:
        raise InboxError(f"{file.relative}: empty file (0 bytes)")
    if suffix == ".csv":
        return [(file.relative, _read_csv(file, contract))]
    if suffix == ".xlsx":
        return _read_workbook(file, contract, notes)
    try:
        frame = pl.read_parquet(file.path)
    except Exception as error:
        raise _unreadable(file, error) from None
    return [(file.relative, _as_text(frame, file.mapping).lazy())]


def _canonical_frame(frame: pl.LazyFrame, file: InboxFile, contract: Contract) -> pl.LazyFrame:
    """Rename the export's headers to canonical columns and translate its vocabulary."""
    mapping = file.mapping
    try:
        headers = frame.collect_schema().names()
    except pl.exceptions.PolarsError as error:
        raise _unreadable(file, error) from None
    renames = _column_targets(file, headers, contract)
    missing = [name for name in contract.required_columns if name not in renames.values()]
    if missing:
        hints = []
        for name in missing:
            wanted = [name] + [h for h, c in mapping.columns.items() if c == name]
            close = {
                found
                for want in wanted
                for found in difflib.get_close_matches(
                    want, [h.strip().lower() for h in headers], n=1, cutoff=0.5
                )
            }
            hint = f" (closest found: {', '.join(sorted(close))})" if close else ""
            hints.append(f"'{name}'{hint}")
        raise InboxError(
            f"{file.relative}: missing required column(s) {', '.join(hints)} for "
            f"{contract.group} (mapping '{mapping.name}'); found {excerpt(', '.join(headers))}"
        )
    frame = frame.select([pl.col(h).alias(c) for h, c in renames.items()])
    columns = []
    for name in contract.column_names:
        if name not in renames.values():
            columns.append(pl.lit(None, pl.String).alias(name))
        elif name in mapping.values:
            lowered = pl.col(name).str.strip_chars().str.to_lowercase()
            columns.append(lowered.replace(mapping.values[name]).alias(name))
        else:
            columns.append(pl.col(name).cast(pl.String))
    return frame.select(columns)


def read_raw_file(
    file: InboxFile, contract: Contract, load_id: str, notes: LoadNotes | None = None
) -> pl.LazyFrame:
    """One export as canonical text columns plus lineage (load id, path, 1-based line).

    Lazy: the header is checked now, the rows are read when the frame is streamed. A workbook's
    sheets follow each other; each row's line is its row in its own sheet.
    """
    parts = []
    for label, part in _read_any(file, contract, notes if notes is not None else LoadNotes()):
        frame = _canonical_frame(part, file, contract)
        # the row index counts rows in file order, header = line 1
        parts.append(
            frame.with_row_index("line_number", offset=2).select(
                pl.lit(load_id).alias("load_id"),
                pl.lit(label).alias("source_file"),
                pl.col("line_number").cast(pl.Int64),
                *contract.column_names,
            )
        )
    return parts[0] if len(parts) == 1 else pl.concat(parts)


def _append_raw(
    con: duckdb.DuckDBPyConnection, frame: pl.LazyFrame, file: InboxFile, table: str, run_id: str
) -> int:
    """Stream one export's rows into ``raw.<table>``; returns how many rows it had.

    Polars streams the rows to a Parquet file on local disk and DuckDB appends that file, so an
    export is never held whole in memory (a 10M-row CSV: under 1 GB instead of 4).
    """
    with tempfile.TemporaryDirectory(prefix="crm-intel-ingest-") as folder:
        rows_file = Path(folder) / "rows.parquet"
        try:
            frame.sink_parquet(rows_file, compression="lz4")
        except pl.exceptions.PolarsError as error:
            raise _unreadable(file, error) from None
        source = f"read_parquet({sql_quote(str(rows_file))})"
        tombstoned = (
            tombstoned_lines_sql(CONTRACTS_BY_TABLE[table].column_names, source)
            if has_tombstones(con)
            else None
        )
        if tombstoned is None:
            return con.execute(
                f"insert into raw.{table} by name select * from {source}"
            ).fetchall()[0][0]
        return _append_raw_without_erased(con, source, tombstoned, table, run_id)


def _append_raw_without_erased(
    con: duckdb.DuckDBPyConnection, source: str, tombstoned: str, table: str, run_id: str
) -> int:
    """Append the rows no tombstone matches; quarantine the others as ``erased``, redacted.

    An erased person's rows never reach raw, so no rebuild can stage them again; their
    quarantine rows keep the line, not the content, and survive rebuilds of staging.
    """
    con.execute(f"create or replace temp table tombstoned_lines as {tombstoned}")
    try:
        kept = con.execute(
            f"insert into raw.{table} by name select * from {source} "
            "anti join tombstoned_lines using (load_id, source_file, line_number)"
        ).fetchall()[0][0]
        erased = con.execute(
            f"""insert into quarantine.rejected_rows
                (run_id, staging_table, source_file, line_number, reason, detail, raw_record,
                 rejected_at, load_id)
            select ?, ?, source_file, line_number, '{ERASED_REASON}',
                   'matches an erasure tombstone on ' || matched || '; content not kept',
                   '{{"redacted": true}}'::json, now()::timestamp, load_id
            from tombstoned_lines""",
            [run_id, table],
        ).fetchall()[0][0]
    finally:
        con.execute("drop table if exists tombstoned_lines")
    return kept + erased


# --- raw: accumulate newly delivered files -------------------------------------------------


def _ensure_raw_table(con: duckdb.DuckDBPyConnection, contract: Contract) -> None:
    table = f"raw.{contract.table}"
    existing = [
        row[0]
        for row in con.execute(
            "select column_name from information_schema.columns "
            "where table_schema = 'raw' and table_name = ?",
            [contract.table],
        ).fetchall()
    ]
    if existing and "load_id" not in existing:
        # a warehouse from before incremental loads: its raw tables were rebuilt every run
        con.execute(f"drop table {table}")
        existing = []
    if not existing:
        columns = ", ".join(f"{name} varchar" for name in contract.column_names)
        con.execute(
            f"create table {table} (load_id varchar, source_file varchar, "
            f"line_number bigint, {columns})"
        )
        return
    for name in contract.column_names:
        if name not in existing:  # a column added to the contract later
            con.execute(f"alter table {table} add column {name} varchar")


def _record_file(con: duckdb.DuckDBPyConnection, values: dict) -> None:
    columns = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    con.execute(
        "delete from ops.loaded_files where content_hash = ? and source_file = ?",
        [values["content_hash"], values["source_file"]],
    )
    con.execute(f"insert into ops.loaded_files ({columns}) values ({marks})", list(values.values()))


def _rounded_to_cent(
    con: duckdb.DuckDBPyConnection, file: InboxFile, contract: Contract, load_id: str
) -> tuple[dict[str, int], list[str]]:
    """Decimal values of a loaded file with more than two decimals: counts and a warning each.

    Amounts are stored as DECIMAL(18, 2), so settlement and aging work to the exact cent (an
    open residual below a cent would keep an invoice open, and past due, for ever). A value
    like ``1.234`` is therefore rounded to the cent, half away from zero, and said so.
    """
    columns = [c for c in contract.columns if c.type == "decimal"]
    if not columns:
        return {}, []
    mark = sql_quote(f"%{file.mapping.decimal}___%")
    aggregates = []
    candidates = []
    for column in columns:
        stored = typed_expression(column, file.mapping.decimal)
        delivered = typed_expression(column, file.mapping.decimal, sql_type="decimal(38, 10)")
        rounded = f"{stored} <> {delivered}"
        aggregates += [
            f"count(*) filter (where {rounded})",
            f"arg_min(line_number, line_number) filter (where {rounded})",
            f"arg_min({column.name}, line_number) filter (where {rounded})",
            f"arg_min({stored}, line_number) filter (where {rounded})",
        ]
        # A value finer than a cent has three characters after its decimal mark, or an
        # exponent: only such rows are parsed (a third of the cost on a file of plain cents).
        candidates.append(f"{column.name} like {mark} or {column.name} ilike '%e%'")
    found = con.execute(
        f"select {', '.join(aggregates)} from raw.{contract.table} "
        f"where load_id = ? and ({' or '.join(candidates)})",
        [load_id],
    ).fetchall()[0]
    counts: dict[str, int] = {}
    warnings = []
    for index, column in enumerate(columns):
        count, line, delivered_text, stored_value = found[4 * index : 4 * index + 4]
        if count:
            counts[column.name] = count
            warnings.append(
                f"{file.relative}: {count} {column.name} value(s) with more than two decimals "
                f"rounded to the cent (half away from zero), e.g. line {line}: "
                f"{excerpt(delivered_text.strip(), 40)} stored as {stored_value}"
            )
    return counts, warnings


def load_new_files(
    con: duckdb.DuckDBPyConnection,
    files: list[InboxFile],
    contract: Contract,
    run_id: str,
    options: IngestOptions,
    notes: dict[str, LoadNotes] | None = None,
) -> tuple[list[InboxFile], list[InboxFile]]:
    """Append the rows of files not loaded before to ``raw.<table>``; returns (new, duplicates).

    Each file is streamed into raw as it is read (never held whole in memory); a bad file
    raises, and the caller's transaction (see :func:`ingest_group`) then loads nothing.
    ``notes`` collects, per new file, what its record and the run's warnings must say.
    """
    notes = notes if notes is not None else {}
    _ensure_raw_table(con, contract)
    loaded = {
        row[0]: row[1]
        for row in con.execute(
            "select content_hash, list(source_file) from ops.loaded_files "
            "where outcome = 'loaded' group by content_hash"
        ).fetchall()
    }
    recorded = set(con.execute("select content_hash, source_file from ops.loaded_files").fetchall())
    sequence = con.sql("select coalesce(max(load_sequence), 0) from ops.loaded_files").fetchall()
    next_sequence = sequence[0][0] + 1
    incoming: dict[str, InboxFile] = {}  # content hash -> file, loaded by this call
    duplicates: list[InboxFile] = []
    for file in files:
        _check_settled(file, options.settle_seconds)
        size = file.path.stat().st_size
        digest = content_hash(file.path)
        if file.relative in loaded.get(digest, []):
            continue  # this very file was loaded by an earlier run
        if digest in loaded or digest in incoming:
            duplicates.append(file)
            if (digest, file.relative) not in recorded:
                first = loaded.get(digest, ["a file of this run"])[0]
                _record_file(
                    con,
                    _file_record(file, contract, digest, size, run_id, 0, "duplicate")
                    | {"detail": f"same content as {first}, loaded once"},
                )
            continue
        file_notes = notes.setdefault(file.relative, LoadNotes())
        frame = read_raw_file(file, contract, digest, file_notes)
        rows = _append_raw(con, frame, file, contract.table, run_id)
        if file.path.stat().st_size != size:
            raise InboxError(f"{file.relative}: changed while being read; still being written")
        file_notes.rounded, rounded_warnings = _rounded_to_cent(con, file, contract, digest)
        file_notes.warnings += rounded_warnings
        incoming[digest] = file
        record = _file_record(file, contract, digest, size, run_id, rows, "loaded")
        _record_file(con, record | {"load_sequence": next_sequence})
        next_sequence += 1
    return list(incoming.values()), duplicates


def _file_record(
    file: InboxFile,
    contract: Contract,
    digest: str,
    size: int | None,
    run_id: str,
    rows: int,
    outcome: str,
) -> dict:
    return {
        "content_hash": digest,
        "file_group": contract.group,
        "source_file": file.relative,
        "size_bytes": size,
        "mapping": file.mapping.name,
        "decimal_mark": file.mapping.decimal,
        # XLSX/Parquet typed cells are written as text in these same formats (see _as_text)
        "date_format": file.mapping.date_format,
        "rows": rows,
        "outcome": outcome,
        "run_id": run_id,
        "loaded_at": datetime.now(),
    }


# --- staging: typed, checked, deduplicated, rebuilt from raw ---------------------------------


def _raw_record(contract: Contract, alias: str) -> str:
    """The raw values of a row as JSON; built only for rejected rows, since it costs per row."""
    record = ", ".join(f"{name} := {alias}.{name}" for name in contract.column_names)
    return f"to_json(struct_pack({record}))"


def _typed_rows_sql(
    con: duckdb.DuckDBPyConnection, contract: Contract, checks: bool, only: str | None = None
) -> str:
    """Typed rows of every loaded file, each parsed with its own decimal mark and date format;
    with ``only``, the rows of the table of (load_id, line_number) it names."""
    formats = con.execute(
        "select distinct decimal_mark, date_format from ops.loaded_files "
        "where file_group = ? and outcome = 'loaded' order by all",
        [contract.group],
    ).fetchall()
    parts = []
    for decimal, date_format in formats or [(".", None)]:
        format_filter = (
            f"date_format = {sql_quote(date_format)}" if date_format else "date_format is null"
        )
        rows = f" semi join {only} using (load_id, line_number)" if only else ""
        source = (
            f"(select * from raw.{contract.table}{rows} where load_id in (select content_hash "
            f"from ops.loaded_files where file_group = {sql_quote(contract.group)} "
            f"and outcome = 'loaded' and decimal_mark = {sql_quote(decimal)} and {format_filter}))"
        )
        parts.append(typed_select(contract, source, decimal, date_format, checks))
    return "\nunion all\n".join(parts)


def _has_rows(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    exists = con.execute(
        "select count(*) from information_schema.tables "
        "where table_schema = 'staging' and table_name = ?",
        [table],
    ).fetchall()[0][0]
    return bool(exists) and con.sql(f"select count(*) from staging.{table}").fetchall()[0][0] > 0


# Business rules that are not checks, applied to rows that passed: (column, SQL expression).
_NORMALISE: dict[str, dict[str, str]] = {
    "invoices": {
        "document_type": "coalesce(document_type, 'invoice')",
        # A credit note may arrive signed either way; we store it negative.
        "amount": "case when document_type = 'credit_note' then -abs(amount) else amount end",
        "original_amount": "case when document_type = 'credit_note' "
        "then -abs(original_amount) else original_amount end",
    },
}


def _checked_rows_sql(
    con: duckdb.DuckDBPyConnection,
    contract: Contract,
    options: IngestOptions,
    checks: bool,
    only: str | None = None,
) -> tuple[str, list[str]]:
    """Typed rows plus the cross-column, referential and currency problems; skipped rules.
    ``only``: see :func:`_typed_rows_sql`.

    With ``checks=False`` only the conversion to the base currency is kept: no rule, no
    referential join, no problem.
    """
    joins: list[str] = []
    problems: list[str] = []
    skipped: list[str] = []
    amount_base = "null::decimal(18, 2)"
    fx_rate = "null::double"
    money = contract.money
    if money is not None:
        base = sql_quote(options.base_currency.upper())
        currency = f"upper(typed.{money.currency})"
        # one rate per currency code and day, whatever case each code was written in (two
        # spellings of one code on one day: the higher rate, on every engine, every night)
        joins.append(
            "asof left join (select upper(currency) as currency, rate_date, max(rate) as rate "
            f"from staging.fx_rates group by all) fx on {currency} = fx.currency "
            f"and typed.{money.date} >= fx.rate_date"
            if _has_rows(con, "fx_rates")
            else "left join (select null::varchar as currency, null::double as rate) fx on false"
        )
        fx_rate = (
            f"case when typed.{money.currency} is null or {currency} = {base} then 1.0 "
            "else fx.rate end"
        )
        amount_base = f"round(typed.{money.amount} * ({fx_rate}), 2)::decimal(18, 2)"
    if money is not None and checks:
        problems.append(
            f"case when typed.{money.amount} is not null and ({fx_rate}) is null "
            f"then 'unknown_currency:{money.currency}' end"
        )
    available = set()
    for reference in contract.references if checks else ():
        if not _has_rows(con, reference.table):
            skipped.append(
                f"{reference.reason}: staging.{reference.table} is empty, so {reference.column} "
                "cannot be checked against it"
            )
            continue
        available.add(reference.table)
        ref_key = CONTRACTS_BY_TABLE[reference.table].column(reference.key).name
        joins.append(
            f"left join staging.{reference.table} {reference.table} "
            f"on typed.{reference.column} = {reference.table}.{ref_key}"
        )
        problems.append(
            f"case when typed.{reference.column} is not null "
            f"and {reference.table}.{ref_key} is null "
            f"then '{reference.reason}:{reference.column}' end"
        )
    for rule in contract.rules if checks else ():
        if any(table not in available for table in rule.needs):
            skipped.append(f"{rule.reason}: needs {', '.join(rule.needs)}")
            continue
        condition = rule.condition.replace("amount_base", f"({amount_base})")
        problems.append(f"case when {condition} then '{rule.reason}' end")
    extra = ", ".join(problems) if problems else ""
    sql = f"""
with typed as ({_typed_rows_sql(con, contract, checks, only)})
select typed.*,
    list_concat(typed.problems, list_filter([{extra}], lambda p: p is not null)) as all_problems,
    {amount_base} as amount_base,
    ({fx_rate})::double as fx_rate
from typed
{" ".join(joins)}"""
    return sql, skipped


def _check_rows(
    con: duckdb.DuckDBPyConnection,
    contract: Contract,
    options: IngestOptions,
    checks: bool,
    only: str | None = None,
) -> list[str]:
    """Write the temp table ``checked_rows`` (``_checked_rows_sql``) on the connection's
    engine: typing and checking every row is staging's set-based part. Returns the skipped
    rules."""
    checked_sql, skipped = _checked_rows_sql(con, contract, options, checks, only)
    materialize_query(
        con, "checked_rows", f"staging_checks.{contract.table}", checked_sql, temporary=True
    )
    return skipped


def build_staging(
    con: duckdb.DuckDBPyConnection,
    contract: Contract,
    options: IngestOptions,
    *,
    checks: bool = True,
) -> tuple[dict[str, int], list[str]]:
    """Rebuild ``staging.<table>`` and its quarantine rows from raw; returns counts, skips.

    One pass types every raw row and lists its contract problems; rows with problems go to the
    quarantine, the others to staging. Only the rows of a key seen more than once (a repeat
    within a file, a re-delivery) go through the ranking that picks the winner, so a load of
    fresh keys pays a hash aggregate for the dedup rule, not a sort of every row.
    ``checks=False`` (the bench's unvalidated baseline) keeps typing, currency conversion, the
    dedup rule and the staging write, and skips every contract rule.
    """
    table = contract.table
    # Column names unqualified in rules refer to the typed row.
    skipped = _check_rows(con, contract, options, checks)
    _rank_versions(con, contract)
    # rows an erasure kept out of raw are not rebuilt from it: their quarantine rows stay
    con.execute(
        "delete from quarantine.rejected_rows where staging_table = ? and reason <> ?",
        [table, ERASED_REASON],
    )
    _quarantine_checked_rows(con, contract)
    keyed = table in CUSTOMER_KEYED_TABLES
    if keyed:
        build_customer_keys(con, "select customer_id from checked_rows where len(all_problems) = 0")
    con.execute(
        f"create or replace table staging.{table} as {_staged_rows_sql(contract)} "
        f"order by {', '.join(contract.key)}"
    )
    if keyed:
        # A row without a key would drop out of every summary grouped by it: fail instead.
        con.execute(f"alter table staging.{table} alter column customer_key set not null")
    counts = _staging_counts(con, table)
    for temp in ("checked_rows", "contested_keys", "ranked_rows"):
        con.execute(f"drop table {temp}")
    return counts, skipped


def _rank_versions(con: duckdb.DuckDBPyConnection, contract: Contract) -> None:
    """``contested_keys`` and ``ranked_rows`` from ``checked_rows``: which version of a key seen
    more than once is staged (the first line of a file; across files, the latest delivery)."""
    key = ", ".join(contract.key)
    content = ", ".join(contract.column_names)
    # Keys are required columns, so a clean row's key has no null to slip past the join.
    con.execute(
        f"""
        create or replace temp table contested_keys as
        select {key} from checked_rows where len(all_problems) = 0
        group by all having count(*) > 1
        """
    )
    con.execute(
        f"""
        create or replace temp table ranked_rows as
        with contested as (
            select c.*, f.load_sequence, f.run_id as load_run_id, f.loaded_at,
                row_number() over (partition by c.load_id, {key} order by c.line_number)
                    as rank_in_file
            from checked_rows c
            semi join contested_keys using ({key})
            join ops.loaded_files f
              on f.content_hash = c.load_id and f.file_group = ? and f.outcome = 'loaded'
            where len(c.all_problems) = 0
        ),
        -- a version delivered again unchanged (a cumulative re-export) keeps its first load
        versions as (
            select *, max(load_sequence) over (
                partition by {key}, rank_in_file = 1, hash({content})
            ) as content_last_delivered
            from contested
        )
        select *, case when rank_in_file = 1 then row_number() over (
            partition by {key}, rank_in_file = 1
            order by content_last_delivered desc, load_sequence
        ) end as delivery_rank
        from versions
        """,
        [contract.group],
    )


def _quarantine_checked_rows(con: duckdb.DuckDBPyConnection, contract: Contract) -> None:
    """Quarantine the rows of ``checked_rows`` with problems and the repeats within a file.

    Run and time are those of the load that brought the row, so a rebuild writes identical rows.
    """
    table = contract.table
    key = ", ".join(contract.key)
    con.execute(
        f"""
        insert into quarantine.rejected_rows
            (run_id, staging_table, source_file, line_number, reason, detail, raw_record,
             rejected_at, load_id)
        select f.run_id, ?, c.source_file, c.line_number, split_part(c.all_problems[1], ':', 1),
               array_to_string(c.all_problems, '; '), {_raw_record(contract, "r")}, f.loaded_at,
               c.load_id
        from checked_rows c
        join ops.loaded_files f
          on f.content_hash = c.load_id and f.file_group = ? and f.outcome = 'loaded'
        join raw.{table} r on r.load_id = c.load_id and r.line_number = c.line_number
        where len(c.all_problems) > 0
        union all
        select d.load_run_id, ?, d.source_file, d.line_number, '{DUPLICATE_KEY_REASON}',
               'repeats {key} of an earlier line of the same file', {_raw_record(contract, "r")},
               d.loaded_at, d.load_id
        from ranked_rows d
        join raw.{table} r on r.load_id = d.load_id and r.line_number = d.line_number
        where d.rank_in_file > 1
        """,
        [table, contract.group, table],
    )


def _staged_rows_sql(contract: Contract) -> str:
    """The rows of ``checked_rows`` that staging keeps, in staging's columns: clean rows of a
    key seen once, and the winning version of every contested key."""
    table = contract.table
    key = ", ".join(contract.key)
    normalise = _NORMALISE.get(table, {})
    money = contract.money
    selected = {name: name for name in contract.column_names}
    # load_id: which load brought the row, so later stages can tell new rows from old ones
    # (invoice settlement re-settles only the customers new rows touch)
    extras = ["load_id", "source_file", "line_number"]
    if money is not None:
        selected[money.amount] = "amount_base"
        extras += [f"{money.amount} as original_amount", "fx_rate"]
    inner = ", ".join([f"{expr} as {name}" for name, expr in selected.items()] + extras)
    outer_names = [*contract.column_names, "load_id", "source_file", "line_number"]
    if money is not None:
        outer_names += ["original_amount", "fx_rate"]
    outer = ", ".join(
        f"{normalise[name]} as {name}" if name in normalise else name for name in outer_names
    )
    keyed = table in CUSTOMER_KEYED_TABLES
    return f"""
        select {outer}{", customer_key" if keyed else ""} from (
            select {inner} from (
                select c.* from checked_rows c
                anti join contested_keys using ({key})
                where len(c.all_problems) = 0
                union all by name
                select * exclude (load_sequence, load_run_id, loaded_at, rank_in_file,
                                  content_last_delivered, delivery_rank)
                from ranked_rows where delivery_rank = 1
            )
        ){" left join staging.customer_keys using (customer_id)" if keyed else ""}"""


def _staging_counts(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, int]:
    """Raw, staged and superseded rows. Every raw row is staged, quarantined (a problem or a
    repeat within its file) or superseded by another delivery of its key, so the superseded are
    what the other two leave (rows an erasure kept out never reached raw)."""
    raw, staged, quarantined = con.execute(
        f"""
        select (select count(*) from raw.{table}), (select count(*) from staging.{table}),
            (select count(*) from quarantine.rejected_rows
             where staging_table = ? and reason <> ?)
        """,
        [table, ERASED_REASON],
    ).fetchall()[0]
    return dict(raw=raw, staged=staged, superseded=raw - staged - quarantined)


def merge_staging(
    con: duckdb.DuckDBPyConnection, contract: Contract, options: IngestOptions, loads: list[str]
) -> tuple[dict[str, int], list[str], int]:
    """Merge the rows of new loads into ``staging.<table>``; returns counts, skips and how many
    staged keys now hold another row than before.

    Writes what :func:`build_staging` would write, touching only what the new rows can change:
    the new loads' rows and the rows quarantined for a problem (a customer or invoice that has
    arrived since may now let them through) are checked; for a key they share with staging,
    or repeat among themselves, every delivered version of it is ranked again. Staged rows of
    those keys are replaced, new keys appended. The caller makes sure nothing else changed
    (:func:`_merge_basis`).
    """
    table = contract.table
    key = ", ".join(contract.key)
    con.execute(
        f"""
        create or replace temp table merge_rows as
        select load_id, line_number from raw.{table} where list_contains(?, load_id)
        union
        select load_id, line_number from quarantine.rejected_rows
        where staging_table = ? and reason not in (?, ?)
        """,
        [loads, table, ERASED_REASON, DUPLICATE_KEY_REASON],
    )
    skipped = _check_rows(con, contract, options, True, only="merge_rows")
    # keys whose versions must be ranked again: staged already, or repeated among these rows
    con.execute(
        f"""
        create or replace temp table merge_keys as
        with clean as (select {key} from checked_rows where len(all_problems) = 0)
        select {key} from clean group by all having count(*) > 1
        union
        select {key} from staging.{table} join clean using ({key})
        """
    )
    if con.sql("select count(*) from merge_keys").fetchall()[0][0]:
        # every earlier version of those keys, typed as staging types them, joins the ranking
        typed = _typed_rows_sql(con, contract, checks=False)
        con.execute(
            f"""
            insert into merge_rows
            select load_id, line_number from ({typed}) semi join merge_keys using ({key})
            except
            select load_id, line_number from merge_rows
            """
        )
        skipped = _check_rows(con, contract, options, True, only="merge_rows")
    _rank_versions(con, contract)
    con.execute(
        """
        delete from quarantine.rejected_rows q using merge_rows m
        where q.staging_table = ? and q.reason <> ?
          and q.load_id = m.load_id and q.line_number = m.line_number
        """,
        [table, ERASED_REASON],
    )
    _quarantine_checked_rows(con, contract)
    keyed = table in CUSTOMER_KEYED_TABLES
    if keyed:
        add_customer_keys(con, "select customer_id from checked_rows where len(all_problems) = 0")
    con.execute(f"create or replace temp table merged_rows as {_staged_rows_sql(contract)}")
    # staged rows of the keys merged: replaced by tonight's winner (often the same row)
    replaced = con.execute(
        f"""
        select count(*) from staging.{table} s join merged_rows m using ({key})
        where s.load_id <> m.load_id or s.line_number <> m.line_number
        """
    ).fetchall()[0][0]
    con.execute(f"delete from staging.{table} s using merged_rows m where {_key_match(contract)}")
    con.execute(f"insert into staging.{table} by name select * from merged_rows order by {key}")
    counts = _staging_counts(con, table)
    for temp in ("merge_rows", "merge_keys", "checked_rows", "contested_keys", "ranked_rows",
                 "merged_rows"):  # fmt: skip
        con.execute(f"drop table {temp}")
    return counts, skipped, replaced


def _key_match(contract: Contract) -> str:
    return " and ".join(f"s.{name} = m.{name}" for name in contract.key)


@dataclass(frozen=True)
class StagingBasis:
    """What a staging table is built from (``ops.staging_builds``), to tell whether tonight's
    build can keep it, merge new loads into it, or must rebuild it.

    ``epoch`` changes whenever staged rows may have changed other than by new keys (a rebuild,
    a merge that replaced a staged row): a table checked against this one can only merge while
    the epoch it was checked against stands.
    """

    key: str  # the same key: the same table
    base: str  # code, ingest options and erasures: another base rebuilds
    loads: tuple[str, ...]  # the group's loads in delivery order
    upstream: tuple[tuple[str, str], ...]  # epoch of each table the checks read (FX: its key)


def staging_basis(
    con: duckdb.DuckDBPyConnection, contract: Contract, options: IngestOptions
) -> StagingBasis:
    """Everything a staging table is a function of: the files loaded into its raw table, the
    staging tables its checks and currency conversion read, the erasures, the ingest options and
    the code. The same key means a rebuild would write the same table."""
    loads = tuple(
        row[0]
        for row in con.execute(
            "select content_hash || ':' || source_file from ops.loaded_files "
            "where file_group = ? and outcome = 'loaded' order by load_sequence, source_file",
            [contract.group],
        ).fetchall()
    )
    read = sorted({*contract.depends_on, *(("fx_rates",) if contract.money else ())})
    builds = {
        table: (build_key, epoch)
        for table, build_key, epoch in con.execute(
            "select staging_table, build_key, epoch from ops.staging_builds "
            "where list_contains(?, staging_table)",
            [read],
        ).fetchall()
    }
    erasures = con.sql("select count(*) from ops.erasure_keys").fetchall()[0][0]
    base = _digest(CODE_VERSION, repr(options), str(erasures))
    # an FX rate arriving converts every later amount in that currency: its whole key counts
    upstream = tuple(
        (table, builds.get(table, ("-", "-"))[0 if table == "fx_rates" else 1]) for table in read
    )
    upstream_keys = ",".join(f"{table}={builds.get(table, ('-',))[0]}" for table in read)
    return StagingBasis(
        key=_digest(base, ",".join(loads), upstream_keys), base=base, loads=loads, upstream=upstream
    )


def _digest(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LastBuild:
    """A staging table's last build, as ``ops.staging_builds`` recorded it."""

    key: str
    base: str
    loads: tuple[str, ...]
    upstream: tuple[tuple[str, str], ...]
    epoch: str
    counts: dict[str, int]
    skipped: list[str]


def _last_build(con: duckdb.DuckDBPyConnection, contract: Contract) -> LastBuild | None:
    """The last build of the table, when the table is still there."""
    rows = con.execute(
        "select build_key, base_key, loads, upstream, epoch, raw_rows, staged_rows, "
        "superseded_rows, skipped_rules from ops.staging_builds where staging_table = ?",
        [contract.table],
    ).fetchall()
    if not rows or not table_exists(con, f"staging.{contract.table}"):
        return None
    key, base, loads, upstream, epoch, raw, staged, superseded, skipped = rows[0]
    return LastBuild(
        key=key,
        base=base or "",
        loads=tuple(loads or ()),
        upstream=tuple((table, value) for table, value in json.loads(upstream or "[]")),
        epoch=epoch or key,
        counts=dict(raw=raw, staged=staged, superseded=superseded),
        skipped=list(skipped),
    )


def can_merge(last: LastBuild | None, basis: StagingBasis) -> bool:
    """Whether tonight's loads can be merged into the last build: there is one with rows, from
    the same code, ingest settings and erasures, every file it was built from is still loaded
    in the same order, and the tables its checks read stand as they were checked against."""
    return (
        last is not None
        and last.counts["staged"] > 0
        and last.base == basis.base
        and basis.loads[: len(last.loads)] == last.loads
        and last.upstream == basis.upstream
    )


def _record_staging_build(
    con: duckdb.DuckDBPyConnection,
    contract: Contract,
    basis: StagingBasis,
    run_id: str,
    counts: dict[str, int],
    skipped: list[str],
    mode: str,
    epoch: str,
) -> None:
    con.execute("delete from ops.staging_builds where staging_table = ?", [contract.table])
    con.execute(
        """
        insert into ops.staging_builds (staging_table, build_key, run_id, built_at, raw_rows,
            staged_rows, superseded_rows, skipped_rules, mode, base_key, loads, upstream, epoch)
        values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """,
        [contract.table, basis.key, run_id, datetime.now(), counts["raw"], counts["staged"],
         counts["superseded"], skipped, mode, basis.base, list(basis.loads),
         json.dumps(basis.upstream), epoch],
    )  # fmt: skip


def refresh_staging(
    con: duckdb.DuckDBPyConnection, contract: Contract, options: IngestOptions, run_id: str
) -> tuple[dict[str, int], list[str], str]:
    """Bring ``staging.<table>`` up to date with raw; returns counts, skipped rules and how:
    ``kept`` (nothing it is built from changed), ``merged`` (only new loads arrived, see
    :func:`merge_staging`) or ``rebuilt`` from raw."""
    basis = staging_basis(con, contract, options)
    last = _last_build(con, contract)
    if last is not None and last.key == basis.key:
        return last.counts, last.skipped, "kept"
    # a rule skipped (or checked) otherwise than in the last build changes old rows: rebuild
    if can_merge(last, basis) and (
        last is not None and _checked_rows_sql(con, contract, options, True)[1] == last.skipped
    ):
        new_loads = [load.split(":", 1)[0] for load in basis.loads[len(last.loads) :]]
        counts, skipped, replaced = merge_staging(con, contract, options, new_loads)
        epoch = last.epoch if replaced == 0 else basis.key
        _record_staging_build(con, contract, basis, run_id, counts, skipped, "merged", epoch)
        return counts, skipped, "merged"
    counts, skipped = build_staging(con, contract, options)
    _record_staging_build(con, contract, basis, run_id, counts, skipped, "rebuilt", basis.key)
    return counts, skipped, "rebuilt"


def build_customer_keys(con: duckdb.DuckDBPyConnection, customers: str) -> None:
    """Rebuild ``staging.customer_keys``: 1, 2, 3, ... for the distinct ids ``customers`` selects.

    Numbered in id order when staging is rebuilt; a merge numbers new ids after the last
    (:func:`add_customer_keys`). A key never leaves the warehouse (outputs are keyed by
    ``customer_id``). Per-customer aggregations group by it: a dense integer lets DuckDB use an
    array indexed by the key (a perfect hash aggregate, see
    ``features.warehouse.perfect_hash_groups``) instead of hashing text ids.
    """
    con.execute(
        f"""
        create or replace table staging.customer_keys as
        select customer_id, (row_number() over (order by customer_id))::integer as customer_key
        from (select distinct customer_id from ({customers}))
        """
    )


def add_customer_keys(con: duckdb.DuckDBPyConnection, customers: str) -> None:
    """Number the ids ``customers`` selects that have no key yet after the last key: keys stay
    dense (1..N) and a staged row keeps its key."""
    con.execute(
        f"""
        insert into staging.customer_keys
        select customer_id, ((select coalesce(max(customer_key), 0) from staging.customer_keys)
            + row_number() over (order by customer_id))::integer
        from (select distinct customer_id from ({customers})
              anti join staging.customer_keys using (customer_id))
        """
    )


def quarantine_reasons(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, int]:
    return dict(
        con.execute(
            "select reason, count(*) from quarantine.rejected_rows where staging_table = ? "
            "group by reason order by 2 desc, 1",
            [table],
        ).fetchall()
    )


def _reject_gate(
    con: duckdb.DuckDBPyConnection,
    contract: Contract,
    new_files: list[InboxFile],
    options: IngestOptions,
    notes: dict[str, LoadNotes] | None = None,
) -> tuple[dict[str, dict], list[str]]:
    """Validate each new file (GX suite + exact rejected share); returns reports, refusals."""
    reports: dict[str, dict] = {}
    refusals: list[str] = []
    for file in new_files:
        load_id, rows = con.execute(
            "select content_hash, rows from ops.loaded_files where source_file = ? "
            "and file_group = ? and outcome = 'loaded' order by load_sequence desc limit 1",
            [file.relative, contract.group],
        ).fetchall()[0]
        reasons = Counter(
            dict(
                con.execute(
                    # erased rows are no fault of the file: they never count against it
                    "select reason, count(*) from quarantine.rejected_rows "
                    "where load_id = ? and staging_table = ? and reason <> ? group by reason",
                    [load_id, contract.table, ERASED_REASON],
                ).fetchall()
            )
        )
        rejected = sum(reasons.values())
        share = rejected / rows if rows else 0.0
        report: dict = {
            "rows": rows,
            "rejected_rows": rejected,
            "rejected_share": share,
            "reasons": dict(reasons.most_common()),
        }
        report |= (notes or {}).get(file.relative, LoadNotes()).record()
        if options.validate and rows:
            from features.validation import validate_batch  # GX imports slowly: only when used

            report["great_expectations"] = validate_batch(
                con, contract, load_id, options.reject_threshold, options.validation_sample_rows
            )
        reports[file.relative] = report
        failed_gx = [
            e["expectation"] for e in report.get("great_expectations", {}).get("failed", [])
        ]
        if share > options.reject_threshold or failed_gx:
            top = ", ".join(f"{reason} {n}" for reason, n in reasons.most_common(3))
            gx_note = f"; failed expectations: {', '.join(failed_gx)}" if failed_gx else ""
            refusals.append(
                f"{file.relative}: {rejected} of {rows} rows rejected ({share:.1%} > "
                f"[ingest] reject_threshold {options.reject_threshold:.1%}); "
                f"top reasons: {top or 'none'}{gx_note}"
            )
        con.execute(
            "update ops.loaded_files set rejected_rows = ?, validation = ? "
            "where content_hash = ? and source_file = ?",
            [rejected, _json(report), load_id, file.relative],
        )
    return reports, refusals


def _json(value: dict) -> str:
    return json.dumps(value, default=str)


def ingest_group(
    con: duckdb.DuckDBPyConnection,
    inbox: Path,
    contract: Contract,
    run_id: str,
    options: IngestOptions,
) -> StagingResult:
    """Load a group's new files into raw, bring its staging table up to date, gate the new files.

    The whole step is one transaction: a file refused by the gate leaves raw, staging and
    quarantine as they were; ``ops.loaded_files`` then records it as ``refused``.
    """
    mappings = inbox_mappings(inbox, options)
    found = _group_files(inbox, contract, mappings)
    files = [file for file in found if file.outside_target is None]
    links_out = [file for file in found if file.outside_target is not None]
    outside = _refuse_outside(con, links_out, contract, run_id)
    if not files and contract.required_source and not _has_rows(con, contract.table):
        refused = f" ({'; '.join(outside)})" if outside else ""
        raise InboxError(
            f"no {contract.group}* file (.csv, .parquet or .xlsx) in inbox {inbox}{refused}: "
            "invoices are the one indispensable source"
        )
    notes: dict[str, LoadNotes] = {}
    con.begin()
    try:
        new_files, duplicates = load_new_files(con, files, contract, run_id, options, notes)
        counts, skipped, build = refresh_staging(con, contract, options, run_id)
        reports, refusals = _reject_gate(con, contract, new_files, options, notes)
    except BaseException:
        con.rollback()
        raise
    if refusals:
        con.rollback()
        for file in new_files:
            if any(r.startswith(f"{file.relative}:") for r in refusals):
                record = _file_record(
                    file, contract, content_hash(file.path), file.path.stat().st_size,
                    run_id, reports[file.relative]["rows"], "refused",
                )  # fmt: skip
                detail = next(r for r in refusals if r.startswith(f"{file.relative}:"))
                _record_file(con, record | {"detail": detail})
        raise RejectThresholdError("; ".join(refusals))
    con.commit()
    reasons = quarantine_reasons(con, contract.table)
    return StagingResult(
        table=contract.table,
        build=build,
        files=tuple(f.relative for f in files),
        raw_rows=counts["raw"],
        staged_rows=counts["staged"],
        quarantined_rows=sum(reasons.values()),
        reasons=reasons,
        superseded_rows=counts["superseded"],
        new_files=tuple(f.relative for f in new_files),
        duplicate_files=tuple(f.relative for f in duplicates),
        skipped_rules=tuple(skipped),
        validations=reports,
        warnings=tuple(outside) + tuple(w for f in new_files for w in notes[f.relative].warnings),
        gone_files=_gone_files(con, contract, files),
    )


def _refuse_outside(
    con: duckdb.DuckDBPyConnection, files: list[InboxFile], contract: Contract, run_id: str
) -> list[str]:
    """Record links that lead outside the inbox as ``refused`` (never read); their reasons.

    The inbox is the boundary of what a run reads: a link to a file elsewhere (another system's
    data, a password file) would otherwise be loaded, or quoted in an error message.
    """
    reasons = []
    for file in files:
        reason = (
            f"{file.relative}: refused, not loaded: it is a link to {file.outside_target}, "
            "outside the inbox; copy the export into the inbox instead"
        )
        # content_hash: the file is not read, so it has none; the record names the link
        record = _file_record(
            file, contract, "not read: outside the inbox", None, run_id, 0, "refused"
        )
        _record_file(con, record | {"detail": reason})
        reasons.append(reason)
    return reasons


def _gone_files(
    con: duckdb.DuckDBPyConnection, contract: Contract, present: list[InboxFile]
) -> tuple[tuple[str, str, int], ...]:
    """Loads whose file is no longer in the inbox (under any name) and whose rows are staged.

    Deliveries never delete, so such rows stay; the run says where they come from. Staging is
    only counted when a load is gone, so a run with every file in place pays nothing for it.
    """
    present_names = {file.relative for file in present}
    gone = [
        (source_file, load_id)
        for source_file, load_id, names in con.execute(
            """
            select any_value(source_file) filter (where outcome = 'loaded'), content_hash,
                list(source_file)
            from ops.loaded_files
            where file_group = ? and outcome in ('loaded', 'duplicate')
            group by content_hash
            having count(*) filter (where outcome = 'loaded') > 0
            order by min(load_sequence)
            """,
            [contract.group],
        ).fetchall()
        if present_names.isdisjoint(names)
    ]
    if not gone or not _has_rows(con, contract.table):
        return ()
    staged = dict(
        con.execute(
            f"select load_id, count(*) from staging.{contract.table} "
            "where load_id in (select unnest(?)) group by load_id",
            [[load_id for _, load_id in gone]],
        ).fetchall()
    )
    return tuple(
        (source_file, load_id, staged[load_id])
        for source_file, load_id in gone
        if load_id in staged
    )
