"""History: every as-of date's customer_360 and portfolio_risk kept, and who moved between RFM
segments."""

import dagster as dg

from features.history import append_history
from features.warehouse import materialize_sql
from pipelines.common import asset_step, preview, run_as_of, table_metadata
from pipelines.resources import DUCKDB_POOL, Warehouse


def history_asset(mart: str, description: str) -> dg.AssetsDefinition:
    """``marts.<mart>_history``: ``marts.<mart>`` as of every date run so far.

    One asset per kept mart, all alike: a rerun or backfill of a date replaces that date's rows,
    and a column the mart gains is added to its history.
    """
    source, history = f"marts.{mart}", f"marts.{mart}_history"

    @dg.asset(
        name=f"{mart}_history",
        key_prefix=["marts"],
        deps=[dg.AssetKey(["marts", mart])],
        group_name="history",
        kinds={"duckdb"},
        pool=DUCKDB_POOL,
        description=description,
    )
    @asset_step
    def keep_history(
        context: dg.AssetExecutionContext, warehouse: Warehouse
    ) -> dg.MaterializeResult:
        with warehouse.connect() as con:
            as_of = run_as_of(con, context.run_id)
            stored = append_history(con, source, history, as_of_date=as_of, run_id=context.run_id)
            dates = con.sql(
                f"select as_of_date, count(*) as rows from {history} group by 1 order by 1 desc"
            ).pl()
            metadata = table_metadata(con, history)
        if stored.replaced_rows:
            context.log.info(f"replaced {stored.replaced_rows} rows stored earlier for {as_of}")
        if stored.added_columns:
            context.log.info(f"history gained columns: {', '.join(stored.added_columns)}")
        return dg.MaterializeResult(
            metadata={
                **metadata,
                "as_of_date": str(as_of),
                "rows_for_as_of_date": stored.rows,
                "replaced_rows": stored.replaced_rows,
                "added_columns": dg.MetadataValue.json(list(stored.added_columns)),
                "as_of_dates": stored.as_of_dates,
                "latest_dates": preview(dates),
            }
        )

    return keep_history


customer_360_history = history_asset(
    "customer_360",
    "customer_360 as of every date run so far; rerunning a date replaces that date's rows.",
)
portfolio_risk_history = history_asset(
    "portfolio_risk",
    "portfolio_risk as of every date run so far (a rerun of a date replaces it): the previous "
    "as-of date's exposure, arrears, expected loss and DSO that the finance workbook compares.",
)


@dg.asset(
    key=["features", "segment_transitions"],
    deps=[customer_360_history],
    group_name="history",
    kinds={"duckdb"},
    pool=DUCKDB_POOL,
)
@asset_step
def segment_transitions(warehouse: Warehouse) -> dg.MaterializeResult:
    """Each customer's RFM segment at every as-of date next to the one at the date before."""
    with warehouse.connect() as con:
        materialize_sql(con, "features.segment_transitions", "feat_segment_transitions")
        metadata = table_metadata(con, "features.segment_transitions")
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    key=["marts", "segment_migration"],
    deps=[segment_transitions],
    group_name="history",
    kinds={"duckdb"},
    pool=DUCKDB_POOL,
)
@asset_step
def segment_migration(
    context: dg.AssetExecutionContext, warehouse: Warehouse
) -> dg.MaterializeResult:
    """How many customers moved from each RFM segment to each other one since the last as-of."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        materialize_sql(con, "marts.segment_migration", "mart_segment_migration")
        metadata = table_metadata(con, "marts.segment_migration")
        latest = con.sql(
            "select from_segment, to_segment, customers from marts.segment_migration "
            "where as_of_date = $as_of and moved order by customers desc",
            params={"as_of": as_of},
        ).pl()
    if latest.is_empty():
        context.log.info(f"no earlier as-of date in history than {as_of}: nothing to compare")
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "moved_since_previous_as_of": int(latest["customers"].sum()),
            "largest_moves": preview(latest),
        }
    )


@dg.asset(
    key=["marts", "segment_moves"],
    deps=[segment_transitions],
    group_name="history",
    kinds={"duckdb"},
    pool=DUCKDB_POOL,
)
@asset_step
def segment_moves(warehouse: Warehouse) -> dg.MaterializeResult:
    """Who moved: every customer whose RFM segment changed since the previous as-of date."""
    with warehouse.connect() as con:
        materialize_sql(con, "marts.segment_moves", "mart_segment_moves")
        metadata = table_metadata(con, "marts.segment_moves")
    return dg.MaterializeResult(metadata=metadata)
