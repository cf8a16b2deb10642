"""Checks on what finance reads; the blocking ones stop a wrong number from being published."""

import dagster as dg

from pipelines.common import run_as_of
from pipelines.resources import DUCKDB_POOL, Warehouse

AGING = dg.AssetKey(["marts", "receivables_aging"])
SCORES = dg.AssetKey(["models", "delinquency_scores"])
CUSTOMER_RISK = dg.AssetKey(["marts", "customer_risk"])
PORTFOLIO = dg.AssetKey(["marts", "portfolio_risk"])


def _count(warehouse: Warehouse, query: str) -> int:
    with warehouse.connect() as con:
        return con.sql(query).fetchall()[0][0]


@dg.asset_check(asset=AGING, blocking=True, pool=DUCKDB_POOL)
def aging_buckets_sum_to_total_open(warehouse: Warehouse) -> dg.AssetCheckResult:
    """Every customer's buckets plus unapplied credit equal total_open to the cent."""
    broken = _count(
        warehouse,
        """select count(*) from marts.receivables_aging
           where not_due + dpd_1_30 + dpd_31_60 + dpd_61_90 + dpd_91_180 + dpd_over_180
                 + unapplied_credit <> total_open""",
    )
    return dg.AssetCheckResult(passed=broken == 0, metadata={"customers_not_adding_up": broken})


@dg.asset_check(asset=AGING, blocking=True, pool=DUCKDB_POOL)
def aging_reconciles_with_ledger(
    context: dg.AssetCheckExecutionContext, warehouse: Warehouse
) -> dg.AssetCheckResult:
    """Total open = invoices and credit notes - payments on them, all known by the as-of date.

    With no payment known the aging publishes no total to reconcile (see
    ``aging_amounts_unknown_only_with_a_reason``)."""
    with warehouse.connect() as con:
        as_of = run_as_of(con, context.run.run_id)
        reason = con.sql("select finance_unknown_reason from marts.finance_status").fetchall()
        if reason and reason[0][0]:
            return dg.AssetCheckResult(passed=True, metadata={"finance_unknown": reason[0][0]})
        aging, ledger = con.execute(
            """select
                   (select coalesce(sum(total_open), 0) from marts.receivables_aging),
                   (select coalesce(sum(amount), 0) from staging.invoices where issue_date <= $d)
                   - (select coalesce(sum(p.amount), 0) from staging.payments p
                      join staging.invoices i using (invoice_id)
                      where p.payment_date <= $d and i.issue_date <= $d)""",
            {"d": as_of},
        ).fetchall()[0]
    return dg.AssetCheckResult(
        passed=aging == ledger,
        metadata={"aging_total": float(aging), "ledger_total": float(ledger)},
    )


@dg.asset_check(asset=AGING, blocking=True, pool=DUCKDB_POOL)
def aging_buckets_have_the_right_sign(warehouse: Warehouse) -> dg.AssetCheckResult:
    """Open invoices are never negative; unapplied credit is never positive."""
    broken = _count(
        warehouse,
        """select count(*) from marts.receivables_aging
           where least(not_due, dpd_1_30, dpd_31_60, dpd_61_90, dpd_91_180, dpd_over_180) < 0
              or unapplied_credit > 0""",
    )
    return dg.AssetCheckResult(passed=broken == 0, metadata={"customers_with_wrong_sign": broken})


@dg.asset_check(asset=AGING, blocking=True, pool=DUCKDB_POOL)
def aging_amounts_unknown_only_with_a_reason(warehouse: Warehouse) -> dg.AssetCheckResult:
    """An amount is NULL exactly where a reason says why (no payment known): never a number
    made of "everything unpaid", never a silent gap."""
    broken = _count(
        warehouse,
        """select count(*) from marts.receivables_aging
           where (finance_unknown_reason is null) = (total_open is null)
              or (finance_unknown_reason is not null and max_days_past_due is not null)""",
    )
    return dg.AssetCheckResult(passed=broken == 0, metadata={"rows_without_reason": broken})


@dg.asset_check(asset=SCORES, blocking=True, pool=DUCKDB_POOL)
def delinquency_scores_in_range(warehouse: Warehouse) -> dg.AssetCheckResult:
    """Probability in [0, 1], score 1-100 and class A-E for every scored customer; a customer
    without a probability has none of the three and a reason why."""
    broken = _count(
        warehouse,
        """select count(*) from models.delinquency_scores
           where (delinquency_probability is null
                  and (delinquency_unknown_reason is null or delinquency_score is not null
                       or delinquency_class is not null))
              or not isfinite(delinquency_probability)
              or delinquency_probability < 0 or delinquency_probability > 1
              or delinquency_score not between 1 and 100
              or delinquency_class not in ('A', 'B', 'C', 'D', 'E')""",
    )
    return dg.AssetCheckResult(passed=broken == 0, metadata={"bad_scores": broken})


@dg.asset_check(asset=CUSTOMER_RISK, blocking=True, pool=DUCKDB_POOL)
def exposure_and_loss_are_sane(warehouse: Warehouse) -> dg.AssetCheckResult:
    """No negative exposure; 0 <= expected loss <= exposure; PD in [0, 1] where present."""
    broken = _count(
        warehouse,
        """select count(*) from marts.customer_risk
           where open_exposure < 0
              or expected_loss < 0 or expected_loss > open_exposure::double + 0.005
              or delinquency_probability < 0 or delinquency_probability > 1""",
    )
    return dg.AssetCheckResult(passed=broken == 0, metadata={"bad_rows": broken})


@dg.asset_check(asset=CUSTOMER_RISK, blocking=True, pool=DUCKDB_POOL)
def exposure_unknown_only_with_a_reason(warehouse: Warehouse) -> dg.AssetCheckResult:
    """Exposure is NULL exactly where a reason says why; then arrears, DSO, expected loss and
    risk-adjusted CLV are NULL too, not figures of a ledger without payments."""
    broken = _count(
        warehouse,
        """select count(*) from marts.customer_risk
           where (finance_unknown_reason is null) = (open_exposure is null)
              or (finance_unknown_reason is not null
                  and coalesce(overdue, max_days_past_due, dso_days, expected_loss,
                               risk_adjusted_clv) is not null)""",
    )
    return dg.AssetCheckResult(passed=broken == 0, metadata={"rows_without_reason": broken})


@dg.asset_check(asset=CUSTOMER_RISK, pool=DUCKDB_POOL)
def every_exposure_is_scored(warehouse: Warehouse) -> dg.AssetCheckResult:
    """A customer we are owed money by has a delinquency probability (warns otherwise)."""
    unscored = _count(
        warehouse,
        "select count(*) from marts.customer_risk "
        "where open_exposure > 0 and delinquency_probability is null",
    )
    return dg.AssetCheckResult(
        passed=unscored == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"unscored_customers_with_exposure": unscored},
    )


@dg.asset_check(asset=PORTFOLIO, blocking=True, pool=DUCKDB_POOL)
def portfolio_dimensions_add_up(warehouse: Warehouse) -> dg.AssetCheckResult:
    """Every dimension splits the same total exposure, equal to the customers' exposure (all
    NULL when exposure is unknown)."""
    with warehouse.connect() as con:
        totals = con.sql(
            """select dimension, sum(exposure) from marts.portfolio_risk group by dimension
               union all
               select 'customers', sum(open_exposure) from marts.customer_risk"""
        ).fetchall()
    distinct = {total for _, total in totals}
    return dg.AssetCheckResult(
        passed=len(distinct) <= 1,
        metadata={"exposure_by_dimension": {name: float(total or 0) for name, total in totals}},
    )
