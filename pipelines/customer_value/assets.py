"""Customer value: the run's as-of date, purchase summary, RFM segments and BG/NBD + GG CLV."""

from datetime import date, datetime, timedelta

import dagster as dg
import polars as pl

from features.clv_backtest import (
    CALIBRATION_SUMMARY,
    build_backtest_inputs,
    clear_calibration_summary,
)
from features.customer import build_customer_summary, lifetimes_summary
from features.warehouse import fingerprint, record_model_run, write_frame
from models.clv import InsufficientDataError
from models.clv_backtest import BY_FREQUENCY_SCHEMA, TRACKING_SCHEMA, backtest_clv
from models.segmentation import score_rfm
from pipelines.common import asset_step, preview, run_as_of, table_metadata
from pipelines.resources import DUCKDB_POOL, Warehouse
from pipelines.settings import ClvSettings, RunSettings

INVOICES = dg.AssetKey(["staging", "invoices"])
CUSTOMER_KEYS = dg.AssetKey(["staging", "customer_keys"])


@dg.asset(
    key=["ops", "run_as_of"],
    deps=[INVOICES],
    group_name="customer_value",
    metadata={"writes": "ops.runs"},
    kinds={"duckdb"},
    pool=DUCKDB_POOL,
)
@asset_step
def run_as_of_date(
    context: dg.AssetExecutionContext, run: RunSettings, warehouse: Warehouse
) -> dg.MaterializeResult:
    """The date this run describes: the configured as-of, else the latest invoice date."""
    with warehouse.connect() as con:
        if run.as_of:  # a date YYYY-MM-DD: RunSettings refuses anything else
            as_of = date.fromisoformat(run.as_of)
            source = "configured"
        else:
            as_of = con.sql("select max(issue_date) from staging.invoices").fetchall()[0][0]
            source = "latest invoice date"
            if as_of is None:
                raise dg.Failure(
                    "no invoice in staging.invoices to take the as-of date from",
                    allow_retries=False,
                )
        con.execute("delete from ops.runs where run_id = ?", [context.run_id])
        con.execute(
            "insert into ops.runs values (?, ?, ?, ?)",
            [context.run_id, as_of, source, datetime.now()],
        ).fetchall()
    context.log.info(f"as-of date {as_of} ({source})")
    return dg.MaterializeResult(metadata={"as_of_date": str(as_of), "as_of_source": source})


