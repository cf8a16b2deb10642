"""Marts: the enriched tables marketers and finance read."""

import dagster as dg

from features.warehouse import materialize_sql
from pipelines.common import asset_step, preview, run_as_of, table_metadata
from pipelines.resources import DUCKDB_POOL, Warehouse


@dg.asset(
    key=["marts", "customer_360"],
    deps=[
        dg.AssetKey(["ops", "run_as_of"]),
        dg.AssetKey(["features", "customer_summary"]),
        dg.AssetKey(["models", "rfm_scores"]),
        dg.AssetKey(["models", "clv_scores"]),
        dg.AssetKey(["staging", "accounts"]),
        dg.AssetKey(["marts", "customer_risk"]),
        dg.AssetKey(["models", "churn_scores"]),
    ],
    group_name="marts",
    kinds={"duckdb"},
    pool=DUCKDB_POOL,
)
@asset_step
def customer_360(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """One row per customer: firmographics, RFM segment and lifetime value, as of one date."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        materialize_sql(con, "marts.customer_360", "mart_customer_360", as_of=as_of)
        metadata = table_metadata(con, "marts.customer_360", as_of_date=str(as_of))
        purchasers, clv_total = con.sql(
            "select count(*) filter (where frequency > 0), sum(clv) from marts.customer_360"
        ).fetchall()[0]
    return dg.MaterializeResult(
        metadata={**metadata, "purchasers": purchasers, "clv_total": clv_total or 0.0}
    )


@dg.asset(
    key=["marts", "segment_members"],
    deps=[customer_360, dg.AssetKey(["staging", "contacts"])],
    group_name="marts",
    kinds={"duckdb"},
    pool=DUCKDB_POOL,
)
@asset_step
def segment_members(warehouse: Warehouse) -> dg.MaterializeResult:
    """Who is in each RFM segment and whether a consenting contact can be reached."""
    with warehouse.connect() as con:
        materialize_sql(con, "marts.segment_members", "mart_segment_members")
        metadata = table_metadata(con, "marts.segment_members")
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    key=["marts", "segment_summary"],
    deps=[segment_members],
    group_name="marts",
    kinds={"duckdb"},
    pool=DUCKDB_POOL,
)
@asset_step
def segment_summary(warehouse: Warehouse) -> dg.MaterializeResult:
    """Customers, revenue, CLV and reach per RFM segment."""
    with warehouse.connect() as con:
        materialize_sql(con, "marts.segment_summary", "mart_segment_summary")
        metadata = table_metadata(con, "marts.segment_summary")
        summary = con.sql("select * from marts.segment_summary").pl()
    return dg.MaterializeResult(metadata={**metadata, "segments": preview(summary, 20)})
