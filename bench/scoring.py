"""Pure pieces of ``bench/bench_scores.py``: outcome labels from an inbox, AUC with a bootstrap.

Kept apart from the runner (no Dagster, no subprocess) so tests/test_bench_scores.py checks the
very functions whose numbers go to BENCHMARKS.md. The labels are computed from the inbox files
themselves, not from the pipeline's training labels, so a bug shared by the pipeline's features
and its labels cannot make the shipped scorer look good.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

CHURN_DEFINITION = (
    "churned = no invoice (credit notes are not purchases) issued in the {horizon} days after the "
    "as-of date, among customers with an invoice on or before it"
)
DELINQUENCY_DEFINITION = (
    "delinquent = on some day of the {horizon} days after the as-of date, one of the customer's "
    "invoices is more than {dpd} days past due (due date: the export's, else issue + "
    "{terms} days) and not yet settled (payments reach the amount net of credit notes less "
    "{tolerance:g}, as features/sql/feat_invoice_settlement.sql settles), among customers "
    "invoiced on or before the as-of date"
)


# --- ranking quality ------------------------------------------------------------------------


def weighted_auc(scores: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """ROC AUC (ties count one half) for each row of ``counts``, the times each case is drawn.

    One sort for every resample: cases are grouped by tied score once, then each resample only
    sums its counts per group, so 1,000 resamples of 25,000 customers cost a few matrix sums.
    Integer counts give an exact numerator, so ``counts`` of ones reproduce sklearn's AUC.
    """
    counts = np.atleast_2d(np.asarray(counts, dtype=np.int64))
    order = np.argsort(scores, kind="stable")
    ordered = np.asarray(scores)[order]
    positive = np.asarray(labels, dtype=np.int64)[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    drawn = counts[:, order]
    positives = np.add.reduceat(drawn * positive, starts, axis=1)
    negatives = np.add.reduceat(drawn, starts, axis=1) - positives
    below = np.cumsum(negatives, axis=1) - negatives
    # twice the Mann-Whitney U: a tie with a negative is worth one, a win two
    twice_u = (positives * (2 * below + negatives)).sum(axis=1)
    pairs = positives.sum(axis=1) * negatives.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return twice_u / (2 * pairs)


def stratified_counts(labels: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """How often each case is drawn in ``resamples`` bootstrap samples, per class separately.

    Stratified (positives among positives, negatives among negatives, as pROC does) so every
    resample keeps the observed number of positives and its AUC is defined even when they are
    rare.
    """
    labels = np.asarray(labels, dtype=bool)
    counts = np.zeros((resamples, labels.size), dtype=np.int64)
    offsets = (np.arange(resamples) * labels.size)[:, None]
    for members in (np.flatnonzero(labels), np.flatnonzero(~labels)):
        if members.size == 0:
            continue
        drawn = members[rng.integers(0, members.size, size=(resamples, members.size))]
        flat = np.bincount((drawn + offsets).ravel(), minlength=resamples * labels.size)
        counts += flat.reshape(resamples, labels.size)
    return counts


def bootstrap_aucs(
    scores: list[np.ndarray], labels: np.ndarray, resamples: int, seed: int, chunk: int = 100
) -> np.ndarray:
    """AUC of each score vector on the same stratified resamples: shape (len(scores), resamples).

    Shared resamples make the intervals paired, so the difference of two scorers has its own
    interval; chunks bound memory (``chunk`` x customers counts at a time).
    """
    rng = np.random.default_rng(seed)
    out = np.empty((len(scores), resamples))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        counts = stratified_counts(labels, size, rng)
        for row, score in enumerate(scores):
            out[row, start : start + size] = weighted_auc(score, labels, counts)
    return out


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Central percentile interval of bootstrap values."""
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Ranking:
    """A score column and its direction: ``higher_is_riskier`` False ranks low values first."""

    name: str
    column: str
    higher_is_riskier: bool = True


@dataclass(frozen=True)
class RankingResult:
    """One ranking graded on the customers where it has a value, next to the shipped scorer."""

    name: str
    customers: int
    positives: int
    auc: float
    auc_low: float
    auc_high: float
    shipped_auc: float  # the shipped scorer on the same customers
    delta_low: float  # paired interval of shipped - this ranking
    delta_high: float
    verdict: str  # "ok", "FAIL", "too few" (positives or negatives below the minimum)


