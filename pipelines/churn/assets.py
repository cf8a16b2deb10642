"""Churn for marketers: who is about to stop buying, how likely, and why in plain words."""

from functools import partial

import dagster as dg
import numpy as np
import polars as pl

from features.churn import (
    CHURN_TRAINING_CACHE,
    build_churn_snapshots,
    refresh_scoring_snapshot,
    scoring_frame,
    training_frame,
)
from features.model_store import (
    fit_plan,
    keep_fit,
    kept_fit,
    plan_fit,
    record_training_cutoffs,
)
from features.point_in_time import (
    first_invoice_date,
    labelled_cutoffs,
    training_sample_fraction,
)
from features.receivables import customers_invoiced
from features.training_cache import plan_cutoffs
from features.warehouse import (
    fingerprint,
    record_model_run,
    score_per_customer,
    table_exists,
    write_frame,
)
from models.churn import (
    SCORE_SCHEMA,
    ChurnModel,
    PurchaseBaseline,
    evaluate_holdout,
    score_customers,
)
from models.scorecard import NotEnoughEvidence
from models.selection import (
    fit_shipped,
)
from pipelines.common import (
    asset_step,
    kept_scorer_choice,
    preview,
    run_as_of,
    scorer_evaluation_specs,
    table_metadata,
    write_scorer_choice,
)
from pipelines.resources import DUCKDB_POOL, Warehouse
from pipelines.settings import ChurnSettings, ClvSettings, ModelsSettings, RiskSettings

GROUP = "churn"
LABELS_QUERY = "select * from features.churn_labels"


def _fit_settings(churn: ChurnSettings, risk: RiskSettings, clv: ClvSettings) -> dict:
    """Every setting the churn snapshots and scorer depend on: a change to one refits."""
    return {
        "churn": churn.model_dump(),
        "default_payment_terms_days": risk.default_payment_terms_days,
        "settlement_tolerance": risk.settlement_tolerance,
        "clv": clv.model_dump(),
    }


def _snapshot_settings(
    churn: ChurnSettings, risk: RiskSettings, clv: ClvSettings, sample_fraction: float
) -> dict:
    """The settings one cutoff's labelled snapshot depends on: its key in the training cache."""
    return {
        "scoring_horizon_days": churn.horizon_days,
        "default_payment_terms_days": risk.default_payment_terms_days,
        "settlement_tolerance": risk.settlement_tolerance,
        "clv": clv.model_dump(),
        "sample_fraction": sample_fraction,
    }


def _missing_groups(con) -> dict[str, str]:
    rows = con.sql("select feature_group, reason from features.churn_missing_groups").fetchall()
    return dict(rows)


def _label_plan(con, config: ChurnSettings, as_of) -> tuple[int, list]:
    """The labels' horizon and cutoffs: the configured horizon unless the history is too short."""
    return labelled_cutoffs(
        as_of,
        config.horizon_days,
        first_invoice_date(con, as_of),
        count=config.training_cutoffs,
        min_history_days=config.min_history_days,
    )


