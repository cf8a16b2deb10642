"""Small wiring helpers shared by the stages: the run's as-of date and metadata."""

import functools
import time
from collections.abc import Callable
from datetime import date
from typing import Any, ParamSpec

import dagster as dg
import duckdb
import polars as pl

Params = ParamSpec("Params")


def run_as_of(con: duckdb.DuckDBPyConnection, run_id: str) -> date:
    """The as-of date of this run; a single asset materialised on its own uses the latest."""
    rows = con.execute(
        "select as_of_date from ops.runs order by (run_id = ?) desc, started_at desc limit 1",
        [run_id],
    ).fetchall()
    if not rows:
        raise RuntimeError("no as-of date recorded yet: materialize ops/run_as_of first")
    return rows[0][0]


def preview(frame: pl.DataFrame, rows: int = 12) -> dg.MetadataValue:
    """A Markdown table for the Dagster UI."""
    return dg.MetadataValue.md(frame.head(rows).to_pandas().to_markdown(index=False))


def table_metadata(con: duckdb.DuckDBPyConnection, table: str, **extra: Any) -> dict[str, Any]:
    rows = con.sql(f"select count(*) from {table}").fetchall()[0][0]
    return {"table": table, "dagster/row_count": rows, **extra}


def timed(
    compute: Callable[Params, dg.MaterializeResult],
) -> Callable[Params, dg.MaterializeResult]:
    """Add ``duration_seconds`` (wall-clock time of the asset's body) to its metadata.

    Goes between ``@dg.asset(...)`` and the function, so every asset reports its duration the
    same way; Dagster still sees the function's own parameters (``functools.wraps``).
    """

    @functools.wraps(compute)
    def compute_timed(*args: Params.args, **kwargs: Params.kwargs) -> dg.MaterializeResult:
        started = time.perf_counter()
        result = compute(*args, **kwargs)
        seconds = round(time.perf_counter() - started, 3)
        return result._replace(metadata={**(result.metadata or {}), "duration_seconds": seconds})

    return compute_timed
