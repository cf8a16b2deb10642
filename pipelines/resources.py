"""Resources, from one place. Paths come from environment variables with local defaults."""

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from pydantic import PrivateAttr

from features.warehouse import (
    RunLock,
    begin_run,
    end_run,
    ensure_layout,
    hold_run_lock,
    holds_run_lock,
    record_engine_stages,
    record_step_run,
    run_stages_on,
)
from pipelines.settings import EngineSettings

DEFAULT_WAREHOUSE = "data/warehouse.duckdb"
DEFAULT_INBOX = "data/inbox"
# Every asset that opens the DuckDB file shares this pool (limit 1 in dagster.yaml): DuckDB
# allows one writing process, so two steps must never race for the file lock.
DUCKDB_POOL = "duckdb"
# The run's end is recorded after its last step; a reader (`crm-intel status`, the inbox sensor)
# may hold the file for a moment, so wait a little (doubling) before leaving the run 'running'.
END_RUN_WAITS_SECONDS = (0.5, 1.0, 2.0, 4.0)
# what Dagster runs tag with how they were started (pipelines.ops.automation sets it)
TRIGGER_TAG = "crm-intel/trigger"
# The as-of date a run was asked for, shown with the run in the Dagster UI.
AS_OF_TAG = "crm-intel/as_of"