SNAPSHOTS = dg.AssetKey(["features", "churn_snapshots"])
TRAINING_CACHE = dg.AssetKey(CHURN_TRAINING_CACHE.split("."))
LABELS = dg.AssetKey(["features", "churn_labels"])
MISSING_GROUPS = dg.AssetKey(["features", "churn_missing_groups"])
CHURN_INPUTS = [
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
]


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            TRAINING_CACHE,
            deps=CHURN_INPUTS,
            group_name=GROUP,
            kinds={"duckdb"},
            description="Each labelled training cutoff's churn features and label, kept under "
            "a key of what shapes them (facts through the label window, settings, code): a "
            "refit builds only the cutoffs missing.",
        ),
        dg.AssetSpec(
            SNAPSHOTS,
            # tonight's payment features are the credit-risk stage's own
            deps=[
                *CHURN_INPUTS,
                dg.AssetKey(["features", "payment_behaviour"]),
                TRAINING_CACHE,
            ],
            group_name=GROUP,
            kinds={"duckdb"},
            description="Churn features per customer at past cutoffs and on the as-of date, "
            "each from the facts known on that day.",
        ),
        dg.AssetSpec(
            LABELS,
            deps=[*CHURN_INPUTS, TRAINING_CACHE],
            group_name=GROUP,
            kinds={"duckdb"},
            description="Per customer and past cutoff: no purchase in the label horizon after.",
        ),
        dg.AssetSpec(
            MISSING_GROUPS,
            deps=CHURN_INPUTS,
            group_name=GROUP,
            kinds={"duckdb"},
            description="Churn feature groups whose source is missing, with the reason.",
        ),
    ],
    name="churn_snapshots",
    pool=DUCKDB_POOL,
)
@asset_step
def churn_snapshots(
    context: dg.AssetExecutionContext,
    churn: ChurnSettings,
    risk: RiskSettings,
    clv: ClvSettings,
    models: ModelsSettings,
    warehouse: Warehouse,
) -> tuple[dg.MaterializeResult, dg.MaterializeResult, dg.MaterializeResult, dg.MaterializeResult]:
    """Churn features at past cutoffs (labelled by the horizon after) and on the as-of date;
    a refit builds only the cutoffs the training cache does not hold.

    Payment features use the credit-risk stage's payment terms and settlement tolerance, and
    the BG/NBD baseline the CLV stage's time unit, so one setting means one thing everywhere."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        label_horizon, cutoffs = _label_plan(con, churn, as_of)
        customers = customers_invoiced(con)
        sample_fraction = training_sample_fraction(customers, churn.max_training_customers)
        baseline = PurchaseBaseline(clv.model(purchase_model="bg_nbd", n_bootstrap=1))
        fit = plan_fit(
            con,
            model="churn",
            run_id=context.run_id,
            as_of=as_of,
            settings=_fit_settings(churn, risk, clv),
            customers=customers,
            refit_every_days=models.refit_every_days,
            max_customer_change=models.max_customer_change,
        )
        if fit.refit:
            cache_plan = (
                plan_cutoffs(
                    con,
                    CHURN_TRAINING_CACHE,
                    cutoffs,
                    horizon_days=label_horizon,
                    settings=_snapshot_settings(churn, risk, clv, sample_fraction),
                )
                if cutoffs
                else None
            )
            built = build_churn_snapshots(
                con,
                cutoffs,
                as_of,
                label_horizon,
                baseline=baseline,
                default_payment_terms_days=risk.default_payment_terms_days,
                settlement_tolerance=risk.settlement_tolerance,
                payment_behaviour_today="features.payment_behaviour",
                sample_fraction=sample_fraction,
                scoring_horizon_days=churn.horizon_days,
                cache_plan=cache_plan,
            )
            record_training_cutoffs(
                con,
                model="churn",
                run_id=context.run_id,
                reused=built.cutoffs_reused,
                built=built.cutoffs_built,
            )
        else:  # the kept fit scores tonight: only tonight's snapshot is new
            built = refresh_scoring_snapshot(
                con,
                as_of,
                baseline=baseline,
                payment_behaviour_today="features.payment_behaviour",
                scoring_horizon_days=churn.horizon_days,
            )
        rates = con.sql(
            "select cutoff_date::varchar, avg(churned::int) from features.churn_labels "
            "group by 1 order by 1"
        ).fetchall()
        tables = {
            table: table_metadata(con, table)
            for table in (
                "features.churn_snapshots",
                "features.churn_labels",
                "features.churn_missing_groups",
            )
        }
        cache = (
            table_metadata(con, CHURN_TRAINING_CACHE)
            if table_exists(con, CHURN_TRAINING_CACHE)
            else {}
        )
    for group, reason in built.missing_groups.items():
        context.log.warning(f"churn feature group '{group}' missing: {reason}")
    if label_horizon != churn.horizon_days:
        context.log.warning(
            f"churn labels over {label_horizon} days, not {churn.horizon_days}: the history "
            "before the as-of date is too short for the configured horizon"
        )
    for cutoff, reason in built.bg_nbd_failures.items():
        context.log.warning(f"BG/NBD not fitted at cutoff {cutoff}: {reason}")
    context.log.info(f"churn scorer: {'refit' if fit.refit else 'kept'}: {fit.reason}")
    if fit.refit:
        context.log.info(
            f"churn training cutoffs: {built.cutoffs_reused} reused from the training cache, "
            f"{built.cutoffs_built} built"
        )
    plan = {
        "cutoffs": [c.isoformat() for c in cutoffs] if fit.refit else "kept from the fit",
        "sample_fraction": sample_fraction,
        "refit": fit.refit,
        "refit_reason": fit.reason,
        "cutoffs_reused": built.cutoffs_reused,
        "cutoffs_built": built.cutoffs_built,
    }
    return (
        dg.MaterializeResult(asset_key=TRAINING_CACHE, metadata={**cache, **plan}),
        dg.MaterializeResult(
            asset_key=SNAPSHOTS,
            metadata={
                **tables["features.churn_snapshots"],
                **plan,
                "labelled_snapshots": built.labelled,
                "bg_nbd_failures": dg.MetadataValue.json(built.bg_nbd_failures),
            },
        ),
        dg.MaterializeResult(
            asset_key=LABELS,
            metadata={
                **tables["features.churn_labels"],
                **plan,
                "churn_rate_by_cutoff": dg.MetadataValue.json(
                    {cutoff: round(rate or 0.0, 4) for cutoff, rate in rates}
                ),
                "label": f"churned = no purchase in the {label_horizon} days after the cutoff",
                "label_horizon_days": label_horizon,
            },
        ),
        dg.MaterializeResult(
            asset_key=MISSING_GROUPS,
            metadata={
                **tables["features.churn_missing_groups"],
                "missing_feature_groups": dg.MetadataValue.json(built.missing_groups),
            },
        ),
    )


EVALUATION = dg.AssetKey(["models", "churn_evaluation"])


@dg.multi_asset(
    specs=scorer_evaluation_specs(
        "churn", [SNAPSHOTS, LABELS, MISSING_GROUPS], GROUP, "the latest labelled cutoffs"
    ),
    name="models__churn_evaluation",
    pool=DUCKDB_POOL,
)
@asset_step
def churn_evaluation(
    context: dg.AssetExecutionContext, churn: ChurnSettings, warehouse: Warehouse
) -> tuple[dg.MaterializeResult, dg.MaterializeResult]:
    """Every churn scorer graded on the latest labelled cutoffs; the best one is chosen.
    On a night that scores with the kept fit, the grading of that fit stands."""
    with warehouse.connect() as con:
        fit = fit_plan(con, model="churn", run_id=context.run_id)
        if not fit.refit:
            return kept_scorer_choice(con, target="churn", plan=fit)
        as_of = run_as_of(con, context.run_id)
        label_horizon, cutoffs = _label_plan(con, churn, as_of)
        history = training_frame(con)
        current = scoring_frame(con, as_of)
        missing = _missing_groups(con)
    # graded with the warehouse closed, as the scores step fits (its comment says why)
    holdout = cutoffs[-churn.holdout_cutoffs :]
    evaluation = evaluate_holdout(
        history, current, holdout, label_horizon, churn.horizon_days, churn.model(missing)
    )
    with warehouse.connect() as con:
        return write_scorer_choice(
            context,
            con,
            target="churn",
            evaluation=evaluation,
            as_of=as_of,
            holdout_cutoffs=holdout,
            label_horizon_days=label_horizon,
            settings=churn.model_dump(),
            labels_query=LABELS_QUERY,
        )


@dg.asset(
    key=["models", "churn_scores"],
    deps=[EVALUATION, SNAPSHOTS, MISSING_GROUPS],
    group_name=GROUP,
    kinds={"duckdb", "scikitlearn"},
    pool=DUCKDB_POOL,
)
@asset_step
def churn_scores(
    context: dg.AssetExecutionContext, churn: ChurnSettings, warehouse: Warehouse
) -> dg.MaterializeResult:
    """Churn probability in the horizon, risk band and top-3 reasons per customer, from the
    scorer the holdout chose, fitted on every labelled cutoff."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        fit = fit_plan(con, model="churn", run_id=context.run_id)
        current = scoring_frame(con, as_of)
        missing = _missing_groups(con)
        if fit.refit:
            label_horizon, _ = _label_plan(con, churn, as_of)
            history = training_frame(con)
            chosen = con.sql(
                "select scorer from models.churn_evaluation where chosen and population = 'all'"
            ).fetchall()[0][0]
    # the fit runs with the warehouse closed: DuckDB hands its memory back first, so the fit's
    # large arrays are not faulted in next to a buffer pool of several gigabytes
    scorer: ChurnModel | None = None
    note = None
    if fit.refit and label_horizon == churn.horizon_days and history.height:
        try:
            scorer = fit_shipped(chosen, history, churn.model(missing))
        except NotEnoughEvidence as error:
            note = f"churn scorer {chosen} not calibrated: {error}"
            context.log.warning(note)
    with warehouse.connect() as con:
        if fit.refit:
            fitted_by, fitted_as_of = context.run_id, as_of
            keep_fit(
                con,
                model="churn",
                plan=fit,
                run_id=context.run_id,
                as_of=as_of,
                chosen=chosen,
                note=note,
                scorer=scorer,
            )
        else:
            kept = kept_fit(con, "churn")
            assert kept is not None  # plan_fit keeps a fit only when one is kept
            scorer, chosen = kept.scorer, kept.chosen
            fitted_by, fitted_as_of = kept.run_id, kept.as_of_date
        # the version names the fit that scored: the same on every night it is kept
        version = f"churn-{chosen}-{fitted_as_of.isoformat()}-{fitted_by[:8]}"
        if current.height == 0:
            scores = pl.DataFrame(schema=SCORE_SCHEMA)
        else:
            score = partial(
                score_customers,
                as_of=as_of,
                scorer=scorer,
                chosen=chosen,
                cut_points=churn.band_cut_points,
                model_version=version,
            )
            scores = score_per_customer(con, current, score, SCORE_SCHEMA)
        if scores["churn_probability"].null_count() == scores.height and scores.height:
            context.log.warning(
                f"no churn probability today: {chosen} ranks the customers but no model gives "
                "the level (no labels at the configured horizon and no BG/NBD fit)"
            )
        write_frame(con, "models.churn_scores", scores)
        groups = getattr(scorer, "groups_", scorer.numeric_features_ if scorer else [])
        record_model_run(
            con,
            run_id=context.run_id,
            model="churn",
            as_of_date=as_of,
            parameters={
                "chosen": chosen,
                "calibrated": scorer is not None,
                "model_version": version,
                "feature_groups": groups,
                "missing_feature_groups": getattr(scorer, "missing_groups_", missing),
                "coefficients": scorer.coefficients_ if scorer else {},
                "regularization": scorer.regularization_ if scorer else None,
                "settings": churn.model_dump(),
                "refit": fit.refit,
                "refit_reason": fit.reason,
                "fitted_by_run": fitted_by,
            },
            metrics={
                "training_rows": scorer.training_rows_ if scorer else 0,
                "events": scorer.events_ if scorer else 0,
                "base_rate": scorer.base_rate_ if scorer else None,
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
            "calibrated": scorer is not None,
            "refit": fit.refit,
            "refit_reason": fit.reason,
            "model_version": version,
            "feature_groups": groups,
            "missing_feature_groups": dg.MetadataValue.json(
                getattr(scorer, "missing_groups_", missing)
            ),
            "mean_probability": float(np.mean(probability)) if len(probability) else 0.0,
            "bands": dg.MetadataValue.json({str(k): v for k, v in bands.iter_rows()}),
            "preview": preview(scores.sort("churn_probability", descending=True, nulls_last=True)),
        }
    )
