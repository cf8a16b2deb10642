import numpy as np
import polars as pl
import pytest

from models.segmentation import SEGMENTS, percentile_score, score_rfm, segment_for


def test_percentile_score_keeps_ties_together_and_orders() -> None:
    frame = pl.DataFrame({"x": [1, 1, 1, 1, 2, 3, 4, 5, 6, 7]})
    scores = frame.select(percentile_score(pl.col("x")))["x"].to_list()
    assert len(set(scores[:4])) == 1  # tied values, one score
    assert scores == sorted(scores)
    assert scores[-1] == 5


def test_recency_scores_reward_recent_customers() -> None:
    frame = pl.DataFrame({"days": [1, 10, 100, 1000, 5]})
    scores = frame.select(percentile_score(pl.col("days"), higher_is_better=False))["days"]
    assert scores[0] == 5 and scores[3] == 1


@pytest.mark.parametrize(
    ("r", "fm", "segment"),
    [
        (5, 5, "Champions"),
        (5, 1, "New"),
        (4, 1, "Promising"),
        (3, 3, "Need attention"),
        (1, 5, "Can't lose them"),
        (1, 1, "Lost"),
        (2, 1, "Hibernating"),
        (2, 4, "At risk"),
        (4, 4, "Loyal"),
        (5, 2, "Potential loyalists"),
        (3, 1, "About to sleep"),
    ],
)
def test_segment_grid(r: int, fm: int, segment: str) -> None:
    assert segment_for(np.array([r]), np.array([fm]))[0] == segment


def test_every_segment_reachable() -> None:
    r, fm = np.meshgrid(np.arange(1, 6), np.arange(1, 6))
    assert set(segment_for(r.ravel(), fm.ravel())) == set(SEGMENTS)


def test_score_rfm_outputs() -> None:
    rng = np.random.default_rng(0)
    n = 500
    summary = pl.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(n)],
            "recency_days": rng.integers(0, 700, n),
            "purchase_days": rng.geometric(0.3, n),
            "net_revenue": rng.gamma(2.0, 500.0, n),
        }
    )
    scored = score_rfm(summary)
    assert scored.height == n
    for column in ("r_score", "f_score", "m_score"):
        assert scored[column].min() >= 1 and scored[column].max() <= 5
    assert set(scored["rfm_segment"].unique()) <= set(SEGMENTS)
    # The most recent, most frequent, biggest spender is a Champion.
    best = summary.with_columns(
        recency_days=pl.when(pl.col("customer_id") == "C0").then(0).otherwise("recency_days"),
        purchase_days=pl.when(pl.col("customer_id") == "C0").then(99).otherwise("purchase_days"),
        net_revenue=pl.when(pl.col("customer_id") == "C0").then(1e7).otherwise("net_revenue"),
    )
    assert score_rfm(best).filter(pl.col("customer_id") == "C0")["rfm_segment"][0] == "Champions"


def test_score_rfm_names_missing_columns() -> None:
    with pytest.raises(ValueError, match="net_revenue"):
        score_rfm(pl.DataFrame({"customer_id": ["a"], "recency_days": [1], "purchase_days": [1]}))
