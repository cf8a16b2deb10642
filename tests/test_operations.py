"""Nightly operations: publish, history, backfills, kills, retries, alerts, schedule, sensor.

One small inbox (400 customers) and one warehouse per module; runs are real `crm-intel`
invocations (in-process, or a subprocess where the test needs a process to kill).
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import date
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import dagster as dg
import duckdb
import pytest
from dagster._core.instance.config import dagster_instance_config
from dagster._utils.concurrency import ConcurrencySlotStatus
from typer.testing import CliRunner

from features.history import HISTORY_TABLES, append_history
from features.point_in_time import backfill_dates
from features.publish import default_snapshot_path
from pipelines.cli import app
from pipelines.definitions import NIGHTLY_JOB_NAME, defs, nightly_job, run_config_for
from pipelines.ops.automation import (
    FAILURE_SENSOR_NAME,
    build_inbox_sensor,
    build_nightly_schedule,
)
from pipelines.ops.publish import PUBLISHED_SNAPSHOT
from pipelines.resources import DUCKDB_POOL, Inbox, Warehouse
from pipelines.settings import NightlySettings, default_settings_resources, load_settings
from synthetic import generate_demo_data
from tests.conftest import run_cli, write_csv

ROOT = Path(__file__).resolve().parents[1]
OPS_CUSTOMERS = 400
FIRST_AS_OF = "2025-06-30"
runner = CliRunner()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def ops_inbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    inbox = tmp_path_factory.mktemp("ops_inbox")
    generate_demo_data(inbox, customers=OPS_CUSTOMERS, seed=11)
    return inbox


@pytest.fixture(scope="module")
def ops_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Settings of these runs: no CLV backtest, no GX gate (tested elsewhere; they slow a run)."""
    path = tmp_path_factory.mktemp("ops_config") / "crm-intel.toml"
    path.write_text("[clv]\nholdout_days = 0\n[ingest]\nvalidate_files = false\n")
    return path


def dagster_home(folder: Path) -> Path:
    """A Dagster home with the project's dagster.yaml, as `make dev` prepares data/.dagster."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", folder / "dagster.yaml")
    return folder


@pytest.fixture(scope="module")
def nightly_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dagster_home(tmp_path_factory.mktemp("dagster_home"))


@pytest.fixture(scope="module")
def published(
    ops_inbox: Path, ops_config: Path, nightly_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A working warehouse whose first run (as of FIRST_AS_OF) has been published.

    The run uses a persistent instance configured by dagster.yaml (DAGSTER_HOME set, as under
    cron or the daemon), so its events can be read back and the DuckDB pool is enforced.
    """
    warehouse = tmp_path_factory.mktemp("ops_warehouse") / "warehouse.duckdb"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(nightly_home))
        output = run_cli(ops_inbox, warehouse, "--as-of", FIRST_AS_OF, "--config", str(ops_config))
    assert f"published: {default_snapshot_path(warehouse)}" in output
    return warehouse


def test_every_asset_reports_duration_and_row_count(published: Path, nightly_home: Path) -> None:
    with dg.DagsterInstance.from_config(str(nightly_home)) as instance:
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        materialized = {
            event.asset_materialization.asset_key.to_user_string(): (
                event.asset_materialization.metadata
            )
            for event in instance.all_logs(
                run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            )
        }
    assert set(materialized) == {
        key.to_user_string() for key in defs.get_repository_def().asset_graph.get_all_asset_keys()
    }
    for asset, metadata in materialized.items():
        assert metadata["duration_seconds"].value >= 0, asset
    # the two assets that write no table of their own report what they decided instead
    not_tables = {"ops/run_as_of": "as_of_date", "ops/published_snapshot": "tables"}
    for asset, metadata in materialized.items():
        assert not_tables.get(asset, "dagster/row_count") in metadata, asset
    assert materialized["marts/customer_360"]["purchasers"].value > 0
    assert materialized["marts/customer_360"]["clv_total"].value > 0
    # the marts carry their column schema (the UI's "Columns" tab) and their first rows
    marts = [asset for asset in materialized if asset.startswith("marts/")]
    assert len(marts) >= 8
    for asset in marts:
        assert materialized[asset]["dagster/column_schema"].value.columns, asset
    schema_360 = materialized["marts/customer_360"]["dagster/column_schema"].value
    with duckdb.connect(str(published), read_only=True) as con:
        columns_360 = [row[0] for row in con.sql("describe marts.customer_360").fetchall()]
    assert [column.name for column in schema_360.columns] == columns_360
    for asset in marts:
        preview = materialized[asset]["preview"].value
        assert preview.startswith("|") and "tax_id" not in preview, asset


