"""What a night costs: python bench/bench_nightly.py --customers N [--invoices-per-customer K].

Generates an inbox with the synthetic generator (three years up to D = 2025-12-31, its default
end date), splits it by date into two deliveries and runs ``crm-intel run`` twice as a child
process, as a user would: night 1 on a fresh warehouse with every row dated up to D - 1
(``--as-of D-1``), night 2 on the same warehouse after one more file per group holding only
the rows of day D (``--as-of D``). For each night: wall and CPU seconds (user + system of the
child), the child's peak RSS (with its own children's, such as Spark's JVM), peak disk of the
warehouse folder (working file, its WAL, DuckDB's spill, the published snapshot; sampled every
0.2 s), the warehouse size after the night, and the ten dearest steps when the warehouse
records them (``ops.step_runs``).

The child gets this process's environment: ``CRM_INTEL_DUCKDB_MEMORY_LIMIT``,
``CRM_INTEL_DUCKDB_TEMP_DIRECTORY`` and ``CRM_INTEL_DUCKDB_RETAINED_MEMORY`` apply as in
production (README, Settings); ``--memory-limit`` / ``--retained-memory`` set them for the
child. Sizes are decimal (1 MB = 10^6 bytes).

``--invoices-per-customer K`` scales the purchase rate so the ledger averages about K invoices
per customer (default: the generator's own parameters, about 10). ``--keep DIR`` keeps the
split inbox (``DIR/inbox``, day D's files in ``DIR/day``), the warehouse and the runs' logs;
``--inbox DIR`` runs the nights again on such a split without generating it.

Day D's delivery: invoices by issue date, payments by payment date, activities by activity
date, credit reports by report date (the bureau reports on the first of the month: none on the
31st, so no file); accounts created that day; contacts whose consent was recorded that day
(every contact of a new account); opportunities opened or closed that day, a deal closed on D
being still open in negotiation in night 1's export.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

import duckdb
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.warehouse import (  # after the path tweak
    ENGINE_STAGE_PHASES,
    engine_stage_seconds,
    seconds_beside_spark,
    table_exists,
    total_engine_seconds,
)
from synthetic import TrueParameters, generate_demo_data

REPO = Path(__file__).resolve().parents[1]

SPLIT_FILE = "split.json"
# Day D, the last day of the history: the generator's default end date. The generator draws
# repeat purchases strictly before its end date (its last day holds almost no invoices: 1 where
# about 45 are due at 5,000 customers), so the ledger is generated one day further and every
# row dated after D is left out, as an export taken at the end of D would.
DAY = date(2025, 12, 31)
GENERATED_UNTIL = DAY + timedelta(days=1)
PILOT_CUSTOMERS = 20_000
DISK_SAMPLE_SECONDS = 0.2

# Which date puts a row into day D's delivery, per file group.
DAY_COLUMNS: dict[str, str] = {
    "crm/accounts": "created_at",
    "crm/contacts": "consent_updated_at",
    "crm/activities": "occurred_at",
    "crm/opportunities": "created_at",
    "invoices/invoices": "issue_date",
    "invoices/payments": "payment_date",
    "credit/reports": "report_date",
}
# The stage a deal closed on D was in the day before.
OPEN_STAGE_BEFORE_CLOSING = "negotiation"


@dataclasses.dataclass
class Split:
    """The two deliveries on disk: ``inbox/`` for night 1, ``day/`` for what night 2 adds."""

    root: Path
    customers: int
    invoices: int
    day: date
    file_format: str
    night1_rows: dict[str, int]
    day_rows: dict[str, int]

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def day_folder(self) -> Path:
        return self.root / "day"

    def day_files(self) -> list[Path]:
        return sorted(p for p in self.day_folder.rglob("*") if p.is_file())


@dataclasses.dataclass
class Night:
    """What one night cost, measured from outside the child process."""

    name: str
    as_of: date
    customers: int
    invoices: int
    new_rows: int
    wall_seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    peak_disk_bytes: int
    final_disk_bytes: int
    warehouse_bytes: int
    growth_bytes: int
    day_invoices_staged: int
    day_invoice_ids_staged: int
    dearest_steps: list[tuple[str, float, int | None]] | None
    # [engine] kind "spark": seconds by phase over the run's SQL stages (ops.engine_stages),
    # and the dearest stages (stage, times run, Spark's own work, the rest)
    spark_phases: dict[str, float] | None = None
    dearest_spark_stages: list[tuple[str, int, float, float]] | None = None


# --- the inbox -----------------------------------------------------------------------------------


def purchase_parameters(
    invoices_per_customer: float | None, customers: int, seed: int, end_date: date
) -> TrueParameters:
    """Generator parameters whose ledger averages about this many invoices per customer.

    Only the purchase rate moves: alpha (the rate of the Gamma over lambda, E[lambda] = r/alpha)
    is divided by a factor. Customers also drop out, so the count grows slower than the rate;
    the factor is found by a secant search in log-log on pilot ledgers (invoices only) of up to
    20,000 customers, drawn with the same seed.
    """
    defaults = TrueParameters()
    if invoices_per_customer is None:
        return defaults
    target = math.log(invoices_per_customer)
    pilot_customers = min(customers, PILOT_CUSTOMERS)

    def log_mean(factor: float) -> float:
        params = dataclasses.replace(defaults, alpha=defaults.alpha / factor)
        with tempfile.TemporaryDirectory() as pilot:
            summary = generate_demo_data(
                Path(pilot),
                customers=pilot_customers,
                seed=seed,
                end_date=end_date,
                params=params,
                file_format="parquet",
                include=frozenset({"invoices/invoices"}),
            )
        return math.log(summary.invoices / pilot_customers)

    x0, y0 = 0.0, log_mean(1.0) - target
    x1 = -y0 / 0.6  # the count grows about as the rate to the power 0.6
    for _ in range(8):
        y1 = log_mean(math.exp(x1)) - target
        if abs(y1) < 0.005 or y1 == y0:
            break
        x0, y0, x1 = x1, y1, x1 - y1 * (x1 - x0) / (y1 - y0)
    return dataclasses.replace(defaults, alpha=defaults.alpha / math.exp(x1))


def _day_text(column: str) -> pl.Expr:
    """The ISO date of a column read as text (CSV) or typed (Parquet)."""
    return pl.col(column).cast(pl.String).str.slice(0, 10)


def _scan(path: Path) -> pl.LazyFrame:
    if path.suffix == ".csv":
        return pl.scan_csv(path, infer_schema=False)  # text in, the same text out
    return pl.scan_parquet(path)


def _sink(frame: pl.LazyFrame, path: Path) -> int:
    """Stream ``frame`` to ``path``; returns the rows written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        frame.sink_csv(path)
    else:
        frame.sink_parquet(path)
    return int(_scan(path).select(pl.len()).collect().item())


