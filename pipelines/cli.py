"""``crm-intel``: every user action is a subcommand."""

import importlib.metadata
import json
import os
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import duckdb
import typer

from pipelines.cli_common import (
    ConfigOption,
    WarehouseOption,
    fail,
    publication_outcome,
    published_path,
    warehouse_path_of,
)
from pipelines.cli_finance import finance_app
from pipelines.cli_progress import ProgressMode, RunProgress, choose_mode, readable_step, step_names
from pipelines.cli_report import report_command
from pipelines.cli_segments import segments_app
from pipelines.resources import AS_OF_TAG, DEFAULT_INBOX
from pipelines.settings import SettingsError, load_settings
from pipelines.wording import plural

# -h is help everywhere: Click hands help_option_names down to every sub-command and sub-group.
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    help="Analytical CRM pipeline: RFM, CLV, churn and credit risk per customer.",
    context_settings=CONTEXT_SETTINGS,
)
config_app = typer.Typer(help="Settings.", context_settings=CONTEXT_SETTINGS)
app.add_typer(segments_app, name="segments")
app.add_typer(finance_app, name="finance")
app.command("report")(report_command)
app.add_typer(config_app, name="config")

QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print only errors and the final outcome.")
]
VerboseOption = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", help="A line per step: started, finished (with its duration), not run."
    ),
]
DebugOption = Annotated[bool, typer.Option("--debug", help="Dagster's own debug event stream.")]
ProgressOption = Annotated[
    bool | None,
    typer.Option(
        "--progress/--no-progress",
        help="The one-line progress display (step, steps done, elapsed); default: on when "
        "stderr is a terminal.",
        show_default=False,
    ),
]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"crm-intel {importlib.metadata.version('crm-intel')}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Analytical CRM pipeline: RFM, CLV, churn and credit risk per customer."""


@app.command()
def run(
    inbox: Annotated[
        Path | None, typer.Option(help=f"Input folder (default: {DEFAULT_INBOX}).")
    ] = None,
    warehouse: WarehouseOption = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="As-of date YYYY-MM-DD.")] = None,
    config: ConfigOption = None,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
    debug: DebugOption = False,
    progress: ProgressOption = None,
    publish: Annotated[
        bool,
        typer.Option(
            "--publish",
            help="Publish even if the published snapshot holds a newer as-of date (a run for "
            "an earlier date otherwise fills the warehouse and history only).",
        ),
    ] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="If another run holds the warehouse, wait for it to end instead of failing.",
        ),
    ] = False,
    wait_timeout: Annotated[
        int, typer.Option("--wait-timeout", min=0, help="Seconds to wait at most with --wait.")
    ] = 3600,
) -> None:
    """Materialize every asset in-process (the same job the Dagster UI runs)."""
    if as_of:
        try:
            date.fromisoformat(as_of)
        except ValueError:
            raise fail(f"--as-of must be YYYY-MM-DD, got {as_of!r}") from None
    try:
        overrides: dict[str, dict] = {"run": {"as_of": as_of}} if as_of else {}
        if publish:
            overrides["publish"] = {"enabled": True, "replace_newer": True}
        settings = load_settings(config, overrides=overrides)
    except SettingsError as error:
        raise fail(str(error)) from None
    inbox_path = inbox or Path(os.environ.get("CRM_INTEL_INBOX", DEFAULT_INBOX))
    if not inbox_path.is_dir():
        raise fail(f"inbox folder {inbox_path} does not exist")
    warehouse_path = warehouse_path_of(warehouse)
    if settings.run.as_of:
        _refuse_as_of_outside_data(
            date.fromisoformat(settings.run.as_of), inbox_path, warehouse_path, settings
        )
    mode = choose_mode(quiet=quiet, verbose=verbose, debug=debug, progress=progress)
    elapsed = _execute_run(
        settings, inbox_path, warehouse_path, mode, wait_seconds=wait_timeout if wait else 0
    )
    if mode == "quiet":
        typer.echo(f"crm-intel run finished in {elapsed:.1f}s")
    else:
        _print_summary(warehouse_path, elapsed)
    if settings.engine.kind != "duckdb":
        typer.echo(settings.engine.describe_spark(warehouse_path))
    typer.echo(publication_outcome(warehouse_path, settings))


def _refuse_as_of_outside_data(
    as_of: date, inbox_path: Path, warehouse_path: Path, settings, option: str = "--as-of"
) -> None:
    """Refuse, before any step runs, an as-of date no run can describe: one after today (its
    facts are not known yet) or one before the first invoice (no customer has bought yet)."""
    today = date.today()
    first = _first_invoice_date(inbox_path, warehouse_path, settings)
    valid = f"valid: {first} to {today}" if first else f"valid: up to {today}"
    if as_of > today:
        raise fail(f"{option} {as_of} is in the future: its facts are not known yet ({valid})")
    if first and as_of < first:
        raise fail(
            f"{option} {as_of} is before the data starts: the first invoice is dated {first} "
            f"({valid})"
        )


