"""Warehouse-wide invariants of staging, in plain SQL."""

import dagster as dg

from pipelines.common import run_as_of
from pipelines.resources import DUCKDB_POOL, Warehouse
from pipelines.wording import plural


@dg.asset_check(asset=dg.AssetKey(["staging", "invoices"]), blocking=True, pool=DUCKDB_POOL)
def invoices_not_empty(warehouse: Warehouse) -> dg.AssetCheckResult:
    """Without a single usable invoice there is nothing to score."""
    with warehouse.connect() as con:
        invoices = con.sql(
            "select count(*) from staging.invoices where document_type = 'invoice'"
        ).fetchall()[0][0]
    return dg.AssetCheckResult(
        passed=invoices > 0,
        metadata={"invoices": invoices},
        description=None if invoices else "no usable invoice in staging.invoices",
    )


@dg.asset_check(asset=dg.AssetKey(["staging", "invoices"]), blocking=True, pool=DUCKDB_POOL)
def invoice_ids_unique(warehouse: Warehouse) -> dg.AssetCheckResult:
    """Every invoice id appears once, so revenue is never counted twice."""
    with warehouse.connect() as con:
        duplicated = con.sql(
            "select count(*) from (select invoice_id from staging.invoices "
            "group by invoice_id having count(*) > 1)"
        ).fetchall()[0][0]
    return dg.AssetCheckResult(passed=duplicated == 0, metadata={"duplicated_ids": duplicated})


@dg.asset_check(asset=dg.AssetKey(["staging", "invoices"]), blocking=True, pool=DUCKDB_POOL)
def invoice_customers_known(warehouse: Warehouse) -> dg.AssetCheckResult:
    """Every invoice's customer is a CRM account (skipped, and said so, without accounts)."""
    with warehouse.connect() as con:
        accounts = con.sql("select count(*) from staging.accounts").fetchall()[0][0]
        unknown = con.sql(
            "select count(*) from staging.invoices i "
            "anti join staging.accounts a on i.customer_id = a.customer_id"
        ).fetchall()[0][0]
    if not accounts:
        return dg.AssetCheckResult(
            passed=True,
            metadata={"skipped": "no crm/accounts loaded: customers cannot be checked"},
        )
    return dg.AssetCheckResult(passed=unknown == 0, metadata={"unknown_customers": unknown})


@dg.asset_check(asset=dg.AssetKey(["staging", "payments"]), blocking=True, pool=DUCKDB_POOL)
def payments_reference_invoices(warehouse: Warehouse) -> dg.AssetCheckResult:
    """Every payment settles an invoice we know, so receivables add up."""
    with warehouse.connect() as con:
        orphans = con.sql(
            "select count(*) from staging.payments p "
            "anti join staging.invoices i on p.invoice_id = i.invoice_id"
        ).fetchall()[0][0]
    return dg.AssetCheckResult(passed=orphans == 0, metadata={"orphan_payments": orphans})


@dg.asset_check(asset=dg.AssetKey(["staging", "invoices"]), blocking=True, pool=DUCKDB_POOL)
def no_future_dated_invoices(warehouse: Warehouse) -> dg.AssetCheckResult:
    """No invoice is dated after today: a typo'd year would move the default as-of date."""
    with warehouse.connect() as con:
        future, latest = con.sql(
            "select count(*) filter (where issue_date > current_date), max(issue_date) "
            "from staging.invoices"
        ).fetchall()[0]
    return dg.AssetCheckResult(
        passed=future == 0,
        metadata={"future_dated": future, "latest_issue_date": str(latest)},
    )


@dg.asset_check(asset=dg.AssetKey(["staging", "payments"]), blocking=True, pool=DUCKDB_POOL)
def no_future_dated_payments(warehouse: Warehouse) -> dg.AssetCheckResult:
    """No payment is dated after today: money not yet received must not reduce exposure."""
    with warehouse.connect() as con:
        future = con.sql(
            "select count(*) from staging.payments where payment_date > current_date"
        ).fetchall()[0][0]
    return dg.AssetCheckResult(passed=future == 0, metadata={"future_dated": future})


RUN_AS_OF = dg.AssetKey(["ops", "run_as_of"])


@dg.asset_check(asset=RUN_AS_OF, blocking=True, pool=DUCKDB_POOL)
def as_of_not_in_the_future(
    context: dg.AssetCheckExecutionContext, warehouse: Warehouse
) -> dg.AssetCheckResult:
    """The run's as-of date is not after today: facts of a future date are not known yet."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run.run_id)
        today = con.sql("select current_date").fetchall()[0][0]
    return dg.AssetCheckResult(
        passed=as_of <= today,
        metadata={"as_of_date": str(as_of), "today": str(today)},
        description=None if as_of <= today else f"as-of {as_of} is after today ({today})",
    )


@dg.asset_check(asset=RUN_AS_OF, pool=DUCKDB_POOL)
def facts_after_as_of(
    context: dg.AssetCheckExecutionContext, warehouse: Warehouse
) -> dg.AssetCheckResult:
    """Staged invoices and payments dated after the as-of are left out of this run's numbers.

    Expected when a past date is rerun on purpose, so a warning rather than a stop.
    """
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run.run_id)
        later = {
            table: con.execute(
                f"select count(*) from staging.{table} where {column} > ?", [as_of]
            ).fetchall()[0][0]
            for table, column in (("invoices", "issue_date"), ("payments", "payment_date"))
            if con.sql(
                "select count(*) from information_schema.tables "
                f"where table_schema = 'staging' and table_name = '{table}'"
            ).fetchall()[0][0]
        }
    left_out = ", ".join(plural(n, table.removesuffix("s")) for table, n in later.items() if n)
    if left_out:
        context.log.warning(f"dated after the as-of {as_of}, left out of this run: {left_out}")
    return dg.AssetCheckResult(
        passed=not left_out,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"as_of_date": str(as_of), **{f"{t}_after_as_of": n for t, n in later.items()}},
        description=f"left out as dated after {as_of}: {left_out}" if left_out else None,
    )
