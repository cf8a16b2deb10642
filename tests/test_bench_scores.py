"""bench/scoring.py: the AUC and bootstrap behind bench_scores' verdicts, and its outcome labels.

The labels are checked on a hand-made inbox whose every customer sits on a boundary of the
definitions (window ends, days past due, credit notes, settlement tolerance).
"""

from datetime import date
from fractions import Fraction
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from bench.scoring import (
    Ranking,
    bootstrap_aucs,
    churn_outcomes,
    delinquency_outcomes,
    grade_rankings,
    load_ledger,
    stratified_counts,
    weighted_auc,
)


def exact_auc(scores: np.ndarray, labels: np.ndarray) -> Fraction:
    """Mann-Whitney by brute force over every (positive, negative) pair, ties worth one half."""
    positive, negative = scores[labels], scores[~labels]
    wins = (positive[:, None] > negative[None, :]).sum()
    ties = (positive[:, None] == negative[None, :]).sum()
    return Fraction(2 * int(wins) + int(ties), 2 * positive.size * negative.size)


@pytest.mark.parametrize("seed", range(40))
def test_auc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 300))
    labels = rng.random(size) < rng.uniform(0.05, 0.95)
    labels[:2] = [True, False]  # both classes
    # rounding makes ties, within and across classes; some seeds give a constant score
    scores = np.round(rng.normal(size=size) + labels * rng.uniform(0, 2), seed % 3)
    if seed % 10 == 9:
        scores[:] = 1.0
    ours = weighted_auc(scores, labels, np.ones((1, size), dtype=np.int64))[0]
    # exactly the rational AUC rounded once; sklearn's trapezoid sum can be off in the last bit
    assert ours == float(exact_auc(scores, labels))
    assert ours == pytest.approx(roc_auc_score(labels, scores), rel=0, abs=1e-15)


def test_each_bootstrap_resample_is_the_auc_of_the_resampled_customers() -> None:
    rng = np.random.default_rng(3)
    labels = rng.random(150) < 0.2
    scores = np.round(rng.normal(size=150) + labels, 1)
    counts = stratified_counts(labels, 25, rng)
    # stratified: every resample keeps the observed positives and negatives
    assert (counts[:, labels].sum(axis=1) == labels.sum()).all()
    assert (counts[:, ~labels].sum(axis=1) == (~labels).sum()).all()
    aucs = weighted_auc(scores, labels, counts)
    for row, auc in zip(counts, aucs, strict=True):
        drawn_labels, drawn_scores = np.repeat(labels, row), np.repeat(scores, row)
        assert auc == float(exact_auc(drawn_scores, drawn_labels))
        assert auc == pytest.approx(roc_auc_score(drawn_labels, drawn_scores), abs=1e-15)


def test_bootstrap_is_paired_and_reproducible() -> None:
    rng = np.random.default_rng(5)
    labels = rng.random(500) < 0.3
    scores = rng.normal(size=500) + labels
    first = bootstrap_aucs([scores, -scores], labels, 230, seed=11, chunk=100)
    again = bootstrap_aucs([scores, -scores], labels, 230, seed=11, chunk=100)
    np.testing.assert_array_equal(first, again)
    # the same resamples for both scorers: the reversed ranking is the mirror image each time
    np.testing.assert_allclose(first[0] + first[1], 1.0, atol=1e-12)
    low, high = np.percentile(first[0], [2.5, 97.5])
    assert low < roc_auc_score(labels, scores) < high


def test_verdicts_fail_only_a_clearly_worse_shipped_scorer() -> None:
    rng = np.random.default_rng(8)
    churned = rng.random(2000) < 0.4
    frame = pl.DataFrame(
        {
            "churned": churned,
            "good": churned + rng.normal(scale=0.5, size=2000),
            "noise": rng.normal(size=2000),
            "recency_days": churned * 1.0,
            "unknown": rng.random(2000) < 0.1,
        }
    ).with_columns(pl.when(~pl.col("unknown")).then("recency_days").alias("recency_days"))
    rankings = [Ranking("recency", "recency_days"), Ranking("noise", "noise")]
    good = grade_rankings(frame, "churned", Ranking("shipped", "good"), rankings, resamples=200)
    assert [r.verdict for r in good] == ["ok", "FAIL", "ok"]  # recency is the perfect one
    assert good[1].customers == frame["recency_days"].is_not_null().sum()
    assert good[1].auc == 1.0 and good[1].shipped_auc < good[1].auc_low
    shipped_noise = grade_rankings(
        frame, "churned", Ranking("shipped", "noise"), [Ranking("good", "good")], resamples=200
    )
    assert shipped_noise[1].verdict == "FAIL" and shipped_noise[1].delta_high < 0
    few = grade_rankings(frame.head(30), "churned", Ranking("shipped", "good"), [], min_class=20)
    assert few[0].verdict == "too few"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.strip() + "\n")