def _first_invoice_date(inbox_path: Path, warehouse_path: Path, settings) -> date | None:
    """The earliest invoice date, cheaply: a min over the working warehouse's staged invoices,
    else the issue dates of the inbox's invoice files (read as the run reads them, with their
    vendor mappings). None when neither tells (the run then says what is wrong)."""
    if warehouse_path.is_file():
        try:
            with duckdb.connect(str(warehouse_path), read_only=True) as con:
                first = con.sql("select min(issue_date) from staging.invoices").fetchall()[0][0]
            if first is not None:
                return first
        except duckdb.Error:
            pass  # not staged yet, or a run is writing it: read the inbox
    import polars as pl

    from features.contracts import CONTRACTS_BY_TABLE
    from features.ingest import discover_files, inbox_mappings, read_raw_file

    contract = CONTRACTS_BY_TABLE["invoices"]
    try:
        files = discover_files(
            inbox_path, contract, inbox_mappings(inbox_path, settings.ingest.options())
        )
    except Exception:  # a bad mapping: the run names it
        return None
    firsts = []
    for file in files:  # one per export file, not per row
        try:
            issue_date = pl.col("issue_date").str.strip_chars()
            fmt = file.mapping.date_format or "%Y-%m-%d"
            first = (
                read_raw_file(file, contract, load_id="as-of-range")
                .select(issue_date.str.to_date(fmt, strict=False).min())
                .collect()
                .item()
            )
        except Exception:  # a file the run will refuse, with its reason
            continue
        if first is not None:
            firsts.append(first)
    return min(firsts, default=None)


def _execute_run(
    settings, inbox_path: Path, warehouse_path: Path, mode: ProgressMode, wait_seconds: float = 0
) -> float:
    """Run the nightly job holding the warehouse's run lock; exit 1 if another run holds it.

    The lock is taken before Dagster is even imported, so a second run fails (or starts
    waiting) at once, before any step. The job's warehouse resource takes it again for the same
    run id (counted, not locked twice), as it does in runs the schedule, the sensor or the UI
    start; it is released after the last step and the failure record.
    """
    from features.warehouse import WarehouseBusyError, acquire_run_lock

    def tell_waiting(holder) -> None:
        who = holder.describe() if holder else "another run"
        typer.secho(
            f"waiting up to {wait_seconds:.0f}s for {who} to finish with {warehouse_path}",
            fg="yellow",
            err=True,
        )

    run_id = str(uuid.uuid4())  # Dagster's own format: the lock file names the run from the start
    try:
        lock = acquire_run_lock(
            warehouse_path,
            run_id,
            started_by="crm-intel run",
            wait_seconds=wait_seconds,
            on_wait=tell_waiting,
        )
    except WarehouseBusyError as busy:
        hint = "" if wait_seconds else "; wait for it with `crm-intel run --wait`"
        raise fail(f"{busy}{hint}") from None
    try:
        return _run_job(settings, inbox_path, warehouse_path, mode, run_id)
    finally:
        lock.release()


def _run_job(
    settings, inbox_path: Path, warehouse_path: Path, mode: ProgressMode, run_id: str
) -> float:
    """Run the nightly job in-process; on failure record it, page, and exit 1. Returns seconds.

    The progress display listens to the run's events as they are stored; Dagster's own console
    stream is for --debug only.
    """
    import dagster as dg

    from pipelines.definitions import NIGHTLY_JOB_NAME, defs, run_config_for

    run_config = run_config_for(settings, warehouse=str(warehouse_path), inbox=str(inbox_path))
    if mode != "debug":
        run_config["loggers"] = {"console": {"config": {"log_level": "CRITICAL"}}}
    instance = (
        dg.DagsterInstance.get()
        if os.environ.get("DAGSTER_HOME")
        else dg.DagsterInstance.ephemeral()
    )
    job = defs.resolve_job_def(NIGHTLY_JOB_NAME)
    names = step_names()
    display = RunProgress(names, total=len(job.nodes), mode=mode)
    instance.add_event_listener(run_id, display)
    started = time.perf_counter()
    with display:
        result = job.execute_in_process(
            run_config=run_config,
            instance=instance,
            raise_on_error=False,
            run_id=run_id,
            tags={AS_OF_TAG: settings.run.as_of or "latest invoice date"},
        )
    elapsed = time.perf_counter() - started
    if not result.success:
        failed_steps = [
            event
            for event in result.all_events
            if event.is_step_failure and event.event_specific_data is not None
        ]
        failures = [
            f"{readable_step(event.step_key, names)} ({event.step_key.replace('__', '/')}): "
            f"{_root_cause(event.event_specific_data.error)}"  # type: ignore[union-attr]
            for event in failed_steps
        ]
        failed_checks = [
            f"{evaluation.asset_key.to_user_string()} {evaluation.check_name}"
            for evaluation in result.get_asset_check_evaluations()
            if not evaluation.passed
        ]
        detail = "\n  ".join(failures + [f"check failed: {c}" for c in failed_checks])
        _page_failure(result.run_id, failed_steps, failures, warehouse_path, settings)
        raise fail(f"run {result.run_id} failed after {elapsed:.1f}s:\n  {detail}")
    return elapsed


