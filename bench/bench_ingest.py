"""Ingestion cost on a 10M-row invoice export, and what validation adds to it.

Builds an inbox once (generated accounts and invoices, invoice rows replicated under new ids up
to ``--rows``, written as one CSV like an accounting export), then times on fresh warehouses
three arms that share the same code and differ only by validation:

1. load: hash, read, raw append, typing, conversion to the base currency, the dedup rule
   (first line of a key in a file wins, latest delivery wins) and the staging write, every
   contract rule off (``build_staging(checks=False)``);
2. load + contract checks: the same, plus every rule in the same typing pass, the referential
   join to accounts, the quarantine writing and each new file's rejected-share gate;
3. load + contract checks + the Great Expectations gate (suite on a
   ``validation_sample_rows`` sample);
4. and a rerun on the same inbox (nothing new: hash check + staging rebuild).

``--repeat N`` runs the arms round-robin N times and reports the best and every run, each with
the load average at its start.

    .venv/bin/python bench/bench_ingest.py [--rows 10000000] [--repeat 3] [--out data/bench/ingest]
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
    build_staging,
    discover_files,
    inbox_mappings,
    ingest_group,
    load_new_files,
)
from features.warehouse import ensure_layout
from pipelines.settings import IngestSettings
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


def open_warehouse_with_accounts(
    inbox: Path, warehouse: Path, options: IngestOptions, fresh: bool = True
) -> duckdb.DuckDBPyConnection:
    """A bench warehouse (new unless `fresh=False`) with the accounts loaded, untimed."""
    if fresh:
        for path in (warehouse, Path(f"{warehouse}.wal")):
            path.unlink(missing_ok=True)
    con = duckdb.connect(str(warehouse))
    _limit_memory(con, warehouse)
    ensure_layout(con)
    ingest_group(con, inbox, ACCOUNTS, "bench", options)
    return con


def timed_load(inbox: Path, warehouse: Path, options: IngestOptions, fresh: bool = True) -> dict:
    with open_warehouse_with_accounts(inbox, warehouse, options, fresh) as con:
        started, cpu = time.perf_counter(), time.process_time()
        result = ingest_group(con, inbox, INVOICES, "bench", options)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"seconds": seconds, "cpu": cpu, "result": result}


def timed_unvalidated_load(inbox: Path, warehouse: Path) -> dict:
    """The same load with every contract rule off: the floor validation is compared with."""
    options = IngestSettings(validate_files=False).options()
    with open_warehouse_with_accounts(inbox, warehouse, options) as con:
        started, cpu = time.perf_counter(), time.process_time()
        con.begin()
        files = discover_files(inbox, INVOICES, inbox_mappings(inbox, options))
        load_new_files(con, files, INVOICES, "bench", options)
        build_staging(con, INVOICES, options, checks=False)
        con.commit()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        rows = con.sql("select count(*) from staging.invoices").fetchall()[0][0]
    return {"seconds": seconds, "cpu": cpu, "rows": rows}


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


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _runs(label: str, seconds: list[float], cpu: list[float], loads: list[str]) -> str:
    each = ", ".join(
        f"{s:.1f}s/{c:.1f}s (load {load})" for s, c, load in zip(seconds, cpu, loads, strict=True)
    )
    return f"{label:<30} best {min(seconds):5.1f}s, cpu {min(cpu):5.1f}s   wall/cpu: {each}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("data/bench/ingest"))
    parser.add_argument("--repeat", type=int, default=1, help="runs per arm; the best is kept")
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
    arms = {
        "load (no contract rule)": lambda: timed_unvalidated_load(inbox, warehouse),
        "load + contract checks": lambda: timed_load(
            inbox, warehouse, IngestSettings(validate_files=False).options()
        ),
        "load + contract checks + GX": lambda: timed_load(
            inbox, warehouse, IngestSettings(validate_files=True).options()
        ),
        "rerun, nothing new": lambda: timed_load(
            inbox, warehouse, IngestSettings(validate_files=True).options(), fresh=False
        ),
    }
    seconds: dict[str, list[float]] = {arm: [] for arm in arms}
    # CPU seconds of this process (all its threads): less sensitive than the wall clock to
    # other jobs on a shared machine, so the arms' difference shows through the noise
    cpu: dict[str, list[float]] = {arm: [] for arm in arms}
    loads: dict[str, list[str]] = {arm: [] for arm in arms}
    outcome: dict[str, dict] = {}
    for _ in range(args.repeat):
        for arm, run in arms.items():  # round-robin, so a noisy spell hits every arm alike
            loads[arm].append(load_average())
            outcome[arm] = run()
            seconds[arm].append(outcome[arm]["seconds"])
            cpu[arm].append(outcome[arm]["cpu"])
            print(
                f"  {arm}: {seconds[arm][-1]:.1f}s, cpu {cpu[arm][-1]:.1f}s "
                f"(load average {loads[arm][-1]})",
                flush=True,
            )
    result = outcome["load + contract checks + GX"]["result"]
    gx = result.validations["invoices/invoices.csv"]["great_expectations"]
    print(f"rows: raw {result.raw_rows:,}, staged {result.staged_rows:,}, "
          f"quarantined {result.quarantined_rows:,}; "
          f"GX on {gx['rows_validated']:,} rows, success={gx['success']}")  # fmt: skip
    for arm in arms:
        print(_runs(arm, seconds[arm], cpu[arm], loads[arm]))
    for measure, values in (("wall clock", seconds), ("cpu time", cpu)):
        bare, checks, gated = (min(values[arm]) for arm in list(arms)[:3])
        print(
            f"{measure}, best runs: contract checks add {checks / bare - 1:+.1%}, GX adds "
            f"{gated / checks - 1:+.1%}; validation (checks + GX) adds {gated / bare - 1:+.1%}"
        )
    if args.full_gx:
        seconds_gx, rows = full_gx_seconds(warehouse)
        print(f"GX on the full typed file ({rows:,} rows): {seconds_gx:.1f}s")


if __name__ == "__main__":
    main()