class Warehouse(dg.ConfigurableResource):
    """The working DuckDB warehouse file.

    `memory_limit` (e.g. "8GB") and `temp_directory` bound what one run may take on a shared
    server. Unset, the limit is `DEFAULT_MEMORY_SHARE` of the machine's memory
    (``default_memory_limit``), not DuckDB's own 80%: the run's Python side (model fits, frames
    handed to polars) needs the rest, and big ledgers spill next to the file instead
    (BENCHMARKS.md, whole nightly job).
    `retained_memory` (e.g. "8GB", at most the memory limit) is memory DuckDB allocates once and
    keeps between queries instead of handing back to the OS and faulting it in again, page by
    page, at the next query: a night of large scans runs faster (BENCHMARKS.md, credit risk) but
    the process holds that memory until it ends, so it is off unless set.
    Insertion order is not preserved: every table whose order matters is written with an ORDER
    BY, and without the guarantee DuckDB writes large tables from both threads at once.

    A run of the job holds the warehouse's run lock (the `run_lock` resource below). The first
    time such a run opens the file it records itself in `ops.run_status` and marks runs that
    never ended as killed (features.warehouse.begin_run).
    """

    path: str = DEFAULT_WAREHOUSE
    memory_limit: str | None = None
    temp_directory: str | None = None
    retained_memory: str | None = None
    # [engine]: None or kind "duckdb" runs the SQL stages here; "spark" on a Spark session
    engine: dg.ResourceDependency[EngineSettings | None] = None

    # the Spark side of the run (its session starts with the first SQL stage)
    _spark_stages: Any = PrivateAttr(default=None)

    _run_id: str | None = PrivateAttr(default=None)
    _run_recorded: bool = PrivateAttr(default=False)
    # step timings waiting for the next connection (pipelines/ops/step_runs.py): writing each
    # one as its step ends would cost a connection per step, about as many as the steps open
    # (the step's timing, the Spark stages it ran)
    _pending_step_runs: list[tuple[dict[str, Any], list[Any]]] = PrivateAttr(default_factory=list)
    # the Spark stages of the step now running, for its ops.engine_stages rows
    _step_stages: list[Any] = PrivateAttr(default_factory=list)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._run_id = context.run_id  # None for a sensor reading the file

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        config: dict[str, str | bool] = {"preserve_insertion_order": False}
        config["memory_limit"] = self.memory_limit or default_memory_limit()
        if self.temp_directory:
            config["temp_directory"] = self.temp_directory
        if self.retained_memory:
            config.update(_retained_memory_settings(self.retained_memory))
        con = duckdb.connect(self.path, config=config)
        try:
            ensure_layout(con)
            run_stages_on(con, self.sql_stages())
            if self._run_id and not self._run_recorded and holds_run_lock(self.path, self._run_id):
                # the first step to open the file: a locked file here is retried like any step's
                killed_runs = begin_run(con, self._run_id, os.getpid())
                self._run_recorded = True
                for killed in killed_runs:
                    dg.get_dagster_logger().warning(
                        f"run {killed} never ended (its process died): marked killed in "
                        "ops.run_status, which says what of it was removed or kept"
                    )
            if self._pending_step_runs:
                for step_run, stages in self._pending_step_runs:
                    record_step_run(con, **step_run)
                    record_engine_stages(
                        con, run_id=step_run["run_id"], step=step_run["step"], stages=stages
                    )
                self._pending_step_runs.clear()
            yield con
        finally:
            con.close()

    def sql_stages(self) -> Any:
        """The engine the SQL stages run on when it is not this DuckDB file: the Spark side
        (features.spark_sql.SparkStages) for [engine] kind "spark", else None.

        The session comes from dagster-pyspark's resource, started by the first stage: a local
        session on the project's Java runtime with all cores and a quarter of the machine's
        memory, unless [engine] spark_config says otherwise (a cluster's master, its memory).
        """
        lake = self.lake()
        if lake is None:
            return None
        if self._spark_stages is None:
            from dagster_pyspark import LazyPySparkResource

            from features.spark_sql import (
                SparkStages,
                is_local_master,
                java_environment,
                local_spark_config,
                spark_session_config,
            )

            local = is_local_master(self.engine.spark_config.get("spark.master"))
            driver_memory = f"{machine_memory_bytes() // 4 // 2**20}m"
            settings = (
                local_spark_config(
                    lake / "_spark", cores=os.cpu_count() or 2, driver_memory=driver_memory
                )
                if local
                else spark_session_config(lake / "_spark", driver_memory=driver_memory)
            )
            spark = LazyPySparkResource(spark_config=settings | self.engine.spark_config)

            def start_session() -> Any:
                java_environment(local=local)
                spark.spark_context.setLogLevel("ERROR")
                return spark.spark_session

            self._spark_stages = SparkStages(start_session, lake)
        return self._spark_stages

    def lake(self) -> Path | None:
        """The lake the run's tables are published to as well ([engine] kind "spark"), or None."""
        if self.engine is None or self.engine.kind == "duckdb":
            return None
        return self.engine.lake_path(self.path)

    def drop_working_copies(self) -> None:
        """When the run ends: delete the Spark side's scratch (copies of the ledger) and stop
        its session (``SparkStages.stop_session``)."""
        if self._spark_stages is not None:
            self._spark_stages.drop_working_copies()
            self._spark_stages.stop_session()
            self._spark_stages = None

    def _take_stages_run(self) -> list[Any]:
        stages = self._spark_stages.take_stages_run() if self._spark_stages else []
        self._step_stages.extend(stages)
        return stages

    def take_engine_record(self) -> dict[str, Any]:
        """Which engine ran the SQL stages since the last call, and on Spark where their time
        went (an asset's metadata; each stage's phases go to ``ops.engine_stages``)."""
        stages = self._take_stages_run()
        if not stages:
            return {"engine": "duckdb"}
        seconds = {
            phase: round(sum(getattr(stage, f"{phase}_seconds") for stage in stages), 3)
            for phase in ("spark", "copy", "load")
        }
        return {
            "engine": "spark",
            "spark_stages": ", ".join(stage.stage for stage in stages),
            "spark_seconds": seconds["spark"],
            "lake_copy_seconds": seconds["copy"],
            "duckdb_load_seconds": seconds["load"],
        }

    def keep_step_run(self, **step_run: Any) -> None:
        """Queue one step's timing for ``ops.step_runs``, and the Spark stages it ran for
        ``ops.engine_stages``; written when a connection next opens (the next step's, or the
        run's end in ``run_lock``). A failed step's stages are its own too."""
        self._take_stages_run()
        self._pending_step_runs.append((step_run, self._step_stages))
        self._step_stages = []


