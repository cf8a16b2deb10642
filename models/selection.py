"""Choosing the scorer that ships: every candidate on one time-based holdout, the best one wins.

Candidates are of three kinds: the supervised scorecard (fitted on cutoffs whose label window
had closed by the holdout cutoff), the probabilistic baseline (BG/NBD's P(no purchase) for
churn, the bureau's delinquency score) and the plain one-column rankings a careful analyst tries
first (recency, frequency, monetary; share of invoices paid late, days late, worst days past
due). Baselines and rankings need no training: they are graded as they stand.

The rule, the same for churn and delinquency:
- every candidate gets ROC AUC with a 95 % bootstrap interval and the holdout's positives count;
- with fewer than ``MIN_POSITIVES`` events of the rarer class in the holdout nothing can be
  judged: the pre-declared robust ranking ships, and the table says so;
- otherwise the highest AUC ships; on a tie the simpler candidate wins (ranking or baseline
  before the supervised model), so a model that loses to a one-column ranking never ships.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl
from scipy.stats import rankdata
from sklearn.base import clone
from sklearn.metrics import average_precision_score, brier_score_loss

from models.scorecard import CalibratedScorecard, NotEnoughEvidence

# Fewer events of the rarer class than this in the holdout: too few to judge (the width of an
# AUC interval at 20 positives is about +-0.1).
MIN_POSITIVES = 20
SUPERVISED = "supervised"
# The order in which ties are broken: the simplest first.
KIND_ORDER = {"one_column": 0, "baseline": 1, "supervised": 2}


# The evaluation tables' columns (models.churn_evaluation, models.delinquency_evaluation).
EVALUATION_SCHEMA = {
    "scorer": pl.String,
    "kind": pl.String,
    "population": pl.String,
    "holdout_cutoffs": pl.String,
    "horizon_days": pl.Int64,
    "customers": pl.Int64,
    "positives": pl.Int64,
    "training_rows": pl.Int64,
    "roc_auc": pl.Float64,
    "roc_auc_low": pl.Float64,
    "roc_auc_high": pl.Float64,
    "pr_auc": pl.Float64,
    "brier": pl.Float64,
    "top_decile_lift": pl.Float64,
    "too_few_positives": pl.Boolean,
    "chosen": pl.Boolean,
    "choice_reason": pl.String,
}


@dataclass(frozen=True)
class Candidate:
    """A scorer graded on the holdout: higher ``predicted`` = more at risk."""

    name: str
    kind: str  # "supervised", "baseline" or "one_column"
    predicted: np.ndarray
    training_rows: int = 0
    is_probability: bool = False


@dataclass(frozen=True)
class Choice:
    """The holdout table (one row per candidate), the scorer that ships and why."""

    summary: pl.DataFrame
    chosen: str
    reason: str
    too_few_positives: bool


# Customer draws per bootstrap, in all resamples: a large holdout gets fewer resamples.
BOOTSTRAP_DRAWS = 10_000_000


def poisson_resamples(customers: int, resamples: int = 1000, seed: int = 0) -> list[np.ndarray]:
    """The bootstrap's resamples of ``customers`` positions: Poisson(1) counts, one row per
    resample, in batches that bound the memory; capped at ``BOOTSTRAP_DRAWS`` draws in all.

    The same for every scorer graded on one holdout, so drawn once and shared (drawing them is
    as dear as grading a scorer on them). Empty when fewer than two resamples fit in the cap."""
    resamples = min(resamples, BOOTSTRAP_DRAWS // max(customers, 1))
    if resamples < 2:
        return []
    rng = np.random.default_rng(seed)
    batch = max(1, min(resamples, BOOTSTRAP_DRAWS // customers))
    return [
        rng.poisson(1.0, size=(min(batch, resamples - done), customers)).astype(float)
        for done in range(0, resamples, batch)
    ]


def bootstrap_auc(
    observed: np.ndarray,
    predicted: np.ndarray,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    draws: list[np.ndarray] | None = None,
) -> tuple[float, float | None, float | None]:
    """ROC AUC and its percentile bootstrap interval, customers resampled with replacement.

    Vectorised: one sort of the scores, then each resample's AUC from weighted rank sums over
    blocks of tied scores (a resample is a vector of Poisson(1) counts per customer, the usual
    large-sample form of the bootstrap). Resamples are capped at 1e7 customer draws in all: a
    large holdout gets fewer, and its interval is narrow anyway. ``draws`` are the resamples
    of ``poisson_resamples(len(observed), resamples, seed)`` when the caller already has them.
    """
    observed = np.asarray(observed).astype(bool)
    predicted = np.asarray(predicted, dtype=np.float64)
    order = np.argsort(predicted, kind="stable")
    scores, positive = predicted[order], observed[order]
    # tie blocks are contiguous after the sort: customers in one share an averaged rank
    starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])

    def auc(weights: np.ndarray) -> np.ndarray:
        """AUC for each row of ``weights`` (customer counts of one resample)."""
        per_block = np.add.reduceat(weights, starts, axis=1)
        positives_per_block = np.add.reduceat(weights * positive, starts, axis=1)
        mid_rank = np.cumsum(per_block, axis=1) - (per_block - 1) / 2
        n1 = positives_per_block.sum(axis=1)
        n0 = per_block.sum(axis=1) - n1
        rank_sum = (positives_per_block * mid_rank).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0)

    point = float(auc(np.ones((1, len(scores))))[0])
    if draws is None:
        draws = poisson_resamples(len(scores), resamples, seed)
    if not draws:
        return point, None, None
    values = np.concatenate([auc(batch) for batch in draws])
    values = values[np.isfinite(values)]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return point, float(low), float(high)


def top_decile_lift(observed: np.ndarray, predicted: np.ndarray) -> float:
    """Event rate among the 10% highest predictions over the overall event rate."""
    top = max(1, int(np.ceil(len(predicted) * 0.1)))
    order = np.argsort(-predicted, kind="stable")[:top]
    return float(observed[order].mean() / observed.mean())


def choose_scorer(
    observed: np.ndarray,
    candidates: list[Candidate],
    *,
    robust: str,
    min_positives: int = MIN_POSITIVES,
    resamples: int = 1000,
) -> Choice:
    """Grade every candidate on the holdout ``observed`` and pick the one that ships.

    ``robust`` names the candidate that ships when the holdout cannot judge (too few events).
    """
    observed = np.asarray(observed).astype(np.int8)
    positives = int(observed.sum())
    events = min(positives, len(observed) - positives)
    both = 0 < positives < len(observed)
    draws = poisson_resamples(len(observed), resamples) if both else []
    rows = []
    for candidate in candidates:  # a handful of candidates
        predicted = np.asarray(candidate.predicted, dtype=np.float64)
        auc, low, high = bootstrap_auc(observed, predicted, draws=draws) if both else (None,) * 3
        rows.append(
            {
                "scorer": candidate.name,
                "kind": candidate.kind,
                "customers": len(observed),
                "positives": positives,
                "training_rows": candidate.training_rows,
                "roc_auc": auc,
                "roc_auc_low": low,
                "roc_auc_high": high,
                "pr_auc": float(average_precision_score(observed, predicted)) if both else None,
                "brier": float(brier_score_loss(observed, predicted))
                if candidate.is_probability and both
                else None,
                "top_decile_lift": top_decile_lift(observed, predicted) if positives else None,
            }
        )
    columns = ("scorer", "kind", "customers", "positives", "training_rows", "roc_auc")
    columns += ("roc_auc_low", "roc_auc_high", "pr_auc", "brier", "top_decile_lift")
    summary = pl.DataFrame(rows, schema={c: EVALUATION_SCHEMA[c] for c in columns})
    too_few = events < min_positives
    names = [c.name for c in candidates]
    if robust not in names:
        raise ValueError(f"the robust ranking {robust!r} is not among the candidates {names}")
    if too_few:
        chosen = robust
        reason = (
            f"too few to judge: {events} events of the rarer class in the holdout (fewer than "
            f"{min_positives}); the robust ranking {robust} ships"
        )
    else:
        ranked = summary.with_columns(
            simplicity=pl.col("kind").replace_strict(KIND_ORDER, return_dtype=pl.Int64)
        ).sort(["roc_auc", "simplicity"], descending=[True, False], nulls_last=True)
        chosen = ranked["scorer"][0]
        best_simple = ranked.filter(pl.col("kind") != SUPERVISED)
        reason = f"highest holdout ROC AUC ({ranked['roc_auc'][0]:.3f}, {positives} positives)"
        if chosen != SUPERVISED and SUPERVISED in names:
            supervised = summary.filter(pl.col("scorer") == SUPERVISED)["roc_auc"][0]
            reason += f"; the supervised model ranked {supervised:.3f}"
        elif chosen == SUPERVISED and best_simple.height:
            reason += (
                f"; the best simpler scorer, {best_simple['scorer'][0]}, ranked "
                f"{best_simple['roc_auc'][0]:.3f}"
            )
    summary = summary.with_columns(
        too_few_positives=pl.lit(too_few),
        chosen=pl.col("scorer") == chosen,
        choice_reason=pl.when(pl.col("scorer") == chosen).then(pl.lit(reason)),
    )
    return Choice(summary=summary, chosen=chosen, reason=reason, too_few_positives=too_few)


def rank_mapped(ranking: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Probabilities with ``reference``'s distribution in ``ranking``'s order.

    For a ranking that won but cannot be calibrated at the configured horizon: the customer
    ranked k-th riskiest gets the k-th highest reference probability, so the portfolio keeps the
    reference model's expected number of events and the winner's order. Nulls stay null.
    """
    ranking = np.asarray(ranking, dtype=np.float64)
    out = np.full(len(ranking), np.nan)
    known = np.isfinite(ranking)
    targets = np.sort(np.asarray(reference, dtype=np.float64)[np.isfinite(reference)])
    if known.sum() == 0 or len(targets) == 0:
        return out
    quantile = (rankdata(ranking[known]) - 0.5) / known.sum()
    out[known] = np.quantile(targets, quantile)
    return out