def _known_on(frame: pl.LazyFrame, group: str, day_text: str) -> pl.LazyFrame:
    """The rows of ``group`` an export taken at the end of ``day_text`` holds.

    A deal closed later was still open then: in negotiation, with no close date or outcome.
    """
    known = frame.filter(_day_text(DAY_COLUMNS[group]) <= day_text)
    if group != "crm/opportunities":
        return known
    closed_later = _day_text("closed_at") > day_text
    return known.with_columns(
        stage=pl.when(closed_later)
        .then(pl.lit(OPEN_STAGE_BEFORE_CLOSING))
        .otherwise(pl.col("stage")),
        closed_at=pl.when(closed_later).then(None).otherwise(pl.col("closed_at")),
        won=pl.when(closed_later).then(None).otherwise(pl.col("won")),
    )


def split_by_day(
    generated: Path, root: Path, day: date, file_format: str
) -> tuple[dict[str, int], dict[str, int]]:
    """Night 1's files (``root/inbox``: known at the end of the day before ``day``) and the
    files of ``day`` (``root/day``: rows dated that day; deals opened or closed that day)."""
    eve_text, day_text = (day - timedelta(days=1)).isoformat(), day.isoformat()
    night1_rows: dict[str, int] = {}
    day_rows: dict[str, int] = {}
    for group, column in DAY_COLUMNS.items():
        source = generated / f"{group}.{file_format}"
        if not source.exists():
            continue
        frame = _scan(source)
        night1 = _known_on(frame, group, eve_text)
        night1_rows[group] = _sink(night1, root / "inbox" / source.relative_to(generated))
        on_day = _day_text(column) == day_text
        if group == "crm/opportunities":
            on_day = on_day | (_day_text("closed_at") == day_text)
        day_file = root / "day" / f"{group}_{day_text}.{file_format}"
        rows = _sink(_known_on(frame, group, day_text).filter(on_day), day_file)
        if rows == 0:  # nothing that day: no file, as no export would be delivered
            day_file.unlink()
        day_rows[group] = rows
    return night1_rows, day_rows


