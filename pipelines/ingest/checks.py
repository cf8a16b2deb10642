"""Warehouse-wide invariants of staging, in plain SQL."""

import dagster as dg

from pipelines.resources import DUCKDB_POOL, Warehouse


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