def grade_rankings(
    frame: pl.DataFrame,
    label: str,
    shipped: Ranking,
    rankings: list[Ranking],
    *,
    resamples: int = 1000,
    seed: int = 20240601,
    min_class: int = 20,
) -> list[RankingResult]:
    """The shipped scorer (first result) and each one-column ranking, with 95 % intervals.

    A ranking is graded where it is not null (a bureau score where a report exists, days late
    where an invoice was settled), and the shipped scorer on exactly those customers, so the
    two AUCs are comparable. Verdict ok: shipped AUC >= the ranking's AUC, or inside the
    ranking's interval (not significantly worse).
    """
    graded = frame.filter(pl.col(shipped.column).is_not_null() & pl.col(label).is_not_null())
    results = []
    for ranking in [shipped, *rankings]:
        rows = graded.filter(pl.col(ranking.column).is_not_null())
        observed = rows[label].cast(pl.Boolean).to_numpy()
        positives = int(observed.sum())
        candidates = [_signed(rows, ranking), _signed(rows, shipped)]
        nan = float("nan")
        point = shipped_point = low = high = delta_low = delta_high = nan
        if 0 < positives < observed.size:
            once = np.ones((1, observed.size), dtype=np.int64)
            point = weighted_auc(candidates[0], observed, once)[0]
            shipped_point = weighted_auc(candidates[1], observed, once)[0]
        verdict = "too few"
        if min(positives, observed.size - positives) >= min_class:
            aucs = bootstrap_aucs(candidates, observed, resamples, seed)
            low, high = interval(aucs[0])
            delta_low, delta_high = interval(aucs[1] - aucs[0])
            verdict = "ok" if shipped_point >= point or shipped_point >= low else "FAIL"
        results.append(
            RankingResult(
                name=ranking.name,
                customers=observed.size,
                positives=positives,
                auc=float(point),
                auc_low=low,
                auc_high=high,
                shipped_auc=float(shipped_point),
                delta_low=delta_low,
                delta_high=delta_high,
                verdict=verdict,
            )
        )
    return results


def _signed(rows: pl.DataFrame, ranking: Ranking) -> np.ndarray:
    values = rows[ranking.column].cast(pl.Float64).to_numpy()
    return values if ranking.higher_is_riskier else -values


# --- outcomes after the as-of date, from the inbox ---------------------------------------------


def load_ledger(con: duckdb.DuckDBPyConnection, inbox: Path) -> bool:
    """Write ``bench.invoices`` and ``bench.payments`` (canonical columns) from the inbox files.

    Credit notes are stored negative whatever sign the export used, as ingestion does. Returns
    whether the inbox has payments (without them delinquency cannot be observed).
    """
    con.execute("create schema if not exists bench")
    invoices = _read_group(con, inbox, "invoices", "invoices")
    if invoices is None:
        raise FileNotFoundError(f"no invoices/invoices* file in {inbox}")
    columns = _columns(con, invoices)
    due = "try_cast(due_date as date)" if "due_date" in columns else "null::date"
    kind = "coalesce(document_type, 'invoice')" if "document_type" in columns else "'invoice'"
    con.execute(
        f"""create or replace table bench.invoices as
        select invoice_id::varchar as invoice_id, customer_id::varchar as customer_id,
            cast(issue_date as date) as issue_date, {due} as due_date,
            case when {kind} = 'credit_note' then -abs(amount::decimal(18, 2))
                else amount::decimal(18, 2) end as amount,
            {kind} as document_type
        from {invoices}"""
    )
    payments = _read_group(con, inbox, "invoices", "payments")
    con.execute(
        "create or replace table bench.payments (payment_id varchar, invoice_id varchar, "
        "payment_date date, amount decimal(18, 2))"
    )
    if payments is None:
        return False
    con.execute(
        f"""insert into bench.payments
        select payment_id::varchar, invoice_id::varchar, cast(payment_date as date),
            amount::decimal(18, 2)
        from {payments}"""
    )
    return True


