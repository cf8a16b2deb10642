"""Credit risk for finance: receivables aging, DSO, delinquency model, portfolio risk, alerts."""

from datetime import timedelta
from functools import partial

import dagster as dg

from features.model_store import (
    fit_plan,
    keep_fit,
    kept_fit,
    plan_fit,
    record_training_cutoffs,
)
from features.point_in_time import (
    SOURCES,
    first_invoice_date,
    labelled_cutoffs,
    training_sample_fraction,
)
from features.receivables import (
    DSO_BASIS,
    FINANCE_STATUS,
    SETTLEMENT_STATE,
    build_delinquency_labels,
    build_dso,
    build_payment_behaviour,
    build_portfolio_risk,
    build_receivables,
    build_risk_alerts,
    bureau_reports_available,
    missing_payments_reason,
    refresh_invoice_settlement,
    training_snapshots,
)
from features.training_cache import keep_cutoffs, plan_cutoffs, restore_cutoffs
from features.warehouse import (
    fingerprint,
    materialize_sql,
    record_model_run,
    row_count,
    score_per_customer,
    table_exists,
    write_frame,
)
from models.delinquency import (
    SCORE_SCHEMA,
    DelinquencyModel,
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
from pipelines.settings import ModelsSettings, RiskSettings

GROUP = "credit_risk"
RUN_AS_OF = dg.AssetKey(["ops", "run_as_of"])
INVOICES = dg.AssetKey(["staging", "invoices"])
PAYMENTS = dg.AssetKey(["staging", "payments"])
ACCOUNTS = dg.AssetKey(["staging", "accounts"])
CREDIT_REPORTS = dg.AssetKey(["staging", "credit_reports"])
CLV_SCORES = dg.AssetKey(["models", "clv_scores"])
SETTLEMENT = dg.AssetKey(["features", "invoice_settlement"])
SETTLEMENT_REFRESH = dg.AssetKey(SETTLEMENT_STATE.split("."))
NO_BUREAU = "missing: no credit report joins a CRM account; payment history only"


def _label_plan(con, config: RiskSettings, as_of) -> tuple[int, list]:
    """The labels' horizon and cutoffs: the configured horizon unless the history is too short."""
    return labelled_cutoffs(
        as_of,
        config.label_horizon_days,
        first_invoice_date(con, as_of),
        count=config.training_cutoffs,
        min_history_days=config.min_history_days,
    )


RECEIVABLE_ITEMS = dg.AssetKey(["features", "receivable_items"])
CREDIT_NOTE_REFUNDS = dg.AssetKey(["features", "credit_note_refunds"])
AGING = dg.AssetKey(["marts", "receivables_aging"])
FINANCE_STATUS_KEY = dg.AssetKey(FINANCE_STATUS.split("."))


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            RECEIVABLE_ITEMS,
            # the settlement's payment totals are the invoices' residuals (one pass over payments)
            deps=[RUN_AS_OF, INVOICES, PAYMENTS, SETTLEMENT, CREDIT_NOTE_REFUNDS],
            group_name=GROUP,
            kinds={"duckdb"},
            description="Every open item on the as-of date (invoice, credit note, unapplied "
            "payment) with its open amount, due date and days past due: the one open ledger.",
        ),
        dg.AssetSpec(
            AGING,
            deps=[RECEIVABLE_ITEMS, INVOICES, FINANCE_STATUS_KEY],
            group_name=GROUP,
            kinds={"duckdb"},
            description="Open receivables per customer in aging buckets, to the cent.",
        ),
        dg.AssetSpec(
            CREDIT_NOTE_REFUNDS,
            deps=[RUN_AS_OF, INVOICES, PAYMENTS],
            group_name=GROUP,
            kinds={"duckdb"},
            description="Per credit note known on the as-of date: the payments refunding it, "
            "which the open items and the risk alerts' deposits count.",
        ),
        dg.AssetSpec(
            FINANCE_STATUS_KEY,
            # missing_payments_reason asks the same sources as the churn stage's detector
            deps=[RUN_AS_OF, *(dg.AssetKey(table.split(".")) for table in SOURCES.values())],
            group_name=GROUP,
            kinds={"duckdb"},
            description="The aging's as-of date and, when no payment is known by then, why the "
            "finance figures are unknown: the marts and exports read it.",
        ),
    ],
    name="receivables_aging",
    pool=DUCKDB_POOL,
)
@asset_step
def receivables_aging(
    context: dg.AssetExecutionContext, risk: RiskSettings, warehouse: Warehouse
) -> tuple[dg.MaterializeResult, dg.MaterializeResult, dg.MaterializeResult, dg.MaterializeResult]:
    """Open receivables per invoice and per customer in aging buckets, to the cent."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        summary = build_receivables(con, as_of, risk.default_payment_terms_days)
        items = table_metadata(con, "features.receivable_items", as_of_date=str(as_of))
        metadata = table_metadata(con, "marts.receivables_aging", as_of_date=str(as_of))
        refunds = table_metadata(con, "features.credit_note_refunds", as_of_date=str(as_of))
        status = table_metadata(con, FINANCE_STATUS, as_of_date=str(as_of))
        aging = con.sql("select * from marts.receivables_aging order by total_open desc").pl()
    if summary.unmatched_payments:
        context.log.warning(
            f"{summary.unmatched_payments} payment(s) reference no invoice known on {as_of}: "
            "they reduce no balance"
        )
    if summary.finance_unknown_reason:
        context.log.warning(
            f"receivables unknown, not published as numbers: {summary.finance_unknown_reason}"
        )
    # in lineage order, as Dagster wants a step's results
    return (
        dg.MaterializeResult(asset_key=CREDIT_NOTE_REFUNDS, metadata=refunds),
        dg.MaterializeResult(
            asset_key=FINANCE_STATUS_KEY,
            metadata={**status, "finance_unknown_reason": summary.finance_unknown_reason or ""},
        ),
        dg.MaterializeResult(
            asset_key=RECEIVABLE_ITEMS,
            metadata={
                **items,
                "open_items": summary.open_items,
                "unmatched_payments": summary.unmatched_payments,
            },
        ),
        dg.MaterializeResult(
            asset_key=AGING,
            metadata={
                **metadata,
                "open_items": summary.open_items,
                "total_open": summary.total_open,
                "unapplied_credit": summary.unapplied_credit,
                "unmatched_payments": summary.unmatched_payments,
                "finance_unknown_reason": summary.finance_unknown_reason or "",
                "largest_balances": preview(aging),
            },
        ),
    )


DSO = dg.AssetKey(["features", "receivables_dso"])
DSO_BASIS_KEY = dg.AssetKey(DSO_BASIS.split("."))


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            DSO,
            deps=[DSO_BASIS_KEY],
            group_name=GROUP,
            kinds={"duckdb"},
            description="Days sales outstanding by the countback method, per customer and for "
            "the portfolio.",
        ),
        dg.AssetSpec(
            DSO_BASIS_KEY,
            deps=[RUN_AS_OF, RECEIVABLE_ITEMS, INVOICES],
            group_name=GROUP,
            kinds={"duckdb"},
            description="Each customer's net open receivables and sales per month before the "
            "as-of date: what countback DSO counts back, per customer and per portfolio slice.",
        ),
    ],
    name="features__receivables_dso",
    pool=DUCKDB_POOL,
)
@asset_step
def receivables_dso(
    context: dg.AssetExecutionContext, risk: RiskSettings, warehouse: Warehouse
) -> tuple[dg.MaterializeResult, dg.MaterializeResult]:
    """Days sales outstanding by the countback method, per customer and for the portfolio."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        portfolio_dso = build_dso(con, as_of, months=risk.dso_months)
        metadata = table_metadata(con, "features.receivables_dso", as_of_date=str(as_of))
        basis = table_metadata(con, DSO_BASIS, as_of_date=str(as_of))
    return (
        dg.MaterializeResult(
            asset_key=DSO_BASIS_KEY, metadata={**basis, "dso_months": risk.dso_months}
        ),
        dg.MaterializeResult(
            asset_key=DSO, metadata={**metadata, "portfolio_dso_days": portfolio_dso}
        ),
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            SETTLEMENT,
            deps=[RUN_AS_OF, INVOICES, PAYMENTS],
            group_name=GROUP,
            kinds={"duckdb"},
            description="When each invoice was paid off, from payments known on the as-of "
            "date. Reads the run ledger ops.loaded_files to re-settle only customers with new "
            "facts.",
        ),
        dg.AssetSpec(
            SETTLEMENT_REFRESH,
            deps=[RUN_AS_OF, INVOICES, PAYMENTS],
            group_name=GROUP,
            kinds={"duckdb"},
            description="What the last settlement build saw (as-of date, loads, checksums, "
            "settings) and how it was refreshed: the next run's starting point, and "
            "`crm-intel status` shows it.",
        ),
    ],
    name="features__invoice_settlement",
    pool=DUCKDB_POOL,
)
@asset_step
def invoice_settlement(
    context: dg.AssetExecutionContext, risk: RiskSettings, warehouse: Warehouse
) -> tuple[dg.MaterializeResult, dg.MaterializeResult]:
    """When each invoice was paid off, from payments known on the as-of date; re-settles only
    customers with new facts when the previous build allows it (``refresh_invoice_settlement``)."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        refresh = refresh_invoice_settlement(
            con,
            as_of,
            risk.default_payment_terms_days,
            risk.settlement_tolerance,
            full_rebuild_days=risk.settlement_full_rebuild_days,
        )
        payments = row_count(con, "staging.payments")
        metadata = table_metadata(con, "features.invoice_settlement", as_of_date=str(as_of))
        state = table_metadata(con, SETTLEMENT_STATE, as_of_date=str(as_of))
    context.log.info(
        f"invoice settlement {refresh.mode}: {refresh.customers_resettled:,d} customers "
        f"settled ({refresh.reason})"
    )
    refreshed = {
        "refresh_mode": refresh.mode,
        "refresh_reason": refresh.reason,
        "customers_resettled": refresh.customers_resettled,
    }
    # no payment known: the aging and everything read from it say so (missing_payments_reason)
    return (
        dg.MaterializeResult(
            asset_key=SETTLEMENT, metadata={**metadata, **refreshed, "payments": payments}
        ),
        dg.MaterializeResult(asset_key=SETTLEMENT_REFRESH, metadata={**state, **refreshed}),
    )


@dg.asset(
    key=["features", "payment_behaviour"],
    # open amounts, open invoices and days past due are the aging's own receivable items
    deps=[SETTLEMENT, RECEIVABLE_ITEMS, ACCOUNTS, CREDIT_REPORTS],
    group_name=GROUP,
    kinds={"duckdb"},
    pool=DUCKDB_POOL,
)
@asset_step
def payment_behaviour(
    context: dg.AssetExecutionContext, risk: RiskSettings, warehouse: Warehouse
) -> dg.MaterializeResult:
    """Days late, share paid late, worst arrears, trend and bureau facts per customer today."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        build_payment_behaviour(
            con,
            "features.payment_behaviour",
            [as_of],
            default_payment_terms_days=risk.default_payment_terms_days,
            settlement_tolerance=risk.settlement_tolerance,
            whole_ledger=True,
            # invoice_settlement and receivables_aging (upstream) are as of this same date
            settlement_table="features.invoice_settlement",
            items_table="features.receivable_items",
        )
        bureau = bureau_reports_available(con, as_of)
        unknown = missing_payments_reason(con, as_of)
        metadata = table_metadata(con, "features.payment_behaviour", as_of_date=str(as_of))
    if not bureau:
        context.log.warning(f"bureau features {NO_BUREAU}")
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "bureau_features": "present" if bureau else NO_BUREAU,
            "payment_features": f"unknown (NULL): {unknown}" if unknown else "present",
        }
    )


