"""Per-customer purchase facts as of a date (built by ``feat_customer_summary.sql``)."""

from __future__ import annotations

from datetime import date
from itertools import pairwise
from math import ceil

import duckdb
import polars as pl

from features.warehouse import materialize_sql, perfect_hash_groups, sql_text, write_frame

# The summary aggregates customers one range of customer_key at a time (one UNION ALL branch
# each), so that each range's hash table of customer-days and array of customers stay small:
# at 1M customers (10M invoices), 8 ranges took the SQL from 1.48 s to 1.00 s. But each branch
# rescans the invoices and its cost grows with their number: at 4M customers (41M invoices) 2
# or 8 ranges were within noise of one, 16 ranges 18 % and 32 ranges 75 % slower
# (bench.bench_customer_summary --copies 4 --range-counts 16,32). So at most 8 ranges, and at
# most 100M invoice rows scanned in all.
CUSTOMERS_PER_KEY_RANGE = 125_000
MAX_KEY_RANGES = 8
MAX_RESCANNED_INVOICES = 100_000_000


def key_range_predicates(
    last_key: int,
    customers_per_range: int = CUSTOMERS_PER_KEY_RANGE,
    max_ranges: int = MAX_KEY_RANGES,
) -> list[str]:
    """Predicates on ``customer_key`` that split 1..``last_key`` into about equal ranges.

    The first and last ranges are open-ended, so every key, even one outside 1..last_key,
    satisfies exactly one predicate: no customer can fall between branches.
    """
    ranges = min(max_ranges, max(1, ceil(last_key / customers_per_range)))
    if ranges == 1:
        return ["true"]
    bounds = [last_key * i // ranges for i in range(1, ranges)]
    return [
        f"customer_key <= {bounds[0]}",
        *(f"customer_key > {lo} and customer_key <= {hi}" for lo, hi in pairwise(bounds)),
        f"customer_key > {bounds[-1]}",
    ]


def customer_summary_fragments(
    con: duckdb.DuckDBPyConnection,
    customers_per_range: int = CUSTOMERS_PER_KEY_RANGE,
    max_ranges: int | None = None,
) -> dict[str, str]:
    """The ``per_customer`` branches of ``feat_customer_summary.sql``, one per key range.

    ``max_ranges`` defaults to MAX_KEY_RANGES, fewer if the ranges would rescan more than
    MAX_RESCANNED_INVOICES invoice rows in all.
    """
    last_key, invoices = con.sql(
        "select (select coalesce(max(customer_key), 0) from staging.customer_keys), "
        "(select count(*) from staging.invoices)"
    ).fetchall()[0]
    if max_ranges is None:
        max_ranges = min(MAX_KEY_RANGES, max(1, MAX_RESCANNED_INVOICES // max(invoices, 1)))
    predicates = key_range_predicates(last_key, customers_per_range, max_ranges)
    branches = [
        sql_text("feat_customer_summary_key_range", {"key_range": predicate})
        for predicate in predicates
    ]
    return {"per_customer_by_key_range": "\n    union all\n".join(f"({b})" for b in branches)}


def customer_summary_sql(
    con: duckdb.DuckDBPyConnection,
    customers_per_range: int = CUSTOMERS_PER_KEY_RANGE,
    max_ranges: int | None = None,
) -> str:
    """``feat_customer_summary.sql`` with its key ranges filled in; one ``$as_of`` parameter."""
    fragments = customer_summary_fragments(con, customers_per_range, max_ranges)
    return sql_text("feat_customer_summary", fragments)


def materialize_customer_summary(con: duckdb.DuckDBPyConnection, table: str, as_of: date) -> None:
    """Write the customer summary as of ``as_of`` (``feat_customer_summary.sql``) to ``table``."""
    fragments = customer_summary_fragments(con)
    with perfect_hash_groups(con):
        materialize_sql(con, table, "feat_customer_summary", fragments=fragments, as_of=as_of)


def build_customer_summary(con: duckdb.DuckDBPyConnection, as_of: date) -> pl.DataFrame:
    """Write ``features.customer_summary`` from staging facts dated on or before ``as_of``.

    Returns the summary in ``customer_id`` order, in one chunk per column: the query's ORDER BY
    holds for its result, not for a later read of the table (the warehouse does not keep
    insertion order), and the models' array code wants contiguous columns.
    """
    with perfect_hash_groups(con):
        summary = con.sql(customer_summary_sql(con), params={"as_of": as_of}).pl()
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
