"""What starts runs and what watches them: the nightly schedule, the inbox sensor, failure alerts.

All three are on by default (``make dev`` and a production ``dagster-daemon`` start them);
the UI can still switch each off.
"""

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from features.contracts import CONTRACTS
from features.ingest import content_hash, discover_files, inbox_mappings
from features.warehouse import table_exists
from pipelines.common import is_lock_error
from pipelines.ops.alerts import RunFailure, handle_failure, warehouse_of_run
from pipelines.resources import TRIGGER_TAG, Inbox, Warehouse, warehouse_config
from pipelines.settings import NightlySettings, Settings, load_settings

SCHEDULE_NAME = "crm_intel_nightly_schedule"
INBOX_SENSOR_NAME = "crm_intel_inbox_sensor"
FAILURE_SENSOR_NAME = "crm_intel_failure_alerts"

RunConfigFor = Callable[[Settings], dict[str, Any]]
# what dg.define_asset_job returns; dagster does not export the class
AssetJob = Any


def inbox_files(inbox: Path, settings: Settings) -> dict[str, list[int]]:
    """Every file a run would load: inbox path -> [size in bytes, modification time in ns]."""
    mappings = inbox_mappings(inbox, settings.ingest.options())
    files = {}
    for contract in CONTRACTS:
        for found in discover_files(inbox, contract, mappings):
            stat = found.path.stat()
            files[found.relative] = [stat.st_size, stat.st_mtime_ns]
    return files


def files_fingerprint(files: dict[str, list[int]]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def files_not_loaded(inbox: Path, files: dict[str, list[int]], warehouse: Path) -> list[str] | None:
    """The inbox files no run has recorded in ``ops.loaded_files``; None if the file is busy.

    A file counts as seen when a record has its path, size and content hash, whatever its
    outcome (loaded, duplicate, refused): a run would do the same with it again. Only files
    whose path and size match a record are hashed.
    """
    if not warehouse.is_file():
        return sorted(files)
    try:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            if not table_exists(con, "ops.loaded_files"):
                return sorted(files)
            recorded = con.sql(
                "select source_file, size_bytes, list(distinct content_hash) "
                "from ops.loaded_files group by all"
            ).fetchall()
    except duckdb.ConnectionException:
        return None  # this process (the daemon's failure sensor) has it open to write
    except duckdb.IOException as error:
        if is_lock_error(error):
            return None  # a run in another process is writing it
        raise
    hashes = {(path, size): set(digests) for path, size, digests in recorded}
    return sorted(
        path
        for path, (size, _) in files.items()
        if (path, size) not in hashes or content_hash(inbox / path) not in hashes[(path, size)]
    )


def _pending_runs(instance: dg.DagsterInstance, job_name: str) -> int:
    """Runs of the job that have not started yet: they will read the inbox as it is now."""
    return len(
        instance.get_run_ids(
            filters=dg.RunsFilter(
                job_name=job_name,
                statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED],
            )
        )
    )


