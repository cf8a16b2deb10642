"""Checks on what users read; blocking, so a bad table is never published."""

import dagster as dg

from pipelines.resources import DUCKDB_POOL, Warehouse

CUSTOMER_360 = dg.AssetKey(["marts", "customer_360"])


def _count(warehouse: Warehouse, query: str) -> int:
    with warehouse.connect() as con:
        return con.sql(query).fetchall()[0][0]


@dg.asset_check(asset=CUSTOMER_360, blocking=True, pool=DUCKDB_POOL)
def one_row_per_customer(warehouse: Warehouse) -> dg.AssetCheckResult:
    """A customer listed twice would be mailed twice and counted twice in customer equity."""
    duplicated = _count(
        warehouse,
        "select count(*) from (select customer_id from marts.customer_360 "
        "group by customer_id having count(*) > 1)",
    )
    return dg.AssetCheckResult(
        passed=duplicated == 0, metadata={"duplicated_customers": duplicated}
    )


@dg.asset_check(asset=CUSTOMER_360, blocking=True, pool=DUCKDB_POOL)
def clv_outputs_finite(warehouse: Warehouse) -> dg.AssetCheckResult:
    """Every purchaser has finite, non-negative CLV and a P(alive) in [0, 1]."""
    bad = _count(
        warehouse,
        """select count(*) from marts.customer_360
           where frequency > 0 and (
               clv is null or not isfinite(clv) or clv < 0
               or p_alive is null or p_alive < 0 or p_alive > 1
               or not (clv_low <= clv and clv <= clv_high))""",
    )
    return dg.AssetCheckResult(passed=bad == 0, metadata={"customers_with_bad_clv": bad})