PAYMENT_BEHAVIOUR_HISTORY = dg.AssetKey(["features", "payment_behaviour_history"])
DELINQUENCY_LABELS = dg.AssetKey(["features", "delinquency_labels"])
DELINQUENCY_TRAINING_CACHE = "features.delinquency_training_cache"
TRAINING_CACHE = dg.AssetKey(DELINQUENCY_TRAINING_CACHE.split("."))
# What each cutoff keeps in the training cache: its payment behaviour and its label.
CACHED_ROWS = (
    "select h.*, l.delinquent from features.payment_behaviour_history as h "
    "join features.delinquency_labels as l using (customer_id, cutoff_date)"
)


def _snapshot_settings(risk: RiskSettings, sample_fraction: float) -> dict:
    """The settings one cutoff's labelled snapshot depends on: its key in the training cache."""
    return {
        "default_payment_terms_days": risk.default_payment_terms_days,
        "settlement_tolerance": risk.settlement_tolerance,
        "label_days_past_due": risk.label_days_past_due,
        "sample_fraction": sample_fraction,
    }


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            TRAINING_CACHE,
            deps=[RUN_AS_OF, INVOICES, PAYMENTS, SETTLEMENT, ACCOUNTS, CREDIT_REPORTS],
            group_name=GROUP,
            kinds={"duckdb"},
            description="Each labelled training cutoff's payment behaviour and delinquency "
            "label, kept under a key of what shapes them (facts through the label window, "
            "settings, code): a refit builds only the cutoffs missing.",
        ),
        dg.AssetSpec(
            PAYMENT_BEHAVIOUR_HISTORY,
            # settlement and open items rebuilt from the ledger as known at each cutoff
            deps=[
                RUN_AS_OF,
                INVOICES,
                PAYMENTS,
                SETTLEMENT,
                ACCOUNTS,
                CREDIT_REPORTS,
                TRAINING_CACHE,
            ],
            group_name=GROUP,
            kinds={"duckdb"},
            description="Payment-behaviour features at each past cutoff, each from the ledger "
            "as it was known on that cutoff: the delinquency model's training inputs.",
        ),
        dg.AssetSpec(
            DELINQUENCY_LABELS,
            deps=[SETTLEMENT, PAYMENT_BEHAVIOUR_HISTORY, TRAINING_CACHE],
            group_name=GROUP,
            kinds={"duckdb"},
            description="Per customer and past cutoff: more than label_days_past_due days past "
            "due on some day of the label window after it.",
        ),
    ],
    name="delinquency_training",
    pool=DUCKDB_POOL,
)
@asset_step
def delinquency_training(
    context: dg.AssetExecutionContext,
    risk: RiskSettings,
    models: ModelsSettings,
    warehouse: Warehouse,
) -> tuple[dg.MaterializeResult, dg.MaterializeResult, dg.MaterializeResult]:
    """Point-in-time snapshots at past cutoffs with the delinquency label of the window after;
    kept as they are on a night that scores with the kept fit, and on a refit built only for
    the cutoffs the training cache does not hold."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        label_horizon, cutoffs = _label_plan(con, risk, as_of)
        customers = con.sql("select count(distinct customer_id) from staging.invoices").fetchall()
        fit = plan_fit(
            con,
            model="delinquency",
            run_id=context.run_id,
            as_of=as_of,
            settings=risk.model_dump(),
            customers=customers[0][0],
            refit_every_days=models.refit_every_days,
            max_customer_change=models.max_customer_change,
        )
        context.log.info(f"delinquency scorer: {'refit' if fit.refit else 'kept'}: {fit.reason}")
        cache_metadata = (
            table_metadata(con, DELINQUENCY_TRAINING_CACHE)
            if table_exists(con, DELINQUENCY_TRAINING_CACHE)
            else {}
        )
        if not fit.refit:
            kept = {"refit": False, "refit_reason": fit.reason}
            return (
                dg.MaterializeResult(asset_key=TRAINING_CACHE, metadata={**cache_metadata, **kept}),
                dg.MaterializeResult(
                    asset_key=PAYMENT_BEHAVIOUR_HISTORY,
                    metadata={
                        **table_metadata(con, "features.payment_behaviour_history"),
                        **kept,
                    },
                ),
                dg.MaterializeResult(
                    asset_key=DELINQUENCY_LABELS,
                    metadata={**table_metadata(con, "features.delinquency_labels"), **kept},
                ),
            )
        sample_fraction = training_sample_fraction(customers[0][0], risk.max_training_customers)
        cached = (
            plan_cutoffs(
                con,
                DELINQUENCY_TRAINING_CACHE,
                cutoffs,
                horizon_days=label_horizon,
                settings=_snapshot_settings(risk, sample_fraction),
            )
            if cutoffs
            else None
        )
        to_build = cached.built if cached else cutoffs
        # settlement rebuilt as of each cutoff: no payment or credit note dated later is seen
        # (no cutoff: empty tables, so the evaluation says nothing could be validated; every
        # cutoff kept: the tables are read back from the cache below)
        if to_build or not cutoffs:
            build_payment_behaviour(
                con,
                "features.payment_behaviour_history",
                to_build or [as_of],
                default_payment_terms_days=risk.default_payment_terms_days,
                settlement_tolerance=risk.settlement_tolerance,
                sample_fraction=sample_fraction,
            )
            if not to_build:
                con.execute("delete from features.payment_behaviour_history")
            build_delinquency_labels(con, to_build, label_horizon, risk.label_days_past_due, as_of)
        record_training_cutoffs(
            con,
            model="delinquency",
            run_id=context.run_id,
            reused=len(cached.reused) if cached else 0,
            built=len(to_build),
        )
        if cached:
            keep_cutoffs(con, DELINQUENCY_TRAINING_CACHE, cached, CACHED_ROWS)
            restore_cutoffs(
                con,
                DELINQUENCY_TRAINING_CACHE,
                labels="features.delinquency_labels",
                label="delinquent",
                snapshots="features.payment_behaviour_history",
            )
            cache_metadata = table_metadata(con, DELINQUENCY_TRAINING_CACHE)
            context.log.info(
                f"delinquency training cutoffs: {len(cached.reused)} reused from the training "
                f"cache, {len(cached.built)} built"
            )
        rates = con.sql(
            "select cutoff_date::varchar, count(*), avg(delinquent::int) "
            "from features.delinquency_labels group by 1 order by 1"
        ).fetchall()
        history = table_metadata(con, "features.payment_behaviour_history")
        labels = table_metadata(con, "features.delinquency_labels")
    if label_horizon != risk.label_horizon_days:
        context.log.warning(
            f"delinquency labels over {label_horizon} days, not {risk.label_horizon_days}: "
            "the history before the as-of date is too short for the configured horizon"
        )
    plan = {
        "cutoffs": [c.isoformat() for c in cutoffs],
        "sample_fraction": sample_fraction,
        "refit": True,
        "refit_reason": fit.reason,
        "cutoffs_reused": len(cached.reused) if cached else 0,
        "cutoffs_built": len(to_build),
    }
    return (
        dg.MaterializeResult(asset_key=TRAINING_CACHE, metadata={**cache_metadata, **plan}),
        dg.MaterializeResult(asset_key=PAYMENT_BEHAVIOUR_HISTORY, metadata={**history, **plan}),
        dg.MaterializeResult(
            asset_key=DELINQUENCY_LABELS,
            metadata={
                **labels,
                **plan,
                "delinquency_rate_by_cutoff": dg.MetadataValue.json(
                    {cutoff: round(rate or 0.0, 4) for cutoff, _, rate in rates}
                ),
                "label": f"an invoice more than {risk.label_days_past_due} days past due on "
                f"some day within {label_horizon} days after the cutoff",
                "label_horizon_days": label_horizon,
            },
        ),
    )


EVALUATION = dg.AssetKey(["models", "delinquency_evaluation"])


@dg.multi_asset(
    specs=scorer_evaluation_specs(
        "delinquency",
        [PAYMENT_BEHAVIOUR_HISTORY, DELINQUENCY_LABELS, payment_behaviour],
        GROUP,
        "the latest labelled cutoff",
    ),
    name="models__delinquency_evaluation",
    pool=DUCKDB_POOL,
)
@asset_step
def delinquency_evaluation(
    context: dg.AssetExecutionContext, risk: RiskSettings, warehouse: Warehouse
) -> tuple[dg.MaterializeResult, dg.MaterializeResult]:
    """Every delinquency scorer graded on the latest labelled cutoff (the scorecard, the bureau
    score alone, share paid late, days late, days past due); the best one is chosen. On a night
    that scores with the kept fit, the grading of that fit stands."""
    with warehouse.connect() as con:
        fit = fit_plan(con, model="delinquency", run_id=context.run_id)
        if not fit.refit:
            return kept_scorer_choice(con, target="delinquency", plan=fit)
        as_of = run_as_of(con, context.run_id)
        label_horizon, cutoffs = _label_plan(con, risk, as_of)
        snapshots = training_snapshots(con)
        current = con.sql("select * from features.payment_behaviour").pl()
        evaluation = evaluate_holdout(
            snapshots,
            current,
            cutoffs[-1:],
            label_horizon,
            risk.label_horizon_days,
            risk.model(),
        )
        return write_scorer_choice(
            context,
            con,
            target="delinquency",
            evaluation=evaluation,
            as_of=as_of,
            holdout_cutoffs=cutoffs[-1:],
            label_horizon_days=label_horizon,
            settings=risk.model_dump(),
            labels_query="select * from features.delinquency_labels",
        )


@dg.asset(
    key=["models", "delinquency_scores"],
    deps=[EVALUATION, payment_behaviour],
    group_name=GROUP,
    kinds={"duckdb", "scikitlearn"},
    pool=DUCKDB_POOL,
)
@asset_step
def delinquency_scores(
    context: dg.AssetExecutionContext, risk: RiskSettings, warehouse: Warehouse
) -> dg.MaterializeResult:
    """Probability of going 30+ days past due in 90 days, score 1-100, class A-E, reasons, from
    the scorer the holdout chose, fitted on every labelled cutoff."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        fit = fit_plan(con, model="delinquency", run_id=context.run_id)
        current = con.sql("select * from features.payment_behaviour").pl()
        unknown = missing_payments_reason(con, as_of)
        model: DelinquencyModel | None = None
        if fit.refit:
            label_horizon, _ = _label_plan(con, risk, as_of)
            chosen = con.sql(
                "select scorer from models.delinquency_evaluation "
                "where chosen and population = 'all'"
            ).fetchall()[0][0]
            if unknown is None and label_horizon != risk.label_horizon_days:
                unknown = f"no labels at the {risk.label_horizon_days}-day horizon yet"
            if unknown is None:
                try:
                    model = fit_shipped(chosen, training_snapshots(con), risk.model())
                except NotEnoughEvidence as error:
                    unknown = str(error)
            fitted_by = context.run_id
            keep_fit(
                con,
                model="delinquency",
                plan=fit,
                run_id=context.run_id,
                as_of=as_of,
                chosen=chosen,
                note=unknown,
                scorer=model,
            )
        else:
            kept = kept_fit(con, "delinquency")
            assert kept is not None  # plan_fit keeps a fit only when one is kept
            model, chosen, fitted_by = kept.scorer, kept.chosen, kept.run_id
            unknown = unknown or (kept.note if model is None else None)
        if model is None:
            context.log.warning(f"no delinquency probability today: {unknown}")
        score = partial(
            score_customers,
            as_of=as_of,
            model=model,
            chosen=chosen,
            unknown=unknown,
            cut_points=risk.class_cut_points,
        )
        scores = score_per_customer(con, current, score, SCORE_SCHEMA)
        write_frame(con, "models.delinquency_scores", scores)
        record_model_run(
            con,
            run_id=context.run_id,
            model="delinquency",
            as_of_date=as_of,
            parameters={
                "chosen": chosen,
                "unknown_reason": unknown,
                "coefficients": model.coefficients_ if model else {},
                "features": model.feature_names_ if model else [],
                "bureau_used": getattr(model, "bureau_used_", False),
                "regularization": model.regularization_ if model else None,
                "settings": risk.model_dump(),
                "refit": fit.refit,
                "refit_reason": fit.reason,
                "fitted_by_run": fitted_by,
            },
            metrics={
                "training_rows": model.training_rows_ if model else 0,
                "events": model.events_ if model else 0,
                "base_rate": model.base_rate_ if model else None,
            },
            data_fingerprint=fingerprint(con, "select * from features.delinquency_labels"),
        )
    bureau_used = bool(getattr(model, "bureau_used_", False))
    if model is not None and not bureau_used:
        context.log.warning(f"delinquency model: bureau features {NO_BUREAU}")
    classes = scores.group_by("delinquency_class").len().sort("delinquency_class")
    mean_probability = scores["delinquency_probability"].mean()  # of the known ones
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": scores.height,
            "chosen": chosen,
            "refit": fit.refit,
            "refit_reason": fit.reason,
            "unknown_reason": unknown or "",
            "bureau_features": "used" if bureau_used else NO_BUREAU,
            "training_rows": model.training_rows_ if model else 0,
            "base_rate": model.base_rate_ if model else 0.0,
            "mean_probability": float(mean_probability or 0.0),
            "classes": dg.MetadataValue.json({str(k): v for k, v in classes.iter_rows()}),
        }
    )


