"""Credit risk at scale: python bench/bench_risk_scale.py [customers] [--invoices-per-customer N].

The ledger is built with DuckDB SQL (``range`` cross joins and ``hash``), not the synthetic
generator: 1M customers x 50 invoices would take the generator far longer than the stage itself.
It is cached under ``--cache`` (one DuckDB file per size) and copied into a scratch warehouse.

Two timings, kept apart:

- training (not on the nightly path): point-in-time payment behaviour at the settings' training
  cutoffs on a ``max_training_customers`` sample, labels, the holdout backtest and the fit;
- portfolio tables + scoring (the nightly path): invoice settlement, aging, countback DSO, payment
  behaviour as of the as-of date, scoring every customer (probability, score, class, reasons),
  customer risk, portfolio risk, customer equity and alerts, calling the same functions with the
  same arguments as the credit-risk assets. Invoice settlement is timed both ways the asset can
  run it: a nightly refresh (the previous night's build as of two days before, the facts dated
  since arriving in a new load) and a full build (into another table, after the later steps, so
  that they run as at night, right after the settlement they read); the refreshed table is
  checked equal to the full build's (order-independent fingerprint of every row).

The ledger's behaviour: each customer has a lateness propensity that drives days late, unpaid
invoices, split payments and (with noise) the bureau's quarterly delinquency score.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb  # after the path tweak, for a plain run
import polars as pl

from features.point_in_time import training_cutoffs, training_sample_fraction
from features.receivables import (
    build_delinquency_labels,
    build_dso,
    build_invoice_settlement,
    build_payment_behaviour,
    build_portfolio_risk,
    build_receivables,
    build_risk_alerts,
    refresh_invoice_settlement,
    training_snapshots,
)
from features.warehouse import fingerprint, materialize_sql
from models.delinquency import (
    SCORE_SCHEMA,
    DelinquencyModel,
    delinquency_class,
    delinquency_score,
    evaluate_holdout,
)
from pipelines.resources import Warehouse
from pipelines.settings import RiskSettings

AS_OF = date(2025, 12, 31)
NIGHT_DAYS = 2  # the nightly refresh sees this many days of new facts (more than one night's)
HISTORY_DAYS = 1095  # invoices issued over the three years up to AS_OF

LEDGER_SQL = """
create table staging.accounts as
select
    'C' || lpad(c::varchar, 8, '0') as customer_id,
    'Customer ' || c as name,
    'TX' || lpad(c::varchar, 9, '0') as tax_id,
    'DE' as country,
    ['North', 'South', 'East', 'West'][1 + c % 4] as region,
    ['manufacturing', 'retail', 'logistics', 'services', 'construction'][1 + c % 5] as sector,
    ['S', 'M', 'L'][1 + c % 3] as size_band,
    date '2022-06-01' as created_at,
    'active' as status,
    'bench' as source_file,
    c as line_number
from range(1, $customers + 1) as t(c);

-- lateness propensity per customer in [0, 1): drives days late, unpaid and split invoices
create temp table ledger as
select
    c,
    k,
    c * 1000 + k as n,
    (hash(c, 'propensity') % 1000) / 1000.0 as propensity,
    date '2023-01-01' + (hash(c, k, 'issued') % $history_days)::integer as issue_date,
    hash(c, k, 'credit') % 100 < 4 as credit_note,
    (100 + (hash(c, k, 'amount') % 500000) / 100.0)::decimal(18, 2) as gross
from range(1, $customers + 1) as t(c), range(0, $per_customer) as s(k);

create table staging.invoices as
select
    'I' || n as invoice_id,
    'C' || lpad(c::varchar, 8, '0') as customer_id,
    issue_date,
    issue_date + 30 as due_date,
    case when credit_note then -(gross / 10) else gross end::decimal(18, 2) as amount,
    'EUR' as currency,
    case when credit_note then 'credit_note' else 'invoice' end as document_type,
    'bench' as source_file,
    n as line_number,
    case when credit_note then -(gross / 10) else gross end::decimal(18, 2) as original_amount,
    1.0::double as fx_rate
from ledger;

create table staging.payments as
with paid as (
    select
        n,
        gross,
        issue_date + 30 + (propensity * 70 - 10)::integer
            + (hash(c, k, 'late') % 21)::integer - 10 as paid_on,
        hash(c, k, 'split') % 10 = 0 as split
    from ledger
    where not credit_note and hash(c, k, 'unpaid') % 1000 < 1000 - propensity * propensity * 150
),

instalments as (
    select n, 1 as part, paid_on - 20 as payment_date, (gross / 2)::decimal(18, 2) as amount
    from paid where split
    union all
    select n, 2 as part, paid_on as payment_date,
        case when split then gross - (gross / 2)::decimal(18, 2) else gross end as amount
    from paid
)

