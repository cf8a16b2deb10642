"""Fitted scorers kept between nights: refitted on a cadence, or as soon as what they learnt from
has moved.

A churn or delinquency scorer learns from labelled cutoffs that lie a whole label horizon (90 to
180 days) before the as-of date, so the next night's data teaches it almost nothing new, while
building those snapshots, grading every candidate and refitting costs most of a night. So a
fit is kept (``models.kept_fits``, one row per model, the scorer pickled) and scores the
following nights, until one of these says it must be refitted (``refit_reason``):

- nothing kept yet, or the kept fit was made by other code or other settings;
- the as-of date lies before the kept fit's: that fit saw facts from after the date asked for;
- the run that made it published nothing (it failed after the fit);
- it is ``refit_every_days`` old (0: refit every night);
- the customers scored moved by more than ``max_customer_change`` (a share) since the fit;
- a fact dated on or before the kept fit's as-of date arrived or changed since (a late or
  corrected delivery rewrote the history it learnt from).

What a night decided is recorded per run in ``models.fit_plans`` (and shown by ``crm-intel
status``), so every later step of the run follows the same decision.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import duckdb

from features.warehouse import CODE_VERSION

# The dated facts a scorer learns from: the column that dates each row, and what of the row was
# known on a date ($through). A deal is known from its creation, its outcome only from its
# closing: a deal closed after the fit's as-of date was an open deal then, as the churn features
# read it, so closing it later changes nothing the fit saw. Other rows are known whole from their
# date, and a changed row comes in a new delivery (a new load_id).
DATED_FACTS = {
    "staging.invoices": ("issue_date", "load_id"),
    "staging.payments": ("payment_date", "load_id"),
    "staging.activities": ("occurred_at", "load_id"),
    "staging.opportunities": (
        "created_at",
        "(opportunity_id, customer_id, created_at, "
        "case when closed_at <= $through then closed_at end, "
        "case when closed_at <= $through then won end)",
    ),
    "staging.credit_reports": ("report_date", "load_id"),
}


@dataclass(frozen=True)
class KeptFit:
    """A scorer fitted by an earlier run, with what it was fitted on."""

    model: str
    run_id: str
    as_of_date: date
    fitted_at: datetime
    settings_key: str
    code_version: str
    history_fingerprint: str
    customers: int
    chosen: str
    note: str | None  # why no scorer could be calibrated then (scorer None), else None
    scorer: Any


@dataclass(frozen=True)
class FitPlan:
    """What one run does with one model: refit (and why) or score with the kept fit."""

    refit: bool
    reason: str
    settings_key: str
    customers: int
    kept_run_id: str | None = None
    kept_as_of: date | None = None


def settings_key(settings: dict[str, Any]) -> str:
    """One key per set of settings values, so a changed setting means a new fit."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def history_fingerprint(con: duckdb.DuckDBPyConnection, through: date) -> str:
    """The facts known on ``through`` (``DATED_FACTS``): their count and a sum of row hashes.

    A late row or a corrected re-delivery arrives in a new file (a new ``load_id``), and a
    removed file takes its rows away, so either changes this; hashing a column or two per row
    keeps it cheap (well under a second for 10M invoices).
    """
    parts = []
    for table, (dated_by, known) in DATED_FACTS.items():
        count, rows = con.sql(
            f"select count(*), coalesce(sum(hash({known})), 0)::varchar "
            f"from {table} where {dated_by} <= $through",
            params={"through": through},
        ).fetchall()[0]
        parts.append(f"{table}:{count}:{rows}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def history_fingerprints(con: duckdb.DuckDBPyConnection, throughs: list[date]) -> dict[date, str]:
    """``history_fingerprint`` through each date of ``throughs``, one pass over each table
    (for one date the plain filter of ``history_fingerprint`` is several times cheaper).

    Each row counts towards the first date on or after its own (an as-of join), and a running
    sum over the dates adds up the earlier ones; a row known differently on each date (a deal
    and its outcome) is hashed once per date instead.
    """
    dates = sorted(set(throughs))
    parts: dict[date, list[str]] = {through: [] for through in dates}
    if not dates:
        return {}
    for table, (dated_by, known) in DATED_FACTS.items():
        if "$through" in known:
            query = (
                f"select t.through, count(*), coalesce(sum(hash({known.replace('$', 't.')})), 0) "
                f"from {table} join (select unnest($dates::date[]) as through) as t "
                f"on {dated_by} <= t.through group by t.through"
            )
        else:
            query = (
                f"select t.through, count(*), coalesce(sum(hash({known})), 0) "
                f"from {table} asof join (select unnest($dates::date[]) as through) as t "
                f"on t.through >= {dated_by} group by t.through"
            )
            query = (
                "select t.through, coalesce(sum(b.n) over w, 0), coalesce(sum(b.h) over w, 0) "
                f"from (select unnest($dates::date[]) as through) as t "
                f"left join ({query}) as b(through, n, h) using (through) "
                "window w as (order by t.through)"
            )
        found = {
            through: (count, rows)
            for through, count, rows in con.execute(
                f"select through, n::bigint, h::varchar from ({query}) as f(through, n, h)",
                {"dates": dates},
            ).fetchall()
        }
        for through in dates:
            count, rows = found.get(through, (0, "0"))
            parts[through].append(f"{table}:{count}:{rows}")
    return {
        through: hashlib.sha256("|".join(parts[through]).encode()).hexdigest()[:16]
        for through in dates
    }


def kept_fit(con: duckdb.DuckDBPyConnection, model: str) -> KeptFit | None:
    rows = con.execute(
        "select model, run_id, as_of_date, fitted_at, settings_key, code_version, "
        "history_fingerprint, customers, chosen, note, scorer from models.kept_fits "
        "where model = ?",
        [model],
    ).fetchall()
    if not rows:
        return None
    *fields, scorer = rows[0]
    # our own warehouse wrote it (keep_fit below); a scorer that no longer loads is refitted
    try:
        loaded = pickle.loads(scorer) if scorer is not None else None
    except Exception:
        return None
    return KeptFit(*fields, scorer=loaded)


def keep_fit(
    con: duckdb.DuckDBPyConnection,
    *,
    model: str,
    plan: FitPlan,
    run_id: str,
    as_of: date,
    chosen: str,
    note: str | None,
    scorer: Any,
) -> None:
    """Replace the kept fit of ``model`` with this run's, fitted under ``plan`` on the history
    known on ``as_of``."""
    blob = pickle.dumps(scorer, protocol=pickle.HIGHEST_PROTOCOL) if scorer is not None else None
    history = history_fingerprint(con, as_of)
    con.execute("delete from models.kept_fits where model = ?", [model])
    con.execute(
        "insert into models.kept_fits values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [model, run_id, as_of, datetime.now(), plan.settings_key, CODE_VERSION, history,
         plan.customers, chosen, note, blob],
    )  # fmt: skip