@dg.asset(
    key=["marts", "customer_risk"],
    deps=[
        AGING,
        FINANCE_STATUS_KEY,
        DSO,
        payment_behaviour,
        delinquency_scores,
        CLV_SCORES,
    ],
    group_name=GROUP,
    kinds={"duckdb"},
    pool=DUCKDB_POOL,
)
@asset_step
def customer_risk(
    context: dg.AssetExecutionContext, risk: RiskSettings, warehouse: Warehouse
) -> dg.MaterializeResult:
    """Exposure, arrears, credit limit, delinquency, expected loss and risk-adjusted CLV."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        materialize_sql(con, "marts.customer_risk", "mart_customer_risk", as_of=as_of, lgd=risk.lgd)
        metadata = table_metadata(con, "marts.customer_risk", as_of_date=str(as_of))
        exposure, loss, over_limit = con.sql(
            "select sum(open_exposure)::double, sum(expected_loss), "
            "count(*) filter (where over_credit_limit) from marts.customer_risk"
        ).fetchall()[0]
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "open_exposure": exposure or 0.0,
            "expected_loss": loss or 0.0,
            "customers_over_credit_limit": over_limit,
            "lgd": risk.lgd,
        }
    )


@dg.asset(
    key=["marts", "portfolio_risk"],
    # DSO counted back per slice from the same basis as the customers' (build_portfolio_risk)
    deps=[
        customer_risk,
        AGING,
        FINANCE_STATUS_KEY,
        DSO_BASIS_KEY,
        dg.AssetKey(["models", "rfm_scores"]),
        ACCOUNTS,
    ],
    group_name=GROUP,
    kinds={"duckdb"},
    pool=DUCKDB_POOL,
)
@asset_step
def portfolio_risk(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """Exposure, expected loss, concentration and DSO by sector, region, segment, class and
    rating."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        build_portfolio_risk(con, as_of)
        metadata = table_metadata(con, "marts.portfolio_risk", as_of_date=str(as_of))
        total = con.sql(
            "select * exclude (as_of_date) from marts.portfolio_risk where dimension = 'portfolio'"
        ).pl()
    return dg.MaterializeResult(metadata={**metadata, "portfolio": preview(total)})


