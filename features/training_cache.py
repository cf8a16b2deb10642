"""Labelled training snapshots kept per cutoff, built once and reused on later refits.

A training cutoff lies on a fixed calendar grid (``features.point_in_time``) and its label window
has closed, so its labelled snapshot is a pure function of the facts dated on or before
``cutoff + label horizon`` (features from facts on or before the cutoff, labels from the window
after it), of the settings that shape it and of the code. Each model keeps its cutoffs' rows in
one table (``features.churn_training_cache``, ``features.delinquency_training_cache``), every
row under its cutoff's key; a refit builds only the cutoffs whose key is not there and reads the
others back, so it gives what building every cutoff gives.

The key is a hash of: the cutoff, the label horizon, a settings key, ``CODE_VERSION``, the
dated facts through ``cutoff + horizon`` (``history_fingerprints``: a late or corrected delivery
dated inside the window rebuilds that cutoff, one dated after it does not) and which tax id each
customer invoiced by then has (bureau reports reach a customer through its account's tax id).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import duckdb

from features.model_store import history_fingerprints, settings_key
from features.warehouse import CODE_VERSION, table_exists, transaction

# Which account (tax id) a customer invoiced on or before a date has: the bureau features of a
# cutoff read it. Dated by the customer's first invoice, so a new customer's account changes no
# earlier cutoff.
ACCOUNT_TAX_IDS = """
    with first_invoice as (
        select customer_id, min(issue_date) as first_issue_date
        from staging.invoices
        group by customer_id
    ),
    tax_ids as (
        select f.first_issue_date, hash(a.customer_id, a.tax_id) as row_hash
        from staging.accounts as a
        join first_invoice as f using (customer_id)
    ),
    thresholds as (select unnest($dates::date[]) as through),
    by_date as (
        select t.through, count(*) as n, sum(r.row_hash) as h
        from tax_ids as r
        asof join thresholds as t on t.through >= r.first_issue_date
        group by t.through
    )
    select
        t.through,
        coalesce(sum(b.n) over w, 0)::bigint,
        coalesce(sum(b.h) over w, 0)::varchar
    from thresholds as t
    left join by_date as b using (through)
    window w as (order by t.through)
"""


@dataclass(frozen=True)
class CutoffPlan:
    """Tonight's training cutoffs, each with its key: which are kept, which are built."""

    keys: dict[date, str]
    reused: list[date]
    built: list[date]


def plan_cutoffs(
    con: duckdb.DuckDBPyConnection,
    cache: str,
    cutoffs: list[date],
    *,
    horizon_days: int,
    settings: dict[str, Any],
) -> CutoffPlan:
    """The key of each cutoff and which of them ``cache`` already holds under that key."""
    throughs = {cutoff: cutoff + timedelta(days=horizon_days) for cutoff in cutoffs}
    history = history_fingerprints(con, list(throughs.values()))
    tax_ids = {
        through: f"{count}:{rows}"
        for through, count, rows in con.execute(
            ACCOUNT_TAX_IDS, {"dates": sorted(set(throughs.values()))}
        ).fetchall()
    }
    shaped_by = settings_key(settings)
    keys = {}
    for cutoff, through in throughs.items():
        parts = [cutoff, horizon_days, shaped_by, CODE_VERSION, history[through], tax_ids[through]]
        text = json.dumps(parts, default=str)
        keys[cutoff] = hashlib.sha256(text.encode()).hexdigest()[:16]
    held: set[tuple[date, str]] = set()
    if table_exists(con, cache):
        held = set(con.sql(f"select distinct cutoff_date, cache_key from {cache}").fetchall())
    reused = [cutoff for cutoff in cutoffs if (cutoff, keys[cutoff]) in held]
    return CutoffPlan(keys, reused, [cutoff for cutoff in cutoffs if cutoff not in reused])


def keep_cutoffs(
    con: duckdb.DuckDBPyConnection, cache: str, plan: CutoffPlan, built_rows: str
) -> int:
    """Keep the rows of the cutoffs built tonight (``built_rows``, a query with ``cutoff_date``)
    under their keys; drop every row tonight's cutoffs no longer use. Returns the rows kept.

    Nothing reused means the layout of the rows may have changed with the code: the table is
    written anew then.
    """
    keyed = (
        f"select k.cache_key, r.* from ({built_rows}) as r join (select unnest($cutoffs::date[]) "
        "as cutoff_date, unnest($keys::varchar[]) as cache_key) as k using (cutoff_date)"
    )
    params = {"cutoffs": plan.built, "keys": [plan.keys[cutoff] for cutoff in plan.built]}
    with transaction(con):
        if plan.reused and table_exists(con, cache):
            con.execute(
                f"delete from {cache} where not list_contains($kept, "
                "cutoff_date::varchar || '/' || cache_key)",
                {"kept": [f"{cutoff.isoformat()}/{plan.keys[cutoff]}" for cutoff in plan.reused]},
            )
            if plan.built:
                con.execute(f"insert into {cache} by name {keyed}", params)
        else:
            con.execute(f"create or replace table {cache} as {keyed}", params)
    return con.sql(f"select count(*) from {cache}").fetchall()[0][0]


def restore_cutoffs(
    con: duckdb.DuckDBPyConnection,
    cache: str,
    *,
    labels: str,
    label: str,
    snapshots: str | None = None,
) -> None:
    """Write ``labels`` (customer, cutoff, ``label``) and ``snapshots`` (every other column)
    from every kept cutoff, in the order a fresh build writes them. Without ``snapshots`` the
    caller reads the features back itself (churn joins today's accounts to them)."""
    with transaction(con):
        con.execute(
            f"create or replace table {labels} as select customer_id, cutoff_date, {label} "
            f"from {cache} order by cutoff_date, customer_id"
        )
        if snapshots is not None:
            con.execute(
                f"create or replace table {snapshots} as select * exclude (cache_key, {label}) "
                f"from {cache} order by cutoff_date, customer_id"
            )
