"""What happens when a run fails: a row in ``ops.run_failures`` and the team's hook is called.

Both the Dagster run-failure sensor (runs started by the daemon) and ``crm-intel run`` (runs
started by cron) come here, so a failure pages the same way however the run was started.
"""

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from features.warehouse import ensure_layout
from pipelines.common import is_lock_error
from pipelines.settings import NightlySettings

# The failure is written to the warehouse the run used; the next queued run may already hold
# the DuckDB lock, so wait a little (doubling) before giving up on the row (never on the hook).
LOCK_WAITS_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class RunFailure:
    run_id: str
    job_name: str
    failed_steps: list[str]
    reason: str
    failed_at: datetime
    warehouse: str

    def payload(self) -> dict:
        return {**asdict(self), "failed_at": self.failed_at.isoformat(timespec="seconds")}


def record_failure(failure: RunFailure, sleep: Callable[[float], None] = time.sleep) -> None:
    """Write (or replace) the run's row in ``ops.run_failures`` of its working warehouse."""
    for wait in (*LOCK_WAITS_SECONDS, None):
        try:
            with duckdb.connect(failure.warehouse) as con:
                ensure_layout(con)
                con.execute(
                    "insert or replace into ops.run_failures values (?, ?, ?, ?, ?)",
                    [
                        failure.run_id,
                        failure.job_name,
                        ", ".join(failure.failed_steps),
                        failure.reason,
                        failure.failed_at,
                    ],
                ).fetchall()
            return
        except duckdb.IOException as error:
            if wait is None or not is_lock_error(error):
                raise
            sleep(wait)


def notify(failure: RunFailure, settings: NightlySettings) -> list[str]:
    """Call the configured webhook and/or command; returns what was done, one line each.

    A hook that fails is reported in the returned lines, not raised: the failure is already
    recorded, and a broken pager must not hide the failure it was paging about.
    """
    body = json.dumps(failure.payload()).encode()
    outcomes = []
    if settings.failure_webhook:
        request = urllib.request.Request(
            settings.failure_webhook,
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=settings.hook_timeout_seconds) as reply:
                outcomes.append(f"webhook {settings.failure_webhook}: HTTP {reply.status}")
        except OSError as error:  # URLError, HTTPError and timeouts are all OSErrors
            outcomes.append(f"webhook {settings.failure_webhook} failed: {error}")
    if settings.failure_command:
        environment = {
            **os.environ,
            "CRM_INTEL_FAILED_RUN_ID": failure.run_id,
            "CRM_INTEL_FAILED_STEPS": ", ".join(failure.failed_steps),
            "CRM_INTEL_FAILURE_REASON": failure.reason,
        }
        try:
            done = subprocess.run(
                settings.failure_command,
                shell=True,
                input=body,
                env=environment,
                capture_output=True,
                timeout=settings.hook_timeout_seconds,
                check=False,
            )
            outcomes.append(f"command exited {done.returncode}")
        except subprocess.TimeoutExpired:
            outcomes.append(f"command timed out after {settings.hook_timeout_seconds}s")
    return outcomes


def handle_failure(failure: RunFailure, settings: NightlySettings) -> list[str]:
    """Record the failure and page; the hook is called even if the warehouse cannot be written."""
    outcomes = []
    try:
        record_failure(failure)
        outcomes.append(f"recorded in ops.run_failures of {failure.warehouse}")
    except duckdb.Error as error:
        outcomes.append(f"could not record in {failure.warehouse}: {error}")
    return outcomes + notify(failure, settings)


def warehouse_of_run(run_config: dict, default: str) -> str:
    """The warehouse file a run wrote: its run config's, else the default resource's."""
    configured = run_config.get("resources", {}).get("warehouse", {}).get("config", {})
    return str(Path(configured.get("path", default)).resolve())
