"""One run per warehouse: the run lock across processes, a killed run, and the inbox sensor.

The runs are real `crm-intel run` processes on one small generated inbox (300 customers). One
scenario drives them in order, because each step needs the state the last one left: a first
run; a second that fails at once; a third started with --wait, which runs once the first has
ended and is SIGKILLed mid-way; a fourth that recovers. Every wait is bounded.
"""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.publish import default_snapshot_path
from features.warehouse import (
    WarehouseBusyError,
    acquire_run_lock,
    hold_run_lock,
    read_run_lock_holder,
    run_lock_path,
)
from pipelines.definitions import NIGHTLY_JOB_NAME, defs, nightly_job, run_config_for
from pipelines.ops.automation import (
    FAILURE_SENSOR_NAME,
    build_inbox_sensor,
    failure_from_context,
)
from pipelines.resources import Inbox
from synthetic import generate_demo_data

ROOT = Path(__file__).resolve().parents[1]
RUN_SECONDS = 420  # the longest any one run may take here before the test gives up
KEY_MARTS = {
    "marts.customer_360": "customer_id",
    "marts.segment_summary": "rfm_segment",
    "marts.customer_risk": "customer_id",
    "marts.receivables_aging": None,
    "marts.customer_equity": None,
}


def _environment() -> dict[str, str]:
    # a throwaway Dagster instance per run, as `crm-intel run` from cron without DAGSTER_HOME
    environment = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    return {**environment, "PYTHONUNBUFFERED": "1"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {seconds}s waiting for {what}")
        time.sleep(0.2)


def _lock_is_free(warehouse: Path) -> bool:
    try:
        acquire_run_lock(warehouse, "probe").release()
    except WarehouseBusyError:
        return False
    return True


def _key_marts(database: Path) -> dict[str, pl.DataFrame]:
    """The marts users read, without what differs between any two runs (ids, clock times)."""
    frames = {}
    with duckdb.connect(str(database), read_only=True) as con:
        for table, key in KEY_MARTS.items():
            frame = con.sql(f"select * from {table}").pl()
            frame = frame.drop(
                [c for c in frame.columns if c.endswith(("run_id", "model_version", "_at"))]
            )
            frames[table] = frame.sort(key or frame.columns)
    return frames


def _run_rows(warehouse: Path, run_id: str) -> dict[str, Any]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {
            "status": con.execute(
                "select status from ops.run_status where run_id = ?", [run_id]
            ).fetchall(),
            "runs": con.execute(
                "select count(*) from ops.runs where run_id = ?", [run_id]
            ).fetchall()[0][0],
            "model_runs": con.execute(
                "select count(*) from models.model_runs where run_id = ?", [run_id]
            ).fetchall()[0][0],
        }


@pytest.fixture(scope="module")
def inbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lock_inbox")
    generate_demo_data(folder, customers=300, seed=21)
    return folder


@pytest.fixture(scope="module")
def scenario(inbox: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Four `crm-intel run` processes on one warehouse; what each saw, for the tests below."""
    folder = tmp_path_factory.mktemp("lock_warehouse")
    warehouse = folder / "warehouse.duckdb"
    config = folder / "crm-intel.toml"
    # no CLV backtest, no GX gate: they slow a run and are tested elsewhere
    config.write_text("[clv]\nholdout_days = 0\n[ingest]\nvalidate_files = false\n")
    command = [sys.executable, "-m", "pipelines.cli", "run", "--inbox", str(inbox),
               "--warehouse", str(warehouse), "--config", str(config)]  # fmt: skip
    seen: dict[str, Any] = {"warehouse": warehouse, "command": command}

    def start(name: str, *extra: str) -> subprocess.Popen:
        log = (folder / f"{name}.log").open("w")
        return subprocess.Popen(
            [*command, *extra], stdout=log, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            env=_environment(),
        )  # fmt: skip

    def log(name: str) -> str:
        return (folder / f"{name}.log").read_text()

    first = start("first", "--debug")
    try:
        _wait_for(
            lambda: (
                getattr(read_run_lock_holder(warehouse), "pid", None) == first.pid
                or first.poll() is not None
            ),
            120,
            "the first run to take the lock",
        )
        seen["first_holder"] = read_run_lock_holder(warehouse)
        # a second run while the first holds the warehouse: it must fail, not interleave
        started = time.monotonic()
        second = subprocess.run(
            command, capture_output=True, text=True, cwd=ROOT, env=_environment(), timeout=120
        )
        seen["second"] = (second.returncode, second.stdout + second.stderr)
        seen["second_seconds"] = time.monotonic() - started
        seen["first_alive_after_second"] = first.poll() is None
        # a run Dagster starts (schedule, sensor, UI) holds the lock through the same resource
        instance = dg.DagsterInstance.ephemeral()
        refused = defs.resolve_job_def(NIGHTLY_JOB_NAME).execute_in_process(
            run_config={
                "resources": {"warehouse": {"config": {"path": str(warehouse)}}},
                "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
            },
            instance=instance,
            asset_selection=[dg.AssetKey(["ops", "run_as_of"])],
            raise_on_error=False,
        )
        seen["dagster_run"] = (refused, instance)
        seen["first_alive_after_dagster_run"] = first.poll() is None
        # a third run that waits for the warehouse instead
        third = start("third", "--wait", "--wait-timeout", str(RUN_SECONDS), "--debug")
        _wait_for(lambda: "waiting up to" in log("third") or third.poll() is not None, 120,
                  "the third run to start waiting")  # fmt: skip
        seen["third_waited_while_first_ran"] = first.poll() is None
        first.wait(timeout=RUN_SECONDS)
    finally:
        first.kill()
    seen["first"] = (first.returncode, log("first"))
    snapshot = default_snapshot_path(warehouse)
    seen["first_snapshot_sha"] = _sha256(snapshot)
    seen["clean_marts"] = _key_marts(snapshot)  # a first run on an empty warehouse
    try:
        # the third run goes on by itself; kill it once it has fitted a model (mid-way)
        _wait_for(
            lambda: (
                any(
                    "models__clv_scores" in line and "STEP_SUCCESS" in line
                    for line in log("third").splitlines()
                )
                or third.poll() is not None
            ),
            RUN_SECONDS,
            "the third run to fit the CLV model",
        )
        holder = read_run_lock_holder(warehouse)
        seen["third_holder"] = holder
        third.send_signal(signal.SIGKILL)
        third.wait(timeout=60)
    finally:
        third.kill()
    seen["third"] = (third.returncode, log("third"))
    seen["lock_free_after_kill"] = _lock_is_free(warehouse)
    seen["snapshot_sha_after_kill"] = _sha256(snapshot)
    seen["third_rows_after_kill"] = _run_rows(warehouse, holder.run_id) if holder else None
    fourth = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, env=_environment(), timeout=RUN_SECONDS
    )
    seen["fourth"] = (fourth.returncode, fourth.stdout + fourth.stderr)
    seen["third_rows_after_next_run"] = _run_rows(warehouse, holder.run_id) if holder else None
    seen["next_marts"] = _key_marts(snapshot)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        seen["run_status"] = con.sql(
            "select run_id, status, pid, started_at, ended_at, detail from ops.run_status "
            "order by started_at"
        ).fetchall()
    return seen


def test_a_second_run_fails_at_once_naming_the_holder(scenario: dict[str, Any]) -> None:
    holder = scenario["first_holder"]
    assert holder is not None and holder.started_by == "crm-intel run"
    code, output = scenario["second"]
    assert code == 1, output
    assert scenario["first_alive_after_second"], "the second run outlasted the first"
    assert f"is in use by run {holder.run_id} (pid {holder.pid}" in output
    assert f"started {holder.started_at}" in output
    assert "crm-intel run --wait" in output
    assert "crm-intel run finished" not in output
    assert scenario["second_seconds"] < 60  # process start-up, not a run


def test_a_run_dagster_starts_is_refused_too_and_pages_naming_the_holder(
    scenario: dict[str, Any],
) -> None:
    result, instance = scenario["dagster_run"]
    assert not result.success
    assert scenario["first_alive_after_dagster_run"]
    # what the failure sensor records and posts for it
    context = dg.build_run_status_sensor_context(
        sensor_name=FAILURE_SENSOR_NAME,
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    ).for_run_failure()
    failure = failure_from_context(context, str(scenario["warehouse"]))
    holder = scenario["first_holder"]
    assert f"is in use by run {holder.run_id} (pid {holder.pid}" in failure.reason
    with duckdb.connect(str(scenario["warehouse"]), read_only=True) as con:
        # it wrote nothing: no as-of date of its own
        rows = con.execute("select count(*) from ops.runs where run_id = ?", [result.run_id])
        assert rows.fetchall()[0][0] == 0


def test_wait_runs_after_the_first_ends(scenario: dict[str, Any]) -> None:
    code, output = scenario["first"]
    assert code == 0, output[-3000:]
    third = scenario["third_holder"]
    assert third is not None and third.run_id != scenario["first_holder"].run_id
    assert scenario["third_waited_while_first_ran"]
    _, third_output = scenario["third"]
    assert f"waiting up to {RUN_SECONDS}s for run {scenario['first_holder'].run_id}" in third_output
    status = {run_id: row for run_id, *row in scenario["run_status"]}
    first_ended = status[scenario["first_holder"].run_id][3]
    third_started = status[third.run_id][2]
    assert first_ended is not None and third_started > first_ended  # never interleaved


def test_a_killed_run_leaves_no_lock_and_the_snapshot_as_it_was(
    scenario: dict[str, Any],
) -> None:
    code, _ = scenario["third"]
    assert code == -signal.SIGKILL
    assert scenario["lock_free_after_kill"]
    assert scenario["snapshot_sha_after_kill"] == scenario["first_snapshot_sha"]
    # it died mid-way: its as-of date and model fits were written, its end never was
    assert scenario["third_rows_after_kill"]["status"] == [("running",)]
    assert scenario["third_rows_after_kill"]["runs"] == 1
    assert scenario["third_rows_after_kill"]["model_runs"] > 0


def test_the_next_run_marks_the_killed_run_and_removes_its_rows(scenario: dict[str, Any]) -> None:
    code, output = scenario["fourth"]
    assert code == 0, output[-3000:]
    third = scenario["third_holder"]
    assert f"run {third.run_id} never ended" in output
    assert scenario["third_rows_after_next_run"] == {
        "status": [("killed",)],
        "runs": 0,
        "model_runs": 0,
    }
    statuses = [status for _, status, *_ in scenario["run_status"]]
    assert statuses == ["ended", "killed", "ended"]
    assert not run_lock_path(scenario["warehouse"]).read_text()  # released and emptied


@pytest.mark.parametrize("table", sorted(KEY_MARTS))
def test_the_run_after_a_kill_equals_a_clean_run(scenario: dict[str, Any], table: str) -> None:
    clean, recovered = scenario["clean_marts"][table], scenario["next_marts"][table]
    assert clean.height > 0
    assert_frame_equal(recovered, clean, check_exact=False, rel_tol=1e-9)


def test_the_lock_dies_with_its_process_and_is_counted_within_one(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from features.warehouse import acquire_run_lock; "
         "acquire_run_lock(sys.argv[1], 'run-a', started_by='a test'); print('held', flush=True); "
         "sys.stdin.readline()", str(warehouse)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(WarehouseBusyError, match=rf"run run-a \(pid {holder.pid} .*a test"):
            acquire_run_lock(warehouse, "run-b")
        started = time.monotonic()
        with pytest.raises(WarehouseBusyError, match="still after waiting 1s"):
            acquire_run_lock(warehouse, "run-b", wait_seconds=1, poll_seconds=0.1)
        assert 1 <= time.monotonic() - started < 10
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    # SIGKILL: no cleanup ran, yet the kernel dropped the lock with the process
    with hold_run_lock(warehouse, "run-b") as lock:
        assert lock.holder.pid == os.getpid()
        with hold_run_lock(warehouse, "run-b"):  # the same run again in this process: counted
            pass
        with pytest.raises(WarehouseBusyError, match="run run-b"):
            acquire_run_lock(warehouse, "run-c")
        assert not _lock_is_free(warehouse)
    assert _lock_is_free(warehouse)


def test_inbox_sensor_starts_nothing_for_an_inbox_already_loaded(
    scenario: dict[str, Any], inbox: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "inbox"
    shutil.copytree(inbox, copy)  # same paths and contents as the loaded files, new mtimes
    warehouse = scenario["warehouse"]
    sensor = build_inbox_sensor(nightly_job, 30, run_config_for, warehouse=warehouse)
    instance = dg.DagsterInstance.ephemeral()
    cursor = None

    def tick() -> dg.RunRequest | str | None:
        nonlocal cursor
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"inbox": Inbox(path=str(copy))}
        )
        outcome = sensor.evaluate_tick(context)
        cursor = outcome.cursor
        return outcome.run_requests[0] if outcome.run_requests else outcome.skip_message

    assert "to stop changing" in tick()  # a fresh cursor, as on the first look after start
    assert "already loaded" in tick()
    assert "no new or changed file" in tick()
    # something new arrives: a run is requested once it has settled
    (copy / "invoices/invoices_2026_01.csv").write_text(
        "invoice_id,customer_id,issue_date,due_date,amount,currency,document_type\n"
        "INV900000001,C0000001,2026-01-05,2026-02-04,100.00,EUR,invoice\n"
    )
    assert "invoices/invoices_2026_01.csv" in tick()
    # while a run writes the warehouse, the sensor cannot tell and waits for the next look
    writer = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
         "print('writing', flush=True); sys.stdin.readline()", str(warehouse)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
        assert "is being written" in tick()
    finally:
        writer.communicate("done\n", timeout=30)
    request = tick()
    assert isinstance(request, dg.RunRequest)
    assert request.tags["crm-intel/trigger"] == "inbox"