@dg.asset(
    key=["features", "customer_summary"],
    deps=[run_as_of_date, INVOICES, CUSTOMER_KEYS],
    group_name="customer_value",
    kinds={"duckdb"},
    pool=DUCKDB_POOL,
)
@asset_step
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
@asset_step
def rfm_scores(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """Recency, frequency and monetary scores 1-5 and the named RFM segment per customer."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        summary = con.sql("select * from features.customer_summary").pl()
        scores = score_rfm(summary).with_columns(pl.lit(as_of).alias("as_of_date"))
        write_frame(con, "models.rfm_scores", scores)
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
@asset_step
def clv_scores(
    context: dg.AssetExecutionContext, clv: ClvSettings, warehouse: Warehouse
) -> dg.MaterializeResult:
    """BG/NBD + Gamma-Gamma: expected purchases, P(alive), order value and CLV over the horizon."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        summary = lifetimes_summary(
            con.sql("select * from features.customer_summary").pl(), clv.time_unit_days
        )
        try:
            model = clv.model().fit(summary)
        except InsufficientDataError as error:
            raise dg.Failure(
                description=f"CLV not fitted, nothing downstream is built: {error}",
                allow_retries=False,
            ) from error
        scores = model.predict(summary, as_of=as_of).with_columns(pl.lit(as_of).alias("as_of_date"))
        write_frame(con, "models.clv_scores", scores)
        data_fingerprint = fingerprint(con, "select * from features.customer_summary")
        settings = clv.model_dump()
        # alpha (and every rate) is per time unit: the unit travels with the parameters.
        unit = {"time_unit_days": clv.time_unit_days}
        correlation = model.metrics_["frequency_spend_correlation"]
        spend_independent = not abs(correlation) > clv.max_frequency_spend_correlation
        # A MAP fit's parameters mean nothing without the prior they were drawn towards.
        prior = model.metrics_["purchase_prior"]
        record_model_run(
            con,
            run_id=context.run_id,
            model=model.purchase_model_,
            as_of_date=as_of,
            parameters={**model.purchase_params_, **unit, **({"prior": prior} if prior else {})},
            metrics={**model.metrics_, **unit, "settings": settings},
            data_fingerprint=data_fingerprint,
        )
        record_model_run(
            con,
            run_id=context.run_id,
            model="gamma_gamma",
            as_of_date=as_of,
            parameters=model.spend_params_,
            metrics={
                "spend_model": model.spend_model_,
                "spend_log_likelihood": model.spend_log_likelihood_,
                "n_spend_customers": model.metrics_["n_spend_customers"],
                "n_nonpositive_spend_customers": model.n_nonpositive_spend_customers_,
                "frequency_spend_correlation": correlation,
                "spend_independence_plausible": spend_independent,
                **unit,
                "settings": settings,
            },
            data_fingerprint=data_fingerprint,
        )
    if model.fallback_reason_:
        context.log.warning(f"CLV fell back to {model.purchase_model_}: {model.fallback_reason_}")
    if not spend_independent:
        context.log.warning(
            f"frequency and spend of repeat buyers correlate ({correlation:.2f}, limit "
            f"{clv.max_frequency_spend_correlation}): Gamma-Gamma assumes independence, "
            "so expected order values are biased"
        )
    if model.n_nonpositive_spend_customers_:
        context.log.warning(
            f"{model.n_nonpositive_spend_customers_} repeat buyer(s) have no positive repeat "
            "spend after credit notes: left out of the Gamma-Gamma fit, valued at the "
            "population mean order value"
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": scores.height,
            "purchase_model": model.purchase_model_,
            "purchase_params": dg.MetadataValue.json(model.purchase_params_),
            "purchase_prior": dg.MetadataValue.json(prior or {}),
            "spend_params": dg.MetadataValue.json(model.spend_params_),
            "metrics": dg.MetadataValue.json(model.metrics_),
            "clv_total": float(scores["clv"].sum()),
            "clv_horizon_days": clv.horizon_days,
            "time_unit_days": clv.time_unit_days,
            "frequency_spend_correlation": correlation,
            "spend_independence_plausible": spend_independent,
        }
    )


