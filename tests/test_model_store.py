"""When a kept churn or delinquency fit still scores, and when a night must refit."""

from datetime import date, datetime, timedelta

import duckdb
import pytest

from features.model_store import (
    CODE_VERSION,
    FitPlan,
    KeptFit,
    history_fingerprint,
    keep_fit,
    kept_fit,
    refit_reason,
    settings_key,
)
from features.warehouse import ensure_layout

FIT_DAY = date(2025, 6, 30)
SETTINGS = settings_key({"horizon_days": 180})


def kept(**changes) -> KeptFit:
    fields = {
        "model": "churn",
        "run_id": "run-1",
        "as_of_date": FIT_DAY,
        "fitted_at": datetime(2025, 7, 1),
        "settings_key": SETTINGS,
        "code_version": CODE_VERSION,
        "history_fingerprint": "facts-then",
        "customers": 1000,
        "chosen": "supervised",
        "note": None,
        "scorer": None,
    }
    return KeptFit(**(fields | changes))


def reason(fit: KeptFit | None, days_later: int = 3, **changes) -> str | None:
    arguments = {
        "as_of": FIT_DAY + timedelta(days=days_later),
        "settings": SETTINGS,
        "customers": 1000,
        "history_then": "facts-then",
        "kept_published": True,
        "refit_every_days": 7,
        "max_customer_change": 0.10,
    }
    return refit_reason(fit, **(arguments | changes))


def test_a_recent_fit_on_unchanged_history_still_scores() -> None:
    assert reason(kept()) is None
    assert reason(kept(), days_later=6) is None
    assert reason(kept(), customers=1090) is None


@pytest.mark.parametrize(
    ("fit", "changes", "said"),
    [
        (None, {}, "no fit kept yet"),
        (kept(code_version="older"), {}, "the code changed"),
        (kept(), {"settings": settings_key({"horizon_days": 90})}, "the settings changed"),
        (kept(), {"kept_published": False}, "published nothing"),
        (kept(), {"days_later": -1}, "lies before the kept fit's"),
        (kept(), {"days_later": 7}, "7 days old (refit every 7)"),
        (kept(), {"days_later": 0, "refit_every_days": 0}, "0 days old (refit every 0)"),
        (kept(), {"customers": 1200}, "customers moved 20%"),
        (kept(), {"history_then": "facts-rewritten"}, "a late or corrected delivery"),
    ],
)
def test_what_makes_a_night_refit(fit: KeptFit | None, changes: dict, said: str) -> None:
    why = reason(fit, **changes)
    assert why is not None and said in why


def staging_facts(con: duckdb.DuckDBPyConnection) -> None:
    """Empty staging tables of the dated facts a fit learns from."""
    con.execute("create schema if not exists staging")
    for table, dated_by in (
        ("invoices", "issue_date"), ("payments", "payment_date"),
        ("activities", "occurred_at"), ("credit_reports", "report_date"),
    ):  # fmt: skip
        con.execute(f"create table staging.{table} ({dated_by} date, load_id varchar)")
    con.execute(
        "create table staging.opportunities (opportunity_id varchar, customer_id varchar, "
        "created_at date, closed_at date, won boolean, load_id varchar)"
    )


def test_a_kept_fit_round_trips_through_the_warehouse(tmp_path) -> None:
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        ensure_layout(con)
        staging_facts(con)
        assert kept_fit(con, "churn") is None
        scorer = {"coefficients": [0.5, -1.25]}  # any picklable fitted object
        for run_id, chosen in (("run-1", "recency"), ("run-2", "supervised")):
            keep_fit(
                con, model="churn", plan=FitPlan(True, "no fit kept yet", SETTINGS, 1000),
                run_id=run_id, as_of=FIT_DAY, chosen=chosen, note=None, scorer=scorer,
            )  # fmt: skip
        back = kept_fit(con, "churn")
    assert back is not None and back.run_id == "run-2" and back.chosen == "supervised"
    assert back.scorer == scorer and back.code_version == CODE_VERSION
    assert back.settings_key == SETTINGS and back.customers == 1000


def test_history_fingerprint_sees_a_late_fact_but_not_a_later_one(tmp_path) -> None:
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        staging_facts(con)
        con.execute("insert into staging.opportunities values ('O1', 'C1', '2025-05-01', "
                    "null, null, 'load-1')")  # fmt: skip
        con.execute("insert into staging.invoices values ('2025-06-01', 'load-1')")
        before = history_fingerprint(con, FIT_DAY)
        con.execute("insert into staging.invoices values ('2025-07-02', 'load-2')")
        assert history_fingerprint(con, FIT_DAY) == before  # dated after: not what the fit saw
        con.execute("insert into staging.payments values ('2025-06-15', 'load-2')")
        assert history_fingerprint(con, FIT_DAY) != before  # a late payment dated before
        after_late = history_fingerprint(con, FIT_DAY)
        con.execute("update staging.invoices set load_id = 'load-3' where load_id = 'load-1'")
        assert history_fingerprint(con, FIT_DAY) != after_late  # a corrected re-delivery
        corrected = history_fingerprint(con, FIT_DAY)
        # a deal open on the fit's as-of date and won after it: the fit saw an open deal
        con.execute(
            "update staging.opportunities set closed_at = '2025-07-03', won = true, "
            "load_id = 'load-4'"
        )
        assert history_fingerprint(con, FIT_DAY) == corrected
        # a deal recorded now as closed before that date: the fit saw it open, wrongly
        con.execute("update staging.opportunities set closed_at = '2025-06-20'")
        assert history_fingerprint(con, FIT_DAY) != corrected