@dg.asset(
    key=["marts", "customer_equity"],
    deps=[customer_risk, FINANCE_STATUS_KEY, CLV_SCORES],
    group_name=GROUP,
    kinds={"duckdb"},
    pool=DUCKDB_POOL,
)
@asset_step
def customer_equity(
    context: dg.AssetExecutionContext, warehouse: Warehouse
) -> dg.MaterializeResult:
    """Sum of CLV over all customers, gross and net of expected credit loss."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        materialize_sql(con, "marts.customer_equity", "mart_customer_equity", as_of=as_of)
        gross, net = con.sql(
            "select customer_equity_gross, customer_equity_net from marts.customer_equity"
        ).fetchall()[0]
        metadata = table_metadata(con, "marts.customer_equity", as_of_date=str(as_of))
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "customer_equity_gross": gross,
            "customer_equity_net": net,
        }
    )


@dg.asset(
    key=["marts", "risk_alerts"],
    deps=[
        SETTLEMENT,
        CREDIT_NOTE_REFUNDS,
        RECEIVABLE_ITEMS,
        AGING,
        FINANCE_STATUS_KEY,
        INVOICES,
        PAYMENTS,
        ACCOUNTS,
        CREDIT_REPORTS,
    ],
    group_name=GROUP,
    kinds={"duckdb"},
    pool=DUCKDB_POOL,
)
@asset_step
def risk_alerts(
    context: dg.AssetExecutionContext, risk: RiskSettings, warehouse: Warehouse
) -> dg.MaterializeResult:
    """Bureau downgrades, invoices passing 60 days past due, exposure passing the credit limit;
    each with the customer's name, open exposure and a severity, ranked."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run_id)
        window_start = as_of - timedelta(days=risk.alert_lookback_days)
        build_risk_alerts(con, as_of, risk.alert_lookback_days, risk.alert_failure_score_drop)
        metadata = table_metadata(con, "marts.risk_alerts", as_of_date=str(as_of))
        counts = dict(
            con.sql("select alert_type, count(*) from marts.risk_alerts group by 1").fetchall()
        )
        bureau = bureau_reports_available(con, as_of)
    if not bureau:
        context.log.warning(f"bureau alerts {NO_BUREAU}: only arrears alerts raised")
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "window_start": str(window_start),
            "alerts": dg.MetadataValue.json(counts),
            "bureau_features": "present" if bureau else NO_BUREAU,
        }
    )
