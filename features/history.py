"""History keyed by as-of date: one copy of a current table per as-of date, replaced on rerun."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb

from features.warehouse import table_exists, transaction

# Tables that hold many as-of dates (every other table with an as_of_date holds one: the run's).
HISTORY_TABLES = (
    "marts.customer_360_history",
    "marts.portfolio_risk_history",
    "features.segment_transitions",
    "marts.segment_migration",
    "marts.segment_moves",
)


@dataclass(frozen=True)
class HistoryAppend:
    rows: int
    replaced_rows: int
    added_columns: tuple[str, ...]
    as_of_dates: int


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    return {name: kind for name, kind, *_ in con.sql(f"describe {table}").fetchall()}


def append_history(
    con: duckdb.DuckDBPyConnection, source: str, history: str, *, as_of_date: date, run_id: str
) -> HistoryAppend:
    """Store ``source``'s rows in ``history`` under ``as_of_date``, replacing that date's rows.

    Everything happens in one transaction: a reader (or a crash) sees the old rows of the date
    or the new ones, never both or neither. Columns that ``source`` gained since the history
    began are added to it (older dates read NULL there); columns it lost stay, NULL from now on.
    """
    source_columns = _columns(con, source)
    stamps = {"as_of_date": "$as_of::date", "run_id": "$run_id::varchar"}
    replaced_columns = [f"{v} as {k}" for k, v in stamps.items() if k in source_columns]
    new_columns = [f"{v} as {k}" for k, v in stamps.items() if k not in source_columns]
    stamped = "*" + (f" replace ({', '.join(replaced_columns)})" if replaced_columns else "")
    stamped += "".join(f", {column}" for column in new_columns)
    select = f"select {stamped} from {source}"
    params = {"as_of": as_of_date, "run_id": run_id}
    with transaction(con):
        if not table_exists(con, history):
            con.execute(f"create table {history} as {select} limit 0", params).fetchall()
        history_columns = _columns(con, history)
        added = tuple(name for name in source_columns if name not in history_columns)
        for name in added:
            con.execute(
                f'alter table {history} add column "{name}" {source_columns[name]}'
            ).fetchall()
        replaced = con.execute(
            f"delete from {history} where as_of_date = $as_of", {"as_of": as_of_date}
        ).fetchall()[0][0]
        con.execute(f"insert into {history} by name {select}", params).fetchall()
    rows, dates = con.execute(
        f"select count(*) filter (where as_of_date = $as_of), count(distinct as_of_date) "
        f"from {history}",
        {"as_of": as_of_date},
    ).fetchall()[0]
    return HistoryAppend(rows, replaced, added, dates)