def generate_split(
    root: Path, customers: int, invoices_per_customer: float | None, seed: int, file_format: str
) -> Split:
    """Generate the ledger, split it into the two deliveries and drop the generated files."""
    started = time.perf_counter()
    params = purchase_parameters(invoices_per_customer, customers, seed, GENERATED_UNTIL)
    generated = root / "generated"
    for folder in (generated, root / "inbox", root / "day"):
        shutil.rmtree(folder, ignore_errors=True)
    summary = generate_demo_data(
        generated,
        customers=customers,
        seed=seed,
        end_date=GENERATED_UNTIL,
        params=params,
        file_format=file_format,
    )
    night1_rows, day_rows = split_by_day(generated, root, DAY, file_format)
    shutil.rmtree(generated)
    invoices = night1_rows["invoices/invoices"] + day_rows["invoices/invoices"]
    print(
        f"generated {customers:,d} customers, {invoices:,d} invoices and credit notes "
        f"({invoices / customers:.2f} invoices/customer, {summary.start_date} to {DAY}) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    split = Split(
        root=root,
        customers=customers,
        invoices=invoices,
        day=DAY,
        file_format=file_format,
        night1_rows=night1_rows,
        day_rows=day_rows,
    )
    (root / SPLIT_FILE).write_text(
        json.dumps(
            {
                "customers": customers,
                "invoices": invoices,
                "day": DAY.isoformat(),
                "file_format": file_format,
                "seed": seed,
                "invoices_per_customer": invoices_per_customer,
                "night1_rows": night1_rows,
                "day_rows": day_rows,
            },
            indent=2,
        )
    )
    return split


def load_split(folder: Path) -> Split:
    """A split written earlier (``--keep DIR``; its ``inbox/`` folder works too)."""
    root = (
        folder.parent if folder.name == "inbox" and not (folder / SPLIT_FILE).exists() else folder
    )
    if not (root / SPLIT_FILE).exists():
        raise SystemExit(f"{folder}: no {SPLIT_FILE}; pass a --keep folder of an earlier run")
    saved = json.loads((root / SPLIT_FILE).read_text())
    return Split(
        root=root,
        customers=saved["customers"],
        invoices=saved["invoices"],
        day=date.fromisoformat(saved["day"]),
        file_format=saved["file_format"],
        night1_rows=saved["night1_rows"],
        day_rows=saved["day_rows"],
    )


def _remove_day_files(split: Split) -> None:
    """Night 1 must not see day D: take back copies left in the inbox by an earlier run."""
    for day_file in split.day_files():
        (split.inbox / day_file.relative_to(split.day_folder)).unlink(missing_ok=True)


# --- one night -----------------------------------------------------------------------------------


def folder_bytes(folders: Sequence[Path]) -> int:
    """Total size of the files under ``folders``; files vanishing meanwhile count as gone."""
    total = 0
    for folder in folders:
        for parent, _, names in os.walk(folder):
            for name in names:
                with contextlib.suppress(FileNotFoundError):
                    total += os.stat(os.path.join(parent, name), follow_symlinks=False).st_size
    return total


class DiskSampler(threading.Thread):
    """Peak total size of some folders, sampled while a night runs."""

    def __init__(self, folders: Sequence[Path]) -> None:
        super().__init__(daemon=True)
        self.folders = folders
        self.peak = folder_bytes(folders)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(DISK_SAMPLE_SECONDS):
            self.peak = max(self.peak, folder_bytes(self.folders))

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, folder_bytes(self.folders))
        return self.peak