select
    'P' || n || '-' || part as payment_id,
    'I' || n as invoice_id,
    payment_date,
    amount::decimal(18, 2) as amount,
    'EUR' as currency,
    'bench' as source_file,
    n * 2 + part as line_number,
    amount::decimal(18, 2) as original_amount,
    1.0::double as fx_rate
from instalments
where payment_date <= $as_of::date;

-- quarterly bureau reports, the delinquency score tracks the propensity with noise
create table staging.credit_reports as
with reports as (
    select
        c,
        date '2023-01-01' + to_months(3 * q) as report_date,
        greatest(1, least(100, 95 - (hash(c, 'propensity') % 1000) / 1000.0 * 60
            + (hash(c, q, 'noise') % 41)::integer - 20))::double as delinquency_score
    from range(1, $customers + 1) as t(c), range(0, 12) as s(q)
)

select
    'TX' || lpad(c::varchar, 9, '0') as tax_id,
    report_date,
    case
        when delinquency_score >= 80 then 'A1' when delinquency_score >= 65 then 'A2'
        when delinquency_score >= 50 then 'B1' when delinquency_score >= 35 then 'B2'
        when delinquency_score >= 20 then 'C' else 'D'
    end as rating_class,
    greatest(1, least(100, delinquency_score + (hash(c, report_date, 'f') % 11)::integer - 5))
        ::double as failure_score,
    delinquency_score,
    (10000 + (hash(c, 'limit') % 90) * 1000)::decimal(18, 2) as credit_limit,
    (hash(c, report_date, 'legal') % 100 < 1)::bigint as legal_events,
    'bench' as source_file,
    c as line_number
from reports
where report_date <= $as_of::date;

-- the other stages' outputs the risk marts join (CLV, RFM): not timed here
create table models.clv_scores as
select customer_id, (hash(customer_id, 'clv') % 2000000) / 100.0 as clv, 365 as clv_horizon_days
from staging.accounts;

create table models.rfm_scores as
select customer_id,
    ['champions', 'loyal', 'at_risk', 'hibernating', 'new'][1 + (hash(customer_id) % 5)::integer]
        as rfm_segment
from staging.accounts;
"""


def build_ledger(path: Path, customers: int, per_customer: int) -> None:
    with _connect(path) as con:
        params = {
            "customers": customers,
            "per_customer": per_customer,
            "history_days": HISTORY_DAYS,
            "as_of": AS_OF,
        }
        for statement in filter(str.strip, LEDGER_SQL.split(";")):
            used = {k: v for k, v in params.items() if f"${k}" in statement}
            con.execute(statement, used).fetchall()


def add_load_lineage(path: Path) -> None:
    """Give the cached ledger's rows a load: facts dated in the last ``NIGHT_DAYS`` days before
    the as-of date came with the night's load, the rest with the history load (once per ledger)."""
    with _connect(path) as con:
        has = con.sql(
            "select count(*) from information_schema.columns where table_schema = 'staging' "
            "and table_name = 'invoices' and column_name = 'load_id'"
        ).fetchall()[0][0]
        if has:
            return
        night_starts = AS_OF.toordinal() - NIGHT_DAYS + 1
        for table, day in (("invoices", "issue_date"), ("payments", "payment_date")):
            con.execute(
                f"create table staging.{table}_lineage as select *, case when {day} >= "
                f"$night_starts then 'night' else 'history' end as load_id from staging.{table}",
                {"night_starts": date.fromordinal(night_starts)},
            )
            con.execute(f"drop table staging.{table}")
            con.execute(f"alter table staging.{table}_lineage rename to {table}")
        con.execute("checkpoint")