def test_step_timings_are_kept_in_the_warehouse(published: Path, nightly_home: Path) -> None:
    with dg.DagsterInstance.from_config(str(nightly_home)) as instance:
        [run] = instance.get_runs()
        dagster_steps = {
            stats.step_key: stats.end_time - stats.start_time
            for stats in instance.get_run_step_stats(run.run_id)
        }
    with duckdb.connect(str(published), read_only=True) as con:
        kept = {
            step: (seconds, rows, outcome)
            for step, seconds, rows, outcome in con.execute(
                "select step, seconds, rows, outcome from ops.step_runs where run_id = ?",
                [run.run_id],
            ).fetchall()
        }
        customers = con.sql("select count(*) from marts.customer_360").fetchall()[0][0]
    # every step of the run, checks included, with Dagster's own duration
    assert set(kept) == set(dagster_steps)
    for step, (seconds, _, outcome) in kept.items():
        assert seconds == pytest.approx(dagster_steps[step], abs=0.01), step
        assert outcome == "succeeded", step
    assert kept["marts__customer_360"][1] == customers
    result = runner.invoke(app, ["status", "--warehouse", str(published), "--steps", "3"])
    assert result.exit_code == 0, result.output
    listed = result.output.split(f"dearest steps of run {run.run_id} (")[1].splitlines()[1:]
    # the dearest first, ties by step name (as status orders them)
    dearest = sorted(kept.items(), key=lambda item: (-item[1][0], item[0]))[:3]
    assert len(listed) == 3
    assert [float(line.split()[0]) for line in listed] == [
        round(seconds, 1) for _, (seconds, *_) in dearest
    ]
    report = json.loads(
        runner.invoke(
            app, ["status", "--warehouse", str(published), "--steps", "3", "--json"]
        ).output
    )
    assert [step["step"] for step in report["steps"]["dearest"]] == [s for s, _ in dearest]
    assert report["steps"]["steps"] == len(kept)


def test_reader_never_meets_a_lock_or_a_mix_of_two_runs(
    published: Path, ops_inbox: Path, ops_config: Path, tmp_path: Path
) -> None:
    snapshot = default_snapshot_path(published)
    with duckdb.connect(str(snapshot), read_only=True) as con:
        published_as_of = str(
            con.sql("select max(as_of_date) from marts.customer_360").fetchall()[0][0]
        )
    with duckdb.connect(str(published), read_only=True) as con:
        latest = str(con.sql("select max(issue_date) from staging.invoices").fetchall()[0][0])
    assert published_as_of != latest
    stop, out = tmp_path / "stop", tmp_path / "observations.json"
    reader = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/published_reader.py"), str(snapshot), str(stop),
         str(out), json.dumps(list(HISTORY_TABLES))],
    )  # fmt: skip
    try:
        # the next night: default as-of (latest invoice date), a different date from the first
        run_cli(ops_inbox, published, "--config", str(ops_config))
    finally:
        stop.touch()
        reader.wait(timeout=60)
    seen = json.loads(out.read_text())
    assert seen["errors"] == []
    observations = seen["observations"]
    as_of_dates = {o["as_of"] for o in observations}
    assert as_of_dates == {published_as_of, latest}
    for observation in observations:
        as_of = observation["as_of"]
        assert observation["run_as_of"] == as_of
        assert observation["current"], "no mart with an as_of_date in the snapshot"
        mixed = {t: d for t, d in observation["current"].items() if d != [as_of]}
        assert not mixed, f"snapshot of {as_of} holds marts of other dates: {mixed}"
        assert observation["history_rows_for_as_of"]["marts.customer_360_history"] > 0