class MemorySampler(threading.Thread):
    """The child's own peak RSS (``VmHWM`` of /proc/<pid>/status), sampled while it runs.

    ``wait4``'s ``ru_maxrss`` alone is not enough: Linux carries the parent's high-water mark into
    a child at ``exec``, so after generating a large ledger in this process every night would
    report this process's peak instead of its own.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.status = Path(f"/proc/{pid}/status")
        self.peak = 0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        try:
            lines = self.status.read_text().splitlines()
        except OSError:  # the child has ended
            return
        for line in lines:
            if line.startswith("VmHWM:"):
                self.peak = max(self.peak, int(line.split()[1]) * 1024)  # kB

    def run(self) -> None:
        while not self._stop_event.wait(DISK_SAMPLE_SECONDS):
            self.sample()

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


class TreeMemorySampler(MemorySampler):
    """Peak resident memory of a process and all its descendants together (Spark's JVM is a
    child of the Python process that starts it), sampled as the sum of their ``VmRSS``."""

    def __init__(self, pid: int) -> None:
        super().__init__(pid)
        self.pid = pid

    def _tree(self, pid: int) -> list[int]:
        pids = [pid]
        try:
            tasks = list(Path(f"/proc/{pid}/task").glob("*/children"))
        except OSError:  # it ended while the tree was read
            return pids
        for task in tasks:
            try:
                children = task.read_text().split()
            except OSError:
                continue
            for child in children:
                pids += self._tree(int(child))
        return pids

    def sample(self) -> None:
        total = 0
        for pid in self._tree(self.pid):
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                continue
            total += next(
                (int(line.split()[1]) * 1024 for line in lines if line.startswith("VmRSS:")), 0
            )
        self.peak = max(self.peak, total)


def warehouse_bytes(warehouse: Path) -> int:
    """The working warehouse: its file and write-ahead log."""
    wal = warehouse.with_name(warehouse.name + ".wal")
    return sum(p.stat().st_size for p in (warehouse, wal) if p.exists())


def dearest_steps(con: duckdb.DuckDBPyConnection) -> list[tuple[str, float, int | None]] | None:
    """The ten dearest steps of the latest run, or None when the warehouse keeps no timings."""
    if not table_exists(con, "ops.step_runs"):
        return None
    rows = con.execute(
        """
        select step, seconds, rows
        from ops.step_runs
        where run_id = (select run_id from ops.runs order by started_at desc limit 1)
        order by seconds desc
        limit 10
        """
    ).fetchall()
    return rows or None


def spark_stage_phases(
    con: duckdb.DuckDBPyConnection,
) -> tuple[dict[str, float], list[tuple[str, int, float, float]]] | None:
    """The latest run's SQL stages on Spark: seconds by phase, and the eight dearest stages
    (summed over the times each ran), or None when it ran none (or on DuckDB)."""
    if not table_exists(con, "ops.engine_stages"):
        return None
    [(run_id,)] = con.sql("select run_id from ops.runs order by started_at desc limit 1").fetchall()
    by_stage = engine_stage_seconds(con, run_id, "stage")
    if not by_stage:
        return None
    dearest = sorted(
        (
            (stage, int(phases["stages"]), phases["spark"], seconds_beside_spark(phases))
            for stage, phases in by_stage.items()
        ),
        key=lambda row: (-(row[2] + row[3]), row[0]),
    )
    return total_engine_seconds(by_stage), dearest[:8]


def run_night(
    name: str,
    split: Split,
    warehouse: Path,
    as_of: date,
    new_rows: int,
    env: dict[str, str],
    log: Path,
    config: Path | None = None,
) -> Night:
    """One ``crm-intel run`` in a child process, measured from outside."""
    command = [sys.executable, "-m", "pipelines.cli", "run", "--inbox", str(split.inbox)]
    command += ["--warehouse", str(warehouse), "--as-of", as_of.isoformat(), "--no-progress"]
    if config is not None:
        command += ["--config", str(config)]
    folders = [warehouse.parent]
    spill = env.get("CRM_INTEL_DUCKDB_TEMP_DIRECTORY")
    if spill and not Path(spill).resolve().is_relative_to(warehouse.parent.resolve()):
        folders.append(Path(spill))
    size_before = warehouse_bytes(warehouse)
    sampler = DiskSampler(folders)
    sampler.start()
    started = time.perf_counter()
    with log.open("w") as output:
        child = subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=output)
        memory = MemorySampler(child.pid)
        tree_memory = TreeMemorySampler(child.pid)
        memory.start()
        tree_memory.start()
        _, status, usage = os.wait4(child.pid, 0)
    # above this process's own peak, ru_maxrss is the child's exact peak; else only the samples
    # (to the last 0.2 s) tell it
    inherited = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_rss = max(memory.stop(), usage.ru_maxrss * 1024 if usage.ru_maxrss > inherited else 0)
    # with [engine] kind = "spark" the run's JVM is a process of its own: the tree's sum counts
    peak_rss = max(peak_rss, tree_memory.stop())
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    peak_disk = sampler.stop()
    if child.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"{name} failed (exit {child.returncode}); end of {log}:\n{tail}")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        invoices = con.execute("select count(*) from staging.invoices").fetchall()[0][0]
        on_day, distinct_ids = con.execute(
            "select count(*), count(distinct invoice_id) from staging.invoices "
            "where issue_date = $day",
            {"day": split.day},
        ).fetchall()[0]
        steps = dearest_steps(con)
        spark = spark_stage_phases(con)
    size_after = warehouse_bytes(warehouse)
    return Night(
        name=name,
        as_of=as_of,
        customers=split.customers,
        invoices=invoices,
        new_rows=new_rows,
        wall_seconds=wall,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_bytes=peak_rss,
        peak_disk_bytes=peak_disk,
        final_disk_bytes=folder_bytes(folders),
        warehouse_bytes=size_after,
        growth_bytes=size_after - size_before,
        day_invoices_staged=on_day,
        day_invoice_ids_staged=distinct_ids,
        dearest_steps=steps,
        spark_phases=spark[0] if spark else None,
        dearest_spark_stages=spark[1] if spark else None,
    )


def run_nights(
    split: Split, work: Path, env: dict[str, str], config: Path | None = None
) -> list[Night]:
    """Night 1 on a fresh warehouse as of D - 1, night 2 with day D's files added, as of D."""
    _remove_day_files(split)
    folder = work / "warehouse"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    warehouse = folder / "warehouse.duckdb"
    night1 = run_night(
        "night 1 (fresh warehouse)",
        split,
        warehouse,
        split.day - timedelta(days=1),
        sum(split.night1_rows.values()),
        env,
        work / "night1.log",
        config,
    )
    print(night_table(night1, split.day), flush=True)
    added = []
    for day_file in split.day_files():
        target = split.inbox / day_file.relative_to(split.day_folder)
        shutil.copy2(day_file, target)  # a copy: links out of the inbox are refused
        added.append(target)
    try:
        night2 = run_night(
            "night 2 (one more day)",
            split,
            warehouse,
            split.day,
            sum(split.day_rows.values()),
            env,
            work / "night2.log",
            config,
        )
    finally:
        for target in added:  # leave the inbox as night 1 found it, for --inbox reruns
            target.unlink(missing_ok=True)
    print(night_table(night2, split.day), flush=True)
    return [night1, night2]


