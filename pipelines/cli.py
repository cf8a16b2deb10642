"""``crm-intel``: every user action is a subcommand."""

import os
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Annotated

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
from pipelines.cli_segments import segments_app
from pipelines.resources import DEFAULT_INBOX
from pipelines.settings import SettingsError, load_settings

app = typer.Typer(help="Analytical CRM pipeline: RFM, CLV, churn and credit risk per customer.")
config_app = typer.Typer(help="Settings.")
app.add_typer(segments_app, name="segments")
app.add_typer(finance_app, name="finance")
app.add_typer(config_app, name="config")


@app.command()
def run(
    inbox: Annotated[
        Path | None, typer.Option(help=f"Input folder (default: {DEFAULT_INBOX}).")
    ] = None,
    warehouse: WarehouseOption = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="As-of date YYYY-MM-DD.")] = None,
    config: ConfigOption = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show every Dagster event.")
    ] = False,
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
    elapsed = _execute_run(
        settings, inbox_path, warehouse_path, verbose, wait_seconds=wait_timeout if wait else 0
    )
    _print_summary(warehouse_path, elapsed)
    typer.echo(publication_outcome(warehouse_path, settings))


def _execute_run(
    settings, inbox_path: Path, warehouse_path: Path, verbose: bool, wait_seconds: float = 0
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
        return _run_job(settings, inbox_path, warehouse_path, verbose, run_id)
    finally:
        lock.release()


def _run_job(settings, inbox_path: Path, warehouse_path: Path, verbose: bool, run_id: str) -> float:
    """Run the nightly job in-process; on failure record it, page, and exit 1. Returns seconds."""
    import dagster as dg

    from pipelines.definitions import NIGHTLY_JOB_NAME, defs, run_config_for

    run_config = run_config_for(settings, warehouse=str(warehouse_path), inbox=str(inbox_path))
    if not verbose:
        # Dagster's own console is for --verbose; warnings are re-told briefly below.
        run_config["loggers"] = {"console": {"config": {"log_level": "CRITICAL"}}}
    instance = (
        dg.DagsterInstance.get()
        if os.environ.get("DAGSTER_HOME")
        else dg.DagsterInstance.ephemeral()
    )
    started = time.perf_counter()
    result = defs.resolve_job_def(NIGHTLY_JOB_NAME).execute_in_process(
        run_config=run_config, instance=instance, raise_on_error=False, run_id=run_id
    )
    elapsed = time.perf_counter() - started
    if not verbose:
        _print_warnings(instance, result.run_id)
    if not result.success:
        failed_steps = [
            event
            for event in result.all_events
            if event.is_step_failure and event.event_specific_data is not None
        ]
        failures = [
            f"{event.step_key}: {_root_cause(event.event_specific_data.error)}"  # type: ignore[union-attr]
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


def _print_warnings(instance, run_id: str) -> None:
    """Warnings the stages logged (a missing source, quarantined rows, a model fallback)."""
    import logging

    for entry in instance.all_logs(run_id):
        if entry.level == logging.WARNING and entry.user_message:
            typer.secho(f"warning: {entry.step_key}: {entry.user_message}", fg="yellow", err=True)


def _root_cause(error) -> str:  # dagster's SerializableErrorInfo chain
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def _print_summary(warehouse_path: Path, elapsed: float) -> None:
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        as_of, customers, purchasers, clv_total = con.sql(
            "select max(as_of_date), count(*), count(*) filter (where frequency > 0), "
            "sum(clv_12m) from marts.customer_360"
        ).fetchall()[0]
        segments = con.sql(
            "select rfm_segment, customers, contactable_customers, net_revenue, clv_12m_total "
            "from marts.segment_summary order by clv_12m_total desc nulls last"
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
            "select churn_risk_band, count(*), coalesce(sum(clv_12m), 0) from marts.customer_360 "
            "where churn_risk_band is not null group by 1 "
            "order by list_position(['low', 'medium', 'high', 'closed'], churn_risk_band)"
        ).fetchall()
        scorers = [_scorer_line(con, kind) for kind in ("churn", "delinquency")]
    typer.echo(f"crm-intel run finished in {elapsed:.1f}s — as of {as_of}")
    typer.echo(f"customers: {customers:,} ({purchasers:,} with purchases)")
    typer.echo(f"total 12-month CLV: {clv_total or 0:,.2f}")
    typer.echo(
        f"{'segment':<22}{'customers':>10}{'contactable':>13}{'net revenue':>16}{'CLV 12m':>16}"
    )
    for name, count, contactable, revenue, clv in segments:
        typer.echo(
            f"{name:<22}{count:>10,}{contactable:>13,}{revenue or 0:>16,.2f}{clv or 0:>16,.2f}"
        )
    if finance_unknown:  # no payment known: a number here would be "everything unpaid"
        typer.echo(f"customer equity (sum of CLV 12m): {equity_gross or 0:,.2f} gross")
        typer.echo(
            f"open receivables, expected loss, DSO and net equity: unknown, not published "
            f"({finance_unknown}; see marts.finance_status)"
        )
    else:
        typer.echo(
            f"customer equity (sum of CLV 12m): {equity_gross or 0:,.2f} gross, "
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
        f"on {positives:,} positives"
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
        str, typer.Option(help="Comma-separated fault kinds to inject (see docs).")
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
    from synthetic import REGIMES, generate_demo_data

    if regime not in REGIMES:
        raise fail(f"unknown regime {regime!r}; choose one of {', '.join(REGIMES)}")
    started = time.perf_counter()
    summary = generate_demo_data(
        out,
        customers=customers,
        seed=seed,
        file_format=file_format,
        faults=tuple(f.strip() for f in faults.split(",") if f.strip()),
        include=frozenset({"invoices/invoices"}) if invoices_only else None,
        regime=regime,
    )
    typer.echo(
        f"wrote {summary.customers:,} customers, {summary.invoices:,} invoices, "
        f"{summary.payments:,} payments, {summary.credit_reports:,} credit reports, "
        f"{summary.activities:,} activities to {out} in {time.perf_counter() - started:.1f}s "
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
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show every Dagster event.")
    ] = False,
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
    for number, as_of in enumerate(dates, start=1):
        try:
            settings = load_settings(
                config,
                overrides={"run": {"as_of": as_of.isoformat()}, "publish": {"enabled": False}},
            )
        except SettingsError as error:
            raise fail(str(error)) from None
        try:
            elapsed = _execute_run(settings, inbox_path, warehouse_path, verbose)
        except typer.Exit:
            typer.secho(
                f"backfill stopped at {as_of} ({number} of {len(dates)}); the dates before it "
                "are stored",
                fg="red",
                err=True,
            )
            raise
        typer.echo(f"{as_of}: done in {elapsed:.1f}s ({number} of {len(dates)})")
    typer.echo(
        f"history holds {len(dates)} backfilled as-of date(s) in {warehouse_path}; "
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
    """Replace the published snapshot, if there is one, with the cleaned warehouse's selection."""
    from features.publish import publish_snapshot, published_as_of

    target = published_path(warehouse_path, settings)
    if published_as_of(target) is None:
        return f"no published snapshot at {target}: nothing to republish"
    latest = con.sql(
        "select run_id, as_of_date from ops.runs order by started_at desc limit 1"
    ).fetchall()
    if not latest:
        target.unlink()
        return f"snapshot {target} removed: the warehouse holds no run to republish"
    run_id, as_of = latest[0]
    publish_snapshot(con, warehouse_path, target, run_id=run_id, as_of_date=as_of)
    return f"snapshot republished without them: {target} (run {run_id}, as of {as_of})"


@app.command()
def status(warehouse: WarehouseOption = None) -> None:
    """The last run, its as-of date, what is published, failures and quarantined rows."""
    from features.publish import published_as_of

    warehouse_path = warehouse_path_of(warehouse)
    published = published_path(warehouse_path)
    try:
        con = duckdb.connect(str(warehouse_path), read_only=True)
        source = f"working warehouse {warehouse_path}"
    except duckdb.IOException as error:
        if "lock" not in str(error).lower():
            raise fail(f"cannot read {warehouse_path}: {error}") from None
        typer.echo(f"working warehouse {warehouse_path}: a run is writing it now (locked)")
        if not published.is_file():
            raise fail(f"nothing published at {published} yet") from None
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
            "select run_id, failed_at, reason from ops.run_failures order by failed_at desc limit 3"
        ).fetchall()
        # why the last night's settlement was quick or slow (refreshed or rebuilt in full)
        settlement = (
            con.sql(
                "select mode, as_of_date, customers_resettled, reason "
                "from features.invoice_settlement_state"
            ).fetchall()
            if "features.invoice_settlement_state" in tables
            else []
        )
    typer.echo(f"(from the {source})")
    if last:
        run_id, as_of, as_of_source, started, published_at, failed_steps, reason = last[0]
        if published_at:
            outcome = f"published {published_at:%Y-%m-%d %H:%M:%S}"
        elif reason:
            outcome = f"FAILED at {failed_steps}: {reason}"
        else:
            outcome = "not published (still running, stopped, a backfill, or failed before it)"
        typer.echo(f"last run: {run_id} started {started:%Y-%m-%d %H:%M:%S}")
        typer.echo(f"  as of {as_of} ({as_of_source}); {outcome}")
    for mode, as_of, customers, why in settlement:
        typer.echo(
            f"invoice settlement: {mode} as of {as_of}, {customers:,} customers settled ({why})"
        )
    snapshot = published_as_of(published)
    if snapshot:
        run_id, as_of, published_at = snapshot
        size = published.stat().st_size / 1e6
        typer.echo(f"published: {published} ({size:.1f} MB)")
        typer.echo(f"  run {run_id}, as of {as_of}, published {published_at:%Y-%m-%d %H:%M:%S}")
    else:
        typer.echo(f"published: nothing yet at {published}")
    for run_id, failed_at, reason in failures:
        typer.echo(f"failed run {run_id} at {failed_at:%Y-%m-%d %H:%M:%S}: {reason}")
    total = sum(count for *_, count in quarantine)
    typer.echo(f"quarantined rows: {total:,}")
    for table, reason, count in quarantine:
        typer.echo(f"  {table:<16}{reason:<26}{count:>10,}")


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the effective settings (defaults overlaid with the settings file)."""
    try:
        settings = load_settings(config)
    except SettingsError as error:
        raise fail(str(error)) from None
    typer.echo(f"# source: {settings.source or 'defaults (no crm-intel.toml found)'}")
    typer.echo(settings.to_toml())


if __name__ == "__main__":
    app()
