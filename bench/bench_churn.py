"""Time churn snapshots, fit and scoring: python bench/bench_churn.py [customers].

Generates an inbox (Parquet) and loads its canonical files straight into ``staging.*`` tables
of a temporary DuckDB file (ingestion has its own benchmark), then times the churn stage's own
functions the way the assets call them: point-in-time snapshots at 12 cutoffs + the as-of date,
the holdout evaluation (fit on older cutoffs + grading both scorers), the final fit on every
labelled cutoff, and scoring every customer (probability, band, reasons), step by step as the
scoring asset runs it: feature query, probability, reasons, band and table, write-back.

``--cache DIR`` keeps the generated inbox and the warehouse with its snapshots under DIR
(never in the repository), so a rerun times fit and scoring without rebuilding the snapshots.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb

from features.churn import build_churn_snapshots, scoring_frame, training_frame
from features.point_in_time import training_cutoffs, training_sample_fraction
from features.receivables import build_payment_behaviour
from features.warehouse import ensure_layout, table_exists
from models.churn import ChurnModel, PurchaseBaseline, evaluate_holdout, score_customers
from pipelines.settings import ChurnSettings, ClvSettings, RiskSettings
from synthetic import generate_demo_data

STAGING = {
    "invoices": "invoices/invoices.parquet",
    "payments": "invoices/payments.parquet",
    "accounts": "crm/accounts.parquet",
    "activities": "crm/activities.parquet",
    "opportunities": "crm/opportunities.parquet",
    "credit_reports": "credit/reports.parquet",
}


def _load_staging(con: duckdb.DuckDBPyConnection, inbox: Path) -> None:
    ensure_layout(con)
    for table, file in STAGING.items():
        con.execute(f"create table staging.{table} as select * from read_parquet('{inbox / file}')")
    # as ingestion stores them: credit notes negative whatever sign the export used
    con.execute(
        "update staging.invoices set amount = -abs(amount) where document_type = 'credit_note'"
    )


def _timed(label: str, timings: dict[str, float], work):
    started = time.perf_counter()
    result = work()
    timings[label] = time.perf_counter() - started
    print(f"{label:44s} {timings[label]:8.1f} s", flush=True)
    return result


def _prepare(args, work: Path, timings: dict[str, float]) -> duckdb.DuckDBPyConnection:
    """Inbox and staging, reused from ``work`` when an earlier run left them there."""
    inbox = work / f"inbox-{args.customers}-{args.seed}"
    if not (inbox / STAGING["invoices"]).exists():
        _timed(
            "generate inbox (not churn)",
            timings,
            lambda: generate_demo_data(
                inbox, customers=args.customers, seed=args.seed, file_format="parquet"
            ),
        )
    path = work / f"warehouse-{args.customers}-{args.seed}.duckdb"
    fresh = not path.exists()
    con = duckdb.connect(str(path))
    # under the shared machine's 10 GB per process; DuckDB spills the rest next to the file
    con.execute(f"set memory_limit = '{args.memory_limit}'")
    con.execute(f"set temp_directory = '{work / 'duckdb-tmp'}'")
    if fresh:
        _timed("load staging from Parquet (not churn)", timings, lambda: _load_staging(con, inbox))
    return con


def _score(con, model: ChurnModel, as_of, timings: dict[str, float]):
    """Scoring as the ``models/churn_scores`` asset does it, one timer per step."""
    current = _timed(
        "  feature query (as-of snapshot to polars)", timings, lambda: scoring_frame(con, as_of)
    )
    _timed("  predict_proba (calibrated)", timings, lambda: model.predict_proba(current))
    _timed("  reasons (top 3 in words)", timings, lambda: model.reasons(current))
    scores = _timed(
        "  score_customers (probability, band, reasons)",
        timings,
        lambda: score_customers(
            current,
            as_of,
            scorer=model,
            chosen="supervised",
            cut_points=[0.3, 0.6],
            model_version="bench",
        ),
    )

    def write() -> None:  # the asset's write-back: a registered polars frame, read via Arrow
        con.register("churn_frame", scores)
        con.execute("create or replace table models.churn_scores as select * from churn_frame")
        con.unregister("churn_frame")

    _timed("  write models.churn_scores", timings, write)
    # the asset's path: query, score_customers, write (the two step timers above are extra)
    timings["scoring"] = (
        timings["  feature query (as-of snapshot to polars)"]
        + timings["  score_customers (probability, band, reasons)"]
        + timings["  write models.churn_scores"]
    )
    print(f"{'score every customer: query + score + write':44s} {timings['scoring']:8.1f} s")
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("customers", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--horizon-days", type=int, default=ChurnSettings().horizon_days)
    parser.add_argument(
        "--max-training-customers", type=int, default=ChurnSettings().max_training_customers
    )
    parser.add_argument("--cache", type=Path, help="keep inbox and warehouse here for reruns")
    parser.add_argument("--memory-limit", default="8GB")
    parser.add_argument(
        "--rebuild-snapshots", action="store_true", help="rebuild even if cached snapshots exist"
    )
    args = parser.parse_args()

    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.cache or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        con = _prepare(args, work, timings)
        as_of = con.sql("select max(issue_date) from staging.invoices").fetchall()[0][0]
        cutoffs = training_cutoffs(as_of, args.horizon_days, count=ChurnSettings().training_cutoffs)
        sample_fraction = training_sample_fraction(args.customers, args.max_training_customers)
        terms = {
            "default_payment_terms_days": RiskSettings().default_payment_terms_days,
            "settlement_tolerance": RiskSettings().settlement_tolerance,
        }
        if args.rebuild_snapshots or not table_exists(con, "features.churn_snapshots"):
            _timed(
                "payment behaviour as of the as-of date (the credit-risk stage's)",
                timings,
                lambda: build_payment_behaviour(
                    con, "features.payment_behaviour", [as_of], whole_ledger=True, **terms
                ),
            )
            _timed(
                "snapshots: 12 cutoffs + as-of (SQL, BG/NBD)",
                timings,
                lambda: build_churn_snapshots(
                    con,
                    cutoffs,
                    as_of,
                    args.horizon_days,
                    baseline=PurchaseBaseline(
                        ClvSettings().model(purchase_model="bg_nbd", n_bootstrap=1)
                    ),
                    payment_behaviour_today="features.payment_behaviour",
                    scoring_horizon_days=args.horizon_days,
                    sample_fraction=sample_fraction,
                    **terms,
                ),
            )
        else:
            print("snapshots: reused from the cache (not timed in this run)")
        history = training_frame(con)
        evaluation = _timed(
            "holdout evaluation (fit + grade)",
            timings,
            lambda: evaluate_holdout(
                history,
                history,
                cutoffs[-1:],
                args.horizon_days,
                args.horizon_days,
                ChurnSettings().model(),
            ),
        )
        model = _timed(
            "fit on all labelled cutoffs", timings, lambda: ChurnSettings().model().fit(history)
        )
        scores = _score(con, model, as_of, timings)
        invoices = con.sql("select count(*) from staging.invoices").fetchall()[0][0]
        snapshots = con.sql("select count(*) from features.churn_snapshots").fetchall()[0][0]
        con.close()
    print(
        f"{args.customers:,d} customers, {invoices:,d} invoice rows: {snapshots:,d} "
        f"snapshot rows, {history.height:,d} training rows (sample {sample_fraction:.3f}), "
        f"{len(model.feature_names_)} model columns, {scores.height:,d} customers scored"
    )
    for row in evaluation.summary.iter_rows(named=True):
        brier = "" if row["brier"] is None else f"  Brier {row['brier']:.4f}"
        print(
            f"holdout {row['scorer']:26s} ROC AUC {row['roc_auc']:.4f} "
            f"[{row['roc_auc_low']:.4f}, {row['roc_auc_high']:.4f}]  PR AUC {row['pr_auc']:.4f}"
            f"{brier}  top-decile lift {row['top_decile_lift']:.2f}"
            + ("  (chosen)" if row["chosen"] else "")
        )


if __name__ == "__main__":
    main()
