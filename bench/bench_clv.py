"""CLV at scale: our SQL summary + collapsed fit + scoring against lifetimes used as documented.

    .venv/bin/python -m bench.bench_clv --customers 1000000 --repeat 5

One warm-up round, then ``--repeat`` measured rounds, each ours then lifetimes in this process;
the ratio is of the medians of the measured rounds (the warm-up's ratio is printed too).
Both sides start from the same invoice log already in memory (ours: a DuckDB table shaped like
``staging.invoices``; lifetimes: the same rows as a pandas frame) and end with a 12-month CLV
per customer, 10 % a year discounted: that is the timed comparison (ours: summary SQL ->
``ClvModel.fit`` -> ``predict_clv``). What the pipeline adds on top - parameter draws for the
interval, full scoring (90/365-day purchases, P(alive), CLV interval, next order date) and the
holdout backtest - is timed separately, step by step; lifetimes' recipe has none of it.

lifetimes path (its documentation's recipe): ``summary_data_from_transaction_data`` (days,
``freq_multiplier=7`` for exact weeks) -> ``BetaGeoFitter.fit`` -> ``GammaGammaFitter.fit``
on repeat buyers -> ``GammaGammaFitter.customer_lifetime_value``.

Only invoices are used (credit notes dropped) so that both sides see identical purchases and
spend, and so that the generator's Gamma-Gamma truth (invoice amounts) applies. The generated
inbox is cached under /work/bench-data/clv/.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

# polars <-> DuckDB conversions import pyarrow on first use (0.3 s); imported here, before any
# timer, as pandas is for lifetimes' side.
import pyarrow  # noqa: F401

from features.clv_backtest import build_backtest_inputs
from features.customer import build_customer_summary, lifetimes_summary
from features.ingest import build_customer_keys
from models.clv_backtest import backtest_clv
from pipelines.resources import Warehouse
from pipelines.settings import ClvSettings
from synthetic import generate_demo_data

ANNUAL_DISCOUNT_RATE = 0.10
PURCHASE = ("r", "alpha", "a", "b")
SPEND = ("p", "q", "v")
# The pipeline's default holdout window ([clv] holdout_days).
HOLDOUT_DAYS = 180
# Generated inputs are cached outside the repository (shared bench-data folder).
BENCH_DATA = Path("/work/bench-data/clv")


def inbox_for(customers: int, seed: int) -> Path:
    inbox = BENCH_DATA / f"clv_{customers}_{seed}"
    if not (inbox / "truth/parameters.json").is_file():
        started = time.perf_counter()
        generate_demo_data(
            inbox,
            customers=customers,
            seed=seed,
            file_format="parquet",
            include=frozenset({"invoices/invoices"}),
        )
        print(f"generated {inbox} in {time.perf_counter() - started:.1f}s")
    return inbox


def load_invoices(inbox: Path, con: duckdb.DuckDBPyConnection) -> date:
    """``staging.invoices`` from the cached inbox, on ``con``; returns the as-of date."""
    source = inbox / "invoices/invoices.parquet"
    # staging.invoices as ingestion writes it: with the customer_key of staging.customer_keys
    invoices = f"select * from read_parquet('{source}') where document_type = 'invoice'"
    build_customer_keys(con, invoices)
    con.execute(
        f"""create table staging.invoices as
            select invoice_id, customer_id, issue_date::date as issue_date,
                   amount::double as amount, document_type, customer_key
            from ({invoices}) join staging.customer_keys using (customer_id)"""
    ).fetchall()
    return con.sql("select max(issue_date) from staging.invoices").fetchall()[0][0]


def run_ours(con: duckdb.DuckDBPyConnection, as_of: date, extras: bool = True) -> dict:
    """Timed core (what lifetimes' recipe produces), then the extras, timed one by one."""
    timings = {}
    cpu = os.times()
    started = time.perf_counter()
    summary = lifetimes_summary(build_customer_summary(con, as_of), 7.0)
    timings["summary_s"] = time.perf_counter() - started
    # CPU seconds of the whole process: user (the SQL's work), system (memory faulted in)
    timings["summary_user_s"] = os.times().user - cpu.user
    timings["summary_system_s"] = os.times().system - cpu.system
    step = time.perf_counter()
    model = (
        ClvSettings()
        .model(time_unit_days=7.0, annual_discount_rate=ANNUAL_DISCOUNT_RATE)
        .fit(summary)
    )
    timings["fit_s"] = time.perf_counter() - step
    step = time.perf_counter()
    clv = model.predict_clv(summary)
    timings["predict_s"] = time.perf_counter() - step
    timings["total_s"] = time.perf_counter() - started
    result = {
        "timings": timings,
        "customers": summary.height,
        "patterns": model.n_patterns_,
        "purchase_model": model.purchase_model_,
        "params": {**model.purchase_params_, **model.spend_params_},
        "clv_total": float(clv["clv"].sum()),
        "clv": clv.select("customer_id", "clv"),
    }
    if not extras:
        return result

    extras = {}
    step = time.perf_counter()
    model.estimate_parameter_uncertainty()
    extras["parameter_draws_s"] = time.perf_counter() - step
    step = time.perf_counter()
    scores = model.predict(summary, as_of)
    extras["full_scoring_s"] = time.perf_counter() - step
    step = time.perf_counter()
    cutoff = as_of - timedelta(days=HOLDOUT_DAYS)
    calibration, tracking_actuals = build_backtest_inputs(con, cutoff, as_of, 7.0)
    extras["backtest_inputs_s"] = time.perf_counter() - step
    step = time.perf_counter()
    backtest = backtest_clv(
        ClvSettings().model(time_unit_days=7.0), calibration, tracking_actuals, cutoff, as_of
    )
    extras["backtest_fit_score_s"] = time.perf_counter() - step
    return result | {
        "extras": extras,
        "full_scoring_clv_total": float(scores["clv"].sum()),
        "backtest_aggregate_error_pct": backtest.metrics["aggregate_error_pct"],
    }


def run_lifetimes(con: duckdb.DuckDBPyConnection, as_of: date, customers: int | None) -> dict:
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import summary_data_from_transaction_data

    query = "select customer_id, issue_date, amount from staging.invoices"
    if customers is not None:
        query += (
            " where customer_id in (select distinct customer_id from staging.invoices "
            f"order by customer_id limit {customers})"
        )
    transactions = con.sql(query).df()
    started = time.perf_counter()
    timings = {}
    summary = summary_data_from_transaction_data(
        transactions,
        "customer_id",
        "issue_date",
        monetary_value_col="amount",
        observation_period_end=as_of.isoformat(),
        freq="D",
        freq_multiplier=7,
    )
    timings["summary_s"] = time.perf_counter() - started
    step = time.perf_counter()
    bgf = BetaGeoFitter().fit(summary["frequency"], summary["recency"], summary["T"])
    repeat = summary[summary["frequency"] > 0]
    ggf = GammaGammaFitter().fit(repeat["frequency"], repeat["monetary_value"])
    timings["fit_s"] = time.perf_counter() - step
    step = time.perf_counter()
    clv = ggf.customer_lifetime_value(
        bgf,
        summary["frequency"],
        summary["recency"],
        summary["T"],
        summary["monetary_value"],
        time=12,
        discount_rate=(1 + ANNUAL_DISCOUNT_RATE) ** (1 / 12) - 1,
        freq="W",
    )
    timings["predict_s"] = time.perf_counter() - step
    timings["total_s"] = time.perf_counter() - started
    return {
        "timings": timings,
        "customers": len(summary),
        "params": {
            **{k: float(bgf.params_[k]) for k in PURCHASE},
            **{k: float(ggf.params_[k]) for k in SPEND},
        },
        "clv_total": float(clv.sum()),
        "clv": pl.DataFrame({"customer_id": summary.index.astype(str), "clv_lifetimes": clv}),
    }


def significant_digits_equal(ours: float, theirs: float) -> int:
    """How many leading significant digits two numbers share (up to 8)."""
    for digits in range(8, 0, -1):
        if f"{ours:.{digits - 1}e}" == f"{theirs:.{digits - 1}e}":
            return digits
    return 0


def recovery(params: dict[str, float], truth: dict[str, float]) -> dict[str, dict[str, float]]:
    def means(p: dict[str, float]) -> dict[str, float]:
        return {
            "r/alpha (purchases per week)": p["r"] / p["alpha"],
            "a/(a+b) (dropout per repeat)": p["a"] / (p["a"] + p["b"]),
            "p*v/(q-1) (mean spend)": p["p"] * p["v"] / (p["q"] - 1),
        }

    rows = {}
    for name in (*PURCHASE, *SPEND):
        rows[name] = {"truth": truth[name], "fitted": params[name]}
    for name, value in means(params).items():
        rows[name] = {"truth": means(truth)[name], "fitted": value}
    for row in rows.values():
        row["error_pct"] = 100 * (row["fitted"] - row["truth"]) / row["truth"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument(
        "--lifetimes-customers",
        type=int,
        default=None,
        help="Run lifetimes on the first N customers only (default: all; 0 skips it).",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="Measured rounds of (ours, lifetimes); the ratio is of their medians (default 3).",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="Rounds run and printed first but left out of the medians (default 1).",
    )
    parser.add_argument(
        "--retained-memory",
        default=None,
        help="The pipeline's CRM_INTEL_DUCKDB_RETAINED_MEMORY setting (default: off, as in it).",
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write results here.")
    args = parser.parse_args()

    inbox = inbox_for(args.customers, args.seed)
    truth = json.loads((inbox / "truth/parameters.json").read_text())["parameters"]
    # The pipeline's connection settings (the Warehouse resource), on an in-memory database.
    with Warehouse(path=":memory:", retained_memory=args.retained_memory).connect() as con:
        as_of = load_invoices(inbox, con)
        results = compare(con, as_of, args)
    results["recovery"] = recovery(results["ours"]["params"], truth)
    print("\nrecovery of the generator's truth (ours, weekly units):")
    print(f"{'parameter':<30}{'truth':>12}{'fitted':>12}{'error %':>10}")
    for name, row in results["recovery"].items():
        print(f"{name:<30}{row['truth']:>12.4f}{row['fitted']:>12.4f}{row['error_pct']:>10.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


def compare(con: duckdb.DuckDBPyConnection, as_of: date, args: argparse.Namespace) -> dict:
    """Warm-up then measured rounds, each ours then lifetimes; the extras in the first only.

    The first round in a process also pays for memory the process has not touched yet (DuckDB's
    blocks, numpy's arrays): a nightly job pays that once, in its first stage, not in the CLV
    stage. Warm-up rounds are printed and reported (``first_round_ratio``) but not in the
    medians.
    """
    invoices = con.sql("select count(*) from staging.invoices").fetchall()[0][0]
    print(f"{args.customers:,} customers, {invoices:,} invoices, as of {as_of}")
    n = args.lifetimes_customers
    subset = None if n in (None, args.customers) else n
    rounds: list[tuple[dict, dict | None]] = []
    for round_number in range(1, args.warmup + args.repeat + 1):
        ours = run_ours(con, as_of, extras=round_number == 1)
        t = ours["timings"]
        print(
            f"round {round_number} ours: summary {t['summary_s']:.2f}s + fit {t['fit_s']:.2f}s "
            f"({ours['patterns']:,} patterns) + score {t['predict_s']:.2f}s "
            f"= {t['total_s']:.2f}s; {ours['purchase_model']}; summary CPU "
            f"{t['summary_user_s']:.2f}s user, {t['summary_system_s']:.2f}s system"
        )
        if round_number == 1:
            print(
                "ours, extras: "
                + ", ".join(f"{k.removesuffix('_s')} {v:.2f}s" for k, v in ours["extras"].items())
            )
        theirs = run_lifetimes(con, as_of, subset) if n != 0 else None
        if theirs is not None:
            lt = theirs["timings"]
            print(
                f"round {round_number} lifetimes ({theirs['customers']:,} customers): summary "
                f"{lt['summary_s']:.2f}s + fit {lt['fit_s']:.2f}s + clv {lt['predict_s']:.2f}s "
                f"= {lt['total_s']:.2f}s"
            )
        rounds.append((ours, theirs))

    first, theirs = rounds[0][0], rounds[-1][1]
    measured = rounds[args.warmup :] or rounds
    ours_totals = [o["timings"]["total_s"] for o, _ in measured]
    results: dict = {
        "customers": args.customers,
        "invoices": invoices,
        "ours": {k: v for k, v in first.items() if k != "clv"},
        "ours_total_s": ours_totals,
        "ours_rounds": [o["timings"] for o, _ in rounds],
    }
    if theirs is None:
        return results
    their_totals = [t["timings"]["total_s"] for _, t in measured if t is not None]
    results["lifetimes"] = {k: v for k, v in theirs.items() if k != "clv"}
    results["lifetimes_total_s"] = their_totals
    results["lifetimes_rounds"] = [t["timings"] for _, t in rounds if t is not None]
    first_theirs = rounds[0][1]
    if first_theirs is not None:
        results["first_round_ratio"] = (
            first_theirs["timings"]["total_s"] / first["timings"]["total_s"]
        )
    if theirs["customers"] != first["customers"]:
        per_customer = float(np.median(their_totals)) / theirs["customers"] * 1e6
        print(f"lifetimes per 1M customers, linear: {per_customer:.0f}s")
        return results
    ratios = [lt / us for us, lt in zip(ours_totals, their_totals, strict=True)]
    ratio = float(np.median(their_totals) / np.median(ours_totals))
    results |= {"ratio_of_medians": ratio, "ratio_per_round": ratios}
    print(
        f"\nend to end, median of {len(measured)} measured rounds: lifetimes "
        f"{np.median(their_totals):.2f}s / ours {np.median(ours_totals):.2f}s = {ratio:.1f}x; "
        "per measured round: "
        + ", ".join(f"{r:.1f}x" for r in ratios)
        + f"; first round {results.get('first_round_ratio', float('nan')):.1f}x"
    )
    print(f"{'parameter':<12}{'ours':>16}{'lifetimes':>16}{'rel diff':>12}{'sig digits':>12}")
    for name in (*PURCHASE, *SPEND):
        a, b = first["params"][name], theirs["params"][name]
        print(
            f"{name:<12}{a:>16.8g}{b:>16.8g}{abs(a - b) / abs(b):>12.2e}"
            f"{significant_digits_equal(a, b):>12}"
        )
    joined = first["clv"].join(theirs["clv"], on="customer_id")
    rel = np.abs(joined["clv"] - joined["clv_lifetimes"]) / joined["clv_lifetimes"]
    print(
        f"CLV total ours {first['clv_total']:,.0f} vs lifetimes {theirs['clv_total']:,.0f};"
        f" per-customer max relative difference {rel.max():.2e}"
    )
    results["clv_max_relative_difference"] = float(rel.max())
    return results


if __name__ == "__main__":
    main()