def refit_reason(
    kept: KeptFit | None,
    *,
    as_of: date,
    settings: str,
    customers: int,
    history_then: str | None,
    kept_published: bool,
    refit_every_days: int,
    max_customer_change: float,
) -> str | None:
    """Why this night must refit, or None when the kept fit still stands.

    ``history_then`` is ``history_fingerprint`` through the kept fit's as-of date, as known
    tonight (None when nothing is kept).
    """
    if kept is None:
        return "no fit kept yet"
    if kept.code_version != CODE_VERSION:
        return "the code changed since the kept fit"
    if kept.settings_key != settings:
        return "the settings changed since the kept fit"
    if not kept_published:
        return "the run that made the kept fit published nothing"
    if as_of < kept.as_of_date:
        return (
            f"the as-of date {as_of} lies before the kept fit's {kept.as_of_date}, "
            "which saw later facts"
        )
    age = (as_of - kept.as_of_date).days
    if age >= refit_every_days:
        return f"the kept fit is {age} days old (refit every {refit_every_days})"
    change = abs(customers - kept.customers) / max(kept.customers, 1)
    if change > max_customer_change:
        return (
            f"customers moved {change:.0%} since the kept fit "
            f"({kept.customers:,d} -> {customers:,d}; refit above {max_customer_change:.0%})"
        )
    if history_then != kept.history_fingerprint:
        return (
            f"facts dated on or before {kept.as_of_date} arrived or changed since the kept fit "
            "(a late or corrected delivery)"
        )
    return None


def plan_fit(
    con: duckdb.DuckDBPyConnection,
    *,
    model: str,
    run_id: str,
    as_of: date,
    settings: dict[str, Any],
    customers: int,
    refit_every_days: int,
    max_customer_change: float,
) -> FitPlan:
    """Decide, once per run, whether ``model`` is refitted tonight; record it in
    ``models.fit_plans`` for the run's later steps."""
    kept = kept_fit(con, model)
    key = settings_key(settings)
    history_then = history_fingerprint(con, kept.as_of_date) if kept else None
    published = bool(
        kept
        and con.execute(
            "select count(*) from ops.publications where run_id = ? and size_bytes is not null",
            [kept.run_id],
        ).fetchall()[0][0]
    )
    reason = refit_reason(
        kept,
        as_of=as_of,
        settings=key,
        customers=customers,
        history_then=history_then,
        kept_published=published,
        refit_every_days=refit_every_days,
        max_customer_change=max_customer_change,
    )
    plan = (
        FitPlan(True, reason, key, customers)
        if reason is not None or kept is None
        else FitPlan(
            False,
            f"the fit of {kept.as_of_date} (run {kept.run_id[:8]}) still stands",
            key,
            customers,
            kept.run_id,
            kept.as_of_date,
        )
    )
    con.execute("delete from models.fit_plans where run_id = ? and model = ?", [run_id, model])
    con.execute(
        "insert into models.fit_plans (run_id, model, refit, reason, settings_key, customers, "
        "kept_run_id, kept_as_of) values (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            run_id,
            model,
            plan.refit,
            plan.reason,
            plan.settings_key,
            plan.customers,
            plan.kept_run_id,
            plan.kept_as_of,
        ],
    )
    return plan


def fit_plan(con: duckdb.DuckDBPyConnection, *, model: str, run_id: str) -> FitPlan:
    """The plan this run recorded for ``model`` (``plan_fit``)."""
    rows = con.execute(
        "select refit, reason, settings_key, customers, kept_run_id, kept_as_of "
        "from models.fit_plans "
        "where run_id = ? and model = ?",
        [run_id, model],
    ).fetchall()
    if not rows:
        raise RuntimeError(f"run {run_id} decided nothing about {model}: plan_fit comes first")
    return FitPlan(*rows[0])


def record_training_cutoffs(
    con: duckdb.DuckDBPyConnection, *, model: str, run_id: str, reused: int, built: int
) -> None:
    """Note on the run's plan how many training cutoffs a refit reused and built
    (``features.training_cache``), for ``crm-intel status``."""
    con.execute(
        "update models.fit_plans set cutoffs_reused = ?, cutoffs_built = ? "
        "where run_id = ? and model = ?",
        [reused, built, run_id, model],
    )
