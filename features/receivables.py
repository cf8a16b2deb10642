"""Receivables and payment behaviour as of a date (SQL in ``features/sql``), for finance and the
delinquency model.

One definition of what is open: ``feat_receivable_items.sql`` (exact open amounts to the cent; a
customer's credit, credit notes and overpayments, clears their oldest open invoices first). The
aging, exposure, DSO, alerts and the payment-behaviour features (open and overdue amounts, open
invoices, days past due) all read its items, built as of the as-of date or of each training
cutoff. ``features.invoice_settlement`` says when each invoice was settled, for how fast a
customer pays and the delinquency label (a credit note corrects the customer's latest invoice
issued before it); its paid totals are the items' residuals.

Without any payment known on a date nothing tells a paid invoice from an unpaid one: the finance
figures are then unknown (NULL, with ``missing_payments_reason``), not "everything owed".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, timedelta

import duckdb
import polars as pl

from features.point_in_time import SOURCE_WORDS, SOURCES, missing_feature_groups
from features.warehouse import (
    append_sql,
    materialize_sql,
    row_count,
    sql_text,
    table_exists,
    transaction,
)

SETTLEMENT = "features.invoice_settlement"
# What the last build of SETTLEMENT saw, so the next run can re-settle only what changed.
SETTLEMENT_STATE = "features.invoice_settlement_state"
# One row per build of the aging: its as-of date and, when the finance figures are unknown, why.
FINANCE_STATUS = "marts.finance_status"
LEDGER = ("staging.invoices", "staging.payments")


def missing_payments_reason(con: duckdb.DuckDBPyConnection, as_of: date) -> str | None:
    """Why open receivables cannot be known on ``as_of`` (no payment known by then), or None.

    A ledger without payments makes every invoice look unpaid: exposure, arrears and expected
    loss are then unknown, not "everything owed". The churn stage's detector decides
    (``features.point_in_time.missing_feature_groups``), so both stages call the source missing
    on the same evidence and in the same words.
    """
    if all(table_exists(con, table) for table in SOURCES.values()):
        missing = missing_feature_groups(con, as_of)
    else:
        # a warehouse that staged the ledger alone (no ingest stage) has no table for the other
        # sources, which the detector asks about too: only its payments question is asked
        known = con.execute(
            f"select count(*) from {SOURCES['payments']} where payment_date <= $as_of",
            {"as_of": as_of},
        ).fetchall()[0][0]
        missing = {} if known else {"payments": SOURCE_WORDS["payments"]}
    if "payments" not in missing:
        return None
    return f"{missing['payments']} known on {as_of}: paid and unpaid invoices cannot be told apart"


@dataclass(frozen=True)
class ReceivablesSummary:
    """Totals of one aging build, for metadata and reconciliation (None: unknown, see reason)."""

    customers: int
    open_items: int
    total_open: float | None
    unapplied_credit: float | None
    unmatched_payments: int
    finance_unknown_reason: str | None


def _build_open_items(
    con: duckdb.DuckDBPyConnection,
    as_of: date,
    default_payment_terms_days: int,
    *,
    tables: tuple[str, str, str],
    ledger: tuple[str, str] = LEDGER,
    payments_known: bool,
    temporary: bool = False,
) -> int:
    """Write the credit notes' refunds and the open items as of ``as_of`` into ``tables`` (the
    settlement read, refunds and items written), from ``ledger`` (invoices, payments): the one
    definition of open, for the aging and for payment behaviour at any cutoff."""
    settlement, refunds, items = tables
    invoices_table, payments_table = ledger
    materialize_sql(
        con,
        refunds,
        "feat_credit_note_refunds",
        temporary=temporary,
        as_of=as_of,
        invoices_table=invoices_table,
        payments_table=payments_table,
    )
    return materialize_sql(
        con,
        items,
        "feat_receivable_items",
        temporary=temporary,
        as_of=as_of,
        default_payment_terms_days=default_payment_terms_days,
        settlement_table=settlement,
        refunds_table=refunds,
        invoices_table=invoices_table,
        payments_known=payments_known,
    )


def build_receivables(
    con: duckdb.DuckDBPyConnection, as_of: date, default_payment_terms_days: int
) -> ReceivablesSummary:
    """Write ``features.receivable_items`` and ``marts.receivables_aging`` as of ``as_of``, and
    ``features.credit_note_refunds`` and ``marts.finance_status``, which the marts and alerts read.

    Reads ``features.invoice_settlement``, which must be built as of the same ``as_of`` (the
    invoice_settlement asset upstream does): its payment totals are the invoices' residuals.
    With no payment known by ``as_of`` no item is written and the aging's amounts are NULL, with
    the reason in ``marts.finance_status`` and the aging's ``finance_unknown_reason``.
    """
    reason = missing_payments_reason(con, as_of)
    con.execute(
        f"create or replace table {FINANCE_STATUS} as "
        "select $as_of::date as as_of_date, $reason::varchar as finance_unknown_reason",
        {"as_of": as_of, "reason": reason},
    )
    items = _build_open_items(
        con,
        as_of,
        default_payment_terms_days,
        tables=(SETTLEMENT, "features.credit_note_refunds", "features.receivable_items"),
        payments_known=reason is None,
    )
    customers = materialize_sql(
        con,
        "marts.receivables_aging",
        "mart_receivables_aging",
        as_of=as_of,
        finance_unknown_reason=reason,
    )
    total_open, unapplied = con.sql(
        "select sum(total_open)::double, sum(unapplied_credit)::double from marts.receivables_aging"
    ).fetchall()[0]
    if reason is None:  # nothing open is a known 0
        total_open, unapplied = total_open or 0.0, unapplied or 0.0
    # Payments that reference no known document cannot reduce anyone's balance: say how many.
    # Known = counted by the settlement (invoices) or by the credit notes' refunds; counting them
    # this way spares an anti-join of every payment with every document.
    unmatched = con.execute(
        "select (select count(*) from staging.payments where payment_date <= $as_of) "
        "- (select coalesce(sum(payment_count), 0) from features.invoice_settlement) "
        "- (select coalesce(sum(refunds), 0) from features.credit_note_refunds)",
        {"as_of": as_of},
    ).fetchall()[0][0]
    return ReceivablesSummary(customers, items, total_open, unapplied, int(unmatched), reason)


def build_risk_alerts(
    con: duckdb.DuckDBPyConnection, as_of: date, lookback_days: int, failure_score_drop: float
) -> int:
    """Write ``marts.risk_alerts`` for the ``lookback_days`` up to ``as_of``; returns its rows.

    Reads the settlement, refunds and aging built as of ``as_of``. The exposure at the window
    start needs the deposits (payments dated before the window against documents issued in it);
    their earliest possible date, looked up here, bounds the payments the SQL joins.
    """
    window_start = as_of - timedelta(days=lookback_days)
    deposits_since = con.execute(
        "select least("
        "(select min(first_payment_date) from features.invoice_settlement "
        "where issue_date > $start and first_payment_date <= $start), "
        "(select min(first_refund_date) from features.credit_note_refunds "
        "where issue_date > $start and first_refund_date <= $start))",
        {"start": window_start},
    ).fetchall()[0][0]
    return materialize_sql(
        con,
        "marts.risk_alerts",
        "mart_risk_alerts",
        as_of=as_of,
        lookback_days=lookback_days,
        failure_score_drop=failure_score_drop,
        # no deposit: an empty date range
        deposits_since=deposits_since or window_start + timedelta(days=1),
    )


DSO_BASIS = "features.receivables_dso_basis"


def countback_fragments(months: int) -> dict[str, str]:
    """The month-by-month columns of countback DSO: one sales column per month in the basis
    (``feat_receivables_dso_basis.sql``), their sums over a group of customers, and the
    countback across them (``feat_receivables_dso.sql``, ``mart_portfolio_risk.sql``), a few
    expressions per month that refer to the previous month's by name (DuckDB reuses select-list
    aliases). The countback reads ``open_receivables`` and ``month_<k>_sales`` of its row."""
    sales = [
        f"sum(amount) filter (where month_number = {k}) as month_{k}_sales"
        for k in range(1, months + 1)
    ]
    group_sales = [f"sum(month_{k}_sales) as month_{k}_sales" for k in range(1, months + 1)]
    countback = ["open_receivables as left_1"]
    for k in range(1, months + 1):
        if k > 1:
            countback.append(f"left_{k - 1} - coalesce(month_{k - 1}_sales, 0) as left_{k}")
        countback.append(
            f"date_diff('day', $as_of::date - to_months({k}), $as_of::date - to_months({k - 1}))"
            f" * case when left_{k} <= 0 then 0"
            f" when coalesce(month_{k}_sales, 0) >= left_{k}"
            f" then left_{k}::double / month_{k}_sales::double else 1 end as days_{k}"
        )
    countback.append(" + ".join(f"days_{k}" for k in range(1, months + 1)) + " as dso_days")
    return {
        "monthly_sales": ",\n        ".join(sales),
        "group_sales": ",\n        ".join(group_sales),
        "countback_days": ",\n        ".join(countback),
    }


def dso_months(con: duckdb.DuckDBPyConnection) -> int:
    """How many months the DSO basis holds (build_dso's ``months``), read from its columns."""
    schema, table = DSO_BASIS.split(".")
    return con.execute(
        "select count(*) from information_schema.columns where table_schema = ? "
        "and table_name = ? and regexp_full_match(column_name, 'month_[0-9]+_sales')",
        [schema, table],
    ).fetchall()[0][0]


def build_dso(con: duckdb.DuckDBPyConnection, as_of: date, *, months: int) -> float | None:
    """Write ``features.receivables_dso_basis`` (each customer's net open receivables and sales
    per month, which the portfolio slices count back too) and ``features.receivables_dso``
    (countback DSO per customer and for the portfolio); returns the portfolio DSO."""
    if months < 1:
        raise ValueError(f"countback DSO needs at least one month, got {months}")
    fragments = countback_fragments(months)
    basis = {"monthly_sales": fragments.pop("monthly_sales")}
    materialize_sql(
        con,
        DSO_BASIS,
        "feat_receivables_dso_basis",
        fragments=basis,
        as_of=as_of,
        dso_months=months,
    )
    materialize_sql(
        con, "features.receivables_dso", "feat_receivables_dso", fragments=fragments, as_of=as_of
    )
    rows = con.sql(
        "select dso_days from features.receivables_dso where scope = 'portfolio'"
    ).fetchall()
    return rows[0][0] if rows else None


def build_portfolio_risk(con: duckdb.DuckDBPyConnection, as_of: date) -> int:
    """Write ``marts.portfolio_risk`` as of ``as_of``, DSO counted back for every slice from the
    basis ``build_dso`` wrote (same months, same definition); returns its rows."""
    months = dso_months(con)
    if months < 1:
        raise ValueError(f"no {DSO_BASIS} to count back: build_dso writes it")
    fragments = countback_fragments(months)
    del fragments["monthly_sales"]  # the basis's
    return materialize_sql(
        con, "marts.portfolio_risk", "mart_portfolio_risk", fragments=fragments, as_of=as_of
    )


def build_invoice_settlement(
    con: duckdb.DuckDBPyConnection,
    as_of: date,
    default_payment_terms_days: int,
    settlement_tolerance: float,
    *,
    table: str = "features.invoice_settlement",
    temporary: bool = False,
    sample_fraction: float = 1.0,
    ledger: tuple[str, str] = ("staging.invoices", "staging.payments"),
) -> int:
    """Write invoice settlement (``features.invoice_settlement`` by default) from facts dated on
    or before ``as_of``; ``sample_fraction`` keeps a deterministic share of customers;
    ``ledger`` names the invoices and payments tables to read (a sample built beforehand)."""
    invoices_table, payments_table = ledger
    if table == SETTLEMENT and table_exists(con, SETTLEMENT_STATE):
        # rebuilt outside refresh_invoice_settlement: what the state describes is gone
        con.execute(f"delete from {SETTLEMENT_STATE}")
    return materialize_sql(
        con,
        table,
        "feat_invoice_settlement",
        temporary=temporary,
        # one row per invoice: its id is unique and its customer's repeats only a few times
        uncompressed=("customer_id", "invoice_id"),
        as_of=as_of,
        default_payment_terms_days=default_payment_terms_days,
        settlement_tolerance=settlement_tolerance,
        sample_fraction=sample_fraction,
        invoices_table=invoices_table,
        payments_table=payments_table,
    )


@dataclass(frozen=True)
class SettlementRefresh:
    """How ``features.invoice_settlement`` was brought to the as-of date, for metadata and logs."""

    mode: str  # "full" (every invoice settled) or "incremental" (changed customers only)
    reason: str
    rows: int
    customers_resettled: int  # customers whose rows were written (all of them when full)


_STATE_COLUMNS = """
    as_of_date date, load_sequence bigint, settings varchar, full_build_as_of date,
    invoice_rows bigint, invoice_checksum hugeint, payment_rows bigint, payment_checksum hugeint,
    customers bigint, mode varchar, reason varchar, customers_resettled bigint,
    built_at timestamp
"""


def refresh_invoice_settlement(
    con: duckdb.DuckDBPyConnection,
    as_of: date,
    default_payment_terms_days: int,
    settlement_tolerance: float,
    *,
    full_rebuild_days: int,
    max_changed_share: float = 0.5,
) -> SettlementRefresh:
    """Bring ``features.invoice_settlement`` to ``as_of``, re-settling only changed customers.

    A nightly run sees one more day of facts: most invoices settle as they did the night before.
    When the previous build is as of an earlier (or the same) date, with the same settings and
    SQL, and every staging row it read is unchanged (row counts and checksums of the rows loaded
    by then), only customers with a document or payment dated since the previous as-of date or
    brought by a newer load can settle differently; their rows are deleted and settled again,
    in one transaction with the new state. Anything else (first build, an earlier as-of date, a
    re-delivery replacing loaded rows, new FX rates, changed settings, the last full build
    ``full_rebuild_days`` or more before, more than ``max_changed_share`` of the customers
    changed) rebuilds every invoice and says why. Both paths give the same rows (tests).
    """
    settings = json.dumps(
        {
            "default_payment_terms_days": default_payment_terms_days,
            "settlement_tolerance": settlement_tolerance,
            "sql": hashlib.sha256(sql_text("feat_invoice_settlement").encode()).hexdigest(),
        },
        sort_keys=True,
    )
    con.execute(f"create table if not exists {SETTLEMENT_STATE} ({_STATE_COLUMNS})")
    load_sequence = con.sql(
        "select coalesce(max(load_sequence), 0) from ops.loaded_files"
    ).fetchall()[0][0]
    result = con.execute(f"select * from {SETTLEMENT_STATE}")
    names = [column[0] for column in result.description]
    previous = [dict(zip(names, row, strict=True)) for row in result.fetchall()]
    reason = _full_rebuild_reason(con, previous, as_of, settings, full_rebuild_days)
    totals = None
    if reason is None:
        state = previous[0]
        unchanged, totals = _ledger_checksums(con, state["load_sequence"])
        recorded = (
            state["invoice_rows"], state["invoice_checksum"],
            state["payment_rows"], state["payment_checksum"],
        )  # fmt: skip
        if unchanged != recorded:
            reason = (
                "rows loaded before the previous build changed (a corrected re-delivery, new FX "
                "rates or other ingest settings)"
            )
    if reason is None:
        changed = _changed_customers(con, as_of, state, max_changed_share)
        if isinstance(changed, str):
            reason = changed
        else:
            return _resettle(
                con, as_of, default_payment_terms_days, settlement_tolerance,
                state=(load_sequence, settings, state["full_build_as_of"], state["customers"]),
                totals=totals, customers=changed,
            )  # fmt: skip
    rows = build_invoice_settlement(con, as_of, default_payment_terms_days, settlement_tolerance)
    if totals is None:  # what every staged row adds up to (the split does not matter here)
        totals = _ledger_checksums(con, load_sequence)[1]
    customers = con.sql(f"select count(distinct customer_id) from {SETTLEMENT}").fetchall()[0][0]
    refresh = SettlementRefresh("full", reason, rows, customers)
    _write_state(con, (as_of, load_sequence, settings, as_of, *totals, customers), refresh)
    return refresh


def _full_rebuild_reason(
    con: duckdb.DuckDBPyConnection,
    previous: list[dict],
    as_of: date,
    settings: str,
    full_rebuild_days: int,
) -> str | None:
    if len(previous) != 1 or not table_exists(con, SETTLEMENT):
        return "no previous settlement to refresh"
    state = previous[0]
    lineage = con.sql(
        "select count(*) from information_schema.columns where table_schema = 'staging' "
        "and table_name in ('invoices', 'payments') and column_name = 'load_id'"
    ).fetchall()[0][0]
    if lineage < 2:
        return "staging rows carry no load_id (built before load lineage)"
    if state["settings"] != settings:
        return "settlement settings or SQL changed since the previous build"
    if as_of < state["as_of_date"]:
        return f"as-of date before the previous build's ({state['as_of_date']})"
    if (as_of - state["full_build_as_of"]).days >= full_rebuild_days:
        return (
            f"last full build as of {state['full_build_as_of']}, {full_rebuild_days} or more "
            "days before (a periodic full build keeps the table compact)"
        )
    return None


def _ledger_checksums(
    con: duckdb.DuckDBPyConnection, since_load_sequence: int
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """(invoice rows, checksum, payment rows, checksum) of the rows loaded up to
    ``since_load_sequence``, then of every staged row."""
    parts = {
        (table, is_new): (rows, checksum)
        for table, is_new, rows, checksum in con.execute(
            sql_text("feat_settlement_ledger_checksum"),
            {"since_load_sequence": since_load_sequence},
        ).fetchall()
    }
    old, every = [], []
    for table in ("invoices", "payments"):
        rows, checksum = parts.get((table, False), (0, 0))
        new_rows, new_checksum = parts.get((table, True), (0, 0))
        old += [rows, checksum]
        every += [rows + new_rows, checksum + new_checksum]
    return (*old,), (*every,)


def _changed_customers(
    con: duckdb.DuckDBPyConnection, as_of: date, state: dict, max_changed_share: float
) -> int | str:
    """Writes temp table ``settlement_changed_customers``; returns its size, or why not."""
    con.execute(
        "create or replace temp table settlement_changed_customers as "
        + sql_text("feat_settlement_changed_customers"),
        {
            "as_of": as_of,
            "previous_as_of": state["as_of_date"],
            "since_load_sequence": state["load_sequence"],
        },
    )
    changed = row_count(con, "settlement_changed_customers")
    customers = state["customers"]  # at the last full build: a threshold needs no recount
    if changed > max_changed_share * max(customers, 1):
        con.execute("drop table settlement_changed_customers")
        return (
            f"{changed:,d} of {customers:,d} customers changed since the previous build: "
            "cheaper to settle everyone"
        )
    return changed


def _resettle(
    con: duckdb.DuckDBPyConnection,
    as_of: date,
    default_payment_terms_days: int,
    settlement_tolerance: float,
    *,
    state: tuple[int, str, date, int],
    totals: tuple[int, int, int, int],
    customers: int,
) -> SettlementRefresh:
    """Settle the changed customers' invoices alone, then swap their rows in one transaction."""
    ledger = ("settlement_changed_invoices", "settlement_changed_payments")
    # the columns feat_invoice_settlement reads, no more: these copies are most of the cost
    con.execute(
        f"create or replace temp table {ledger[0]} as "
        "select invoice_id, customer_id, issue_date, due_date, amount, document_type "
        "from staging.invoices "
        "where customer_id in (select customer_id from settlement_changed_customers)"
    )
    con.execute(
        f"create or replace temp table {ledger[1]} as "
        "select invoice_id, payment_date, amount from staging.payments "
        f"where invoice_id in (select invoice_id from {ledger[0]})"
    )
    build_invoice_settlement(
        con, as_of, default_payment_terms_days, settlement_tolerance,
        table="settlement_changed_rows", temporary=True, ledger=ledger,
    )  # fmt: skip
    load_sequence, settings, full_build_as_of, customers_at_full_build = state
    with transaction(con):
        con.execute(
            f"delete from {SETTLEMENT} "
            "where customer_id in (select customer_id from settlement_changed_customers)"
        )
        con.execute(f"insert into {SETTLEMENT} by name select * from settlement_changed_rows")
        rows = row_count(con, SETTLEMENT)
        refresh = SettlementRefresh(
            "incremental", "only customers with new or newly dated facts", rows, customers
        )
        _write_state(
            con,
            (as_of, load_sequence, settings, full_build_as_of, *totals, customers_at_full_build),
            refresh,
        )
    for temp in ("settlement_changed_customers", "settlement_changed_rows", *ledger):
        con.execute(f"drop table if exists {temp}")
    return refresh


def _write_state(con: duckdb.DuckDBPyConnection, values: tuple, refresh: SettlementRefresh) -> None:
    """Replace the state row: (as-of, load sequence, settings, last full build's as-of, invoice
    rows, checksum, payment rows, checksum, customers at the last full build), then the
    refresh."""
    con.execute(f"delete from {SETTLEMENT_STATE}")
    con.execute(
        f"insert into {SETTLEMENT_STATE} values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
        [*values, refresh.mode, refresh.reason, refresh.customers_resettled],
    )


# Settlement, refunds and open items as of one cutoff, private to the connection (temp tables),
# so two stages building payment behaviour at the same time in one warehouse never read each
# other's.
SETTLEMENT_AT_CUTOFF = "invoice_settlement_at_cutoff"
REFUNDS_AT_CUTOFF = "credit_note_refunds_at_cutoff"
ITEMS_AT_CUTOFF = "receivable_items_at_cutoff"
# The sampled customers' ledger, private to the connection too, built once for all cutoffs.
LEDGER_SAMPLE = ("ledger_sample_invoices", "ledger_sample_payments")


def build_payment_behaviour(
    con: duckdb.DuckDBPyConnection,
    table: str,
    cutoffs: list[date],
    *,
    default_payment_terms_days: int,
    settlement_tolerance: float,
    whole_ledger: bool = False,
    sample_fraction: float = 1.0,
    whole_ledger_at: date | None = None,
    settlement_table: str | None = None,
    items_table: str | None = None,
) -> int:
    """Write payment-behaviour features per customer and cutoff into ``table``, each cutoff's
    from the ledger as it was known on that cutoff (the only point-in-time way to build them).

    Invoice settlement and the open items (``feat_receivable_items.sql``, the aging's own
    definition) are rebuilt as of every cutoff: as of a later date a payment or credit note
    dated after the cutoff would change what the cutoff sees (how much was paid, in how many
    instalments, what was open). ``settlement_table`` reuses a settlement already built as of
    the single cutoff given (the run's own ``features.invoice_settlement`` for the as-of
    snapshot) instead of building it again; ``items_table`` the open items built from it (the
    run's ``features.receivable_items``, which the aging reads), so both show the same figures.
    A cutoff with no payment known by then (``missing_payments_reason``) gets NULL for every
    feature that needs payments.

    ``whole_ledger`` scores every invoiced customer (the as-of snapshot); otherwise only
    customers active in the year before each cutoff (training snapshots). ``sample_fraction``
    keeps a deterministic share of customers (by the md5 of the id, alike on every engine) for
    large training sets, except at ``whole_ledger_at``, where every customer is kept (a scoring
    date inside a history); the
    sample's invoices and payments are copied once (temp tables) and every cutoff reads them.
    Loops over the cutoffs only, never over customers.
    """
    if settlement_table is not None and len(cutoffs) != 1:
        raise ValueError("a prebuilt settlement_table is as of one date: give exactly one cutoff")
    if items_table is not None and settlement_table is None:
        raise ValueError("prebuilt items_table needs the settlement_table they were built from")
    con.execute(f"drop table if exists {table}")
    sampled = settlement_table is None and sample_fraction < 1
    if sampled:  # scan the whole ledger for the sample once, not once per cutoff
        for sample_table, name in zip(LEDGER_SAMPLE, ("invoices", "payments"), strict=True):
            materialize_sql(
                con,
                sample_table,
                f"feat_ledger_sample_{name}",
                temporary=True,
                sample_fraction=sample_fraction,
            )
    for cutoff in sorted(cutoffs):  # a handful of cutoffs
        ledger = LEDGER_SAMPLE if sampled and cutoff != whole_ledger_at else LEDGER
        payments_known = missing_payments_reason(con, cutoff) is None
        settlement = settlement_table
        if settlement is None:
            settlement = SETTLEMENT_AT_CUTOFF
            build_invoice_settlement(
                con,
                cutoff,
                default_payment_terms_days,
                settlement_tolerance,
                table=settlement,
                temporary=True,
                ledger=ledger,
            )
        items = items_table
        if items is not None:
            stale = con.execute(
                f"select count(*) from {items} where as_of_date <> $cutoff", {"cutoff": cutoff}
            ).fetchall()[0][0]
            if stale:
                raise ValueError(f"{items} is not as of {cutoff}: build the aging as of it first")
        else:
            items = ITEMS_AT_CUTOFF
            _build_open_items(
                con,
                cutoff,
                default_payment_terms_days,
                tables=(settlement, REFUNDS_AT_CUTOFF, items),
                ledger=ledger,
                payments_known=payments_known,
                temporary=True,
            )
        params = {
            "cutoff_date": cutoff,
            "settlement_table": settlement,
            "items_table": items,
            "whole_ledger": whole_ledger,
            "payments_known": payments_known,
        }
        append_sql(con, table, "feat_payment_behaviour", **params)
    for private in (SETTLEMENT_AT_CUTOFF, REFUNDS_AT_CUTOFF, ITEMS_AT_CUTOFF, *LEDGER_SAMPLE):
        con.execute(f"drop table if exists {private}")
    return row_count(con, table)


def build_delinquency_labels(
    con: duckdb.DuckDBPyConnection,
    cutoffs: list[date],
    horizon_days: int,
    label_days_past_due: int,
    as_of: date,
) -> int:
    """Write ``features.delinquency_labels`` for the snapshots in payment_behaviour_history."""
    late = [c for c in cutoffs if (as_of - c).days < horizon_days]
    if late:
        raise ValueError(f"cutoffs {late} leave less than {horizon_days} days before {as_of}")
    return materialize_sql(
        con,
        "features.delinquency_labels",
        "feat_delinquency_labels",
        cutoffs=cutoffs,
        horizon_days=horizon_days,
        label_days_past_due=label_days_past_due,
    )


def training_snapshots(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Features joined to labels, one row per customer and cutoff."""
    return con.sql(
        "select * from features.payment_behaviour_history "
        "join features.delinquency_labels using (customer_id, cutoff_date) "
        "order by cutoff_date, customer_id"
    ).pl()


def bureau_reports_available(con: duckdb.DuckDBPyConnection, as_of: date) -> bool:
    """Whether any credit report dated on or before ``as_of`` joins a CRM account."""
    return (
        con.execute(
            "select count(*) from staging.credit_reports r join staging.accounts a "
            "using (tax_id) where r.report_date <= ?",
            [as_of],
        ).fetchall()[0][0]
        > 0
    )


def customers_invoiced(con: duckdb.DuckDBPyConnection) -> int:
    return row_count(con, "(select distinct customer_id from staging.invoices)")
