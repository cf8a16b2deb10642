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

from features.contracts import CONTRACTS
from features.ingest import discover_files, inbox_mappings
from pipelines.ingest.assets import ingest_options
from pipelines.ops.alerts import RunFailure, handle_failure, warehouse_of_run
from pipelines.resources import Inbox, Warehouse
from pipelines.settings import NightlySettings, Settings, load_settings

SCHEDULE_NAME = "crm_intel_nightly_schedule"
INBOX_SENSOR_NAME = "crm_intel_inbox_sensor"
FAILURE_SENSOR_NAME = "crm_intel_failure_alerts"
TRIGGER_TAG = "crm-intel/trigger"

RunConfigFor = Callable[[Settings], dict[str, Any]]
# what dg.define_asset_job returns; dagster does not export the class
AssetJob = Any


def inbox_files(inbox: Path, settings: Settings) -> dict[str, list[int]]:
    """Every file a run would load: inbox path -> [size in bytes, modification time in ns]."""
    mappings = inbox_mappings(inbox, ingest_options(settings.ingest))
    files = {}
    for contract in CONTRACTS:
        for found in discover_files(inbox, contract, mappings):
            stat = found.path.stat()
            files[found.relative] = [stat.st_size, stat.st_mtime_ns]
    return files


def files_fingerprint(files: dict[str, list[int]]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


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
    job: AssetJob, poll_seconds: int, run_config_for: RunConfigFor
) -> dg.SensorDefinition:
    """Start a run when files land in the inbox, once none of them is still being written.

    A file counts as written once its size and modification time are the same on two looks in
    a row (the debounce); until every file has settled the sensor waits. The cursor keeps the
    last look and the fingerprint of the files the last run was requested for.
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