def _page_failure(run_id, failed_steps, failures, warehouse_path: Path, settings) -> None:
    """The same record and hook as the Dagster run-failure sensor, for runs started by cron."""
    from datetime import datetime

    from pipelines.definitions import NIGHTLY_JOB_NAME
    from pipelines.ops.alerts import RunFailure, handle_failure

    failure = RunFailure(
        run_id=run_id,
        job_name=NIGHTLY_JOB_NAME,
        failed_steps=[event.step_key.replace("__", "/") for event in failed_steps],
        reason="; ".join(failures) or "run failed",
        failed_at=datetime.now(),
        warehouse=str(warehouse_path.resolve()),
    )
    for outcome in handle_failure(failure, settings.nightly):
        typer.secho(f"failure {outcome}", fg="yellow", err=True)


def _root_cause(error) -> str:  # dagster's SerializableErrorInfo chain
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def _print_summary(warehouse_path: Path, elapsed: float) -> None:
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        as_of, customers, purchasers, clv_total, horizon = con.sql(
            "select max(as_of_date), count(*), count(*) filter (where frequency > 0), "
            "sum(clv), max(clv_horizon_days) from marts.customer_360"
        ).fetchall()[0]
        segments = con.sql(
            "select rfm_segment, customers, contactable_customers, net_revenue, clv_total "
            "from marts.segment_summary order by clv_total desc nulls last"
        ).fetchall()
        quarantined = con.sql("select count(*) from quarantine.rejected_rows").fetchall()[0][0]
        # Commercial value and credit risk side by side: the view no single tool gives.
        equity_gross, equity_net, exposure, expected_loss, finance_unknown = con.sql(
            "select customer_equity_gross, customer_equity_net, open_exposure, "
            "expected_loss_on_receivables, finance_unknown_reason from marts.customer_equity"
        ).fetchall()[0]
        over_90 = con.sql(
            "select coalesce(sum(dpd_91_180 + dpd_over_180), 0) from marts.receivables_aging"
        ).fetchall()[0][0]
        churn_bands = con.sql(
            "select churn_risk_band, count(*), coalesce(sum(clv), 0) from marts.customer_360 "
            "where churn_risk_band is not null group by 1 "
            "order by list_position(['low', 'medium', 'high', 'closed'], churn_risk_band)"
        ).fetchall()
        scorers = [_scorer_line(con, kind) for kind in ("churn", "delinquency")]
    typer.echo(f"crm-intel run finished in {elapsed:.1f}s — as of {as_of}")
    typer.echo(f"customers: {customers:,} ({purchasers:,} with purchases)")
    # the CLV covers [clv] horizon_days, which the scores carry
    clv_over = f"CLV over {plural(horizon, 'day')}" if horizon else "CLV"
    typer.echo(f"total {clv_over}: {clv_total or 0:,.2f}")
    clv_column = f"CLV {horizon} days" if horizon else "CLV"
    typer.echo(
        f"{'segment':<22}{'customers':>10}{'contactable':>13}{'net revenue':>16}{clv_column:>16}"
    )
    for name, count, contactable, revenue, clv in segments:
        typer.echo(
            f"{name:<22}{count:>10,}{contactable:>13,}{revenue or 0:>16,.2f}{clv or 0:>16,.2f}"
        )
    if finance_unknown:  # no payment known: a number here would be "everything unpaid"
        typer.echo(f"customer equity (sum of {clv_over}): {equity_gross or 0:,.2f} gross")
        typer.echo(
            f"open receivables, expected loss, DSO and net equity: unknown, not published "
            f"({finance_unknown}; see marts.finance_status)"
        )
    else:
        typer.echo(
            f"customer equity (sum of {clv_over}): {equity_gross or 0:,.2f} gross, "
            f"{equity_net or 0:,.2f} net of expected credit loss"
        )
        typer.echo(
            f"open receivables: {exposure or 0:,.2f} ({over_90:,.2f} more than 90 days past "
            f"due), expected loss {expected_loss or 0:,.2f}"
        )
    if churn_bands:
        typer.echo(
            "churn risk: "
            + ", ".join(f"{band} {count:,} (CLV {clv:,.0f})" for band, count, clv in churn_bands)
        )
    for line in filter(None, scorers):
        typer.echo(line)
    if quarantined:
        typer.echo(f"quarantined rows: {quarantined:,} (see quarantine.rejected_rows)")
    typer.echo(
        f"tables in {warehouse_path}: marts.customer_360, marts.segment_summary, "
        "marts.segment_members, marts.receivables_aging, marts.portfolio_risk, "
        "marts.customer_equity, marts.risk_alerts, models.model_runs"
    )