def build_inbox_sensor(
    job: AssetJob,
    poll_seconds: int,
    run_config_for: RunConfigFor,
    warehouse: str | Path | None = None,
) -> dg.SensorDefinition:
    """Start a run when files land in the inbox, once none of them is still being written.

    A file counts as written once its size and modification time are the same on two looks in
    a row (the debounce); until every file has settled the sensor waits. The cursor keeps the
    last look and the fingerprint of the files the last run was requested for. Settled files
    that the warehouse (``warehouse``, else the runs' default, $CRM_INTEL_WAREHOUSE) has
    already loaded start nothing: a fresh sensor cursor (a new Dagster home, `make dev` after
    `make demo`) must not rerun the night that is already there.
    """

    @dg.sensor(
        name=INBOX_SENSOR_NAME,
        job=job,
        minimum_interval_seconds=poll_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Runs the nightly job when new or changed export files have settled in "
        "the inbox.",
    )
    def inbox_sensor(context: dg.SensorEvaluationContext, inbox: Inbox):
        settings = load_settings()
        files = inbox_files(Path(inbox.path), settings)
        previous = json.loads(context.cursor) if context.cursor else {}
        requested = previous.get("requested")
        settling = sorted(
            path for path, stat in files.items() if previous.get("seen", {}).get(path) != stat
        )
        fingerprint = files_fingerprint(files)
        context.update_cursor(json.dumps({"seen": files, "requested": requested}))
        if not files:
            return dg.SkipReason(f"no export file in {inbox.path}")
        if settling:
            shown = ", ".join(settling[:5]) + (" …" if len(settling) > 5 else "")
            return dg.SkipReason(f"waiting for {len(settling)} file(s) to stop changing: {shown}")
        if fingerprint == requested:
            return dg.SkipReason("no new or changed file since the last run it started")
        pending = _pending_runs(context.instance, job.name)
        if pending:
            return dg.SkipReason(
                f"{pending} run(s) of {job.name} queued: they will load these files"
            )
        loaded_into = Path(warehouse or warehouse_config()["path"])
        new_files = files_not_loaded(Path(inbox.path), files, loaded_into)
        if new_files is None:
            return dg.SkipReason(f"{loaded_into} is being written; looking again next time")
        if not new_files:
            # remembered as requested: the next looks skip without opening the warehouse
            context.update_cursor(json.dumps({"seen": files, "requested": fingerprint}))
            return dg.SkipReason(
                f"every file in {inbox.path} is already loaded in {loaded_into} "
                "(ops.loaded_files): nothing new to run for"
            )
        context.update_cursor(json.dumps({"seen": files, "requested": fingerprint}))
        return dg.RunRequest(
            run_key=f"inbox-{fingerprint[:20]}",
            run_config=run_config_for(settings),
            tags={TRIGGER_TAG: "inbox"},
        )

    return inbox_sensor


def build_nightly_schedule(
    job: AssetJob, nightly: NightlySettings, run_config_for: RunConfigFor
) -> dg.ScheduleDefinition:
    """The nightly run, at ``[nightly] schedule`` in ``[nightly] timezone``."""

    @dg.schedule(
        name=SCHEDULE_NAME,
        job=job,
        cron_schedule=nightly.schedule,
        execution_timezone=nightly.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"The nightly run ({nightly.schedule}, {nightly.timezone}) with the "
        "settings of crm-intel.toml as they are when it starts.",
    )
    def nightly_schedule(context: dg.ScheduleEvaluationContext):
        # settings are read at each tick, so editing crm-intel.toml needs no reload
        return dg.RunRequest(
            run_config=run_config_for(load_settings()), tags={TRIGGER_TAG: "schedule"}
        )

    return nightly_schedule


def _root_cause(error: Any) -> str:
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def failure_from_context(context: dg.RunFailureSensorContext, default_warehouse: str) -> RunFailure:
    steps = context.get_step_failure_events()
    reasons = [
        f"{event.step_key}: {_root_cause(event.event_specific_data.error)}"
        for event in steps
        if event.event_specific_data is not None and event.event_specific_data.error is not None
    ]
    if not reasons:
        # failed before any step, e.g. refused because another run holds the warehouse: the
        # run failure's own error says why (and names the holder)
        error = getattr(context.failure_event.event_specific_data, "error", None)
        reasons = [_root_cause(error)] if error is not None else []
    return RunFailure(
        run_id=context.dagster_run.run_id,
        job_name=context.dagster_run.job_name,
        failed_steps=[event.step_key.replace("__", "/") for event in steps if event.step_key],
        reason="; ".join(reasons) or (context.failure_event.message or "run failed"),
        failed_at=datetime.now(),
        warehouse=warehouse_of_run(context.dagster_run.run_config, default_warehouse),
    )


def build_failure_sensor(job: AssetJob) -> dg.SensorDefinition:
    """On every failed run of the job: a row in ``ops.run_failures`` and the configured hook."""

    @dg.run_failure_sensor(
        name=FAILURE_SENSOR_NAME,
        monitored_jobs=[job],
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Writes ops.run_failures and calls [nightly] failure_webhook / "
        "failure_command when a run fails.",
    )
    def failure_alerts(context: dg.RunFailureSensorContext, warehouse: Warehouse) -> None:
        failure = failure_from_context(context, warehouse.path)
        for outcome in handle_failure(failure, load_settings().nightly):
            context.log.info(f"run {failure.run_id}: {outcome}")

    return failure_alerts