# --- reporting -----------------------------------------------------------------------------------


def size_text(size: int) -> str:
    if abs(size) >= 10**9:
        return f"{size / 10**9:.2f} GB"
    return f"{size / 10**6:.1f} MB"


def night_table(night: Night, day: date) -> str:
    lines = [
        f"{night.name}, as of {night.as_of}",
        f"  customers            {night.customers:,d}",
        f"  invoices staged      {night.invoices:,d} ({night.day_invoices_staged:,d} dated {day})",
        f"  new rows delivered   {night.new_rows:,d}",
        f"  wall                 {night.wall_seconds:.1f} s",
        f"  CPU (user + sys)     {night.cpu_seconds:.1f} s",
        f"  peak RSS             {size_text(night.peak_rss_bytes)}",
        f"  peak disk            {size_text(night.peak_disk_bytes)} "
        f"(final {size_text(night.final_disk_bytes)})",
        f"  warehouse            {size_text(night.warehouse_bytes)} "
        f"(growth {size_text(night.growth_bytes)})",
    ]
    if night.dearest_steps is None:
        lines.append("  step timings unavailable")
    else:
        lines.append("  ten dearest steps:")
        for step, seconds, rows in night.dearest_steps:
            counted = "" if rows is None else f"  ({rows:,d} rows)"
            lines.append(f"    {seconds:8.1f} s  {step}{counted}")
    if night.spark_phases is not None:
        phases = night.spark_phases
        lines.append(f"  SQL stages on Spark: {phases['stages']:,.0f}, by phase:")
        for phase, label in ENGINE_STAGE_PHASES.items():
            lines.append(f"    {phases[phase]:8.1f} s  {label}")
        lines.append("  dearest Spark stages (times run, Spark's own work + the rest):")
        for stage, runs, spark_seconds, beside in night.dearest_spark_stages or ():
            lines.append(f"    {spark_seconds:8.1f} s + {beside:6.1f} s  {stage} (x{runs})")
    return "\n".join(lines)


