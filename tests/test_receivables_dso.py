"""Countback DSO against a reference written from the definition, in exact decimals.

The reference walks each customer's months newest first, as a credit manager does on paper; the
SQL keeps one list of monthly sales per customer. Some customers owe exactly the sales of their
newest months, where a floating-point remainder would count a whole extra month.
"""

import calendar
from datetime import date, timedelta
from decimal import Decimal

import duckdb
import numpy as np
import pytest

from features.receivables import build_dso

AS_OF = date(2025, 12, 31)


def _months_before(day: date, months: int) -> date:
    """``day`` minus whole calendar months, the day clamped to the month's end (as DuckDB)."""
    year, month = divmod(day.year * 12 + day.month - 1 - months, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def _countback(owed: Decimal, sales: list[Decimal], as_of: date) -> float:
    dso, left = 0.0, owed
    for k, month_sales in enumerate(sales, start=1):
        days = (_months_before(as_of, k - 1) - _months_before(as_of, k)).days
        if left <= 0:
            break
        dso += days * (float(left / month_sales) if month_sales >= left else 1.0)
        left -= month_sales
    return dso


def _ledger(
    con: duckdb.DuckDBPyConnection, months: int, seed: int = 3
) -> tuple[dict[str, Decimal], dict[str, list[Decimal]]]:
    """Invoices and open items in the two tables build_dso reads; returns what each customer
    owes (customers with open items only) and each customer's sales per month, newest first."""
    rng = np.random.default_rng(seed)
    con.execute("create schema if not exists staging; create schema if not exists features")
    con.execute(
        "create table staging.invoices (customer_id varchar, issue_date date,"
        " amount decimal(18, 2), document_type varchar)"
    )
    con.execute(
        "create table features.receivable_items (customer_id varchar, open_amount decimal(18, 2))"
    )
    invoices, items, owed_by, sales_by = [], [], {}, {}
    for customer in range(120):  # building test data, not pipeline maths
        cid = f"C{customer:03d}"
        sales = [Decimal(0)] * months
        for _ in range(int(rng.integers(0, 15))):
            issued = AS_OF - timedelta(days=int(rng.integers(0, 31 * (months + 2))))
            amount = Decimal(int(rng.integers(100, 900_000))) / 100
            kind = "credit_note" if rng.random() < 0.1 else "invoice"
            invoices.append((cid, issued, -amount if kind == "credit_note" else amount, kind))
            k = next((k for k in range(1, months + 1) if issued > _months_before(AS_OF, k)), None)
            if kind == "invoice" and k is not None:
                sales[k - 1] += amount
        sales_by[cid] = sales
        shape = rng.choice(["exact", "random", "nothing", "over"])
        if shape == "exact":  # owes exactly the newest months' sales
            owed = sum(sales[: int(rng.integers(1, months + 1))], Decimal(0))
        elif shape == "random":
            owed = Decimal(int(rng.integers(-50_000, 2_000_000))) / 100
        elif shape == "over":  # more than every month's sales
            owed = sum(sales, Decimal(0)) + Decimal("12.34")
        else:
            continue
        first = (owed / 3).quantize(Decimal("0.01"))
        items += [(cid, first), (cid, owed - first)]
        owed_by[cid] = owed
    con.executemany("insert into staging.invoices values (?, ?, ?, ?)", invoices)
    con.executemany("insert into features.receivable_items values (?, ?)", items)
    return owed_by, sales_by


@pytest.mark.parametrize("months", [12, 4])
def test_countback_dso_equals_the_definition(con: duckdb.DuckDBPyConnection, months: int) -> None:
    owed_by, sales_by = _ledger(con, months)
    portfolio_dso = build_dso(con, AS_OF, months=months)
    got = dict(
        con.sql(
            "select customer_id, dso_days from features.receivables_dso where scope = 'customer'"
        ).fetchall()
    )
    expected = {
        cid: _countback(owed, sales_by[cid], AS_OF) for cid, owed in owed_by.items() if owed > 0
    }
    assert got.keys() == expected.keys()
    exact = [cid for cid in expected if owed_by[cid] in _prefix_sums(sales_by[cid])]
    assert len(exact) > 5  # the case where floating point would count an extra month
    for cid, dso in expected.items():
        assert got[cid] == pytest.approx(dso, rel=1e-12, abs=1e-9), cid
    owed = sum(owed_by.values(), Decimal(0))
    sales = [sum((s[k] for s in sales_by.values()), Decimal(0)) for k in range(months)]
    assert portfolio_dso == pytest.approx(_countback(owed, sales, AS_OF), rel=1e-12)


def _prefix_sums(sales: list[Decimal]) -> set[Decimal]:
    return {sum(sales[:k], Decimal(0)) for k in range(1, len(sales) + 1)}


def test_countback_needs_a_month(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(ValueError, match="at least one month"):
        build_dso(con, AS_OF, months=0)
