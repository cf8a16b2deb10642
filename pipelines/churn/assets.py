"""Churn for marketers: who is about to stop buying, how likely, and why in plain words."""

import dagster as dg
import numpy as np
import polars as pl

from features.churn import build_churn_snapshots, scoring_frame, training_frame
from features.point_in_time import training_cutoffs
from features.receivables import customers_invoiced
from features.warehouse import fingerprint, record_model_run, write_frame
from models.churn import SCORE_SCHEMA, ChurnModel, evaluate_holdout, score_customers
from pipelines.common import asset_step, preview, run_as_of
from pipelines.resources import DUCKDB_POOL, Warehouse
from pipelines.settings import ChurnSettings

GROUP = "churn"
LABELS_QUERY = "select * from features.churn_labels"


def _model(config: ChurnSettings, missing: dict[str, str]) -> ChurnModel:
    return ChurnModel(calibration=config.calibration, missing_groups=missing)


def _missing_groups(con) -> dict[str, str]:
    rows = con.sql("select feature_group, reason from features.churn_missing_groups").fetchall()
    return dict(rows)


@dg.asset(
    key=["features", "churn_snapshots"],
    deps=[
        dg.AssetKey(["ops", "run_as_of"]),
        *(
            dg.AssetKey(["staging", table])
            for table in (
                "invoices",
                "payments",
                "accounts",
                "activities",
                "opportunities",
                "credit_reports",
            )
        ),
    ],
    group_name=GROUP,
    kinds={"duckdb"},
    pool=DUCKDB_POOL,
)
@asset_step
def churn_snapshots(
    context: dg.AssetExecutionContext, config: ChurnSettings, warehouse: Warehouse
) -> dg.MaterializeResult:
    """Churn features at past cutoffs (labelled by the horizon after) and on the as-of date."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        cutoffs = training_cutoffs(as_of, config.horizon_days, count=config.training_cutoffs)
        customers = customers_invoiced(con)
        sample_fraction = min(1.0, config.max_training_customers / max(customers, 1))
        built = build_churn_snapshots(
            con, cutoffs, as_of, config.horizon_days, sample_fraction=sample_fraction
        )
        missing = pl.DataFrame(
            {
                "feature_group": list(built.missing_groups),
                "reason": list(built.missing_groups.values()),
            },
            schema={"feature_group": pl.String, "reason": pl.String},
        )
        write_frame(con, "features.churn_missing_groups", missing)
        rates = con.sql(
            "select cutoff_date::varchar, avg(churned::int) from features.churn_labels "
            "group by 1 order by 1"
        ).fetchall()
    for group, reason in built.missing_groups.items():
        context.log.warning(f"churn feature group '{group}' missing: {reason}")
    for cutoff, reason in built.bg_nbd_failures.items():
        context.log.warning(f"BG/NBD not fitted at cutoff {cutoff}: {reason}")
    return dg.MaterializeResult(
        metadata={
            "table": "features.churn_snapshots",
            "dagster/row_count": built.snapshots,
            "labelled_snapshots": built.labelled,
            "cutoffs": [c.isoformat() for c in cutoffs],
            "sample_fraction": sample_fraction,
            "churn_rate_by_cutoff": dg.MetadataValue.json(
                {cutoff: round(rate or 0.0, 4) for cutoff, rate in rates}
            ),
            "missing_feature_groups": dg.MetadataValue.json(built.missing_groups),
            "bg_nbd_failures": dg.MetadataValue.json(built.bg_nbd_failures),
            "label": f"churned = no purchase in the {config.horizon_days} days after the cutoff",
        }
    )


@dg.asset(
    key=["models", "churn_evaluation"],
    deps=[churn_snapshots],
    group_name=GROUP,
    kinds={"duckdb", "scikitlearn"},
    pool=DUCKDB_POOL,
)
@asset_step
def churn_evaluation(
    context: dg.AssetExecutionContext, config: ChurnSettings, warehouse: Warehouse
) -> dg.MaterializeResult:
    """Holdout on the latest cutoffs: calibrated model vs BG/NBD P(no purchase in H days)."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        history = training_frame(con)
        missing = _missing_groups(con)
        cutoffs = training_cutoffs(as_of, config.horizon_days, count=config.training_cutoffs)
        holdout = cutoffs[-config.holdout_cutoffs :]
        try:
            evaluation = evaluate_holdout(
                history, holdout, config.horizon_days, _model(config, missing)
            )
        except ValueError as error:
            context.log.warning(f"churn holdout comparison skipped: {error}")
            con.execute(
                "create or replace table models.churn_evaluation (scorer varchar, "
                "holdout_cutoffs varchar, customers bigint, churned bigint, training_rows bigint, "
                "roc_auc double, pr_auc double, brier double, top_decile_lift double, "
                "chosen boolean, as_of_date date)"
            )
            return dg.MaterializeResult(metadata={"dagster/row_count": 0, "skipped": str(error)})
        summary = evaluation.summary.with_columns(pl.lit(as_of).alias("as_of_date"))
        reliability = evaluation.reliability.with_columns(pl.lit(as_of).alias("as_of_date"))
        write_frame(con, "models.churn_evaluation", summary)
        write_frame(con, "models.churn_reliability", reliability)
        data = fingerprint(con, LABELS_QUERY)
        for row in evaluation.summary.iter_rows(named=True):
            record_model_run(
                con,
                run_id=context.run_id,
                model=f"churn_holdout_{row['scorer']}",
                as_of_date=as_of,
                parameters={
                    "holdout_cutoffs": holdout,
                    "chosen": row["chosen"],
                    "missing_feature_groups": missing,
                    "settings": config.model_dump(),
                },
                metrics={
                    k: row[k]
                    for k in ("roc_auc", "pr_auc", "brier", "top_decile_lift", "customers")
                },
                data_fingerprint=data,
            )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": summary.height,
            "chosen": evaluation.chosen,
            "holdout_cutoffs": [c.isoformat() for c in holdout],
            "comparison": preview(evaluation.summary),
        }
    )


