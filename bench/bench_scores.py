"""Do the shipped churn and delinquency scorers rank better than one column would?

python -m bench.bench_scores [--datasets cdnow,generator] [--regimes default,...] [--out FILE]

DESIGN.md promises that every scorer that ships beat the plain one-column rankings a careful
analyst tries first. The pipeline checks that on its own holdout; this is the outside check:
for each data set and as-of date it runs the real pipeline (``crm-intel run`` in a subprocess,
serialised by ``--lock`` so that two timed runs never overlap), computes what really
happened after the as-of date from the inbox files (bench/scoring.py, not the pipeline's
labels) and grades ``churn_probability`` and ``delinquency_probability`` against recency,
frequency, monetary, expected purchases, P(alive), days late, worst arrears and the bureau score
by ROC AUC with paired stratified bootstrap intervals. Prints a markdown table for
BENCHMARKS.md (and writes it to ``--out``); ``--strict`` exits 1 when a verdict fails.

Data sets: ``cdnow`` (the full CDNOW master log shipped with lifetimes: 23,570 customers,
1997-01..1998-06, one invoice per customer-day, USD, no payments so churn only) at
``--cdnow-dates``; ``generator`` (``crm-intel demo-data``, one inbox per ``--regimes`` value) as
of its last invoice date minus the churn horizon. ``--ref HEAD`` measures a committed version
(``git archive``), immune to edits in progress in the working tree.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from importlib.resources import files
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb  # after the path tweak, for a plain run
import polars as pl

from bench.scoring import (
    CHURN_DEFINITION,
    DELINQUENCY_DEFINITION,
    Ranking,
    RankingResult,
    churn_outcomes,
    delinquency_outcomes,
    grade_rankings,
    ledger_span,
    load_ledger,
)

REPO = Path(__file__).resolve().parents[1]
CDNOW_DATES = "1997-05-31,1997-07-15,1997-09-30,1997-12-31"
REGIMES = ("default", "short_history", "few_delinquent", "no_payments", "no_crm_activity")
# the pipeline's defaults ([risk] in pipelines/settings.py); the bench writes no [risk] section
DELINQUENCY_HORIZON_DAYS = 90
DAYS_PAST_DUE = 30
PAYMENT_TERMS_DAYS = 30
SETTLEMENT_TOLERANCE = 1.0

CHURN_SHIPPED = Ranking("shipped churn_probability", "churn_probability")
CHURN_RANKINGS = [
    Ranking("recency_days (high = risky)", "recency_days"),
    Ranking("frequency (low = risky)", "frequency", higher_is_riskier=False),
    Ranking("monetary (low = risky)", "monetary", higher_is_riskier=False),
    Ranking(
        "expected_purchases_365d (low = risky)", "expected_purchases_365d", higher_is_riskier=False
    ),
    Ranking("p_alive (low = risky)", "p_alive", higher_is_riskier=False),
]
DELINQUENCY_SHIPPED = Ranking("shipped delinquency_probability", "delinquency_probability")
DELINQUENCY_RANKINGS = [
    Ranking("share_paid_late", "share_paid_late"),
    Ranking("avg_days_late", "avg_days_late"),
    Ranking("worst_days_past_due_12m", "worst_days_past_due_12m"),
    Ranking("current_days_past_due", "current_days_past_due"),
    Ranking("ever_30_days_late (the pipeline's rule)", "ever_30_days_late"),
    Ranking(
        "bureau_delinquency_score (low = risky)",
        "bureau_delinquency_score",
        higher_is_riskier=False,
    ),
]


@dataclass
class Block:
    """One (data set, as-of, target): the graded rankings, or why there are none."""

    dataset: str
    as_of: date
    target: str
    results: list[RankingResult] = field(default_factory=list)
    chosen: str = ""
    notes: list[str] = field(default_factory=list)
    skipped: str = ""  # why nothing was graded (not a failure)
    failed: str = ""  # the pipeline run failed: no evidence, a failure under --strict

    @property
    def verdict(self) -> str:
        if self.failed:
            return "FAIL (run failed)"
        if self.skipped:
            return "n/a"
        shipped, *rankings = self.results
        if shipped.verdict == "too few":
            return f"too few to judge ({shipped.positives} positives)"
        below = [r.name.split(" ")[0] for r in rankings if r.verdict == "FAIL"]
        return f"FAIL (below {', '.join(below)})" if below else "ok"


@dataclass
class RunOutcome:
    ok: bool
    wall_seconds: float  # includes waiting for the bench lock
    pipeline_seconds: float | None  # the CLI's own "finished in" figure
    message: str


# --- running the pipeline ---------------------------------------------------------------------


def run_pipeline(
    code: Path, inbox: Path, warehouse: Path, as_of: date, config: Path, lock: str
) -> RunOutcome:
    """``crm-intel run`` as a user starts it, from ``code``, serialised by ``lock``."""
    command = [
        sys.executable, "-m", "pipelines.cli", "run", "--inbox", str(inbox),
        "--warehouse", str(warehouse), "--as-of", as_of.isoformat(), "--config", str(config),
    ]  # fmt: skip
    if lock:
        command = ["flock", lock, *command]
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=code, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    output = completed.stdout + completed.stderr
    finished = re.search(r"finished in ([\d.]+)s", output)
    if completed.returncode:
        errors = [line for line in output.splitlines() if "error" in line.lower() or "  " in line]
        return RunOutcome(False, wall, None, " | ".join(errors[-4:]) or output[-500:])
    return RunOutcome(True, wall, float(finished.group(1)) if finished else None, "")


def export_code(ref: str, into: Path) -> tuple[Path, str]:
    """The repository at ``ref`` (``git archive``), so edits in progress cannot leak in."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", ref], cwd=REPO, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into, commit


