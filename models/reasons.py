"""Reasons in plain words for a scorecard's prediction, shared by the churn and delinquency models.

A reason is a model column whose log-odds term (coefficient x standardised value, relative to
the average training customer) pushes the prediction up by at least a minimum; the strongest
come first. Words are polars expressions over the scored frame, formatted only for the customers
and ranks that need them rather than for every customer and every column.
"""

from __future__ import annotations

import numpy as np
import polars as pl


def strongest_terms(terms: np.ndarray, ranks: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``ranks`` largest terms, strongest first: their column and their size.
    ``terms`` is overwritten (the caller's scratch copy)."""
    rows = np.arange(terms.shape[0])
    order = np.empty((terms.shape[0], ranks), dtype=np.intp)
    strength = np.empty((terms.shape[0], ranks))
    for rank in range(ranks):  # a handful of ranks, each vectorised over customers
        order[:, rank] = terms.argmax(axis=1)
        strength[:, rank] = terms[rows, order[:, rank]]
        terms[rows, order[:, rank]] = -np.inf
    return order, strength


def say_reasons(
    frame: pl.DataFrame,
    order: np.ndarray,
    strength: np.ndarray,
    words: list[pl.Expr],
    *,
    top: int,
    min_contribution: float,
    name: str,
) -> pl.Series:
    """Up to ``top`` reasons per row of ``frame`` joined with "; " ("" when none).

    ``order``/``strength`` come from ``strongest_terms``; ``words[c]`` says column ``c``. A
    text that is empty at a row's values is skipped, and one already said at a stronger rank is
    not said again (two columns can share words), so ``order`` may hold more ranks than ``top``.
    """
    # one entry per (customer, rank) strong enough to be a reason, customer by customer
    row_of, rank_of = np.nonzero(strength >= min_contribution)
    column_of = order[row_of, rank_of]
    texts, entries = [], []
    for column, expression in enumerate(words):  # columns, each vectorised over customers
        entry = np.flatnonzero(column_of == column)
        if len(entry) == 0:
            continue
        # words formatted once, from just the columns they read, for just these customers
        needed = list(dict.fromkeys(expression.meta.root_names())) or frame.columns[:1]
        texts.append(
            frame.select(needed)[row_of[entry]]  # with_columns: a literal fills every row
            .with_columns(expression.alias("reason"))
            .select("reason")
        )
        entries.append(entry)
    if not texts:
        return pl.repeat("", frame.height, dtype=pl.String, eager=True).alias(name)
    # back to customer-then-rank order by the inverse permutation (no sort needed)
    entry = np.concatenate(entries)
    back = np.empty_like(entry)
    back[entry] = np.arange(len(entry))
    said = pl.concat(texts, how="vertical_relaxed")[back].with_columns(
        row=pl.Series(row_of, dtype=pl.UInt32)
    )
    repeated = pl.any_horizontal(
        pl.lit(False),
        *(
            (pl.col("reason") == pl.col("reason").shift(k))
            & (pl.col("row") == pl.col("row").shift(k))
            for k in range(1, order.shape[1])
        ),
    ).fill_null(False)
    said = said.filter((pl.col("reason").str.len_chars() > 0) & ~repeated)
    # each customer's n-th reason by position in its run of entries, then one column per
    # position joined with "; " (a group-by over a million customers is several times slower)
    rows = said["row"].to_numpy()
    entry = np.arange(len(rows))
    first = np.maximum.accumulate(np.where(np.r_[True, rows[1:] != rows[:-1]], entry, 0))
    position = entry - first
    nth = [
        pl.repeat(None, frame.height, dtype=pl.String, eager=True).scatter(
            rows[position == n], said["reason"].filter(pl.Series(position == n))
        )
        for n in range(top)  # a handful of positions
    ]
    return (
        pl.select(pl.concat_str(nth, separator="; ", ignore_nulls=True).fill_null(""))
        .to_series()
        .alias(name)
    )
