"""CLV backtest: refit on a calibration window, compare predictions with the holdout that followed.

Two tables, as in Fader, Hardie & Lee (2005):

- the conditional-expectation table: customers grouped by calibration frequency (0 .. 7+),
  mean actual holdout purchases next to the mean the model predicted for them (eq. 10);
- the tracking curve: per model time unit, actual repeat purchases of the whole calibration
  cohort next to the expected ones, from the unconditional E[X(t)] (eq. 7) of every customer
  counted from their own first purchase, through calibration and holdout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl

from models.clv import ClvModel

# Calibration frequencies 0 .. TOP_FREQUENCY_BIN - 1 get a bin each; the rest share "7+".
TOP_FREQUENCY_BIN = 7
CALIBRATION_COLUMNS = (
    "customer_id",
    "frequency",
    "recency",
    "T",
    "monetary_value",
    "first_purchase_date",
    "holdout_purchases",
)

BY_FREQUENCY_SCHEMA = {
    "calibration_frequency": pl.Utf8,
    "frequency_min": pl.Int64,
    "customers": pl.UInt32,
    "actual_holdout_purchases_mean": pl.Float64,
    "predicted_holdout_purchases_mean": pl.Float64,
    "actual_holdout_purchases": pl.Float64,
    "predicted_holdout_purchases": pl.Float64,
}
TRACKING_SCHEMA = {
    "period": pl.Int64,
    "period_end": pl.Date,
    "phase": pl.Utf8,
    "actual_repeat_purchases": pl.Float64,
    "expected_repeat_purchases": pl.Float64,
    "cumulative_actual_repeat_purchases": pl.Float64,
    "cumulative_expected_repeat_purchases": pl.Float64,
}


@dataclass(frozen=True)
class ClvBacktest:
    """A fitted calibration model and how its predictions compared with the holdout."""

    model: ClvModel
    by_frequency: pl.DataFrame
    tracking: pl.DataFrame
    metrics: dict[str, Any]


def backtest_clv(
    model: ClvModel,
    calibration: pl.DataFrame,
    tracking_actuals: pl.DataFrame,
    cutoff: date,
    as_of: date,
) -> ClvBacktest:
    """Fit `model` on the calibration summary and score the holdout window (cutoff, as_of].

    Parameters
    ----------
    model : ClvModel
        Unfitted, configured like the production model (same time unit and penalizer).
    calibration : polars.DataFrame
        One row per customer whose first purchase is on or before `cutoff`: the summary as of
        `cutoff` in model time units, `first_purchase_date` and the actual `holdout_purchases`.
    tracking_actuals : polars.DataFrame
        `period`, `repeat_purchases` of the cohort (see feat_clv_tracking_actuals.sql).
    cutoff, as_of : date
        End of the calibration window and of the holdout window.

    Returns
    -------
    ClvBacktest
    """
    missing = [c for c in CALIBRATION_COLUMNS if c not in calibration.columns]
    if missing:
        raise ValueError(f"calibration frame is missing column(s): {', '.join(missing)}")
    if not cutoff < as_of:
        raise ValueError(f"cutoff {cutoff} must be before as_of {as_of}")
    model.fit(calibration.select("customer_id", "frequency", "recency", "T", "monetary_value"))
    unit = model.time_unit_days
    holdout_days = (as_of - cutoff).days
    predicted = model.expected_purchases(calibration, holdout_days / unit)
    actual = calibration["holdout_purchases"].cast(pl.Float64).to_numpy()

    by_frequency = (
        calibration.select(
            pl.min_horizontal(pl.col("frequency"), TOP_FREQUENCY_BIN).alias("frequency_min"),
            pl.col("holdout_purchases").cast(pl.Float64).alias("actual"),
            pl.Series("predicted", predicted),
        )
        .group_by("frequency_min")
        .agg(
            pl.len().alias("customers"),
            pl.col("actual").mean().alias("actual_holdout_purchases_mean"),
            pl.col("predicted").mean().alias("predicted_holdout_purchases_mean"),
            pl.col("actual").sum().alias("actual_holdout_purchases"),
            pl.col("predicted").sum().alias("predicted_holdout_purchases"),
        )
        .sort("frequency_min")
        .with_columns(
            pl.when(pl.col("frequency_min") == TOP_FREQUENCY_BIN)
            .then(pl.lit(f"{TOP_FREQUENCY_BIN}+"))
            .otherwise(pl.col("frequency_min").cast(pl.Utf8))
            .alias("calibration_frequency")
        )
        .select(pl.col(name).cast(dtype) for name, dtype in BY_FREQUENCY_SCHEMA.items())
    )

    tracking = _tracking(model, calibration, tracking_actuals, cutoff, holdout_days)
    holdout_tracking = tracking.filter(pl.col("phase") == "holdout")
    tracking_expected = float(holdout_tracking["expected_repeat_purchases"].sum())
    tracking_actual = float(holdout_tracking["actual_repeat_purchases"].sum())
    actual_total = float(actual.sum())
    predicted_total = float(predicted.sum())
    correlation = (
        float(np.corrcoef(actual, predicted)[0, 1])
        if actual.std() > 0 and predicted.std() > 0
        else float("nan")
    )
    metrics = {
        "cutoff_date": cutoff.isoformat(),
        "holdout_days": holdout_days,
        "time_unit_days": unit,
        "holdout_time_units": holdout_days / unit,
        "purchase_model": model.purchase_model_,
        "calibration_parameters": model.purchase_params_,
        "calibration_prior": model.metrics_["purchase_prior"],
        "n_customers": calibration.height,
        "n_repeat_customers": model.n_repeat_customers_,
        "actual_holdout_purchases": actual_total,
        "predicted_holdout_purchases": predicted_total,
        "aggregate_error_pct": _error_pct(predicted_total, actual_total),
        "customer_mae": float(np.abs(predicted - actual).mean()),
        "customer_rmse": float(np.sqrt(((predicted - actual) ** 2).mean())),
        "customer_correlation": correlation,
        "tracking_actual_holdout_purchases": tracking_actual,
        "tracking_expected_holdout_purchases": tracking_expected,
        "tracking_error_pct": _error_pct(tracking_expected, tracking_actual),
    }
    return ClvBacktest(model, by_frequency, tracking, metrics)


def _error_pct(predicted: float, actual: float) -> float:
    return 100.0 * (predicted - actual) / actual if actual > 0 else float("nan")


def _tracking(
    model: ClvModel,
    calibration: pl.DataFrame,
    tracking_actuals: pl.DataFrame,
    cutoff: date,
    holdout_days: int,
) -> pl.DataFrame:
    """Actual vs expected repeat purchases of the cohort per period, and cumulated."""
    unit = model.time_unit_days
    joined = (
        calibration.group_by("first_purchase_date")
        .agg(pl.len().alias("customers"))
        .with_columns(
            (pl.col("first_purchase_date") - pl.lit(cutoff)).dt.total_days().alias("first_offset")
        )
    )
    first_offset = joined["first_offset"].cast(pl.Float64).to_numpy()
    customers = joined["customers"].cast(pl.Float64).to_numpy()
    # Same period numbering as the SQL: period k ends k time units after the cutoff.
    first_period = math.ceil(first_offset.min() / unit)
    last_period = math.ceil(holdout_days / unit)
    periods = np.arange(first_period, last_period + 1)
    end_offset = np.minimum(periods * unit, holdout_days)
    # Age of each first-purchase day at each period end: distinct days x periods, not customers.
    age = np.maximum(end_offset[None, :] - first_offset[:, None], 0.0) / unit
    cumulative_expected = customers @ model.unconditional_expected_purchases(age)
    frame = pl.DataFrame(
        {
            "period": periods.astype(np.int64),
            "period_end": [cutoff + timedelta(days=math.floor(d)) for d in end_offset],
            "cumulative_expected_repeat_purchases": cumulative_expected,
        }
    )
    return (
        frame.join(
            tracking_actuals.select(
                pl.col("period").cast(pl.Int64), pl.col("repeat_purchases").cast(pl.Float64)
            ),
            on="period",
            how="left",
        )
        .sort("period")
        .with_columns(
            pl.when(pl.col("period") <= 0)
            .then(pl.lit("calibration"))
            .otherwise(pl.lit("holdout"))
            .alias("phase"),
            pl.col("repeat_purchases").fill_null(0.0).alias("actual_repeat_purchases"),
            pl.col("cumulative_expected_repeat_purchases")
            .diff()
            .fill_null(pl.col("cumulative_expected_repeat_purchases"))
            .alias("expected_repeat_purchases"),
        )
        .with_columns(
            pl.col("actual_repeat_purchases").cum_sum().alias("cumulative_actual_repeat_purchases")
        )
        .select(pl.col(name).cast(dtype) for name, dtype in TRACKING_SCHEMA.items())
    )