MARKDOWN_HEADER = (
    "| night | customers | invoices | new rows | wall | CPU | peak RSS | peak disk "
    "| warehouse | growth | measured |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
)


def markdown_row(night: Night) -> str:
    cells = [
        night.name,
        f"{night.customers:,d}",
        f"{night.invoices:,d}",
        f"{night.new_rows:,d}",
        f"{night.wall_seconds:.1f} s",
        f"{night.cpu_seconds:.1f} s",
        size_text(night.peak_rss_bytes),
        size_text(night.peak_disk_bytes),
        size_text(night.warehouse_bytes),
        size_text(night.growth_bytes),
        date.today().isoformat(),
    ]
    return "| " + " | ".join(cells) + " |"


# --- command -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument(
        "--invoices-per-customer",
        type=float,
        help="average invoices per customer over the history (default: the generator's, ~10)",
    )
    parser.add_argument("--format", default="csv", choices=("csv", "parquet"), help="inbox files")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", type=Path, help="keep the split inbox and warehouse here")
    parser.add_argument("--inbox", type=Path, help="reuse the split of an earlier --keep DIR")
    parser.add_argument("--config", type=Path, help="settings TOML passed to crm-intel run")
    parser.add_argument("--memory-limit", help="CRM_INTEL_DUCKDB_MEMORY_LIMIT for the runs")
    parser.add_argument("--retained-memory", help="CRM_INTEL_DUCKDB_RETAINED_MEMORY for the runs")
    return parser.parse_args(argv)


def child_environment(args: argparse.Namespace) -> dict[str, str]:
    """The user's environment, with the DuckDB limits given on the command line."""
    env = dict(os.environ)
    if args.memory_limit:
        env["CRM_INTEL_DUCKDB_MEMORY_LIMIT"] = args.memory_limit
    if args.retained_memory:
        env["CRM_INTEL_DUCKDB_RETAINED_MEMORY"] = args.retained_memory
    return env


def run_bench(args: argparse.Namespace, work: Path) -> tuple[Split, list[Night]]:
    """Generate (or reuse) the split inbox under ``work`` and run both nights."""
    work.mkdir(parents=True, exist_ok=True)
    if args.inbox is not None:
        split = load_split(args.inbox)
        print(f"reusing {split.root}: {split.customers:,d} customers, {split.invoices:,d} invoices")
    else:
        split = generate_split(
            work, args.customers, args.invoices_per_customer, args.seed, args.format
        )
    print(
        f"night 1 inbox: {sum(split.night1_rows.values()):,d} rows dated up to "
        f"{split.day - timedelta(days=1)}; day {split.day}: "
        + ", ".join(f"{group} {rows:,d}" for group, rows in split.day_rows.items())
    )
    env = child_environment(args)
    limits = {
        key: env[key]
        for key in (
            "CRM_INTEL_DUCKDB_MEMORY_LIMIT",
            "CRM_INTEL_DUCKDB_TEMP_DIRECTORY",
            "CRM_INTEL_DUCKDB_RETAINED_MEMORY",
        )
        if env.get(key)
    }
    print("DuckDB settings: " + (", ".join(f"{k}={v}" for k, v in limits.items()) or "defaults"))
    return split, run_nights(split, work, env, args.config)


def main(argv: Sequence[str] | None = None) -> list[Night]:
    """Run the bench and print both nights, the markdown rows and the command."""
    args = parse_args(argv)
    given = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "bench/bench_nightly.py", *given])
    if args.keep is not None:
        _, nights = run_bench(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_nightly_") as tmp:
            _, nights = run_bench(args, Path(tmp))
    print()
    print(MARKDOWN_HEADER)
    for night in nights:
        print(markdown_row(night))
    print()
    print(f"command: {command}")
    return nights


if __name__ == "__main__":
    main()