def _scorer_line(con: duckdb.DuckDBPyConnection, kind: str) -> str | None:
    """Which scorer ships and on what evidence, next to the best plain one-column ranking."""
    table = f"models.{kind}_evaluation"
    if not con.sql(
        "select count(*) from duckdb_tables() where schema_name || '.' || table_name = $t",
        params={"t": table},
    ).fetchall()[0][0]:
        return None
    rows = con.sql(
        f"select scorer, kind, roc_auc, roc_auc_low, roc_auc_high, positives, too_few_positives, "
        f"chosen, choice_reason from {table} where population = 'all' "
        "order by chosen desc, roc_auc desc nulls last"
    ).fetchall()
    if not rows:
        return None
    scorer, _, auc, low, high, positives, too_few, _, reason = rows[0]
    if auc is None:
        return f"{kind} scorer: {scorer} ({reason})"
    line = (
        f"{kind} scorer: {scorer}, holdout ROC AUC {auc:.3f} [{low:.3f}-{high:.3f}] "
        f"on {plural(positives, 'positive')}"
    )
    ranking = next((r for r in rows[1:] if r[1] == "one_column" and r[2] is not None), None)
    if ranking:
        line += f"; best one-column ranking {ranking[0]} {ranking[2]:.3f}"
    if too_few:
        line += f" — {reason}"
    return line


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Option(help="Inbox folder to write.")] = Path(DEFAULT_INBOX),
    customers: Annotated[int, typer.Option(min=50, help="Number of customers.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 42,
    file_format: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    faults: Annotated[
        str,
        typer.Option(
            help="Comma-separated fault kinds to inject, e.g. bad_date,duplicate_key (an unknown "
            "kind is refused with the list of valid ones)."
        ),
    ] = "",
    invoices_only: Annotated[bool, typer.Option(help="Write only invoice files.")] = False,
    regime: Annotated[
        str,
        typer.Option(
            help="default, short_history (5 months), few_delinquent, no_payments or "
            "no_crm_activity: data that breaks naive models."
        ),
    ] = "default",
) -> None:
    """Generate realistic CRM, invoice and bureau exports with known ground truth."""
    from synthetic import FAULT_KINDS, REGIMES, generate_demo_data

    if regime not in REGIMES:
        raise fail(f"unknown regime {regime!r}; choose one of {', '.join(REGIMES)}")
    if file_format not in ("csv", "parquet"):
        raise fail(f"unknown --format {file_format!r}; choose one of csv, parquet")
    fault_kinds = tuple(f.strip() for f in faults.split(",") if f.strip())
    unknown = [kind for kind in fault_kinds if kind not in FAULT_KINDS]
    if unknown:
        raise fail(
            f"unknown fault {'kind' if len(unknown) == 1 else 'kinds'} "
            f"{', '.join(map(repr, unknown))} in --faults; valid: {', '.join(FAULT_KINDS)}"
        )
    started = time.perf_counter()
    summary = generate_demo_data(
        out,
        customers=customers,
        seed=seed,
        file_format=file_format,
        faults=fault_kinds,
        include=frozenset({"invoices/invoices"}) if invoices_only else None,
        regime=regime,
    )
    typer.echo(
        f"wrote {plural(summary.customers, 'customer')}, {plural(summary.invoices, 'invoice')}, "
        f"{plural(summary.payments, 'payment')}, "
        f"{plural(summary.credit_reports, 'credit report')}, "
        f"{plural(summary.activities, 'activity', 'activities')} to {out} in "
        f"{time.perf_counter() - started:.1f}s "
        f"({summary.start_date} to {summary.end_date}; truth in {out / 'truth'})"
    )


@app.command()
def backfill(
    start: Annotated[str, typer.Option(help="First as-of date YYYY-MM-DD.")],
    end: Annotated[str, typer.Option(help="Last as-of date YYYY-MM-DD (included).")],
    every: Annotated[str, typer.Option(help="day, week or month.")] = "day",
    inbox: Annotated[
        Path | None, typer.Option(help=f"Input folder (default: {DEFAULT_INBOX}).")
    ] = None,
    warehouse: WarehouseOption = None,
    config: ConfigOption = None,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
    debug: DebugOption = False,
    progress: ProgressOption = None,
) -> None:
    """Run the job once per as-of date, oldest first, to fill the history tables.

    Each date replaces what an earlier run stored for it. Backfill runs do not publish: the
    snapshot users read stays the last nightly one until the next `crm-intel run`.
    """
    from features.point_in_time import backfill_dates

    try:
        dates = backfill_dates(date.fromisoformat(start), date.fromisoformat(end), every)
    except ValueError as error:
        raise fail(f"backfill: {error}") from None
    inbox_path = inbox or Path(os.environ.get("CRM_INTEL_INBOX", DEFAULT_INBOX))
    if not inbox_path.is_dir():
        raise fail(f"inbox folder {inbox_path} does not exist")
    warehouse_path = warehouse_path_of(warehouse)
    if dates:
        try:
            base_settings = load_settings(config)
        except SettingsError as error:
            raise fail(str(error)) from None
        _refuse_as_of_outside_data(dates[0], inbox_path, warehouse_path, base_settings, "--start")
        _refuse_as_of_outside_data(dates[-1], inbox_path, warehouse_path, base_settings, "--end")
    mode = choose_mode(quiet=quiet, verbose=verbose, debug=debug, progress=progress)
    for number, as_of in enumerate(dates, start=1):
        try:
            settings = load_settings(
                config,
                overrides={"run": {"as_of": as_of.isoformat()}, "publish": {"enabled": False}},
            )
        except SettingsError as error:
            raise fail(str(error)) from None
        try:
            elapsed = _execute_run(settings, inbox_path, warehouse_path, mode)
        except typer.Exit:
            typer.secho(
                f"backfill stopped at {as_of} ({number} of {len(dates)}); the dates before it "
                "are stored",
                fg="red",
                err=True,
            )
            raise
        if mode != "quiet":
            typer.echo(f"{as_of}: done in {elapsed:.1f}s ({number} of {len(dates)})")
    typer.echo(
        f"history holds {plural(len(dates), 'backfilled as-of date')} in {warehouse_path}; "
        "the published snapshot is unchanged until the next `crm-intel run`"
    )


def _split_ids(values: list[str] | None) -> list[str]:
    """Ids given repeated (``--customer A --customer B``) or comma-separated, in order, once."""
    ids = [part.strip() for value in values or [] for part in value.split(",")]
    return list(dict.fromkeys(part for part in ids if part))


@app.command()
def erase(
    customer: Annotated[
        list[str] | None,
        typer.Option("--customer", help="Customer id to erase (repeatable or comma-separated)."),
    ] = None,
    contact: Annotated[
        list[str] | None,
        typer.Option("--contact", help="Contact id to erase (repeatable or comma-separated)."),
    ] = None,
    inbox: Annotated[
        Path | None, typer.Option(help=f"Input folder (default: {DEFAULT_INBOX}).")
    ] = None,
    warehouse: WarehouseOption = None,
    config: ConfigOption = None,
) -> None:
    """Erase customers or contacts from every schema and the published snapshot, for good.

    Holds the run lock, so no run interleaves; records tombstones so a re-delivered file cannot
    bring them back; republishes the snapshot from the cleaned warehouse.
    """
    from features.erasure import erase as erase_subjects
    from features.warehouse import WarehouseBusyError, acquire_run_lock

    customers, contacts = _split_ids(customer), _split_ids(contact)
    if not customers and not contacts:
        raise fail("name at least one --customer or --contact to erase")
    try:
        settings = load_settings(config)
    except SettingsError as error:
        raise fail(str(error)) from None
    warehouse_path = warehouse_path_of(warehouse)
    if not warehouse_path.is_file():
        raise fail(f"no warehouse at {warehouse_path}")
    inbox_path = inbox or Path(os.environ.get("CRM_INTEL_INBOX", DEFAULT_INBOX))
    try:
        lock = acquire_run_lock(
            warehouse_path, f"erase-{uuid.uuid4()}", started_by="crm-intel erase"
        )
    except WarehouseBusyError as busy:
        raise fail(f"{busy}; erase when it has ended") from None
    try:
        with duckdb.connect(str(warehouse_path)) as con:
            erasures = erase_subjects(con, customers, contacts)
            snapshot = _republish_after_erasure(con, warehouse_path, settings)
    finally:
        lock.release()
    for erasure in erasures:
        typer.echo(f"erased {erasure.kind} {erasure.subject_id} (erasure {erasure.erasure_id}):")
        if not erasure.rows_removed:
            typer.echo("  no rows held; the tombstone keeps future deliveries out")
        for table, rows in erasure.rows_removed.items():
            typer.echo(f"  {table:<40}{rows:>10,}")
        for column, rows in erasure.redacted.items():
            typer.echo(f"  {'redacted ' + column:<40}{rows:>10,}")
    typer.echo(
        "tombstones recorded in ops.erasures: rows of them in a re-delivered file are "
        "quarantined as erased, never staged"
    )
    typer.echo(snapshot)
    still_there = sorted(
        {f for erasure in erasures for f in erasure.source_files if (inbox_path / f).is_file()}
    )
    if still_there:
        typer.echo(
            f"inbox files in {inbox_path} that still hold them (replace or delete them at the "
            f"source; loaded already, they are not read again): {', '.join(still_there)}"
        )


def _republish_after_erasure(con: duckdb.DuckDBPyConnection, warehouse_path: Path, settings) -> str:
    """Replace the published snapshot, if there is one, with the cleaned warehouse's selection;
    the lake's published tables too, with no older version kept, and its scratch deleted."""
    from features.publish import (
        lake_current,
        lake_publication,
        publish_snapshot,
        published_as_of,
        remove_lake_publications,
        remove_lake_scratch,
    )

    target = published_path(warehouse_path, settings)
    lake = settings.engine.lake_path(warehouse_path)
    remove_lake_scratch(lake)
    in_lake = lake_publication(lake) is not None
    if published_as_of(target) is None and not in_lake:
        return f"no published snapshot at {target}: nothing to republish"
    latest = con.sql(
        "select run_id, as_of_date from ops.runs order by started_at desc limit 1"
    ).fetchall()
    if not latest:
        target.unlink(missing_ok=True)
        remove_lake_publications(lake)
        return f"snapshot {target} removed: the warehouse holds no run to republish"
    run_id, as_of = latest[0]
    publish_snapshot(
        con,
        warehouse_path,
        target,
        run_id=run_id,
        as_of_date=as_of,
        lake=lake if in_lake else None,
        keep_previous_lake_version=False,
    )
    also = f"; in the lake too, older versions deleted: {lake_current(lake)}" if in_lake else ""
    return f"snapshot republished without them: {target} (run {run_id}, as of {as_of}){also}"


@app.command()
def status(
    warehouse: WarehouseOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object instead of text (same exit code).")
    ] = False,
    steps: Annotated[
        int,
        typer.Option(
            "--steps",
            min=0,
            help="Also list the last run's N dearest steps (time, rows, outcome) from "
            "ops.step_runs; on Spark, where its SQL stages' time went (ops.engine_stages).",
        ),
    ] = 0,
    config: ConfigOption = None,
) -> None:
    """The last run, its as-of date, what is published, failures and quarantined rows.

    Exits 1 when the last run failed (and says where and why), 0 when it succeeded or is still
    running: a monitoring script needs no parsing to alert.
    """
    from features.publish import lake_current, lake_publication, published_as_of

    warehouse_path = warehouse_path_of(warehouse)
    try:
        settings = load_settings(config)
    except SettingsError as error:
        raise fail(str(error)) from None
    published = published_path(warehouse_path, settings)
    writing = False
    try:
        con = duckdb.connect(str(warehouse_path), read_only=True)
        source = f"working warehouse {warehouse_path}"
    except duckdb.IOException as error:
        if "lock" not in str(error).lower():
            raise fail(f"cannot read {warehouse_path}: {error}") from None
        writing = True
        if not published.is_file():
            raise fail(
                f"working warehouse {warehouse_path}: a run is writing it now (locked); nothing "
                f"published at {published} yet"
            ) from None
        con = duckdb.connect(str(published), read_only=True)
        source = f"published snapshot {published}"
    except duckdb.Error as error:
        raise fail(f"cannot read {warehouse_path}: {error}") from None
    with con:
        tables = {
            row[0]
            for row in con.sql(
                "select schema_name || '.' || table_name from duckdb_tables()"
            ).fetchall()
        }
        if "ops.runs" not in tables:
            raise fail(f"{warehouse_path} holds no run yet: run `crm-intel run` first")
        last = con.sql(
            """select r.run_id, r.as_of_date, r.as_of_source, r.started_at,
                      p.published_at, f.failed_steps, f.reason
               from ops.runs r
               left join ops.publications p using (run_id)
               left join ops.run_failures f using (run_id)
               order by r.started_at desc limit 1"""
        ).fetchall()
        quarantine = con.sql(
            "select staging_table, reason, count(*) from quarantine.rejected_rows "
            "group by all order by 1, 3 desc"
        ).fetchall()
        failures = con.sql(
            "select run_id, failed_at, reason, failed_steps from ops.run_failures "
            "order by failed_at desc limit 3"
        ).fetchall()
        step_runs = (
            _dearest_steps(con, steps, "ops.engine_stages" in tables)
            if steps and "ops.step_runs" in tables
            else None
        )
        last_run_id = last[0][0] if last else None
        # what the last run kept from earlier nights instead of rebuilding it
        # a warehouse the current code has not run on yet has no training cutoff counts
        counted = con.sql(
            "select count(*) from duckdb_columns() where schema_name = 'models' "
            "and table_name = 'fit_plans' and column_name = 'cutoffs_built'"
        ).fetchall()[0][0]
        cutoffs = "cutoffs_reused, cutoffs_built" if counted else "null, null"
        fits = (
            con.execute(
                f"select model, refit, reason, {cutoffs} "
                "from models.fit_plans where run_id = ? order by 1",
                [last_run_id],
            ).fetchall()
            if "models.fit_plans" in tables
            else []
        )
        staging_builds = (
            con.execute(
                # a table kept as it was keeps the record of the run that last built it
                "select staging_table, case when run_id = ? then coalesce(mode, 'rebuilt') "
                "else 'kept' end from ops.staging_builds order by 1",
                [last_run_id],
            ).fetchall()
            if "ops.staging_builds" in tables
            else []
        )
        # why the last night's settlement was quick or slow (refreshed or rebuilt in full)
        settlement = (
            con.sql(
                "select mode, as_of_date, customers_resettled, reason "
                "from features.invoice_settlement_state"
            ).fetchall()
            if "features.invoice_settlement_state" in tables
            else []
        )
    last_run = None
    if last:
        run_id, as_of, as_of_source, started, published_at, failed_steps, reason = last[0]
        state = "published" if published_at else "failed" if reason else "not published"
        last_run = {
            "run_id": run_id,
            "as_of": as_of.isoformat(),
            "as_of_source": as_of_source,
            "started_at": started.isoformat(),
            "state": state,
            "published_at": published_at.isoformat() if published_at else None,
            "failed_steps": failed_steps,
            "reason": reason,
        }
    if failures and (
        last_run is None or (failures[0][0] != last_run["run_id"] and failures[0][1] > last[0][3])
    ):  # a run that failed before it settled its as-of date has no row in ops.runs
        run_id, _, reason, failed_steps = failures[0]
        last_run = {
            "run_id": run_id,
            "as_of": None,
            "as_of_source": None,
            "started_at": None,
            "state": "failed",
            "published_at": None,
            "failed_steps": failed_steps,
            "reason": reason,
        }
    snapshot = published_as_of(published)
    lake = settings.engine.lake_path(warehouse_path)
    in_lake = lake_publication(lake)
    report = {
        "source": source,
        "warehouse": str(warehouse_path),
        "run_in_progress": writing,
        "last_run": last_run,
        "published": {
            "path": str(published),
            "size_bytes": published.stat().st_size,
            "run_id": snapshot[0],
            "as_of": snapshot[1].isoformat(),
            "published_at": snapshot[2].isoformat(),
        }
        if snapshot
        else None,
        "published_lake": {
            "path": str(lake_current(lake)),
            "run_id": in_lake["run_id"],
            "as_of": in_lake["as_of_date"],
            "tables": len(in_lake["tables"]),
        }
        if in_lake
        else None,
        "invoice_settlement": [
            {"mode": mode, "as_of": as_of.isoformat(), "customers_resettled": n, "reason": why}
            for mode, as_of, n, why in settlement
        ],
        "scorer_fits": [
            {
                "model": model,
                "refit": refit,
                "reason": reason,
                "cutoffs_reused": reused,
                "cutoffs_built": built,
            }
            for model, refit, reason, reused, built in fits
        ],
        **{
            f"staging_{build}": [table for table, how in staging_builds if how == build]
            for build in ("rebuilt", "merged", "kept")
        },
        "recent_failures": [
            {"run_id": run_id, "failed_at": failed_at.isoformat(), "reason": reason}
            for run_id, failed_at, reason, _ in failures
        ],
        "quarantined_rows": sum(count for *_, count in quarantine),
        "quarantine": [
            {"staging_table": table, "reason": reason, "rows": count}
            for table, reason, count in quarantine
        ],
    }
    if steps:
        report["steps"] = step_runs
    last_failed = bool(last_run and last_run["state"] == "failed" and not writing)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_status(report, published)
    if last_failed:
        typer.secho(
            f"error: the last run {last_run['run_id']} failed"  # type: ignore[index]
            " (see above); fix the cause and run again",
            fg="red",
            err=True,
        )
        raise typer.Exit(code=1)


