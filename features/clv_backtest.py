"""Backtest inputs: the customer summary as of a past cutoff and what happened after it."""

from __future__ import annotations

from datetime import date

import duckdb
import polars as pl

from features.customer import lifetimes_summary, materialize_customer_summary
from features.warehouse import sql_text

# The customer summary as of the backtest's cutoff: the calibration period the model is refitted on.
CALIBRATION_SUMMARY = "features.clv_calibration_summary"


def build_backtest_inputs(
    con: duckdb.DuckDBPyConnection, cutoff: date, as_of: date, time_unit_days: float
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Calibration frame and per-period repeat purchases for a backtest of (cutoff, as_of].

    Writes ``features.clv_calibration_summary`` (the customer summary as of ``cutoff``, same SQL
    as the production one). Returns one row per calibration customer in model time units with
    ``first_purchase_date`` and the actual ``holdout_purchases``, and the cohort's repeat
    purchases per period (see ``feat_clv_tracking_actuals.sql``).
    """
    materialize_customer_summary(con, CALIBRATION_SUMMARY, cutoff)
    holdout = con.sql(
        sql_text("feat_clv_holdout_purchases"), params={"cutoff": cutoff, "as_of": as_of}
    ).pl()
    first_purchase = con.sql(
        "select customer_id, first_purchase_date from features.clv_calibration_summary"
    ).pl()
    calibration = (
        lifetimes_summary(holdout, time_unit_days)
        .with_columns(holdout["holdout_purchases"])
        .join(first_purchase, on="customer_id", how="left")
    )
    tracking_actuals = con.sql(
        sql_text("feat_clv_tracking_actuals"),
        params={"cutoff": cutoff, "as_of": as_of, "time_unit_days": float(time_unit_days)},
    ).pl()
    return calibration, tracking_actuals


def clear_calibration_summary(con: duckdb.DuckDBPyConnection) -> None:
    """Write ``features.clv_calibration_summary`` with no customer, for a skipped backtest: the
    summary's own columns (as of a date before any purchase), and no earlier cutoff's rows."""
    materialize_customer_summary(con, CALIBRATION_SUMMARY, date.min)
