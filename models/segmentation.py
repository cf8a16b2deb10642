"""RFM scores and named segments.

Scores are 1..5 from percentile ranks with ties kept together (``rank("average")``), so two
customers with the same facts always get the same score, whatever their order. The named
segment comes from the recency score and the rounded mean of the frequency and monetary
scores (FM), on the widely used 11-segment grid (Putler's RFM map):

====  =============  =============  ==============  =============  ===============
R\\FM  1              2              3               4              5
====  =============  =============  ==============  =============  ===============
5     New            Potential       Potential       Champions      Champions
                     loyalists       loyalists
4     Promising      Potential       Potential       Loyal          Loyal
                     loyalists       loyalists
3     About to sleep About to sleep  Need attention  Loyal          Loyal
2     Hibernating    Hibernating     At risk         At risk        Can't lose them
1     Lost           Lost            At risk         At risk        Can't lose them
====  =============  =============  ==============  =============  ===============
"""

from __future__ import annotations

import numpy as np
import polars as pl

SEGMENTS: tuple[str, ...] = (
    "Champions",
    "Loyal",
    "Potential loyalists",
    "New",
    "Promising",
    "Need attention",
    "About to sleep",
    "At risk",
    "Can't lose them",
    "Hibernating",
    "Lost",
)

# SEGMENT_GRID[r - 1][fm - 1]
SEGMENT_GRID: tuple[tuple[str, ...], ...] = (
    ("Lost", "Lost", "At risk", "At risk", "Can't lose them"),
    ("Hibernating", "Hibernating", "At risk", "At risk", "Can't lose them"),
    ("About to sleep", "About to sleep", "Need attention", "Loyal", "Loyal"),
    ("Promising", "Potential loyalists", "Potential loyalists", "Loyal", "Loyal"),
    ("New", "Potential loyalists", "Potential loyalists", "Champions", "Champions"),
)

SEGMENT_DESCRIPTIONS: dict[str, str] = {
    "Champions": "bought recently, buy often and spend the most",
    "Loyal": "buy regularly and spend well; responsive to promotions",
    "Potential loyalists": "recent customers with average frequency and spend",
    "New": "first purchase very recently",
    "Promising": "recent shoppers who have not spent much yet",
    "Need attention": "above-average recency, frequency and spend, but slipping",
    "About to sleep": "below-average recency and frequency; will be lost without action",
    "At risk": "used to buy often and spend well, but not for a long time",
    "Can't lose them": "made the biggest and most frequent purchases, long ago",
    "Hibernating": "last purchase long ago, few orders, low spend",
    "Lost": "lowest recency, frequency and spend",
}

SCORE_LEVELS = 5
REQUIRED_COLUMNS = ("customer_id", "recency_days", "purchase_days", "net_revenue")


def percentile_score(values: pl.Expr, higher_is_better: bool = True) -> pl.Expr:
    """1..5 score from the average percentile rank, so ties share one score."""
    ranked = (values if higher_is_better else -values).rank("average")
    share = ranked / pl.len()
    return (share * SCORE_LEVELS).ceil().clip(1, SCORE_LEVELS).cast(pl.Int8)


def segment_for(r_score: np.ndarray, fm_score: np.ndarray) -> np.ndarray:
    """Look up the named segment for arrays of R and FM scores (vectorised)."""
    grid = np.array(SEGMENT_GRID, dtype=object)
    return grid[r_score.astype(int) - 1, fm_score.astype(int) - 1]


def score_rfm(summary: pl.DataFrame) -> pl.DataFrame:
    """RFM scores and segment per customer from the customer summary.

    Parameters
    ----------
    summary : one row per customer with ``recency_days`` (days since last purchase),
        ``purchase_days`` (number of purchase days) and ``net_revenue``.

    Returns
    -------
    ``customer_id, recency_days, frequency, monetary, r_score, f_score, m_score, rfm_cell,
    rfm_segment``; ``frequency`` is the number of purchases, ``monetary`` the net revenue.
    """
    missing = [name for name in REQUIRED_COLUMNS if name not in summary.columns]
    if missing:
        raise ValueError(f"customer summary lacks column(s) {', '.join(missing)}")
    scored = summary.select(
        "customer_id",
        "recency_days",
        pl.col("purchase_days").alias("frequency"),
        pl.col("net_revenue").alias("monetary"),
        percentile_score(pl.col("recency_days"), higher_is_better=False).alias("r_score"),
        percentile_score(pl.col("purchase_days")).alias("f_score"),
        percentile_score(pl.col("net_revenue")).alias("m_score"),
    )
    # Round half up: FM 2.5 -> 3, so a strong spender with few orders is not pushed down.
    fm_score = np.floor((scored["f_score"].to_numpy() + scored["m_score"].to_numpy()) / 2 + 0.5)
    segments = segment_for(scored["r_score"].to_numpy(), fm_score)
    return scored.with_columns(
        pl.format("{}{}{}", "r_score", "f_score", "m_score").alias("rfm_cell"),
        pl.Series("rfm_segment", segments.tolist(), dtype=pl.String),
    )
