"""Customer value: the run's as-of date, purchase summary, RFM segments and BG/NBD + GG CLV."""

from datetime import date, datetime

import dagster as dg
import polars as pl

from features.customer import build_customer_summary, lifetimes_summary
from features.warehouse import fingerprint, record_model_run
from models.clv import ClvModel
from models.segmentation import score_rfm
from pipelines.common import preview, run_as_of, table_metadata
from pipelines.resources import DUCKDB_POOL, Warehouse
from pipelines.settings import ClvSettings, RunSettings


@dg.asset(
    key=["ops", "run_as_of"],
    deps=[dg.AssetKey(["staging", "invoices"])],
    group_name="customer_value",
    kinds={"duckdb"},
    pool=DUCKDB_POOL,
)
def run_as_of_date(
    context: dg.AssetExecutionContext, config: RunSettings, warehouse: Warehouse
) -> dg.MaterializeResult:
    """The date this run describes: the configured as-of, else the latest invoice date."""
    with warehouse.connect() as con:
        if config.as_of:
            try:
                as_of = date.fromisoformat(config.as_of)
            except ValueError as error:
                raise dg.Failure(f"as_of must be YYYY-MM-DD, got {config.as_of!r}") from error
            source = "configured"
        else:
            as_of = con.sql("select max(issue_date) from staging.invoices").fetchall()[0][0]
            source = "latest invoice date"
            if as_of is None:
                raise dg.Failure("no invoice in staging.invoices to take the as-of date from")
        con.execute("delete from ops.runs where run_id = ?", [context.run_id])
        con.execute(
            "insert into ops.runs values (?, ?, ?, ?)",
            [context.run_id, as_of, source, datetime.now()],
        ).fetchall()
    context.log.info(f"as-of date {as_of} ({source})")
    return dg.MaterializeResult(metadata={"as_of_date": str(as_of), "as_of_source": source})


@dg.asset(
    key=["features", "customer_summary"],
    deps=[run_as_of_date],
    group_name="customer_value",
    kinds={"duckdb"},
    pool=DUCKDB_POOL,
)
def customer_summary(
    context: dg.AssetExecutionContext, warehouse: Warehouse
) -> dg.MaterializeResult:
    """Purchases, recency, tenure and spend per customer, from facts known on the as-of date."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        summary = build_customer_summary(con, as_of)
        metadata = table_metadata(con, "features.customer_summary", as_of_date=str(as_of))
    repeat = summary.filter(pl.col("frequency") > 0).height
    return dg.MaterializeResult(
        metadata={**metadata, "repeat_customers": repeat, "preview": preview(summary)}
    )


@dg.asset(
    key=["models", "rfm_scores"],
    deps=[customer_summary],
    group_name="customer_value",
    kinds={"duckdb", "polars"},
    pool=DUCKDB_POOL,
)
def rfm_scores(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """Recency, frequency and monetary scores 1-5 and the named RFM segment per customer."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        summary = con.sql("select * from features.customer_summary").pl()
        scores = score_rfm(summary).with_columns(pl.lit(as_of).alias("as_of_date"))
        con.execute("create or replace table models.rfm_scores as select * from scores")
    counts = scores.group_by("rfm_segment").len().sort("len", descending=True)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": scores.height,
            "segments": dg.MetadataValue.json(dict(counts.iter_rows())),
        }
    )


@dg.asset(
    key=["models", "clv_scores"],
    deps=[customer_summary],
    group_name="customer_value",
    kinds={"duckdb", "scikitlearn"},
    pool=DUCKDB_POOL,
)
def clv_scores(
    context: dg.AssetExecutionContext, config: ClvSettings, warehouse: Warehouse
) -> dg.MaterializeResult:
    """BG/NBD + Gamma-Gamma: expected purchases, P(alive), order value and 12-month CLV."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        summary = lifetimes_summary(
            con.sql("select * from features.customer_summary").pl(), config.time_unit_days
        )
        model = ClvModel(
            time_unit_days=config.time_unit_days,
            horizon_days=config.horizon_days,
            annual_discount_rate=config.annual_discount_rate,
            penalizer=config.penalizer,
            interval=config.interval,
            n_bootstrap=config.n_bootstrap,
            min_repeat_customers=config.min_repeat_customers,
        ).fit(summary)
        scores = model.predict(summary, as_of=as_of).with_columns(pl.lit(as_of).alias("as_of_date"))
        con.execute("create or replace table models.clv_scores as select * from scores")
        data_fingerprint = fingerprint(con, "select * from features.customer_summary")
        settings = config.model_dump()
        record_model_run(
            con,
            run_id=context.run_id,
            model=model.purchase_model_,
            as_of_date=as_of,
            parameters=model.purchase_params_,
            metrics={**model.metrics_, "settings": settings},
            data_fingerprint=data_fingerprint,
        )
        record_model_run(
            con,
            run_id=context.run_id,
            model="gamma_gamma",
            as_of_date=as_of,
            parameters=model.spend_params_,
            metrics={"settings": settings},
            data_fingerprint=data_fingerprint,
        )
    if model.fallback_reason_:
        context.log.warning(f"CLV fell back to {model.purchase_model_}: {model.fallback_reason_}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": scores.height,
            "purchase_model": model.purchase_model_,
            "purchase_params": dg.MetadataValue.json(model.purchase_params_),
            "spend_params": dg.MetadataValue.json(model.spend_params_),
            "metrics": dg.MetadataValue.json(model.metrics_),
            "clv_12m_total": float(scores["clv_12m"].sum()),
            "time_unit_days": config.time_unit_days,
        }
    )