BACKTEST = dg.AssetKey(["models", "clv_backtest"])
BACKTEST_TRACKING = dg.AssetKey(["models", "clv_backtest_tracking"])
BACKTEST_CALIBRATION = dg.AssetKey(CALIBRATION_SUMMARY.split("."))


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            BACKTEST,
            deps=[clv_scores, INVOICES, BACKTEST_CALIBRATION],
            group_name="customer_value",
            kinds={"duckdb", "polars"},
            description="Holdout purchases per customer frequency: actual against predicted by "
            "a CLV model refitted before the holdout window.",
        ),
        dg.AssetSpec(
            BACKTEST_TRACKING,
            deps=[clv_scores, INVOICES, BACKTEST_CALIBRATION],
            group_name="customer_value",
            kinds={"duckdb", "polars"},
            description="Cumulative repeat purchases per period, actual against expected, "
            "before and after the backtest cutoff.",
        ),
        dg.AssetSpec(
            BACKTEST_CALIBRATION,
            deps=[run_as_of_date, INVOICES, CUSTOMER_KEYS],
            group_name="customer_value",
            kinds={"duckdb"},
            description="The customer summary as of the backtest cutoff, which the backtest's "
            "model is refitted on (no customer when the backtest is skipped).",
        ),
    ],
    name="clv_backtest",
    pool=DUCKDB_POOL,
)
@asset_step
def clv_backtest(
    context: dg.AssetExecutionContext, clv: ClvSettings, warehouse: Warehouse
) -> tuple[dg.MaterializeResult, dg.MaterializeResult, dg.MaterializeResult]:
    """How well CLV predicts: refit before a holdout window and compare with what happened."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        cutoff = as_of - timedelta(days=clv.holdout_days)
        first_purchase = con.sql(
            "select min(issue_date) from staging.invoices where document_type = 'invoice'"
        ).fetchall()[0][0]
        skipped = None
        if clv.holdout_days <= 0:
            skipped = "backtest turned off ([clv] holdout_days = 0)"
        elif first_purchase is None or first_purchase > cutoff:
            skipped = (
                f"history too short: no purchase on or before the cutoff {cutoff} "
                f"(as-of {as_of} minus holdout_days={clv.holdout_days})"
            )
        else:
            calibration, tracking_actuals = build_backtest_inputs(
                con, cutoff, as_of, clv.time_unit_days
            )
            try:
                backtest = backtest_clv(
                    clv.model(n_bootstrap=1), calibration, tracking_actuals, cutoff, as_of
                )
            except InsufficientDataError as error:
                skipped = f"history too short before the cutoff {cutoff}: {error}"
        if skipped:
            clear_calibration_summary(con)
            by_frequency = pl.DataFrame(schema=BY_FREQUENCY_SCHEMA)
            tracking = pl.DataFrame(schema=TRACKING_SCHEMA)
            metrics = {"skipped": True, "reason": skipped, "cutoff_date": str(cutoff)}
            parameters: dict = {}
        else:
            by_frequency, tracking = backtest.by_frequency, backtest.tracking
            metrics = {"skipped": False, **backtest.metrics}
            prior = backtest.metrics["calibration_prior"]
            parameters = {
                **backtest.model.purchase_params_,
                "time_unit_days": clv.time_unit_days,
                **({"prior": prior} if prior else {}),
            }
        stamp = [pl.lit(as_of).alias("as_of_date"), pl.lit(cutoff).alias("cutoff_date")]
        by_frequency = by_frequency.with_columns(stamp)
        tracking = tracking.with_columns(stamp)
        write_frame(con, "models.clv_backtest", by_frequency)
        write_frame(con, "models.clv_backtest_tracking", tracking)
        record_model_run(
            con,
            run_id=context.run_id,
            model="clv_backtest",
            as_of_date=as_of,
            parameters=parameters,
            metrics=metrics,
            # the facts, not customer_key: keys renumber when a new customer id arrives
            data_fingerprint=fingerprint(
                con,
                "select * exclude (customer_key) from staging.invoices "
                f"where issue_date <= date '{as_of}'",
            ),
        )
        tables = {
            key: table_metadata(con, table)
            for key, table in (  # in lineage order, as Dagster wants a step's results
                (BACKTEST_CALIBRATION, CALIBRATION_SUMMARY),
                (BACKTEST, "models.clv_backtest"),
                (BACKTEST_TRACKING, "models.clv_backtest_tracking"),
            )
        }
    if skipped:
        context.log.warning(f"CLV backtest skipped: {skipped}")
        return tuple(  # type: ignore[return-value]
            dg.MaterializeResult(asset_key=key, metadata={**metadata, "skipped": skipped})
            for key, metadata in tables.items()
        )
    context.log.info(
        f"CLV backtest {cutoff} -> {as_of}: actual {metrics['actual_holdout_purchases']:.0f}, "
        f"predicted {metrics['predicted_holdout_purchases']:.1f} holdout purchases"
    )
    return (
        dg.MaterializeResult(
            asset_key=BACKTEST_CALIBRATION,
            metadata={**tables[BACKTEST_CALIBRATION], "cutoff_date": str(cutoff)},
        ),
        dg.MaterializeResult(
            asset_key=BACKTEST,
            metadata={
                **tables[BACKTEST],
                "cutoff_date": str(cutoff),
                "metrics": dg.MetadataValue.json(metrics),
                "conditional_expectations": preview(by_frequency.drop("as_of_date", "cutoff_date")),
            },
        ),
        dg.MaterializeResult(
            asset_key=BACKTEST_TRACKING,
            metadata={**tables[BACKTEST_TRACKING], "cutoff_date": str(cutoff)},
        ),
    )
