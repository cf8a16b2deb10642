"""Where the customer summary's time goes: the SQL against its two aggregation levels alone.

    .venv/bin/python -m bench.bench_customer_summary --customers 1000000

Same cached invoice log as ``bench.bench_clv`` (with ``customer_key``, as staging has it), with
DuckDB's perfect hash aggregate allowed as the pipeline allows it for the summary. Each query
runs ``--repeat`` times, interleaved, and the best time is kept (the machine is shared). The
two levels are what a purchase count by distinct day needs: per customer-day (one group per
invoice day: 10M groups at 1M customers), then per customer. The pipeline's summary SQL is
timed next to the levels alone and next to grouping by the text id, so each choice in it shows
what it costs or saves.
"""

from __future__ import annotations

import argparse
import re
import time
from itertools import pairwise

import duckdb

from bench.bench_clv import inbox_for, load_invoices
from features.customer import customer_summary_sql
from features.warehouse import perfect_hash_groups
from pipelines.resources import Warehouse

INVOICES = "from staging.invoices where issue_date <= $as_of and document_type = 'invoice'"
QUERIES = {
    "per customer-day level alone, text id": (
        f"select count(*) from (select customer_id, issue_date, sum(amount) {INVOICES} "
        "group by all)"
    ),
    "per customer-day level alone, customer_key": (
        f"select count(*) from (select customer_key, issue_date, sum(amount) {INVOICES} "
        "group by all)"
    ),
    "both levels, minimal columns, text id": (
        "select customer_id, min(day), max(day), count(*), sum(spend), arg_min(spend, day) "
        f"from (select customer_id, issue_date as day, sum(amount) as spend {INVOICES} "
        "group by all) group by all"
    ),
    "both levels, minimal columns, customer_key": (
        "select customer_key, min(day), max(day), count(*), sum(spend), arg_min(spend, day) "
        f"from (select customer_key, issue_date as day, sum(amount) as spend {INVOICES} "
        "group by all) group by all"
    ),
    # distinct days as the set bits of one bitstring per customer (DuckDB's bitstring_agg needs
    # the value range as constants: the ledger's first day and its span, filled in by main)
    "one level, distinct days by bitstring_agg": (
        "select customer_id, min(issue_date), max(issue_date), count(*), "
        "bit_count(bitstring_agg((issue_date - $first_day::date)::integer, 0, $span_days)), "
        f"sum(amount), arg_min(amount, issue_date) {INVOICES} group by all"
    ),
    "per customer only, customer_key (wrong if a day has two invoices)": (
        "select customer_key, min(issue_date), max(issue_date), count(*), sum(amount), "
        f"arg_min(amount, issue_date) {INVOICES} group by all"
    ),
    "per customer only (wrong if a day has two invoices)": (
        "select customer_id, min(issue_date), max(issue_date), count(*), sum(amount), "
        f"arg_min(amount, issue_date) {INVOICES} group by all"
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--copies",
        type=int,
        default=1,
        help="Repeat the log as this many disjoint sets of customers (N x the customers).",
    )
    parser.add_argument(
        "--summary-only", action="store_true", help="Only the pipeline's summary SQL."
    )
    parser.add_argument(
        "--key-ranges",
        default="8",
        help="Also the summary split into these numbers of key ranges (comma-separated).",
    )
    args = parser.parse_args()
    with Warehouse(path=":memory:").connect() as con:
        run(con, args)


def replicate(con: duckdb.DuckDBPyConnection, copies: int) -> None:
    """The log ``copies`` times over, each copy with its own customers, keys still in id order.

    Ids get one letter in front (A, B, ...): still short enough for DuckDB to store inline.
    """
    if not 1 <= copies <= 26:
        raise ValueError(f"--copies must be 1 to 26, got {copies}")
    if copies == 1:
        return
    last_key = con.sql("select max(customer_key) from staging.customer_keys").fetchall()[0][0]
    for table in ("staging.invoices", "staging.customer_keys"):
        con.execute(
            f"""create or replace table {table} as
                select * replace (
                    chr(65 + copy::integer) || customer_id as customer_id,
                    customer_key + copy * {last_key} as customer_key
                )
                from {table}, range({copies}) as copies(copy)"""
        )


def split_by_key_range(summary_sql: str, last_key: int, ranges: int) -> str:
    """The summary with its two levels run one range of ``customer_key`` at a time.

    The alternative to one query: one ``union all`` branch per range, each aggregating its
    customers' days and then its customers, so each hash table or array stays small, at the
    price of one scan of the invoices per branch. Built from the shipped SQL's two CTEs.
    """
    days = re.search(r"customer_days as \((.*?)\n\),", summary_sql, re.S)
    customers = re.search(r"per_customer as \((.*?)\n\),", summary_sql, re.S)
    assert days and customers, "feat_customer_summary.sql no longer has its two levels"
    bounds = [last_key * i // ranges for i in range(1, ranges)]
    predicates = [
        f"customer_key <= {bounds[0]}",
        *(f"customer_key > {low} and customer_key <= {high}" for low, high in pairwise(bounds)),
        f"customer_key > {bounds[-1]}",
    ]
    branches = [
        customers.group(1).replace(
            "from customer_days",
            f"from ({days.group(1).replace('group by', f'and {p} group by')})",
        )
        for p in predicates
    ]
    return summary_sql.replace(
        customers.group(0),
        "per_customer as (\n" + "\n    union all\n".join(f"({b})" for b in branches) + "\n),",
    )


def run(con: duckdb.DuckDBPyConnection, args: argparse.Namespace) -> None:
    as_of = load_invoices(inbox_for(args.customers, args.seed), con)
    replicate(con, args.copies)
    customers, invoices = con.sql(
        "select count(distinct customer_key), count(*) from staging.invoices"
    ).fetchall()[0]
    print(f"{customers:,} customers, {invoices:,} invoices")
    first_day, last_day = con.sql(
        "select min(issue_date), max(issue_date) from staging.invoices"
    ).fetchall()[0]
    span = {"first_day": first_day, "span_days": (last_day - first_day).days}
    last_key = con.sql("select max(customer_key) from staging.customer_keys").fetchall()[0][0]
    queries = {
        "summary SQL (as the pipeline runs it)": customer_summary_sql(),
        **{
            f"summary SQL split into {count} key ranges": split_by_key_range(
                customer_summary_sql(), last_key, int(count)
            )
            for count in filter(None, args.key_ranges.split(","))
        },
        **({} if args.summary_only else QUERIES),
    }
    best = dict.fromkeys(queries, float("inf"))
    for _ in range(args.repeat):
        for name, query in queries.items():
            params = {"as_of": as_of} | {k: v for k, v in span.items() if f"${k}" in query}
            started = time.perf_counter()
            with perfect_hash_groups(con):  # as the pipeline runs the summary
                con.sql(query, params=params).pl()
            best[name] = min(best[name], time.perf_counter() - started)
    for name, seconds in best.items():
        print(f"{name:<68}{seconds:>8.2f}s")


if __name__ == "__main__":
    main()
