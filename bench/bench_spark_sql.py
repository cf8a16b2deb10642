"""The warehouse's SQL stages on DuckDB and on local Spark, side by side, over one warehouse.

    python bench/bench_spark_sql.py --warehouse PATH [--cores 2] [--spark-memory 6g]
        [--stages NAME ...]

PATH is a working warehouse after a nightly run (``bench_nightly.py --keep DIR`` leaves one in
``DIR/warehouse``). Each engine runs in a process of its own, measured whole (wall, peak RSS
of the process and everything it starts, so Spark's JVM too). Both build the same tables from
the same inputs, file by file, in pipeline order: DuckDB into a scratch database file (the
warehouse attached read-only), Spark into Parquet tables in a scratch lake, from the SQL
``features/spark_sql.py`` translates. Spark first gets the inputs from DuckDB as Parquet ("load
into the lake"), a cost a Spark deployment would not pay (its staging would write Parquet), so
it is reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb  # after the path tweak, for a plain run

from bench.bench_nightly import TreeMemorySampler
from bench.sql_cases import case_tables, sql_file_cases
from features.spark_sql import copy_to_spark, duckdb_columns, local_spark, spark_sql
from features.warehouse import sql_text
from pipelines.resources import default_memory_limit

# The stages a night runs from SQL files, heaviest inputs first, in pipeline order; each reads
# tables the warehouse already holds, so the two engines build the same thing from the same rows.
STAGES = (
    "feat_customer_summary",
    "feat_invoice_settlement",
    "feat_credit_note_refunds",
    "feat_receivable_items",
    "feat_payment_behaviour",
    "feat_receivables_dso_basis",
    "feat_clv_holdout_purchases",
    "mart_receivables_aging",
    "mart_customer_risk",
    "mart_customer_360",
    "mart_portfolio_risk",
    "mart_segment_members",
)


def _cases(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    as_of = con.sql("select max(as_of_date) from ops.runs").fetchall()[0][0]
    return sql_file_cases(as_of, [as_of], [as_of])


def run_duckdb(
    warehouse: Path, cores: int, scratch: Path, stages_run: tuple[str, ...]
) -> dict[str, Any]:
    # the tables are written to a scratch file, as Spark writes its to Parquet
    scratch.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(scratch / "built.duckdb"))
    con.execute(f"attach '{warehouse}' as warehouse (read_only)")
    con.execute("use warehouse")
    con.execute(f"set threads = {cores}")
    con.execute(f"set memory_limit = '{default_memory_limit()}'")
    cases = _cases(con)
    stages = {}
    for name in stages_run:
        case = cases[name]
        text = sql_text(name, case.get("fragments"))
        params = {k: v for k, v in case.get("params", {}).items() if f"${k}" in text}
        started = time.perf_counter()
        con.execute(f"create or replace table built.main.{name} as {text}", params)
        seconds = time.perf_counter() - started
        rows = con.sql(f"select count(*) from built.main.{name}").fetchall()[0][0]
        stages[name] = {"seconds": seconds, "rows": rows}
        print(f"  duckdb {name}: {seconds:.1f} s, {rows:,} rows", flush=True)
    return {"stages": stages}


def run_spark(
    warehouse: Path, cores: int, memory: str, scratch: Path, stages_run: tuple[str, ...]
) -> dict[str, Any]:
    con = duckdb.connect(str(warehouse), read_only=True)
    cases = _cases(con)
    columns = duckdb_columns(con)
    started = time.perf_counter()
    spark = local_spark(scratch / "work", cores=cores, driver_memory=memory)
    startup = time.perf_counter() - started
    inputs = set()
    for name in stages_run:
        case = cases[name]
        inputs |= case_tables(sql_text(name, case.get("fragments")), case)
    started = time.perf_counter()
    copy_to_spark(con, spark, sorted(inputs), scratch / "lake")
    load = time.perf_counter() - started
    spark.sql("create database if not exists bench")
    stages = {}
    for name in stages_run:
        case = cases[name]
        text = sql_text(name, case.get("fragments"))
        translated, args = spark_sql(text, case.get("params", {}), columns)
        started = time.perf_counter()
        spark.sql(translated, args=args).write.mode("overwrite").format("parquet").saveAsTable(
            f"bench.{name}"
        )
        seconds = time.perf_counter() - started
        rows = spark.table(f"bench.{name}").count()
        stages[name] = {"seconds": seconds, "rows": rows}
        print(f"  spark {name}: {seconds:.1f} s, {rows:,} rows", flush=True)
    spark.stop()
    return {"startup": startup, "load": load, "stages": stages}


def measure(engine: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one engine in a child process; its result, wall time and peak RSS (whole tree)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        command = [
            sys.executable,
            __file__,
            "--warehouse",
            str(args.warehouse),
            "--cores",
            str(args.cores),
            "--spark-memory",
            args.spark_memory,
            "--scratch",
            str(args.scratch),
            "--engine",
            engine,
            "--stages",
            *args.stages,
            "--result",
            result.name,
        ]
        started = time.perf_counter()
        child = subprocess.Popen(command, env=os.environ.copy())
        sampler = TreeMemorySampler(child.pid)
        sampler.start()
        code = child.wait()
        wall = time.perf_counter() - started
        peak = sampler.stop()
        if code:
            raise SystemExit(f"{engine} failed (exit {code})")
        measured = json.loads(Path(result.name).read_text())
    return {**measured, "wall": wall, "peak_rss": peak}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warehouse", type=Path, required=True)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--spark-memory", default="6g", help="Spark driver memory (local mode)")
    parser.add_argument("--scratch", type=Path, default=None, help="Spark's lake (default: temp)")
    parser.add_argument(
        "--stages", nargs="+", choices=STAGES, default=STAGES, help="default: every stage"
    )
    parser.add_argument("--engine", choices=("duckdb", "spark"), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.stages = tuple(args.stages)
    return args


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    args = parse_args(argv)
    if args.engine:  # a child: one engine, its figures to --result
        if args.engine == "duckdb":
            measured = run_duckdb(args.warehouse, args.cores, args.scratch, args.stages)
        else:
            measured = run_spark(
                args.warehouse, args.cores, args.spark_memory, args.scratch, args.stages
            )
        args.result.write_text(json.dumps(measured))
        return {}
    owned = args.scratch is None
    args.scratch = args.scratch or Path(tempfile.mkdtemp(prefix="bench-spark-"))
    try:
        results = {engine: measure(engine, args) for engine in ("duckdb", "spark")}
    finally:
        if owned:
            shutil.rmtree(args.scratch, ignore_errors=True)
    duck, spark = results["duckdb"], results["spark"]
    print()
    print("| stage | rows | DuckDB | Spark local | Spark / DuckDB |")
    print("|---|---:|---:|---:|---:|")
    for name in args.stages:
        d, s = duck["stages"][name], spark["stages"][name]
        if d["rows"] != s["rows"]:
            raise SystemExit(f"{name}: {d['rows']} rows on DuckDB, {s['rows']} on Spark")
        ratio = s["seconds"] / d["seconds"] if d["seconds"] else float("inf")
        times = f"{d['seconds']:.2f} s | {s['seconds']:.2f} s | {ratio:.1f}×"
        print(f"| {name} | {d['rows']:,} | {times} |")
    stage_total = {k: sum(v["seconds"] for v in r["stages"].values()) for k, r in results.items()}
    print(
        f"| all stages | | {stage_total['duckdb']:.1f} s | {stage_total['spark']:.1f} s | "
        f"{stage_total['spark'] / stage_total['duckdb']:.1f}× |"
    )
    print(
        f"\nSpark start {spark['startup']:.1f} s, load into the lake {spark['load']:.1f} s; "
        f"whole process: DuckDB {duck['wall']:.1f} s, {duck['peak_rss'] / 1e9:.2f} GB peak RSS; "
        f"Spark {spark['wall']:.1f} s, {spark['peak_rss'] / 1e9:.2f} GB (JVM included); "
        f"{args.cores} cores, Spark driver memory {args.spark_memory}, DuckDB limit "
        f"{default_memory_limit()}"
    )
    print(f"command: python bench/bench_spark_sql.py {' '.join(sys.argv[1:])}")
    return results


if __name__ == "__main__":
    main()