def working_tree_version() -> str:
    """HEAD's short hash, marked dirty when the tracked files differ from it."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=REPO, check=False).returncode
    return f"{head} + uncommitted edits" if dirty else head


# --- data sets ------------------------------------------------------------------------------


def write_cdnow_inbox(master: Path, inbox: Path) -> int:
    """CDNOW master log as an invoice export: one invoice per customer and day, in USD."""
    lines = pl.Series("line", master.read_text().splitlines())
    transactions = (
        lines.str.extract_groups(r"^\s*(\d+)\s+(\d{8})\s+(\d+)\s+([\d.]+)\s*$")
        .struct.unnest()
        .drop_nulls()  # the header line
    )
    transactions.columns = ["customer", "day", "cds", "dollars"]
    invoices = (
        transactions.group_by("customer", "day")
        .agg(pl.col("dollars").cast(pl.Float64).sum().round(2).alias("amount"))
        .with_columns(
            # a letter keeps the leading zeros of the ids through any CSV reader
            invoice_id=pl.format("CD{}-{}", "customer", "day"),
            customer_id=pl.format("CD{}", "customer"),
            issue_date=pl.col("day").str.strptime(pl.Date, "%Y%m%d").dt.strftime("%Y-%m-%d"),
            currency=pl.lit("USD"),
            document_type=pl.lit("invoice"),
        )
        .sort("issue_date", "customer_id")
    )
    path = inbox / "invoices" / "invoices.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    invoices.select(
        "invoice_id", "customer_id", "issue_date", "amount", "currency", "document_type"
    ).write_csv(path)
    return invoices.height


def regime_option_exists(code: Path) -> bool:
    """Whether this version's ``demo-data`` takes ``--regime`` (it is being added)."""
    completed = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "demo-data", "--help"],
        cwd=code,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"},
        check=False,
    )
    return "--regime" in completed.stdout


def generate_inbox(
    code: Path, inbox: Path, customers: int, seed: int, regime: str | None
) -> str | None:
    """``crm-intel demo-data`` into ``inbox``; returns the error text if it failed."""
    command = [
        sys.executable, "-m", "pipelines.cli", "demo-data", "--out", str(inbox),
        "--customers", str(customers), "--seed", str(seed),
    ]  # fmt: skip
    if regime is not None:
        command += ["--regime", regime]
    completed = subprocess.run(command, cwd=code, capture_output=True, text=True, check=False)
    if completed.returncode:
        return (completed.stdout + completed.stderr).strip()[-300:]
    return None


