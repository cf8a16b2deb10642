"""Ingestion cost on a 10M-row invoice export, and what the validation gate adds to it.

Builds an inbox once (generated accounts and invoices, invoice rows replicated under new ids up
to ``--rows``, written as one CSV like an accounting export), then times on fresh warehouses:

1. load without the GX gate (hash, read, raw append, staging rebuild with every SQL contract
   rule and the referential join to accounts, per-file reject counts);
2. the same load with the GX gate (suite on a ``validation_sample_rows`` sample);
3. a rerun on the same inbox (nothing new: hash check + staging rebuild);
4. GX on the full typed file, for scale (``--full-gx``; slow and memory-hungry).

    .venv/bin/python bench/bench_ingest.py [--rows 10000000] [--out data/bench/ingest]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb

from features.contracts import CONTRACTS_BY_TABLE
from features.ingest import (
    IngestOptions,
    _typed_expression,
    discover_files,
    inbox_mappings,
    ingest_group,
    load_new_files,
)
from features.warehouse import ensure_layout
from synthetic import generate_demo_data

INVOICES = CONTRACTS_BY_TABLE["invoices"]
ACCOUNTS = CONTRACTS_BY_TABLE["accounts"]


def build_inbox(out: Path, rows: int, customers: int) -> Path:
    inbox = out / "inbox"
    target = inbox / "invoices/invoices.csv"
    if target.is_file():
        return inbox
    seed_dir = out / "seed"
    shutil.rmtree(seed_dir, ignore_errors=True)
    generate_demo_data(
        seed_dir,
        customers=customers,
        seed=3,
        include=frozenset({"crm/accounts", "invoices/invoices"}),
        file_format="parquet",
    )
    (inbox / "crm").mkdir(parents=True, exist_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(
        f"copy (select * from '{seed_dir}/crm/accounts.parquet') to '{inbox}/crm/accounts.csv'"
    ).fetchall()
    base = con.sql(f"select count(*) from '{seed_dir}/invoices/invoices.parquet'").fetchall()[0][0]
    copies = -(-rows // base)
    # replicate under new invoice ids: copy k of INV000000123 is INV000000123-k
    con.execute(
        f"""
        copy (
            select case when k = 0 then invoice_id else invoice_id || '-' || k end as invoice_id,
                   customer_id, issue_date, due_date, round(amount, 2) as amount, currency,
                   document_type
            from '{seed_dir}/invoices/invoices.parquet', range({copies}) r(k)
            limit {rows}
        ) to '{target}' (header, dateformat '%Y-%m-%d')
        """
    ).fetchall()
    shutil.rmtree(seed_dir)
    return inbox


def _limit_memory(con: duckdb.DuckDBPyConnection, warehouse: Path) -> None:
    # shared machine: stay well under 10 GB RSS, spilling next to the bench warehouse
    con.execute("set memory_limit = '8GB'").fetchall()
    con.execute(f"set temp_directory = '{warehouse.parent / 'spill'}'").fetchall()


def timed_load(inbox: Path, warehouse: Path, options: IngestOptions, fresh: bool = True) -> dict:
    if fresh:
        for path in (warehouse, Path(f"{warehouse}.wal")):
            path.unlink(missing_ok=True)
    with duckdb.connect(str(warehouse)) as con:
        _limit_memory(con, warehouse)
        ensure_layout(con)
        ingest_group(con, inbox, ACCOUNTS, "bench", options)
        started = time.perf_counter()
        result = ingest_group(con, inbox, INVOICES, "bench", options)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "result": result}


def timed_unvalidated_load(inbox: Path, warehouse: Path) -> dict:
    """The same load with no validation at all: read, raw append, typed copy to staging.

    No contract rule, no referential join, no quarantine, no dedup, no GX: the floor a
    validating loader is compared with.
    """
    for path in (warehouse, Path(f"{warehouse}.wal")):
        path.unlink(missing_ok=True)
    options = IngestOptions(validate=False)
    with duckdb.connect(str(warehouse)) as con:
        _limit_memory(con, warehouse)
        ensure_layout(con)
        ingest_group(con, inbox, ACCOUNTS, "bench", options)
        started = time.perf_counter()
        con.begin()
        files = discover_files(inbox, INVOICES, inbox_mappings(inbox, options))
        load_new_files(con, files, INVOICES, "bench", options)
        typed = ", ".join(f"{_typed_expression(c)} as {c.name}" for c in INVOICES.columns)
        con.execute(
            f"create or replace table staging.invoices as select {typed} from raw.invoices"
        ).fetchall()
        con.commit()
        seconds = time.perf_counter() - started
        rows = con.sql("select count(*) from staging.invoices").fetchall()[0][0]
    return {"seconds": seconds, "rows": rows}


def full_gx_seconds(warehouse: Path) -> tuple[float, int]:
    from features.validation import validate_batch

    with duckdb.connect(str(warehouse)) as con:
        _limit_memory(con, warehouse)
        load_id, rows = con.sql(
            "select content_hash, rows from ops.loaded_files where file_group = 'invoices/invoices'"
        ).fetchall()[0]
        started = time.perf_counter()
        validate_batch(con, INVOICES, load_id, 0.10, sample_rows=rows + 1)
        return time.perf_counter() - started, rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("data/bench/ingest"))
    parser.add_argument("--full-gx", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    inbox = build_inbox(args.out, args.rows, args.customers)
    size = (inbox / "invoices/invoices.csv").stat().st_size
    print(f"inbox ready in {time.perf_counter() - started:.1f}s: invoices.csv {size / 1e6:.0f} MB")

    # import GX before timing: its ~10 s import is a once-per-process cost, reported apart
    started = time.perf_counter()
    import great_expectations  # noqa: F401

    print(f"great_expectations import: {time.perf_counter() - started:.1f}s (once per process)")

    warehouse = args.out / "bench.duckdb"
    bare = timed_unvalidated_load(inbox, warehouse)
    plain = timed_load(inbox, warehouse, IngestOptions(validate=False))
    gated = timed_load(inbox, warehouse, IngestOptions(validate=True))
    rerun = timed_load(inbox, warehouse, IngestOptions(validate=True), fresh=False)
    result = gated["result"]
    gx = result.validations["invoices/invoices.csv"]["great_expectations"]
    overhead = gated["seconds"] / bare["seconds"] - 1
    gx_overhead = gated["seconds"] / plain["seconds"] - 1
    print(f"rows: raw {result.raw_rows:,}, staged {result.staged_rows:,}, "
          f"quarantined {result.quarantined_rows:,}")  # fmt: skip
    print(f"load, no validation:        {bare['seconds']:.1f}s ({bare['rows']:,} rows typed)")
    print(f"load + contract checks:     {plain['seconds']:.1f}s")
    print(
        f"load + contract checks + GX: {gated['seconds']:.1f}s  (GX on {gx['rows_validated']:,} "
        f"rows, success={gx['success']}): GX adds {gx_overhead:+.1%}"
    )
    print(f"validation (contract checks + GX) adds {overhead:+.1%} to the load")
    print(f"rerun, nothing new:   {rerun['seconds']:.1f}s")
    if args.full_gx:
        seconds, rows = full_gx_seconds(warehouse)
        print(f"GX on the full typed file ({rows:,} rows): {seconds:.1f}s")


if __name__ == "__main__":
    main()