@dg.asset(
    key=["models", "churn_scores"],
    deps=[churn_evaluation],
    group_name=GROUP,
    kinds={"duckdb", "scikitlearn"},
    pool=DUCKDB_POOL,
)
@asset_step
def churn_scores(
    context: dg.AssetExecutionContext, config: ChurnSettings, warehouse: Warehouse
) -> dg.MaterializeResult:
    """Churn probability in the horizon, risk band and top-3 reasons per customer."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        history = training_frame(con)
        current = scoring_frame(con, as_of)
        missing = _missing_groups(con)
        chosen_rows = con.sql("select scorer from models.churn_evaluation where chosen").fetchall()
        # Without a holdout comparison the supervised model scores if it can be fitted.
        chosen = chosen_rows[0][0] if chosen_rows else "supervised"
        model: ChurnModel | None = None
        try:
            model = _model(config, missing).fit(history)
        except ValueError as error:
            context.log.warning(f"churn model not fitted: {error}")
        baseline_known = (
            current.height > 0 and current["bg_nbd_churn_probability"].null_count() < current.height
        )
        if model is None:
            chosen = "bg_nbd_baseline" if baseline_known else "none"
        version = f"churn-{chosen}-{as_of.isoformat()}-{context.run_id[:8]}"
        if chosen == "none":
            context.log.warning("no churn scores today: neither model nor BG/NBD baseline fitted")
            scores = pl.DataFrame(schema=SCORE_SCHEMA)
        else:
            scores = score_customers(
                current,
                as_of,
                model=model,
                chosen=chosen,
                cut_points=config.band_cut_points,
                model_version=version,
            )
        write_frame(con, "models.churn_scores", scores)
        record_model_run(
            con,
            run_id=context.run_id,
            model="churn",
            as_of_date=as_of,
            parameters={
                "chosen": chosen,
                "model_version": version,
                "feature_groups": model.groups_ if model else [],
                "missing_feature_groups": model.missing_groups_ if model else missing,
                "coefficients": model.coefficients_ if model else {},
                "settings": config.model_dump(),
            },
            metrics={
                "training_rows": model.training_rows_ if model else 0,
                "base_rate": model.base_rate_ if model else None,
                "scored_customers": scores.height,
            },
            data_fingerprint=fingerprint(con, LABELS_QUERY),
        )
    bands = scores.group_by("churn_risk_band").len().sort("churn_risk_band")
    probability = scores["churn_probability"].drop_nulls().to_numpy()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": scores.height,
            "chosen": chosen,
            "model_version": version,
            "feature_groups": model.groups_ if model else [],
            "missing_feature_groups": dg.MetadataValue.json(
                model.missing_groups_ if model else missing
            ),
            "mean_probability": float(np.mean(probability)) if len(probability) else 0.0,
            "bands": dg.MetadataValue.json({str(k): v for k, v in bands.iter_rows()}),
            "preview": preview(scores.sort("churn_probability", descending=True, nulls_last=True)),
        }
    )
