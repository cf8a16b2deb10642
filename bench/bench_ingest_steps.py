"""Where the time of one validated invoice load goes: every slow SQL statement, peak RSS by phase.

Runs on an inbox built by ``bench_ingest.py`` (same ``--out``), one fresh warehouse, one run:

    .venv/bin/python bench/bench_ingest_steps.py --out /work/bench-data/ingest
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb

from bench.bench_ingest import INVOICES, open_warehouse_with_accounts
from features.ingest import (
    _reject_gate,
    build_staging,
    discover_files,
    inbox_mappings,
    load_new_files,
)
from pipelines.settings import IngestSettings


def peak_rss() -> str:
    return f"peak RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB"


class TimedConnection:
    """The warehouse connection, printing every statement that takes longer than 0.3 s."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def __getattr__(self, name: str):
        return getattr(self._con, name)

    def execute(self, query: str, *args):
        started = time.perf_counter()
        result = self._con.execute(query, *args)
        seconds = time.perf_counter() - started
        if seconds > 0.3:
            print(f"    {seconds:6.2f}s  {' '.join(query.split())[:64]}  ({peak_rss()})")
        return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/bench/ingest"))
    args = parser.parse_args(argv)
    inbox = args.out / "inbox"
    warehouse = args.out / "steps.duckdb"
    import great_expectations  # noqa: F401  (imported before timing, as in bench_ingest)

    options = IngestSettings(validate_files=True).options()
    with open_warehouse_with_accounts(inbox, warehouse, options) as plain:
        con = TimedConnection(plain)
        con.begin()
        phases = []
        started = time.perf_counter()
        files = discover_files(inbox, INVOICES, inbox_mappings(inbox, options))
        new_files, _ = load_new_files(con, files, INVOICES, "bench", options)
        phases.append(("hash, stream the CSV to raw", time.perf_counter() - started))
        print(f"  {phases[-1][0]}: {phases[-1][1]:.2f}s ({peak_rss()})")
        started = time.perf_counter()
        build_staging(con, INVOICES, options)
        phases.append(
            ("type + check, dedup rule, quarantine, staging", time.perf_counter() - started)
        )
        print(f"  {phases[-1][0]}: {phases[-1][1]:.2f}s ({peak_rss()})")
        started = time.perf_counter()
        _reject_gate(con, INVOICES, new_files, options)
        phases.append(("reject share + GX gate", time.perf_counter() - started))
        print(f"  {phases[-1][0]}: {phases[-1][1]:.2f}s ({peak_rss()})")
        con.commit()
    print(f"total {sum(seconds for _, seconds in phases):.2f}s")
    for path in (warehouse, Path(f"{warehouse}.wal")):
        path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
