"""Publishing cost: the published selection written to a new file vs a copy of the warehouse.

python -m bench.bench_publish WAREHOUSE [--repeat 3]

The snapshot holds only ``features.publish.PUBLISHED_TABLES`` (marts, scores, evaluations,
runs; consenting contacts; no raw, staging or quarantined content), written table by table
into a new DuckDB file and checked by row counts. The obvious alternative, and what a reader
would get from a plain copy, is the whole working warehouse copied byte for byte. Both run on a
copy of WAREHOUSE, so the working file is never touched; the best of ``--repeat`` rounds is
reported with each file's size.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

import duckdb

from features.publish import publish_snapshot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("warehouse", type=Path, help="a working warehouse after a full run")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_publish_") as folder:
        work = Path(folder) / "warehouse.duckdb"
        shutil.copyfile(args.warehouse, work)
        copies, publishes = [], []
        for round_number in range(args.repeat):  # a few rounds
            target = Path(folder) / f"copy-{round_number}.duckdb"
            started = time.perf_counter()
            shutil.copyfile(work, target)
            copies.append(time.perf_counter() - started)
            target.unlink()
            with duckdb.connect(str(work)) as con:
                as_of = con.sql("select max(as_of_date) from ops.runs").fetchall()[0][0]
                started = time.perf_counter()
                publication = publish_snapshot(
                    con,
                    work,
                    Path(folder) / "published" / "warehouse.duckdb",
                    run_id=f"bench-{round_number}",
                    as_of_date=as_of or date.today(),
                )
                publishes.append(time.perf_counter() - started)
        size = work.stat().st_size
    print(f"warehouse {args.warehouse} ({size / 1e6:,.1f} MB)")
    print(f"  copy of the whole warehouse   best {min(copies):6.2f} s  ({size / 1e6:,.1f} MB)")
    print(
        f"  published selection           best {min(publishes):6.2f} s  "
        f"({publication.size_bytes / 1e6:,.1f} MB, {publication.tables} tables)"
    )


if __name__ == "__main__":
    main()