def _read_group(
    con: duckdb.DuckDBPyConnection, inbox: Path, folder: str, prefix: str
) -> str | None:
    """A FROM clause reading every CSV or Parquet file of one inbox group, or None."""
    csv = sorted((inbox / folder).glob(f"{prefix}*.csv"))
    parquet = sorted((inbox / folder).glob(f"{prefix}*.parquet"))
    if csv:
        files = ", ".join(f"'{path}'" for path in csv)
        return f"read_csv([{files}], all_varchar = true, union_by_name = true)"
    if parquet:
        files = ", ".join(f"'{path}'" for path in parquet)
        return f"read_parquet([{files}], union_by_name = true)"
    return None


def _columns(con: duckdb.DuckDBPyConnection, source: str) -> set[str]:
    return {row[0] for row in con.sql(f"describe select * from {source}").fetchall()}


def ledger_span(con: duckdb.DuckDBPyConnection) -> tuple[date, date]:
    """First and last invoice issue date of the loaded ledger."""
    first, last = con.sql(
        "select min(issue_date), max(issue_date) from bench.invoices "
        "where document_type = 'invoice'"
    ).fetchall()[0]
    return first, last


def churn_outcomes(con: duckdb.DuckDBPyConnection, as_of: date, horizon_days: int) -> pl.DataFrame:
    """``customer_id``, ``churned`` for every customer with an invoice on or before ``as_of``."""
    _require_window(con, as_of, horizon_days)
    return con.sql(
        """select customer_id,
            count(*) filter (where issue_date > $as_of) = 0 as churned
        from bench.invoices
        where document_type = 'invoice' and issue_date <= $as_of::date + $horizon::integer
        group by customer_id
        having min(issue_date) <= $as_of
        order by customer_id""",
        params={"as_of": as_of, "horizon": horizon_days},
    ).pl()


def delinquency_outcomes(
    con: duckdb.DuckDBPyConnection,
    as_of: date,
    horizon_days: int = 90,
    days_past_due: int = 30,
    default_payment_terms_days: int = 30,
    settlement_tolerance: float = 1.0,
) -> pl.DataFrame:
    """``customer_id``, ``delinquent`` for every customer invoiced on or before ``as_of``.

    Settlement reuses the pipeline's SQL (credit-note matching, tolerance) on the inbox ledger
    as known at as-of + horizon; the label itself is the pipeline's definition
    (feat_delinquency_labels.sql) written out here for the one as-of date: an invoice is more
    than ``days_past_due`` late from due + days_past_due + 1 until the day it is settled.
    """
    # imported here, so a run measuring another version (--ref) settles with that version's SQL
    from features.receivables import build_invoice_settlement

    _require_window(con, as_of, horizon_days)
    build_invoice_settlement(
        con,
        as_of + timedelta(days=horizon_days),
        default_payment_terms_days,
        settlement_tolerance,
        table="bench.settlement",
        ledger=("bench.invoices", "bench.payments"),
    )
    return con.sql(
        """with late as (
            select customer_id, due_date + $dpd::integer + 1 as delinquent_from, settled_date
            from bench.settlement
        ),
        delinquent as (
            select distinct customer_id
            from late
            where delinquent_from <= $as_of::date + $horizon::integer
                and (settled_date is null
                    or settled_date > greatest(delinquent_from, $as_of::date + 1))
        )
        select c.customer_id, d.customer_id is not null as delinquent
        from (
            select distinct customer_id from bench.invoices
            where document_type = 'invoice' and issue_date <= $as_of
        ) as c
        left join delinquent as d using (customer_id)
        order by c.customer_id""",
        params={"as_of": as_of, "horizon": horizon_days, "dpd": days_past_due},
    ).pl()


def _require_window(con: duckdb.DuckDBPyConnection, as_of: date, horizon_days: int) -> None:
    """Refuse a label window that runs past the data: every customer would look churned."""
    _, last = ledger_span(con)
    if as_of + timedelta(days=horizon_days) > last:
        raise ValueError(
            f"as of {as_of} + {horizon_days} days runs past the last invoice ({last}): "
            "the outcome window is not observed"
        )