@dg.resource(
    required_resource_keys={"warehouse"},
    config_schema={
        "wait_seconds": dg.Field(
            float, default_value=0.0, description="Wait this long for another run (0: fail)."
        )
    },
    description="The warehouse's run lock, held by the run from before its first step until "
    "after its last (publishing included).",
)
def run_lock(context: dg.InitResourceContext) -> Iterator[RunLock | None]:
    """One run per warehouse, whatever started it (the CLI, the schedule, the sensor, the UI).

    With the in-process executor this resource lives for the whole run, in the run's process:
    the flock (features.warehouse.RunLock) dies with that process, so a killed run never
    leaves the warehouse locked. A second run fails here, before any step, naming the holder
    (or waits up to `wait_seconds`). At the end the run records that it ended in
    `ops.run_status`, which tells the next run it was no orphan. `crm-intel run` takes the lock
    before Dagster starts; here it is then taken again for the same run id (counted).
    """
    warehouse: Warehouse = context.resources.warehouse
    run = context.dagster_run
    if run is None:  # a sensor or a test building resources outside a run
        yield None
        return
    trigger = run.tags.get(TRIGGER_TAG)
    with hold_run_lock(
        warehouse.path,
        run.run_id,
        started_by=f"Dagster run of {run.job_name}" + (f" ({trigger})" if trigger else ""),
        wait_seconds=context.resource_config["wait_seconds"],
    ) as lock:
        try:
            yield lock
        finally:
            warehouse.drop_working_copies()
            _record_end(warehouse, run.run_id, context)


def _record_end(warehouse: Warehouse, run_id: str, context: dg.InitResourceContext) -> None:
    for wait in (*END_RUN_WAITS_SECONDS, None):
        try:
            with warehouse.connect() as con:
                end_run(con, run_id)
            return
        except duckdb.IOException as error:
            if wait is None or "lock" not in str(error).lower():
                # the next run takes this one for killed and removes its run-keyed rows
                context.log.warning(f"could not record the end of run {run_id}: {error}")
                return
            time.sleep(wait)


# DuckDB's share of the machine's memory when no limit is set: the rest is the run's Python side
# and the operating system's page cache.
DEFAULT_MEMORY_SHARE = 0.25


def machine_memory_bytes() -> int:
    """Physical memory, or the cgroup's limit when the process runs in a smaller container."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cgroup = Path("/sys/fs/cgroup/memory.max")
    try:
        limit = cgroup.read_text().strip()
    except OSError:
        return memory
    return min(memory, int(limit)) if limit.isdigit() else memory


def default_memory_limit() -> str:
    """DuckDB's memory limit when none is configured: ``DEFAULT_MEMORY_SHARE`` of the machine."""
    return f"{int(machine_memory_bytes() * DEFAULT_MEMORY_SHARE) // 2**20}MiB"


def _retained_memory_settings(size: str) -> dict[str, str]:
    """DuckDB settings that keep ``size`` of memory between queries: a block pool allocated once,
    and no flush of the allocator after a task or a bulk free below that size."""
    return {
        "block_allocator_memory": size,
        "allocator_flush_threshold": size,
        "allocator_bulk_deallocation_flush_threshold": size,
    }


class Inbox(dg.ConfigurableResource):
    """The folder the three systems export into (crm/, invoices/, credit/, fx/)."""

    path: str = DEFAULT_INBOX


def warehouse_config(path: str | None = None) -> dict[str, str]:
    """The warehouse resource's config: `path` or $CRM_INTEL_WAREHOUSE, DuckDB limits from env."""
    config = {"path": path or os.environ.get("CRM_INTEL_WAREHOUSE", DEFAULT_WAREHOUSE)}
    for field, variable in (
        ("memory_limit", "CRM_INTEL_DUCKDB_MEMORY_LIMIT"),
        ("temp_directory", "CRM_INTEL_DUCKDB_TEMP_DIRECTORY"),
        ("retained_memory", "CRM_INTEL_DUCKDB_RETAINED_MEMORY"),
    ):
        if os.environ.get(variable):
            config[field] = os.environ[variable]
    return config


def default_resources(engine: Any = None) -> dict[str, Any]:
    """The warehouse, inbox and run lock; ``engine`` is the [engine] section's resource
    (``pipelines.settings.engine_at_launch``), which the warehouse holds."""
    return {
        "warehouse": Warehouse(**warehouse_config(), engine=engine),
        "inbox": Inbox(path=os.environ.get("CRM_INTEL_INBOX", DEFAULT_INBOX)),
        "run_lock": run_lock,
    }