def test_killed_run_leaves_the_published_snapshot_as_it_was(
    published: Path, ops_inbox: Path, ops_config: Path
) -> None:
    snapshot = default_snapshot_path(published)
    before = sha256(snapshot)
    environment = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    run = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run", "--debug", "--inbox", str(ops_inbox),
         "--warehouse", str(published), "--as-of", "2025-09-30", "--config", str(ops_config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env={**environment, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    reached_models = False
    assert run.stdout is not None
    for line in run.stdout:
        if "models__clv_scores" in line and "STEP_START" in line:
            reached_models = True
            run.send_signal(signal.SIGKILL)
            break
    run.wait(timeout=60)
    assert reached_models and run.returncode == -signal.SIGKILL
    assert sha256(snapshot) == before
    assert not list(snapshot.parent.glob("*.tmp-*"))
    # the next run recovers the working warehouse and publishes (an earlier date than the
    # snapshot's: asked for with --publish)
    run_cli(ops_inbox, published, "--as-of", "2025-09-30", "--config", str(ops_config), "--publish")
    with duckdb.connect(str(snapshot), read_only=True) as con:
        assert con.sql("select distinct as_of_date from marts.customer_360").fetchall() == [
            (date(2025, 9, 30),)
        ]


def test_backfill_replaces_a_date_instead_of_duplicating_it(
    published: Path, ops_inbox: Path, ops_config: Path
) -> None:
    snapshot = default_snapshot_path(published)
    before = sha256(snapshot)
    backfill = [
        "backfill", "--start", "2025-04-30", "--end", "2025-04-30", "--config", str(ops_config),
        "--inbox", str(ops_inbox), "--warehouse", str(published),
    ]  # fmt: skip
    history = (
        "select count(*), count(distinct customer_id), count(distinct run_id), any_value(run_id) "
        "from marts.customer_360_history where as_of_date = '2025-04-30'"
    )
    stored = []
    for _ in range(2):
        result = runner.invoke(app, backfill)
        assert result.exit_code == 0, result.output
        assert "2025-04-30: done" in result.output
        with duckdb.connect(str(published), read_only=True) as con:
            stored.append(con.sql(history).fetchall()[0])
            customers = con.sql("select count(*) from marts.customer_360").fetchall()[0][0]
            # the migration from 2025-04-30 to the next as-of date in history (an earlier test's)
            following = con.sql(
                "select as_of_date, sum(customers), sum(customers) filter (where moved) "
                "from marts.segment_migration where previous_as_of_date = '2025-04-30' group by 1"
            ).fetchall()
            moved = con.sql(
                "select count(*) from marts.segment_moves where previous_as_of_date = '2025-04-30'"
            ).fetchall()[0][0]
    # one set of rows for the date, every customer once, from one run (the latest)
    assert [row[:3] for row in stored] == [(customers, customers, 1)] * 2
    assert stored[0][3] != stored[1][3]
    assert len(following) == 1 and following[0][1] >= customers
    assert moved == following[0][2] > 0
    # a backfill never publishes
    assert sha256(snapshot) == before


def test_status_tells_the_last_run_what_is_published_and_quarantine(published: Path) -> None:
    result = runner.invoke(app, ["status", "--warehouse", str(published)])
    assert result.exit_code == 0, result.output
    with duckdb.connect(str(default_snapshot_path(published)), read_only=True) as con:
        run_id, as_of = con.sql(
            "select run_id, as_of_date from ops.publications order by published_at desc limit 1"
        ).fetchall()[0]
    with duckdb.connect(str(published), read_only=True) as con:  # the working warehouse
        refresh = con.sql(
            "select mode, as_of_date, customers_resettled from features.invoice_settlement_state"
        ).fetchall()[0]
    assert f"run {run_id}, as of {as_of}" in result.output
    assert "last run:" in result.output and "quarantined rows:" in result.output
    assert f"invoice settlement: {refresh[0]} as of {refresh[1]}, {refresh[2]:,} customers" in (
        result.output
    )
    locker = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('locked', flush=True); time.sleep(30)", str(published)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        during_run = runner.invoke(app, ["status", "--warehouse", str(published)])
        listing = runner.invoke(app, ["segments", "list", "--warehouse", str(published)])
    finally:
        locker.kill()
        locker.wait()
    assert during_run.exit_code == 0, during_run.output
    assert "a run is writing it now" in during_run.output
    assert f"run {run_id}, as of {as_of}" in during_run.output
    assert listing.exit_code == 0 and "Champions" in listing.output


def test_a_locked_warehouse_is_retried_with_backoff(published: Path) -> None:
    # another process holds the working file until the step has failed once on the lock
    locker = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
         "print('locked', flush=True); sys.stdin.readline()", str(published)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
    instance = dg.DagsterInstance.ephemeral()
    outcome = {}

    def run() -> None:
        outcome["result"] = defs.resolve_job_def(NIGHTLY_JOB_NAME).execute_in_process(
            run_config={
                "resources": {"warehouse": {"config": {"path": str(published)}}},
                "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
            },
            instance=instance,
            asset_selection=[dg.AssetKey(["marts", "segment_moves"])],
            raise_on_error=False,
        )

    def retried() -> bool:
        return any(
            instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
            for run in instance.get_runs()
        )

    worker = threading.Thread(target=run)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and worker.is_alive() and not retried():
            time.sleep(0.1)
    finally:
        locker.communicate("release\n", timeout=30)
    worker.join(timeout=120)
    result = outcome["result"]
    retries = [
        e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert result.success
    assert retries and "lock" in str(retries[0].event_specific_data.error.cause).lower()


@pytest.mark.parametrize(
    ("asset", "as_of", "reason"),
    [
        # a bad date in the settings: the run resource refuses it before any step starts
        ("ops/run_as_of", "2025-13-01", "must be a date YYYY-MM-DD"),
        # any other error (here a mart built without its run's as-of date) is not retried either
        ("marts/customer_360", None, "has no as-of date"),
    ],
)
def test_a_data_error_is_not_retried(
    asset: str, as_of: str | None, reason: str, tmp_path: Path
) -> None:
    config = {
        "resources": {
            "run": {"config": {"as_of": as_of} if as_of else {}},
            "warehouse": {"config": {"path": str(tmp_path / "empty.duckdb")}},
        },
        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
    }
    result = defs.resolve_job_def(NIGHTLY_JOB_NAME).execute_in_process(
        run_config=config,
        instance=dg.DagsterInstance.ephemeral(),
        asset_selection=[dg.AssetKey.from_user_string(asset)],
        raise_on_error=False,
    )
    assert not result.success
    kinds = [event.event_type for event in result.all_events]
    assert dg.DagsterEventType.STEP_UP_FOR_RETRY not in kinds
    errors = [
        event.event_specific_data.error  # type: ignore[union-attr]
        for event in result.all_events
        if event.is_step_failure or event.event_type == dg.DagsterEventType.RESOURCE_INIT_FAILURE
    ]
    assert len(errors) == 1
    assert reason in errors[0].message + str(errors[0].cause)


@pytest.fixture(scope="module")
def future_dated_inbox(ops_inbox: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small inbox plus one invoice dated 2099: a blocking check on staging fails."""
    inbox = tmp_path_factory.mktemp("future_dated")
    shutil.copytree(ops_inbox / "invoices", inbox / "invoices")
    with (inbox / "invoices/invoices.csv").open("a") as invoices:
        invoices.write("INV099999999,C0000001,2099-01-01,2099-01-31,100.00,EUR,invoice\n")
    return inbox


def test_failed_check_publishes_nothing_records_and_runs_the_command(
    future_dated_inbox: Path, tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    hook_output = tmp_path / "hook.json"
    settings = tmp_path / "crm-intel.toml"
    settings.write_text(
        f'[nightly]\nfailure_command = "cat > {hook_output}"\n[ingest]\nvalidate_files = false\n'
    )
    result = runner.invoke(
        app, ["run", "--inbox", str(future_dated_inbox), "--warehouse", str(warehouse),
              "--config", str(settings)],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "no_future_dated_invoices" in result.output
    assert not default_snapshot_path(warehouse).exists()
    payload = json.loads(hook_output.read_text())
    with duckdb.connect(str(warehouse), read_only=True) as con:
        recorded = con.sql("select run_id, failed_steps, reason from ops.run_failures").fetchall()
    assert recorded == [(payload["run_id"], ", ".join(payload["failed_steps"]), payload["reason"])]
    assert payload["failed_steps"] == ["staging/invoices_no_future_dated_invoices"]
    assert "no_future_dated_invoices" in payload["reason"]
    # a throwaway Dagster instance ran it; the warehouse still says which step failed, and when
    with duckdb.connect(str(warehouse), read_only=True) as con:
        outcomes = dict(
            con.execute(
                "select step, outcome from ops.step_runs where run_id = ? and seconds >= 0",
                [payload["run_id"]],
            ).fetchall()
        )
    assert outcomes["staging__invoices_no_future_dated_invoices"] == "failed"
    assert outcomes["staging__invoices"] == "succeeded"


class _Webhook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Webhook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass


def test_failure_sensor_records_a_real_failed_run_and_posts_the_webhook(
    future_dated_inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    server = HTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # the sensor reads ./crm-intel.toml as the daemon would
    monkeypatch.chdir(tmp_path)
    (tmp_path / "crm-intel.toml").write_text(
        f'[nightly]\nfailure_webhook = "http://127.0.0.1:{server.server_port}/alerts"\n'
        "[ingest]\nvalidate_files = false\n"
    )
    instance = dg.DagsterInstance.ephemeral()
    config = run_config_for(
        load_settings(), warehouse=str(warehouse), inbox=str(future_dated_inbox)
    )
    config["loggers"] = {"console": {"config": {"log_level": "CRITICAL"}}}
    result = defs.resolve_job_def(NIGHTLY_JOB_NAME).execute_in_process(
        run_config=config, instance=instance, raise_on_error=False
    )
    assert not result.success
    run_failure = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[0]
    # the warehouse resource holds [engine]: a resource with a nested one is opened in a scope
    with dg.build_run_status_sensor_context(
        sensor_name=FAILURE_SENSOR_NAME,
        dagster_event=run_failure.dagster_event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={**default_settings_resources(), "warehouse": Warehouse()},
    ) as status_context:
        try:
            defs.resolve_sensor_def(FAILURE_SENSOR_NAME)(status_context.for_run_failure())
        finally:
            server.shutdown()
    with duckdb.connect(str(warehouse), read_only=True) as con:
        recorded = con.sql("select run_id, failed_steps, reason from ops.run_failures").fetchall()
    assert recorded[0][:2] == (result.run_id, "staging/invoices_no_future_dated_invoices")
    assert "no_future_dated_invoices" in recorded[0][2]
    assert _Webhook.received[-1]["run_id"] == result.run_id
    assert _Webhook.received[-1]["warehouse"] == str(warehouse.resolve())


def test_inbox_sensor_waits_for_files_to_settle(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    invoices = write_csv(
        inbox / "invoices/invoices.csv",
        "invoice_id,customer_id,issue_date,amount\nI1,C1,2025-01-02,10\n",
    )
    (inbox / "truth").mkdir()
    (inbox / "truth/parameters.json").write_text("{}")  # not an export: never watched
    sensor = build_inbox_sensor(nightly_job, 30, run_config_for)
    instance = dg.DagsterInstance.ephemeral()
    cursor = None

    def tick() -> dg.SkipReason | dg.RunRequest:
        nonlocal cursor
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"inbox": Inbox(path=str(inbox))}
        )
        outcome = sensor.evaluate_tick(context)
        cursor = outcome.cursor
        return outcome.run_requests[0] if outcome.run_requests else outcome.skip_message

    assert "waiting for 1 file(s) to stop changing: invoices/invoices.csv" in tick()
    request = tick()
    assert isinstance(request, dg.RunRequest)
    assert request.tags["crm-intel/trigger"] == "inbox"
    assert "publish" in request.run_config["resources"]
    assert "no new or changed file" in tick()
    # a file still being written: its size changes between looks, so no run yet
    payments = inbox / "invoices/payments.csv"
    payments.write_text("payment_id,invoice_id,payment_date,amount\n")
    assert "invoices/payments.csv" in tick()
    with payments.open("a") as growing:
        growing.write("P1,I1,2025-01-10,10\n")
    assert "invoices/payments.csv" in tick()
    assert isinstance(tick(), dg.RunRequest)
    # a corrected re-delivery of a loaded file is a change too
    with invoices.open("a") as corrected:
        corrected.write("I2,C1,2025-01-03,5\n")
    assert "invoices/invoices.csv" in tick()
    assert isinstance(tick(), dg.RunRequest)


def test_schedule_time_and_timezone_come_from_settings() -> None:
    nightly = NightlySettings(schedule="30 3 * * 1-5", timezone="Europe/Paris")
    schedule = build_nightly_schedule(nightly_job, nightly, run_config_for)
    assert schedule.cron_schedule == "30 3 * * 1-5"
    assert schedule.execution_timezone == "Europe/Paris"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    request = schedule.evaluate_tick(dg.build_schedule_context()).run_requests[0]
    assert request.run_config["resources"]["run"] == {"config": {}}
    assert request.tags["crm-intel/trigger"] == "schedule"


def test_definitions_turn_automation_on_and_publish_after_everything() -> None:
    repository = defs.get_repository_def()
    statuses = {s.name: s.default_status for s in repository.sensor_defs}
    assert set(statuses.values()) == {dg.DefaultSensorStatus.RUNNING} and len(statuses) == 2
    graph = repository.asset_graph
    everything_else = graph.get_all_asset_keys() - {PUBLISHED_SNAPSHOT}
    assert graph.get(PUBLISHED_SNAPSHOT).parent_keys == everything_else


def test_history_adds_new_columns_and_replaces_a_date(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.execute("create schema marts")
        con.execute(
            "create table marts.c360 as select 'C1' as customer_id, date '2025-01-31' as as_of_date"
        )
        append_history(
            con, "marts.c360", "marts.c360_history", as_of_date=date(2025, 1, 31), run_id="r1"
        )
        con.execute(
            "create or replace table marts.c360 as select 'C1' as customer_id, "
            "date '2025-02-28' as as_of_date, 0.4 as churn_probability"
        )
        grown = append_history(
            con, "marts.c360", "marts.c360_history", as_of_date=date(2025, 2, 28), run_id="r2"
        )
        again = append_history(
            con, "marts.c360", "marts.c360_history", as_of_date=date(2025, 2, 28), run_id="r3"
        )
        rows = con.sql(
            "select as_of_date::varchar, run_id, churn_probability::double "
            "from marts.c360_history order by 1"
        ).fetchall()
    assert grown.added_columns == ("churn_probability",) and again.replaced_rows == 1
    assert rows == [("2025-01-31", "r1", None), ("2025-02-28", "r3", 0.4)]


@pytest.mark.parametrize(
    ("start", "end", "every", "expected"),
    [
        ("2025-01-30", "2025-02-01", "day", ["2025-01-30", "2025-01-31", "2025-02-01"]),
        ("2025-01-01", "2025-01-20", "week", ["2025-01-01", "2025-01-08", "2025-01-15"]),
        (
            "2025-01-31",
            "2025-04-30",
            "month",
            ["2025-01-31", "2025-02-28", "2025-03-31", "2025-04-30"],
        ),
        ("2024-11-15", "2025-01-14", "month", ["2024-11-15", "2024-12-15"]),
    ],
)
def test_backfill_dates(start: str, end: str, every: str, expected: list[str]) -> None:
    dates = backfill_dates(date.fromisoformat(start), date.fromisoformat(end), every)
    assert [d.isoformat() for d in dates] == expected


def test_backfill_refuses_a_reversed_range(tmp_path: Path) -> None:
    result = runner.invoke(app, ["backfill", "--start", "2025-02-01", "--end", "2025-01-01",
                                 "--inbox", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 1 and "is before start" in result.output


def test_a_second_run_waits_for_the_duckdb_pool(tmp_path: Path) -> None:
    """Two runs at once on the instance of dagster.yaml: the second one's DuckDB step waits.

    The first run is represented by the pool slot its running step holds (claimed in the
    instance's own storage, as the executor does), so the overlap is certain, not a race.
    """
    home = dagster_home(tmp_path / "home")
    job = defs.resolve_job_def(NIGHTLY_JOB_NAME)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and queue.max_concurrent_runs == 1
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default(DUCKDB_POOL)
        assert [(p.name, p.limit) for p in storage.get_pool_limits()] == [(DUCKDB_POOL, 1)]
        holder = storage.claim_concurrency_slot(DUCKDB_POOL, "first-run", "marts__customer_360")
        assert holder.slot_status == ConcurrencySlotStatus.CLAIMED
        outcome = {}

        def second_run() -> None:
            outcome["result"] = job.execute_in_process(
                run_config={
                    "resources": {
                        "run": {"config": {"as_of": FIRST_AS_OF}},
                        "warehouse": {"config": {"path": str(tmp_path / "w.duckdb")}},
                    },
                    "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
                },
                instance=instance,
                asset_selection=[dg.AssetKey(["ops", "run_as_of"])],
                raise_on_error=False,
            )

        worker = threading.Thread(target=second_run)
        worker.start()

        def messages() -> list[str]:
            [run] = instance.get_runs()
            return [entry.message for entry in instance.all_logs(run.run_id)]

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            instance.get_runs() and "Step blocked by limit for pool duckdb" in messages()
        ):
            time.sleep(0.2)
        assert "Step blocked by limit for pool duckdb" in messages()
        assert not any('Started execution of step "ops__run_as_of"' in m for m in messages())
        # the first run's step ends: the second run goes on by itself
        storage.free_concurrency_slot_for_step("first-run", "marts__customer_360")
        worker.join(timeout=120)
        assert outcome["result"].success
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        assert con.sql("select as_of_date::varchar from ops.runs").fetchall() == [(FIRST_AS_OF,)]


def test_inbox_sensor_skips_while_a_run_is_queued(ops_inbox: Path, tmp_path: Path) -> None:
    with dg.DagsterInstance.from_config(str(dagster_home(tmp_path / "home"))) as instance:
        sensor = build_inbox_sensor(nightly_job, 30, run_config_for)
        resources = {"inbox": Inbox(path=str(ops_inbox))}
        first = sensor.evaluate_tick(dg.build_sensor_context(instance, resources=resources))
        assert first.skip_message and "stop changing" in first.skip_message
        # a run the schedule created that has not started yet (waiting for the one run slot of
        # max_concurrent_runs: 1; Dagster only lets the daemon's submit path mark it QUEUED)
        run = instance.create_run_for_job(defs.resolve_job_def(NIGHTLY_JOB_NAME))
        assert run.status == dg.DagsterRunStatus.NOT_STARTED
        context = dg.build_sensor_context(instance, cursor=first.cursor, resources=resources)
        second = sensor.evaluate_tick(context)
    assert not second.run_requests
    assert second.skip_message == (
        f"1 run(s) of {NIGHTLY_JOB_NAME} queued: they will load these files"
    )


@pytest.mark.parametrize("file_name", ["dagster.yaml", "dagster.production.yaml"])
def test_instance_files_are_valid_dagster_config(file_name: str) -> None:
    config, _ = dagster_instance_config(str(ROOT), file_name)
    assert config["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}
    assert config["concurrency"]["runs"] == {"max_concurrent_runs": 1}
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    if file_name == "dagster.production.yaml":
        assert config["storage"]["postgres"]["postgres_db"]["password"] == {
            "env": "DAGSTER_PG_PASSWORD"
        }
    else:
        # storage stays Dagster's default: SQLite under $DAGSTER_HOME
        assert "storage" not in config


def test_make_dev_starts_schedule_sensors_and_failure_alerts(tmp_path: Path) -> None:
    """What `dagster dev` loads: schedule and sensors on by default, timing from crm-intel.toml."""
    (tmp_path / "crm-intel.toml").write_text(
        '[nightly]\nschedule = "15 4 * * 1-6"\ntimezone = "Europe/Berlin"\n'
    )
    script = (
        "import json; from pipelines.definitions import defs; "
        "r = defs.get_repository_def(); "
        "print(json.dumps({d.name: [str(d.default_status), getattr(d, 'cron_schedule', None), "
        "getattr(d, 'execution_timezone', None)] for d in [*r.schedule_defs, *r.sensor_defs]}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
    )  # fmt: skip
    automation = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert automation == {
        "crm_intel_nightly_schedule": [
            "DefaultScheduleStatus.RUNNING", "15 4 * * 1-6", "Europe/Berlin"
        ],
        "crm_intel_inbox_sensor": ["DefaultSensorStatus.RUNNING", None, None],
        FAILURE_SENSOR_NAME: ["DefaultSensorStatus.RUNNING", None, None],
    }  # fmt: skip
    # and `make dev` runs `dagster dev` (webserver + daemon) on these definitions with
    # dagster.yaml in data/.dagster
    recipe = subprocess.run(
        ["make", "-n", "dev"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "cp dagster.yaml data/.dagster/dagster.yaml" in recipe
    assert f"DAGSTER_HOME={ROOT}/data/.dagster" in recipe
    assert "dagster dev -m pipelines.definitions" in recipe