def _print_status(report: dict, published: Path) -> None:
    if report["run_in_progress"]:
        typer.echo(f"working warehouse {report['warehouse']}: a run is writing it now (locked)")
    typer.echo(f"(from the {report['source']})")
    last = report["last_run"]
    if last:
        started = (last["started_at"] or "").replace("T", " ")[:19] or "(time not recorded)"
        outcome = {
            "published": f"published {(last['published_at'] or '').replace('T', ' ')[:19]}",
            "failed": f"FAILED at {last['failed_steps']}: {last['reason']}",
        }.get(
            last["state"], "not published (still running, stopped, a backfill, or failed before it)"
        )
        typer.echo(f"last run: {last['run_id']} started {started}")
        if last["as_of"]:
            typer.echo(f"  as of {last['as_of']} ({last['as_of_source']}); {outcome}")
        else:
            typer.echo(f"  before its as-of date was settled; {outcome}")
    for item in report["invoice_settlement"]:
        typer.echo(
            f"invoice settlement: {item['mode']} as of {item['as_of']}, "
            f"{plural(item['customers_resettled'], 'customer')} settled ({item['reason']})"
        )
    for fit in report["scorer_fits"]:
        cutoffs = (
            f"; training cutoffs: {fit['cutoffs_reused']} reused, {fit['cutoffs_built']} built"
            if fit["refit"] and fit["cutoffs_built"] is not None
            else ""
        )
        typer.echo(
            f"{fit['model']} scorer: {'refitted' if fit['refit'] else 'kept'} "
            f"({fit['reason']}{cutoffs})"
        )
    if report["staging_kept"] or report["staging_merged"]:
        typer.echo(
            f"staging kept as it was (nothing new): {', '.join(report['staging_kept']) or 'none'}"
            f"; new files merged in: {', '.join(report['staging_merged']) or 'none'}"
            f"; rebuilt: {', '.join(report['staging_rebuilt']) or 'none'}"
        )
    snapshot = report["published"]
    if snapshot:
        typer.echo(f"published: {published} ({snapshot['size_bytes'] / 1e6:.1f} MB)")
        typer.echo(
            f"  run {snapshot['run_id']}, as of {snapshot['as_of']}, published "
            f"{snapshot['published_at'].replace('T', ' ')[:19]}"
        )
    else:
        typer.echo(f"published: nothing yet at {published}")
    in_lake = report["published_lake"]
    if in_lake:
        typer.echo(
            f"published to the lake: {in_lake['path']} ({plural(in_lake['tables'], 'table')} "
            f"as Parquet; run {in_lake['run_id']}, as of {in_lake['as_of']})"
        )
    for failure in report["recent_failures"]:
        typer.echo(
            f"failed run {failure['run_id']} at {failure['failed_at'].replace('T', ' ')[:19]}: "
            f"{failure['reason']}"
        )
    typer.echo(f"quarantined rows: {report['quarantined_rows']:,}")
    for row in report["quarantine"]:
        typer.echo(f"  {row['staging_table']:<16}{row['reason']:<26}{row['rows']:>10,}")
    if "steps" in report:
        _print_steps(report["steps"], report["source"])