@dataclass(frozen=True)
class Ranking:
    """A scorer that needs no training: one column read in the direction that raises risk."""

    column: str
    kind: str  # "baseline" or "one_column"
    direction: int  # +1: higher is riskier
    is_probability: bool = False  # then direction is +1 and the values are the event's probability


def ranking_scores(frame: pl.DataFrame, ranking: Ranking) -> np.ndarray | None:
    """Risk scores of ``ranking`` on ``frame`` (higher = riskier); customers without a value get
    the median, a neutral rank. None when the column has no value at all."""
    if ranking.column not in frame.columns or frame[ranking.column].null_count() == frame.height:
        return None
    values = frame[ranking.column].cast(pl.Float64).fill_nan(None)
    return (values.fill_null(values.median()) * ranking.direction).to_numpy()


def reliability_table(
    scorer: str, population: str, predicted: np.ndarray, observed: np.ndarray
) -> pl.DataFrame:
    """Mean predicted vs observed rate in ten probability bins: how far to trust the level."""
    bins = np.minimum((predicted * 10).astype(np.int64), 9)
    return (
        pl.DataFrame({"bin": bins, "predicted": predicted, "observed": observed.astype(float)})
        .group_by("bin")
        .agg(
            pl.len().alias("customers"),
            pl.col("predicted").mean().alias("mean_predicted"),
            pl.col("observed").mean().alias("observed_rate"),
        )
        .with_columns(
            scorer=pl.lit(scorer),
            population=pl.lit(population),
            bin_from=pl.col("bin") / 10,
            bin_to=(pl.col("bin") + 1) / 10,
        )
        .select(
            "population",
            "scorer",
            "bin_from",
            "bin_to",
            "customers",
            "mean_predicted",
            "observed_rate",
        )
        .sort("bin_from")
    )