@contextmanager
def _connect(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """The pipeline's own warehouse connection, configured as for a large ledger on 2 shared
    cores and a 10 GB per-process budget: DuckDB spills beyond 8 GB and keeps up to 8 GB
    allocated between steps (CRM_INTEL_DUCKDB_MEMORY_LIMIT / _RETAINED_MEMORY = 8GB)."""
    spill = path.parent / "spill"
    spill.mkdir(parents=True, exist_ok=True)
    warehouse = Warehouse(
        path=str(path), memory_limit="8GB", temp_directory=str(spill), retained_memory="8GB"
    )
    with warehouse.connect() as con:
        con.execute("set threads = 2")
        yield con


def _timed(label: str, timings: dict[str, float], work):
    started, cpu_started = time.perf_counter(), time.process_time()
    result = work()
    timings[label] = time.perf_counter() - started
    # CPU seconds of this process (both threads): on a shared machine the wall clock includes
    # waiting for a core, the CPU time does not
    cpu = time.process_time() - cpu_started
    print(f"  {label:58s} {timings[label]:7.1f} s  (cpu {cpu:6.1f} s)", flush=True)
    return result


def train(con: duckdb.DuckDBPyConnection, config: RiskSettings) -> DelinquencyModel:
    """What delinquency_training, delinquency_evaluation and the fit in scoring do."""
    timings: dict[str, float] = {}
    cutoffs = training_cutoffs(AS_OF, config.label_horizon_days, count=config.training_cutoffs)
    customers = con.sql("select count(distinct customer_id) from staging.invoices").fetchall()
    fraction = training_sample_fraction(customers[0][0], config.max_training_customers)
    print(f"training ({len(cutoffs)} cutoffs, sample fraction {fraction:.4f}):")
    _timed(
        "invoice settlement as of the run date (labels)",
        timings,
        lambda: build_invoice_settlement(
            con, AS_OF, config.default_payment_terms_days, config.settlement_tolerance
        ),
    )
    _timed(
        "payment behaviour at each cutoff (settlement per cutoff)",
        timings,
        lambda: build_payment_behaviour(
            con,
            "features.payment_behaviour_history",
            cutoffs,
            default_payment_terms_days=config.default_payment_terms_days,
            settlement_tolerance=config.settlement_tolerance,
            sample_fraction=fraction,
        ),
    )
    _timed(
        "delinquency labels",
        timings,
        lambda: build_delinquency_labels(
            con, cutoffs, config.label_horizon_days, config.label_days_past_due, AS_OF
        ),
    )
    snapshots = training_snapshots(con)
    evaluation = _timed(
        "holdout backtest",
        timings,
        lambda: evaluate_holdout(
            snapshots,
            snapshots,
            cutoffs[-1:],
            config.label_horizon_days,
            config.label_horizon_days,
            config.model(),
        ),
    )
    model = _timed(
        "fit on every training cutoff",
        timings,
        lambda: config.model().fit(snapshots),
    )
    print(f"  training total {sum(timings.values()):.1f} s on {snapshots.height:,d} snapshots")
    print(evaluation.summary.select("population", "scorer", "customers", "roc_auc", "brier"))
    return model


def portfolio_and_scoring(
    con: duckdb.DuckDBPyConnection, config: RiskSettings, model: DelinquencyModel
) -> float:
    """What the credit-risk assets other than training do, in their order."""
    timings: dict[str, float] = {}
    settlement: dict[str, float] = {}
    settle = (con, AS_OF, config.default_payment_terms_days, config.settlement_tolerance)
    # the previous night: a build as of NIGHT_DAYS before, when only the history load was in
    # (staging read through views that hide the night's rows)
    con.execute("delete from ops.loaded_files")
    con.execute(
        "insert into ops.loaded_files (content_hash, file_group, source_file, outcome, "
        "load_sequence) values ('history', 'invoices/invoices', 'bench', 'loaded', 1)"
    )
    for table in ("invoices", "payments"):
        con.execute(f"alter table staging.{table} rename to {table}_all")
        con.execute(
            f"create view staging.{table} as "
            f"select * from staging.{table}_all where load_id = 'history'"
        )
    night = date.fromordinal(AS_OF.toordinal() - NIGHT_DAYS)
    rebuild = {"full_rebuild_days": config.settlement_full_rebuild_days}
    previous = refresh_invoice_settlement(con, night, *settle[2:], **rebuild)
    for table in ("invoices", "payments"):
        con.execute(f"drop view staging.{table}")
        con.execute(f"alter table staging.{table}_all rename to {table}")
    # the night's load arrives
    con.execute(
        "insert into ops.loaded_files (content_hash, file_group, source_file, outcome, "
        "load_sequence) values ('night', 'invoices/invoices', 'bench', 'loaded', 2)"
    )
    print(f"previous night's settlement ({previous.mode}) built, not timed")
    print("portfolio tables + scoring:")
    refresh = _timed(
        "invoice settlement, nightly refresh",
        settlement,
        lambda: refresh_invoice_settlement(*settle, **rebuild),
    )
    print(
        f"  refresh: {refresh.mode} ({refresh.reason}), {refresh.customers_resettled:,d} "
        "customers re-settled"
    )
    _timed(
        "receivable items + aging",
        timings,
        lambda: build_receivables(con, AS_OF, config.default_payment_terms_days),
    )
    _timed("countback DSO", timings, lambda: build_dso(con, AS_OF, months=config.dso_months))
    _timed(
        "payment behaviour as of the run date",
        timings,
        lambda: build_payment_behaviour(
            con,
            "features.payment_behaviour",
            [AS_OF],
            default_payment_terms_days=config.default_payment_terms_days,
            settlement_tolerance=config.settlement_tolerance,
            whole_ledger=True,
            settlement_table="features.invoice_settlement",
        ),
    )
    _timed("scoring every customer", timings, lambda: _score(con, config, model))
    _timed(
        "customer risk",
        timings,
        lambda: materialize_sql(
            con, "marts.customer_risk", "mart_customer_risk", as_of=AS_OF, lgd=config.lgd
        ),
    )
    _timed(
        "portfolio risk",
        timings,
        lambda: build_portfolio_risk(con, AS_OF),
    )
    _timed(
        "customer equity",
        timings,
        lambda: materialize_sql(con, "marts.customer_equity", "mart_customer_equity", as_of=AS_OF),
    )
    _timed("alerts", timings, lambda: _alerts(con, config))
    # The full build, into another table, after the steps above: at night they read the
    # settlement just written, never after a second 48M-row table was built beside it.
    _timed(
        "invoice settlement, full build",
        settlement,
        lambda: build_invoice_settlement(*settle, table=FULL_BUILD),
    )
    if fingerprint(con, SETTLEMENT_ROWS.format(FULL_BUILD)) != fingerprint(
        con, SETTLEMENT_ROWS.format("features.invoice_settlement")
    ):
        raise AssertionError("the nightly refresh and the full build disagree")
    con.execute(f"drop table {FULL_BUILD}")
    print("  the refreshed settlement has the same rows as the full build")
    rest = sum(timings.values())
    for label, seconds in settlement.items():
        print(
            f"  portfolio tables + scoring with the {label.split(', ')[1]}: {rest + seconds:.1f} s"
        )
    return rest + settlement["invoice settlement, nightly refresh"]


SETTLEMENT_ROWS = "select * from {}"
FULL_BUILD = "features.invoice_settlement_full_build"


def _score(con: duckdb.DuckDBPyConnection, config: RiskSettings, model: DelinquencyModel) -> None:
    current = con.sql("select * from features.payment_behaviour").pl()
    probability = model.predict_proba(current)
    score = delinquency_score(probability)
    scores = pl.DataFrame(  # noqa: F841 (read by DuckDB below)
        {
            "customer_id": current["customer_id"],
            "as_of_date": pl.repeat(AS_OF, current.height, eager=True),
            "delinquency_probability": probability,
            "delinquency_score": score,
            "delinquency_class": delinquency_class(score, config.class_cut_points),
            "delinquency_reasons": model.reasons(current),
            "delinquency_scorer": pl.repeat("supervised", current.height, eager=True),
            "delinquency_unknown_reason": pl.repeat(None, current.height, eager=True),
        },
        schema=SCORE_SCHEMA,
    )
    con.execute("create or replace table models.delinquency_scores as select * from scores")


def _alerts(con: duckdb.DuckDBPyConnection, config: RiskSettings) -> None:
    build_risk_alerts(con, AS_OF, config.alert_lookback_days, config.alert_failure_score_drop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("customers", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--invoices-per-customer", type=int, default=50)
    parser.add_argument("--cache", type=Path, default=Path("/work/bench-data/risk"))
    parser.add_argument(
        "--training-customers",
        type=int,
        default=None,
        help="override [risk] max_training_customers (a small sample for iterating on the "
        "portfolio part; reported runs keep the setting)",
    )
    args = parser.parse_args()

    args.cache.mkdir(parents=True, exist_ok=True)
    ledger = args.cache / f"ledger_{args.customers}x{args.invoices_per_customer}.duckdb"
    if not ledger.exists():
        started = time.perf_counter()
        build_ledger(ledger, args.customers, args.invoices_per_customer)
        print(f"built the ledger in {time.perf_counter() - started:.1f} s (not timed below)")
    add_load_lineage(ledger)
    warehouse = args.cache / "scratch.duckdb"
    shutil.copy(ledger, warehouse)
    config = RiskSettings()
    if args.training_customers is not None:
        config = RiskSettings(max_training_customers=args.training_customers)
    try:
        with _connect(warehouse) as con:
            sizes = con.sql(
                "select (select count(*) from staging.accounts), "
                "(select count(*) from staging.invoices), "
                "(select count(*) from staging.payments), "
                "(select count(*) from staging.credit_reports)"
            ).fetchall()[0]
            print(
                f"ledger: {sizes[0]:,d} customers, {sizes[1]:,d} invoices and credit notes, "
                f"{sizes[2]:,d} payments, {sizes[3]:,d} credit reports"
            )
            model = train(con, config)
            portfolio_and_scoring(con, config, model)
            rows = con.sql(
                "select (select count(*) from models.delinquency_scores), "
                "(select count(*) from marts.receivables_aging), "
                "(select count(*) from marts.portfolio_risk), "
                "(select count(*) from marts.risk_alerts)"
            ).fetchall()[0]
            print(
                f"scored {rows[0]:,d} customers; {rows[1]:,d} with an open balance; "
                f"{rows[2]:,d} portfolio rows; {rows[3]:,d} alerts"
            )
    finally:
        warehouse.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
