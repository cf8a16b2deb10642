"""Per-customer purchase facts as of a date (built by ``feat_customer_summary.sql``)."""

from __future__ import annotations

from datetime import date

import duckdb
import polars as pl

from features.warehouse import materialize_sql, perfect_hash_groups, sql_text, write_frame


def customer_summary_sql() -> str:
    """``feat_customer_summary.sql`` as it runs: one query, one ``$as_of`` parameter."""
    return sql_text("feat_customer_summary")


def materialize_customer_summary(con: duckdb.DuckDBPyConnection, table: str, as_of: date) -> None:
    """Write the customer summary as of ``as_of`` (``feat_customer_summary.sql``) to ``table``."""
    with perfect_hash_groups(con):
        materialize_sql(con, table, "feat_customer_summary", as_of=as_of)


def build_customer_summary(con: duckdb.DuckDBPyConnection, as_of: date) -> pl.DataFrame:
    """Write ``features.customer_summary`` from staging facts dated on or before ``as_of``.

    Returns the summary in ``customer_id`` order, in one chunk per column: the query's ORDER BY
    holds for its result, not for a later read of the table (the warehouse does not keep
    insertion order), and the models' array code wants contiguous columns.
    """
    with perfect_hash_groups(con):
        summary = con.sql(customer_summary_sql(), params={"as_of": as_of}).pl()
    summary = summary.rechunk()
    write_frame(con, "features.customer_summary", summary)
    return summary


def lifetimes_summary(summary: pl.DataFrame, time_unit_days: float) -> pl.DataFrame:
    """The (frequency, recency, T, monetary_value) frame in model time units.

    ``frequency`` counts repeat purchase days, ``recency`` runs from the first to the last
    purchase and ``T`` from the first purchase to the as-of date, as lifetimes defines them.
    """
    return summary.select(
        "customer_id",
        "frequency",
        (pl.col("purchase_span_days") / time_unit_days).alias("recency"),
        (pl.col("tenure_days") / time_unit_days).alias("T"),
        "monetary_value",
    )