def empty_reliability() -> pl.DataFrame:
    """A reliability table with no bins: nothing could be graded."""
    return reliability_table("", "", np.zeros(0), np.zeros(0)).clear()


@dataclass(frozen=True)
class Evaluation:
    """Every candidate graded on the holdout, per population; the choice made on ``all``."""

    summary: pl.DataFrame
    reliability: pl.DataFrame
    choice: Choice
    notes: dict[str, str]

    @property
    def chosen(self) -> str:
        return self.choice.chosen


def robust_ranking(frame: pl.DataFrame, preference: tuple[str, ...]) -> str:
    """The first of ``preference`` with a known value in ``frame``: what ships when the data
    cannot judge. When none has a value (e.g. no payments at all) the first is named, and its
    scores come out unknown."""
    for column in preference:
        if column in frame.columns and frame[column].null_count() < frame.height:
            return column
    return preference[0]


def evaluate_candidates(
    history: pl.DataFrame,
    holdout_cutoffs: list,
    horizon_days: int,
    *,
    label: str,
    model: CalibratedScorecard | None,
    rankings: tuple[Ranking, ...],
    robust: tuple[str, ...],
    populations: dict[str, pl.Expr] | None = None,
    min_positives: int = MIN_POSITIVES,
) -> Evaluation:
    """Grade the supervised ``model`` (fitted on the cutoffs whose ``horizon_days`` label window
    had closed by the first holdout cutoff) and every ranking on the holdout cutoffs.

    ``model`` None leaves the supervised model out (say why in ``notes``). The choice is made
    on the whole holdout; other ``populations`` (name -> row filter) are graded for reading.
    """
    first = min(holdout_cutoffs)
    test = history.filter(pl.col("cutoff_date").is_in(holdout_cutoffs))
    if test.height == 0:
        raise ValueError(f"no labelled snapshot at the holdout cutoffs {holdout_cutoffs}")
    observed = test[label].cast(pl.Int8).to_numpy()
    train = history.filter(pl.col("cutoff_date") <= first - timedelta(days=horizon_days))
    candidates, notes = [], {}
    if model is None:
        notes[SUPERVISED] = "not a candidate: no labels at the configured horizon"
    elif train.height == 0:
        notes[SUPERVISED] = (
            f"not a candidate: no labelled cutoff {horizon_days} days before the holdout {first}"
        )
    else:
        try:
            fitted = clone(model).fit(train)
        except NotEnoughEvidence as error:
            notes[SUPERVISED] = f"not fitted: {error}"
        else:
            candidates.append(
                Candidate(
                    SUPERVISED,
                    SUPERVISED,
                    fitted.predict_proba(test),
                    training_rows=train.height,
                    is_probability=True,
                )
            )
    for ranking in rankings:
        scores = ranking_scores(test, ranking)
        if scores is None:
            notes[ranking.column] = "not a candidate: no value at the holdout cutoff"
            continue
        candidates.append(
            Candidate(ranking.column, ranking.kind, scores, is_probability=ranking.is_probability)
        )
    choice = choose_scorer(
        observed,
        candidates,
        robust=robust_ranking(test, robust),
        min_positives=min_positives,
    )
    pooled = None
    if choice.too_few_positives:
        choice, pooled = _choose_on_every_cutoff(history, label, rankings, choice, min_positives)
    summaries, reliability = [choice.summary.with_columns(population=pl.lit("all"))], []
    if pooled is not None:
        summaries.append(
            pooled.summary.with_columns(
                population=pl.lit("all_labelled_cutoffs"),
                chosen=pl.col("scorer") == choice.chosen,
                choice_reason=pl.lit(None, dtype=pl.String),
            )
        )
    masks = {"all": np.ones(test.height, dtype=bool)} | {
        name: test.select(condition.fill_null(False)).to_series().to_numpy()
        for name, condition in (populations or {}).items()
    }
    for name, mask in masks.items():
        if name != "all":
            graded = choose_scorer(
                observed[mask],
                [
                    Candidate(c.name, c.kind, c.predicted[mask], c.training_rows, c.is_probability)
                    for c in candidates
                ],
                robust=choice.chosen,
                min_positives=min_positives,
                resamples=200,  # read, not chosen by: a coarser interval will do
            ).summary.with_columns(
                population=pl.lit(name),
                chosen=pl.col("scorer") == choice.chosen,
                choice_reason=pl.lit(None, dtype=pl.String),
            )
            summaries.append(graded)
        y = observed[mask]
        if len(np.unique(y)) == 2:
            reliability += [
                reliability_table(c.name, name, c.predicted[mask], y)
                for c in candidates
                if c.is_probability
            ]
    summary = pl.concat(summaries).with_columns(
        holdout_cutoffs=pl.lit(", ".join(str(c) for c in sorted(holdout_cutoffs))),
        horizon_days=pl.lit(horizon_days),
    )
    return Evaluation(
        summary=summary,
        reliability=pl.concat(reliability) if reliability else empty_reliability(),
        choice=choice,
        notes=notes,
    )


