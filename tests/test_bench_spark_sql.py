"""The engine benchmark runs both engines over a real run's warehouse and they agree."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.bench_spark_sql import main


def test_both_engines_build_every_stage_with_the_same_rows(
    full_run: tuple[Path, str], tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(full_run[0], warehouse)
    stages = ["feat_invoice_settlement", "mart_portfolio_risk"]
    results = main(
        ["--warehouse", str(warehouse), "--scratch", str(tmp_path / "scratch"), "--stages", *stages]
    )
    for engine in ("duckdb", "spark"):
        assert set(results[engine]["stages"]) == set(stages)
        assert results[engine]["wall"] > 0 and results[engine]["peak_rss"] > 0
    for name in stages:
        assert results["duckdb"]["stages"][name]["rows"] == results["spark"]["stages"][name]["rows"]
    # the Spark process's peak counts its JVM: more than the Python process alone holds
    assert results["spark"]["peak_rss"] > results["duckdb"]["peak_rss"]