def _dearest_steps(
    con: duckdb.DuckDBPyConnection, limit: int, engine_stages: bool
) -> dict[str, Any] | None:
    """The latest run's ``limit`` dearest steps, with its step count and summed step time, and
    for a run on Spark its SQL stages' time by phase, in all and per step."""
    from features.warehouse import engine_stage_seconds, total_engine_seconds
    from pipelines.cli_progress import readable_step, step_names

    latest = con.sql(
        "select run_id, count(*), sum(seconds), min(started_at) from ops.step_runs "
        "group by run_id order by min(started_at) desc limit 1"
    ).fetchall()
    if not latest:
        return None
    run_id, count, seconds, started = latest[0]
    rows = con.execute(
        "select step, seconds, rows, outcome from ops.step_runs where run_id = ? "
        "order by seconds desc nulls last, step limit ?",
        [run_id, limit],
    ).fetchall()
    by_step = engine_stage_seconds(con, run_id, "step") if engine_stages else {}
    names = step_names()
    report: dict[str, Any] = {
        "run_id": run_id,
        "started_at": started.isoformat() if started else None,
        "steps": count,
        "step_seconds": round(seconds or 0.0, 1),
        "dearest": [
            {
                "step": step,
                "label": readable_step(step, names),
                "seconds": step_seconds,
                "rows": step_rows,
                "outcome": outcome,
            }
            | ({"spark_stages": by_step[step]} if step in by_step else {})
            for step, step_seconds, step_rows, outcome in rows
        ],
    }
    if by_step:
        report["spark_stages"] = {
            key: round(seconds, 1) for key, seconds in total_engine_seconds(by_step).items()
        }
    return report