@pytest.fixture
def ledger(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    """As of 2024-01-31: churn window to 2024-07-29 (180 d), delinquency to 2024-04-30 (90 d)."""
    write(
        tmp_path / "invoices" / "invoices.csv",
        """
invoice_id,customer_id,issue_date,due_date,amount,document_type
A1,A,2024-01-10,2024-02-09,100.00,invoice
A2,A,2024-03-01,2024-03-31,50.00,invoice
B1,B,2024-01-05,2024-02-04,100.00,invoice
C1,C,2023-12-01,2023-12-31,100.00,invoice
C2,C,2024-07-30,2024-08-29,100.00,invoice
D1,D,2024-02-10,2024-03-11,100.00,invoice
E1,E,2024-01-20,,100.00,invoice
E2,E,2024-07-29,2024-08-28,100.00,invoice
F1,F,2024-01-20,2024-03-31,100.00,invoice
G1,G,2024-01-20,2024-03-30,100.00,invoice
H1,H,2024-01-15,2024-02-14,100.00,invoice
H2,H,2024-01-20,,40.00,credit_note
K1,K,2024-01-15,2024-02-14,100.00,invoice
Z1,Z,2024-01-15,,-20.00,credit_note
Z9,Z,2024-12-31,2025-01-30,10.00,invoice
""",
    )
    write(
        tmp_path / "invoices" / "payments.csv",
        """
payment_id,invoice_id,payment_date,amount
P1,A2,2024-03-05,50.00
P2,B1,2024-02-20,100.00
P3,C1,2024-03-01,100.00
P4,H1,2024-02-10,60.00
P5,K1,2024-03-10,99.50
P6,E1,2024-02-01,100.00
""",
    )
    con = duckdb.connect()
    assert load_ledger(con, tmp_path)
    yield con
    con.close()


def test_churn_outcomes_from_the_inbox(ledger: duckdb.DuckDBPyConnection) -> None:
    outcomes = churn_outcomes(ledger, date(2024, 1, 31), 180)
    assert dict(outcomes.iter_rows()) == {
        "A": False,  # bought again within the window
        "B": True,  # never again
        "C": True,  # next invoice one day after the window (2024-07-30)
        "E": False,  # next invoice on the window's last day (2024-07-29)
        "F": True,
        "G": True,
        "H": True,  # a credit note is not a purchase
        "K": True,
        # D: first invoice after the as-of date; Z: only a credit note before it
    }


def test_delinquency_outcomes_from_the_inbox(ledger: duckdb.DuckDBPyConnection) -> None:
    outcomes = delinquency_outcomes(ledger, date(2024, 1, 31), 90, 30, 30, 1.0)
    assert dict(outcomes.iter_rows()) == {
        "A": True,  # A1 unpaid, over 30 days late from 2024-03-11
        "B": False,  # paid 16 days late
        "C": True,  # already over 30 days late at the as-of date, paid on 2024-03-01
        "E": False,  # no due date: issue + 30 days, paid on time
        "F": False,  # unpaid, but over 30 days late only from 2024-05-01, after the window
        "G": True,  # unpaid, over 30 days late on 2024-04-30, the window's last day
        "H": False,  # 60 paid on 100 less a 40 credit note: settled
        "K": False,  # 99.50 of 100 before 30 days late: settled within the 1.00 tolerance
        # Z: only a credit note by the as-of date
    }


def test_a_window_past_the_data_is_refused(ledger: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(ValueError, match="not observed"):
        churn_outcomes(ledger, date(2024, 12, 1), 180)
