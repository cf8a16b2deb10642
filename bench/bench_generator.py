"""Time the synthetic generator: python bench/bench_generator.py [customers] [--format csv]."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synthetic import generate_demo_data  # after the path tweak, for a plain run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("customers", nargs="?", type=int, default=100_000)
    parser.add_argument("--format", choices=("csv", "parquet"), default="parquet")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, help="keep the files here instead of a temp dir")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        started = time.perf_counter()
        summary = generate_demo_data(
            out, customers=args.customers, seed=args.seed, file_format=args.format
        )
        seconds = time.perf_counter() - started
        rows = {
            path.relative_to(out).as_posix(): _rows(path)
            for path in summary.files.values()
            if path.suffix in (".csv", ".parquet")
        }
    total = sum(rows.values())
    for name, n in sorted(rows.items()):
        print(f"{name:32s} {n:>12,d} rows")
    print(
        f"{args.customers:,d} customers, {args.format}: {total:,d} rows in {seconds:.1f} s "
        f"= {total / seconds:,.0f} rows/s ({summary.invoices / seconds:,.0f} invoice rows/s)"
    )


def _rows(path: Path) -> int:
    import polars as pl

    if path.suffix == ".parquet":
        return pl.scan_parquet(path).select(pl.len()).collect().item()
    return pl.scan_csv(path).select(pl.len()).collect().item()


if __name__ == "__main__":
    main()