def _print_steps(steps: dict[str, Any] | None, source: str) -> None:
    from features.warehouse import ENGINE_STAGE_PHASES, seconds_beside_spark

    if steps is None:
        typer.echo(f"step timings: none recorded in the {source}")
        return
    typer.echo(
        f"dearest steps of run {steps['run_id']} ({plural(steps['steps'], 'step')}, "
        f"{steps['step_seconds']:,.1f} s in steps):"
    )
    for step in steps["dearest"]:
        seconds = "-" if step["seconds"] is None else f"{step['seconds']:,.1f} s"
        rows = "" if step["rows"] is None else f"{step['rows']:>12,} rows"
        failed = "  FAILED" if step["outcome"] == "failed" else ""
        on_spark = ""
        if "spark_stages" in step:
            stages = step["spark_stages"]
            beside = seconds_beside_spark(stages)
            on_spark = (
                f"  (Spark: {plural(stages['stages'], 'stage')}, {stages['spark']:,.1f} s its "
                f"own work, {beside:,.1f} s beside DuckDB)"
            )
        typer.echo(f"  {seconds:>9}  {rows:<17} {step['label']}{failed}{on_spark}")
    if "spark_stages" in steps:
        stages = steps["spark_stages"]
        phases = ", ".join(
            f"{label} {stages[phase]:,.1f} s" for phase, label in ENGINE_STAGE_PHASES.items()
        )
        typer.echo(f"SQL stages on Spark: {plural(stages['stages'], 'stage')}; {phases}")


@config_app.command("show")
def config_show(
    config: ConfigOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object instead of TOML.")
    ] = False,
) -> None:
    """Print the effective settings (defaults overlaid with the settings file), validated.

    A bad file exits 1 naming its section, key, value and what the key accepts.
    """
    try:
        settings = load_settings(config)
    except SettingsError as error:
        raise fail(str(error)) from None
    if as_json:
        source = str(settings.source) if settings.source else None
        typer.echo(json.dumps({"source": source, "settings": settings.as_dict()}, indent=2))
        return
    typer.echo(f"# source: {settings.source or 'defaults (no crm-intel.toml found)'}")
    typer.echo(settings.to_toml())


if __name__ == "__main__":
    app()
