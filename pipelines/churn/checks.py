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
    """Every open account has a churn probability in [0, 1]; closed accounts have none."""
    broken = _count(
        warehouse,
        """select count(*) from models.churn_scores
           where (not account_closed
                  and (churn_probability is null or churn_probability not between 0 and 1))
              or (account_closed and churn_probability is not null)""",
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
def churn_model_beats_bg_nbd(warehouse: Warehouse) -> dg.AssetCheckResult:
    """Warns when the supervised model's holdout ROC AUC does not beat the BG/NBD baseline."""
    with warehouse.connect() as con:
        rows = dict(con.sql("select scorer, roc_auc from models.churn_evaluation").fetchall())
    if "supervised" not in rows or "bg_nbd_baseline" not in rows:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"scorers": sorted(rows)},
            description="no holdout comparison of both scorers",
        )
    margin = rows["supervised"] - rows["bg_nbd_baseline"]
    return dg.AssetCheckResult(
        passed=margin > 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"roc_auc_margin": margin, **{f"roc_auc_{k}": v for k, v in rows.items()}},
    )
