"""Time the credit-risk stage inside the nightly job: python bench/bench_risk.py [customers].

Generates a Parquet inbox (or reuses --inbox), runs the whole nightly job in-process exactly as
``crm-intel run`` does, and reports every credit-risk step (aging, DSO, settlement, payment
behaviour, training snapshots, backtest, scoring, customer/portfolio risk, equity, alerts and
their checks) from Dagster's own step durations, next to the rest of the job.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg  # after the path tweak, for a plain run
import duckdb

from pipelines.definitions import NIGHTLY_JOB_NAME, defs, run_config_for
from pipelines.risk import assets as risk_assets
from pipelines.risk import checks as risk_checks
from pipelines.settings import load_settings
from synthetic import generate_demo_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("customers", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--inbox", type=Path, help="use this inbox instead of generating one")
    parser.add_argument("--format", default="csv", choices=("csv", "parquet"), help="inbox files")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        inbox = args.inbox
        if inbox is None:
            inbox = Path(tmp) / "inbox"
            started = time.perf_counter()
            generate_demo_data(
                inbox, customers=args.customers, seed=args.seed, file_format=args.format
            )
            print(
                f"generated {args.customers:,d} customers in {time.perf_counter() - started:.1f} s"
            )
        warehouse = Path(tmp) / "warehouse.duckdb"
        run_config = run_config_for(load_settings(None), warehouse=str(warehouse), inbox=str(inbox))
        run_config["loggers"] = {"console": {"config": {"log_level": "CRITICAL"}}}
        started = time.perf_counter()
        result = defs.resolve_job_def(NIGHTLY_JOB_NAME).execute_in_process(
            run_config=run_config, instance=dg.DagsterInstance.ephemeral(), raise_on_error=True
        )
        job_seconds = time.perf_counter() - started
        with duckdb.connect(str(warehouse), read_only=True) as con:
            sizes = con.sql(
                "select (select count(*) from staging.invoices), "
                "(select count(*) from staging.payments), "
                "(select count(*) from staging.credit_reports), "
                "(select count(*) from models.delinquency_scores), "
                "(select count(*) from marts.receivables_aging)"
            ).fetchall()[0]

    steps = _step_seconds(result)
    risk_steps = _risk_step_keys()
    risk_total = sum(seconds for key, seconds in steps.items() if key in risk_steps)
    print(
        f"staging: {sizes[0]:,d} invoices and credit notes, {sizes[1]:,d} payments, "
        f"{sizes[2]:,d} credit reports; {sizes[3]:,d} customers scored, "
        f"{sizes[4]:,d} with an open balance"
    )
    for key, seconds in sorted(steps.items(), key=lambda item: -item[1]):
        if key in risk_steps:
            print(f"  {key:52s} {seconds:8.1f} s")
    print("ten dearest steps of the whole job:")
    for key, seconds in sorted(steps.items(), key=lambda item: -item[1])[:10]:
        print(f"  {key:52s} {seconds:8.1f} s")
    print(
        f"credit-risk steps: {risk_total:.1f} s; whole nightly job: {job_seconds:.1f} s "
        f"({sum(steps.values()) - risk_total:.1f} s in the other stages)"
    )


def _step_seconds(result: dg.ExecuteInProcessResult) -> dict[str, float]:
    return {
        event.step_key: event.event_specific_data.duration_ms / 1000  # type: ignore[union-attr]
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.STEP_SUCCESS and event.step_key
    }


def _risk_step_keys() -> set[str]:
    """Dagster op names of the credit-risk assets and of the checks on them."""
    keys: set[str] = set()
    for module in (risk_assets, risk_checks):
        for value in vars(module).values():
            if isinstance(value, dg.AssetsDefinition | dg.AssetChecksDefinition):
                keys.add(value.node_def.name)
    return keys


if __name__ == "__main__":
    main()
