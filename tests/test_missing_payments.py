"""Missing payments means unknown, not unpaid: no finance figure is published as a number."""

from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from features.receivables import build_payment_behaviour, missing_payments_reason
from synthetic import generate_demo_data
from tests.conftest import run_cli
from tests.test_open_amounts import write_credit_ledger

REASON = "no payments known on"


@pytest.fixture(scope="module")
def no_payments_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The whole nightly job on a generated inbox whose payments file was deleted."""
    inbox = tmp_path_factory.mktemp("no_payments")
    generate_demo_data(inbox, customers=800, seed=11)
    payments = list((inbox / "invoices").glob("payments*"))
    assert payments
    for path in payments:
        path.unlink()
    warehouse = inbox.parent / "no_payments.duckdb"
    return warehouse, run_cli(inbox, warehouse)


def _one(con: duckdb.DuckDBPyConnection, query: str, **params: object) -> tuple:
    return con.execute(query, params).fetchall()[0]


def test_no_exposure_or_loss_is_published_as_a_number(
    no_payments_run: tuple[Path, str],
) -> None:
    warehouse, _ = no_payments_run
    with duckdb.connect(str(warehouse), read_only=True) as con:
        as_of, reason = _one(
            con, "select as_of_date, finance_unknown_reason from marts.finance_status"
        )
        risk = _one(
            con,
            """select count(*), count(open_exposure), count(total_open), count(overdue),
                      count(max_days_past_due), count(dso_days), count(expected_loss),
                      count(risk_adjusted_clv), count(over_credit_limit),
                      count(*) filter (where finance_unknown_reason = $reason)
               from marts.customer_risk""",
            reason=reason,
        )
        aging = _one(
            con,
            "select count(*), count(total_open), count(not_due), count(max_days_past_due), "
            "count(finance_unknown_reason), "
            "(select count(distinct customer_id) from staging.invoices) "
            "from marts.receivables_aging",
        )
        customer_360 = _one(
            con,
            "select count(open_exposure), count(expected_loss), count(risk_adjusted_clv), "
            "count(finance_unknown_reason), count(clv) from marts.customer_360 "
            "where customer_id in (select customer_id from staging.invoices)",
        )
        portfolio = _one(
            con,
            "select count(*), count(exposure), count(expected_loss), count(overdue), "
            "count(dso_days), count(customers_with_exposure), count(finance_unknown_reason) "
            "from marts.portfolio_risk",
        )
        equity = _one(
            con,
            "select customer_equity_gross, customer_equity_net, open_exposure, "
            "expected_loss_on_receivables, finance_unknown_reason from marts.customer_equity",
        )
        behaviour = _one(
            con,
            "select count(*), count(open_amount), count(overdue_amount), count(open_invoices), "
            "count(current_days_past_due), count(avg_days_late), count(worst_days_past_due_12m), "
            "count(tenure_days) from features.payment_behaviour",
        )
        dso = _one(con, "select count(*) from features.receivables_dso")
        items = _one(con, "select count(*) from features.receivable_items")
        assert missing_payments_reason(con, as_of) == reason
    assert reason.startswith(f"{REASON} {as_of}")
    customers = risk[0]
    assert customers > 500
    assert risk[1:9] == (0,) * 8  # exposure, arrears, DSO, expected loss, risk-adjusted CLV
    assert risk[9] == customers  # every row says why
    assert aging[0] == aging[5] > 500 and aging[1:4] == (0, 0, 0) and aging[4] == aging[0]
    assert customer_360[:3] == (0, 0, 0) and customer_360[3] == aging[0]
    assert customer_360[4] > 0  # CLV is still there: it needs no payments
    assert portfolio[0] > 5 and portfolio[1:6] == (0,) * 5 and portfolio[6] == portfolio[0]
    gross, *unknown, equity_reason = equity
    assert gross > 0 and unknown == [None, None, None] and equity_reason == reason
    assert behaviour[0] > 500 and behaviour[1:7] == (0,) * 6 and behaviour[7] == behaviour[0]
    assert dso == (0,) and items == (0,)


def test_the_run_summary_says_so_in_one_line(no_payments_run: tuple[Path, str]) -> None:
    _, output = no_payments_run
    lines = [line for line in output.splitlines() if "open receivables" in line]
    assert len(lines) == 1
    assert "unknown, not published" in lines[0] and REASON in lines[0]
    assert "net of expected credit loss" not in output  # no net equity made of nothing paid


def test_payments_present_give_no_reason(full_run: tuple[Path, str]) -> None:
    warehouse, _ = full_run
    with duckdb.connect(str(warehouse), read_only=True) as con:
        as_of, reason = _one(
            con, "select as_of_date, finance_unknown_reason from marts.finance_status"
        )
        assert reason is None
        assert missing_payments_reason(con, as_of) is None
        # before the first payment the ledger had none: unknown then
        first = _one(con, "select min(payment_date) from staging.payments")[0]
        assert missing_payments_reason(con, first) is None
        assert missing_payments_reason(con, first - timedelta(days=1)) is not None


def test_a_cutoff_before_any_payment_has_unknown_payment_features(
    con: duckdb.DuckDBPyConnection,
) -> None:
    """Training snapshots follow the same rule as of each cutoff: unknown before the first
    payment, numbers once one is known."""
    write_credit_ledger(con)
    build_payment_behaviour(
        con,
        "features.payment_behaviour_history",
        [date(2025, 1, 1), date(2025, 12, 31)],
        default_payment_terms_days=30,
        settlement_tolerance=1.0,
        whole_ledger=True,
    )
    rows = con.sql(
        "select cutoff_date, count(*), count(open_amount), count(current_days_past_due), "
        "count(tenure_days) from features.payment_behaviour_history group by 1 order by 1"
    ).fetchall()
    assert rows == [(date(2025, 1, 1), 1, 0, 0, 1), (date(2025, 12, 31), 3, 3, 3, 3)]
