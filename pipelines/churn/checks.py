"""Checks on the churn scores marketers read; the blocking ones stop a wrong list going out."""

import dagster as dg

from pipelines.resources import DUCKDB_POOL, Warehouse

SCORES = dg.AssetKey(["models", "churn_scores"])
EVALUATION = dg.AssetKey(["models", "churn_evaluation"])


def _count(warehouse: Warehouse, query: str) -> int:
    with warehouse.connect() as con:
        return con.sql(query).fetchall()[0][0]


@dg.asset_check(asset=SCORES, blocking=True, pool=DUCKDB_POOL)
def churn_probability_is_a_probability(warehouse: Warehouse) -> dg.AssetCheckResult:
    """Churn probabilities lie in [0, 1]; closed accounts have none; open accounts have one
    unless no scorer gives a level today, and then none has (never a guessed few)."""
    broken = _count(
        warehouse,
        """select count(*) from models.churn_scores
           where churn_probability not between 0 and 1
              or (account_closed and churn_probability is not null)
              or (not account_closed and churn_probability is null
                  and exists (select 1 from models.churn_scores where churn_probability >= 0))""",
    )
    return dg.AssetCheckResult(passed=broken == 0, metadata={"bad_rows": broken})


@dg.asset_check(asset=SCORES, blocking=True, pool=DUCKDB_POOL)
def churn_scores_one_row_per_customer(warehouse: Warehouse) -> dg.AssetCheckResult:
    """No customer is scored twice."""
    duplicates = _count(
        warehouse,
        "select count(*) - count(distinct customer_id) from models.churn_scores",
    )
    return dg.AssetCheckResult(passed=duplicates == 0, metadata={"duplicates": duplicates})


@dg.asset_check(asset=EVALUATION, pool=DUCKDB_POOL)
def churn_scorer_was_validated(warehouse: Warehouse) -> dg.AssetCheckResult:
    """Warns when the shipped churn scorer could not be judged on the holdout: too few
    churners, or no labelled cutoff at all (the robust ranking ships then)."""
    with warehouse.connect() as con:
        row = con.sql(
            "select scorer, roc_auc, roc_auc_low, roc_auc_high, positives, too_few_positives, "
            "choice_reason from models.churn_evaluation where chosen and population = 'all'"
        ).fetchall()[0]
    scorer, auc, low, high, positives, too_few, reason = row
    return dg.AssetCheckResult(
        passed=auc is not None and not too_few,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "chosen": scorer,
            "roc_auc": auc,
            "roc_auc_interval": f"{low}-{high}",
            "positives": positives,
            "reason": reason,
        },
        description=reason,
    )