def write_config(path: Path, horizon_days: int, base_currency: str | None) -> Path:
    lines = [f"[churn]\nhorizon_days = {horizon_days}\n"]
    if base_currency:
        lines.insert(0, f'[ingest]\nbase_currency = "{base_currency}"\n')
    path.write_text("\n".join(lines))
    return path


# --- reading the warehouse --------------------------------------------------------------------


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """Columns of ``table``, empty when it does not exist (tables are being reworked)."""
    try:
        return [row[0] for row in con.sql(f"describe {table}").fetchall()]
    except duckdb.Error:
        return []


def read_columns(
    con: duckdb.DuckDBPyConnection, wanted: list[str], tables: list[str], where: str = ""
) -> tuple[pl.DataFrame, list[str]]:
    """``customer_id`` and each wanted column from the first table that has it; the missing."""
    frame: pl.DataFrame | None = None
    found: set[str] = set()
    for table in tables:
        columns = table_columns(con, table)
        take = [c for c in wanted if c in columns and c not in found]
        if "customer_id" not in columns or not take:
            continue
        condition = where if where and "cutoff_date" in columns else ""
        selected = ", ".join(f'"{c}"::double as "{c}"' for c in take)
        part = con.sql(f"select customer_id, {selected} from {table} {condition}").pl()
        frame = (
            part if frame is None else frame.join(part, on="customer_id", how="full", coalesce=True)
        )
        found.update(take)
    if frame is None:
        frame = pl.DataFrame(schema={"customer_id": pl.String})
    return frame, [c for c in wanted if c not in found]


def pipeline_choice(con: duckdb.DuckDBPyConnection, target: str) -> str:
    """What the pipeline says it chose, and its own holdout AUCs, in whichever tables hold them.

    Reads ``models.<target>_evaluation`` (a ``chosen`` flag, ``roc_auc`` or ``auc``), then the
    ``chosen`` parameter of the latest ``models.model_runs`` row of the model; every piece is
    optional, so a version measured with ``--ref`` that lacks one is still graded.
    """
    evaluation = f"models.{target}_evaluation"
    columns = table_columns(con, evaluation)
    auc = next((c for c in ("roc_auc", "auc") if c in columns), None)
    chosen, aucs = None, ""
    if "scorer" in columns and auc:
        keep = "where population = 'all'" if "population" in columns else ""
        flag = "chosen" if "chosen" in columns else "false"
        rows = con.sql(f"select scorer, {auc}, {flag} from {evaluation} {keep}").fetchall()
        chosen = next((row[0] for row in rows if row[2]), None)
        aucs = ", ".join(f"{row[0]} {row[1]:.3f}" for row in rows if row[1] is not None)
    source = evaluation
    if chosen is None and "parameters" in table_columns(con, "models.model_runs"):
        rows = con.execute(
            "select parameters->>'chosen' from models.model_runs where model = ? "
            "order by created_at desc limit 1",
            [target],
        ).fetchall()
        chosen, source = (rows[0][0] if rows else None), "models.model_runs"
    text = f"{chosen} ({source})" if chosen else "not recorded"
    return text + (f"; holdout AUC {aucs}" if aucs else "; no holdout comparison stored")


# --- one data set and date --------------------------------------------------------------------


def grade_churn(
    con: duckdb.DuckDBPyConnection,
    ledger: duckdb.DuckDBPyConnection,
    block: Block,
    horizon_days: int,
    args: argparse.Namespace,
) -> None:
    outcomes = churn_outcomes(ledger, block.as_of, horizon_days)
    scores, _ = read_columns(con, ["churn_probability", "account_closed"], ["models.churn_scores"])
    columns = [r.column for r in CHURN_RANKINGS]
    rankings, missing = read_columns(
        con, columns, ["marts.customer_360", "models.rfm_scores", "models.clv_scores"]
    )
    grade(
        block, outcomes, "churned", scores, rankings, missing, CHURN_SHIPPED, CHURN_RANKINGS, args
    )
    if "account_closed" in scores.columns:
        closed = outcomes.join(scores, on="customer_id").filter(pl.col("account_closed") == 1)
        if closed.height:
            block.notes.append(
                f"{closed.height:,} closed accounts left out (no probability: lost by rule; "
                f"{closed['churned'].sum():,} of them churned)"
            )