def evaluate_or_fall_back(
    history: pl.DataFrame,
    current: pl.DataFrame,
    holdout_cutoffs: list,
    label_horizon_days: int,
    configured_horizon_days: int,
    *,
    label: str,
    model: CalibratedScorecard,
    rankings: tuple[Ranking, ...],
    robust: tuple[str, ...],
    populations: dict[str, pl.Expr] | None = None,
) -> Evaluation:
    """``evaluate_candidates`` as a nightly run needs it, always with one chosen scorer.

    The supervised ``model`` is a candidate only when the labels have the configured horizon (a
    model trained on 60-day labels would forecast the wrong thing). With no labelled cutoff at
    all nothing can be validated: the robust ranking ships, and the table says so. The summary
    has ``EVALUATION_SCHEMA``'s columns and the reason says when the labels were shortened.
    """
    try:
        if not holdout_cutoffs:
            raise ValueError("no labelled cutoff: the history before the as-of date is too short")
        evaluation = evaluate_candidates(
            history,
            holdout_cutoffs,
            label_horizon_days,
            label=label,
            model=model if label_horizon_days == configured_horizon_days else None,
            rankings=rankings,
            robust=robust,
            populations=populations,
        )
        summary, reliability, notes = evaluation.summary, evaluation.reliability, evaluation.notes
        chosen, reason = evaluation.chosen, evaluation.choice.reason
        too_few = evaluation.choice.too_few_positives
    except ValueError as error:
        chosen = robust_ranking(current, robust)
        reason = f"nothing could be validated ({error}); the robust ranking {chosen} ships"
        kind = next(r.kind for r in rankings if r.column == chosen)
        summary = pl.DataFrame({"scorer": [chosen], "kind": [kind], "population": ["all"]})
        summary = summary.with_columns(chosen=pl.lit(True), choice_reason=pl.lit(reason))
        reliability, notes, too_few = empty_reliability(), {}, True
    if label_horizon_days != configured_horizon_days:
        reason += f"; validated on {label_horizon_days}-day labels, not {configured_horizon_days}"
        summary = summary.with_columns(
            choice_reason=pl.when("chosen").then(pl.lit(reason)).otherwise("choice_reason")
        )
    summary = conform(summary, EVALUATION_SCHEMA)
    return Evaluation(summary, reliability, Choice(summary, chosen, reason, too_few), notes)