def grade_delinquency(
    con: duckdb.DuckDBPyConnection,
    ledger: duckdb.DuckDBPyConnection,
    block: Block,
    args: argparse.Namespace,
) -> None:
    outcomes = delinquency_outcomes(
        ledger, block.as_of, DELINQUENCY_HORIZON_DAYS, DAYS_PAST_DUE, PAYMENT_TERMS_DAYS,
        SETTLEMENT_TOLERANCE,
    )  # fmt: skip
    scores, _ = read_columns(con, ["delinquency_probability"], ["models.delinquency_scores"])
    if scores.height == 0 or scores["delinquency_probability"].null_count() == scores.height:
        block.skipped = "the pipeline shipped no delinquency probability (model not fitted)"
        return
    where = f"where cutoff_date = '{block.as_of.isoformat()}'"
    columns = [r.column for r in DELINQUENCY_RANKINGS]
    rankings, missing = read_columns(
        con, columns, ["features.payment_behaviour", "marts.customer_360"], where
    )
    grade(
        block, outcomes, "delinquent", scores, rankings, missing, DELINQUENCY_SHIPPED,
        DELINQUENCY_RANKINGS, args,
    )  # fmt: skip


def grade(
    block: Block,
    outcomes: pl.DataFrame,
    label: str,
    scores: pl.DataFrame,
    rankings: pl.DataFrame,
    missing: list[str],
    shipped: Ranking,
    candidates: list[Ranking],
    args: argparse.Namespace,
) -> None:
    frame = outcomes.join(scores, on="customer_id", how="left").join(
        rankings, on="customer_id", how="left"
    )
    unscored = frame[shipped.column].null_count()
    if unscored:
        block.notes.append(f"{unscored:,} of {frame.height:,} customers have no shipped score")
    if missing:
        block.notes.append(f"columns not in the warehouse: {', '.join(missing)}")
    present = [r for r in candidates if r.column in frame.columns]
    for ranking in present:
        nulls = frame.filter(pl.col(shipped.column).is_not_null())[ranking.column].null_count()
        if nulls:
            block.notes.append(f"{ranking.column} null for {nulls:,} (graded without them)")
    block.results = grade_rankings(
        frame,
        label,
        shipped,
        present,
        resamples=args.resamples,
        seed=args.bootstrap_seed,
        min_class=args.min_class,
    )


def bench_dataset(
    name: str,
    inbox: Path,
    dates: list[date] | None,
    code: Path,
    work: Path,
    base_currency: str | None,
    args: argparse.Namespace,
    timings: list[str],
) -> list[Block]:
    """Every as-of date of one inbox: run, label, grade; ``dates`` None = the last invoice minus
    the longer of the churn and delinquency horizons, so both outcomes are observed."""
    ledger = duckdb.connect()
    has_payments = load_ledger(ledger, inbox)
    _, last = ledger_span(ledger)
    window = max(args.horizon_days, DELINQUENCY_HORIZON_DAYS if has_payments else 0)
    dates = dates or [last - timedelta(days=window)]
    config = write_config(work / f"{name}.toml", args.horizon_days, base_currency)
    blocks = []
    for as_of in dates:
        warehouse = work / f"{name}-{as_of.isoformat()}" / "warehouse.duckdb"
        warehouse.parent.mkdir(parents=True, exist_ok=True)
        print(f"{name} as of {as_of}: pipeline run ...", flush=True)
        outcome = run_pipeline(code, inbox, warehouse, as_of, config, args.lock)
        took = f"{outcome.pipeline_seconds:.1f} s" if outcome.pipeline_seconds else "?"
        timings.append(
            f"{name} {as_of}: pipeline {took} ({outcome.wall_seconds:.1f} s wall with lock wait)"
        )
        print(f"  {timings[-1]}" + ("" if outcome.ok else f" FAILED: {outcome.message}"))
        churn = Block(name, as_of, f"churn {args.horizon_days}d")
        delinquency = Block(name, as_of, f"delinquency {DELINQUENCY_HORIZON_DAYS}d")
        blocks += [churn, delinquency]
        if not outcome.ok:
            churn.failed = delinquency.failed = outcome.message
            continue
        started = time.perf_counter()
        with duckdb.connect(str(warehouse), read_only=True) as con:
            grade_churn(con, ledger, churn, args.horizon_days, args)
            churn.chosen = pipeline_choice(con, "churn")
            if has_payments:
                grade_delinquency(con, ledger, delinquency, args)
                delinquency.chosen = pipeline_choice(con, "delinquency")
            else:
                delinquency.skipped = "no payments in the inbox: delinquency is not observable"
        timings.append(f"{name} {as_of}: labels + bootstrap {time.perf_counter() - started:.1f} s")
        print(f"  {timings[-1]}", flush=True)
        for block in (churn, delinquency):
            print(f"  {block.target}: {block.verdict}", flush=True)
    ledger.close()
    return blocks