def _choose_on_every_cutoff(
    history: pl.DataFrame,
    label: str,
    rankings: tuple[Ranking, ...],
    holdout_choice: Choice,
    min_positives: int,
) -> tuple[Choice, Choice]:
    """With too few events in the holdout, rankings (which need no training) are graded on
    every labelled cutoff pooled; the best ships when the pool has enough events, else the
    robust ranking stays. The supervised model cannot be judged either way: it is left out.

    The pool repeats customers across cutoffs, so its intervals are narrower than independent
    customers would give; it decides between untrained rankings only.
    """
    observed = history[label].cast(pl.Int8).to_numpy()
    candidates = [
        Candidate(r.column, r.kind, scores, is_probability=r.is_probability)
        for r in rankings
        if (scores := ranking_scores(history, r)) is not None
    ]
    pooled = choose_scorer(
        observed, candidates, robust=holdout_choice.chosen, min_positives=min_positives
    )
    if pooled.too_few_positives:
        return holdout_choice, pooled
    cutoffs = history["cutoff_date"].n_unique()
    best = pooled.summary.filter(pl.col("chosen")).row(0, named=True)
    reason = (
        f"too few to judge on the holdout ({holdout_choice.summary['positives'][0]} positives); "
        f"among the plain rankings {best['scorer']} ranked best over all {cutoffs} labelled "
        f"cutoffs (ROC AUC {best['roc_auc']:.3f}, {best['positives']} positives)"
    )
    summary = holdout_choice.summary.with_columns(
        chosen=pl.col("scorer") == best["scorer"],
        choice_reason=pl.when(pl.col("scorer") == best["scorer"]).then(pl.lit(reason)),
    )
    return Choice(summary, best["scorer"], reason, too_few_positives=True), pooled


def fit_shipped(
    chosen: str, labelled: pl.DataFrame, model: CalibratedScorecard
) -> CalibratedScorecard:
    """The chosen scorer fitted on every labelled snapshot: the supervised ``model`` itself, or
    its one-column version on the chosen ranking (a calibrated probability in the ranking's
    order, and the ranking's own words as reasons). Raises ``NotEnoughEvidence``."""
    if chosen == SUPERVISED:
        return clone(model).fit(labelled)
    return clone(model).set_params(features=(chosen,)).fit(labelled)


def uncalibrated_probability(
    current: pl.DataFrame, chosen: Ranking, reference: str | None
) -> np.ndarray:
    """A probability for a ranking that could not be calibrated at the configured horizon: the
    ranking itself when it is a probability, else the ``reference`` model's probabilities in the
    ranking's order (``rank_mapped``); NaN where neither exists."""
    if chosen.is_probability:
        return current[chosen.column].cast(pl.Float64).fill_null(np.nan).to_numpy()
    if reference is None or current[reference].null_count() == current.height:
        return np.full(current.height, np.nan)
    values = current[chosen.column].cast(pl.Float64).fill_null(np.nan).to_numpy()
    return rank_mapped(values * chosen.direction, current[reference].to_numpy())


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """``frame`` with exactly ``schema``'s columns, in order; absent ones null."""
    return frame.select(
        pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c)
        for c, t in schema.items()
    )


def candidate_metrics(summary: pl.DataFrame) -> dict[str, dict]:
    """Every candidate's metrics on the whole holdout, for ``models.model_runs``."""
    keys = ("roc_auc", "roc_auc_low", "roc_auc_high", "positives", "customers", "brier")
    return {
        row["scorer"]: {k: row[k] for k in keys} | {"too_few_positives": row["too_few_positives"]}
        for row in summary.filter(pl.col("population") == "all").iter_rows(named=True)
    }