# --- report -----------------------------------------------------------------------------------


def _auc(value: float, low: float, high: float) -> str:
    if value != value:  # nan
        return "n/a"
    if low != low:
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def markdown(blocks: list[Block], header: list[str]) -> str:
    """Summary table (one row per data set, date, target), then every ranking's row."""
    lines = [*header, ""]
    lines += [
        "| data set | as of | target | customers | positives | shipped AUC [95 % CI] "
        "| best one-column ranking | its AUC [95 % CI] | pipeline's choice | verdict |",
        "|---|---|---|---:|---:|---|---|---|---|---|",
    ]
    for block in blocks:
        lead = f"| {block.dataset} | {block.as_of} | {block.target} "
        if block.failed or block.skipped:
            why = f"run failed: {block.failed}" if block.failed else block.skipped
            lines.append(lead + f"| | | {why} | | | | {block.verdict} |")
            continue
        shipped, *rankings = block.results
        judged = [r for r in rankings if r.auc == r.auc]
        best = max(judged, key=lambda r: r.auc) if judged else None
        best_text = (best.name, _auc(best.auc, best.auc_low, best.auc_high)) if best else ("", "")
        lines.append(
            lead + f"| {shipped.customers:,} | {shipped.positives:,} "
            f"| {_auc(shipped.auc, shipped.auc_low, shipped.auc_high)} | {best_text[0]} "
            f"| {best_text[1]} | {block.chosen} | {block.verdict} |"
        )
    lines += [
        "",
        "Every ranking, graded on the customers where it has a value, next to the shipped "
        "scorer on exactly those customers (Δ: paired bootstrap interval of shipped − ranking):",
        "",
        "| data set | as of | target | ranking | customers | positives | AUC [95 % CI] "
        "| shipped AUC, same customers | Δ [95 % CI] | verdict |",
        "|---|---|---|---|---:|---:|---|---:|---|---|",
    ]
    for block in blocks:
        for result in block.results[1:]:
            delta = (
                f"{result.shipped_auc - result.auc:+.3f} "
                f"[{result.delta_low:+.3f}, {result.delta_high:+.3f}]"
                if result.delta_low == result.delta_low
                else "n/a"
            )
            lines.append(
                f"| {block.dataset} | {block.as_of} | {block.target} | {result.name} "
                f"| {result.customers:,} | {result.positives:,} "
                f"| {_auc(result.auc, result.auc_low, result.auc_high)} "
                f"| {result.shipped_auc:.3f} | {delta} | {result.verdict} |"
            )
    notes = [f"- {b.dataset} {b.as_of} {b.target}: {note}" for b in blocks for note in b.notes]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default="cdnow,generator", help="cdnow and/or generator")
    parser.add_argument("--cdnow-dates", default=CDNOW_DATES, help="comma-separated as-of dates")
    parser.add_argument(
        "--cdnow-file",
        type=Path,
        default=Path(str(files("lifetimes").joinpath("datasets/CDNOW_master.txt"))),
    )
    parser.add_argument("--customers", type=int, default=5000, help="generator customers")
    parser.add_argument("--seed", type=int, default=42, help="generator seed")
    parser.add_argument(
        "--regimes", default="default", help=f"comma-separated, or 'all' ({', '.join(REGIMES)})"
    )
    parser.add_argument("--horizon-days", type=int, default=180, help="[churn] horizon_days")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--bootstrap-seed", type=int, default=20240601)
    parser.add_argument(
        "--min-class", type=int, default=20, help="fewer positives or negatives: too few to judge"
    )
    parser.add_argument("--ref", help="measure this git commit (git archive) instead of the tree")
    parser.add_argument("--lock", default="/work/bench.lock", help="flock file; '' = no lock")
    parser.add_argument("--keep", type=Path, help="keep inboxes and warehouses under this folder")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a verdict fails")
    args = parser.parse_args()
    if args.lock and not shutil.which("flock"):
        print("flock not found: runs are not serialised", file=sys.stderr)
        args.lock = ""

    started = time.perf_counter()
    timings: list[str] = []
    blocks: list[Block] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-scores-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.ref:
            code, version = export_code(args.ref, work / "code")
            # the labels settle invoices with the measured version's SQL, not the tree's
            sys.path.insert(0, str(code))
        else:
            code, version = REPO, working_tree_version()
        datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
        if "cdnow" in datasets:
            inbox = work / "cdnow-inbox"
            rows = write_cdnow_inbox(args.cdnow_file, inbox)
            print(f"cdnow: {rows:,} invoices (one per customer-day) in {inbox}", flush=True)
            dates = [date.fromisoformat(d.strip()) for d in args.cdnow_dates.split(",")]
            blocks += bench_dataset("cdnow", inbox, dates, code, work, "USD", args, timings)
        if "generator" in datasets:
            regimes = REGIMES if args.regimes == "all" else args.regimes.split(",")
            has_option = regime_option_exists(code)
            for regime in (r.strip() for r in regimes):
                if not has_option and regime != "default":
                    skipped.append(f"regime {regime}: this demo-data has no --regime option")
                    print(f"skipped: {skipped[-1]}", flush=True)
                    continue
                inbox = work / f"generator-{regime}-inbox"
                error = generate_inbox(
                    code, inbox, args.customers, args.seed, regime if has_option else None
                )
                if error:
                    skipped.append(f"regime {regime}: demo-data failed: {error}")
                    print(f"skipped: {skipped[-1]}", flush=True)
                    continue
                name = f"generator {regime} ({args.customers:,})"
                blocks += bench_dataset(name, inbox, None, code, work, None, args, timings)

    elapsed = time.perf_counter() - started
    command = "python -m bench.bench_scores " + shlex.join(sys.argv[1:])
    header = [
        f"Shipped scorers vs one-column rankings (`{command.strip()}`, code {version}, "
        f"{elapsed / 60:.1f} min wall, {args.resamples} stratified bootstrap resamples, "
        f"seed {args.bootstrap_seed}).",
        "",
        "- " + CHURN_DEFINITION.format(horizon=args.horizon_days),
        "- "
        + DELINQUENCY_DEFINITION.format(
            horizon=DELINQUENCY_HORIZON_DAYS,
            dpd=DAYS_PAST_DUE,
            terms=PAYMENT_TERMS_DAYS,
            tolerance=SETTLEMENT_TOLERANCE,
        ),
        "- outcomes come from the inbox files, not the pipeline's labels; verdict ok: shipped "
        "AUC >= each one-column ranking's AUC, or inside that ranking's 95 % interval; fewer "
        f"than {args.min_class} positives or negatives: too few to judge",
        *(f"- skipped {note}" for note in skipped),
    ]
    report = markdown(blocks, header) + "\nTimings:\n\n" + "".join(f"- {t}\n" for t in timings)
    print()
    print(report)
    if args.out:
        args.out.write_text(report)
        print(f"wrote {args.out}")
    failed = [b for b in blocks if b.verdict.startswith("FAIL")]
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
