"""Training cutoffs on a fixed calendar grid, each labelled snapshot built once and kept.

The pipeline test lives through two refit nights on one warehouse: the ledger up to the day
before D, then day D's deliveries with a corrected re-delivery of invoices dated inside the
label window of the latest churn cutoff only. The second night must reuse every cutoff whose
window the correction missed, rebuild the others, and give exactly the snapshots, labels and
scores of a fresh warehouse that builds every cutoff.
"""

from __future__ import annotations

import itertools
import shutil
from datetime import date, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from bench.bench_nightly import DAY, Split, generate_split
from features.model_store import history_fingerprint, history_fingerprints
from features.point_in_time import (
    GRID_EPOCH,
    labelled_cutoffs,
    training_cutoffs,
    training_sample_fraction,
)
from pipelines.settings import ChurnSettings, RiskSettings
from tests.conftest import run_cli
from tests.test_bench_nightly import QUICK_SETTINGS
from tests.test_model_store import staging_facts

CUSTOMERS = 400
# every night refits, so every night builds training snapshots
EVERY_NIGHT_REFITS = QUICK_SETTINGS + "[models]\nrefit_every_days = 0\n"
CHURN_CUTOFFS = 3  # QUICK_SETTINGS
CORRECTED = 10


@pytest.mark.parametrize("as_of", [date(2025, 12, 31), date(2024, 2, 29), date(2026, 3, 3)])
def test_cutoffs_are_grid_dates_shared_by_the_next_night(as_of: date) -> None:
    tonight = training_cutoffs(as_of, 180, count=12)
    assert all((cutoff - GRID_EPOCH).days % 30 == 0 for cutoff in tonight)
    assert (as_of - tonight[-1]).days in range(180, 210)  # the latest grid date it can be
    assert {b - a for a, b in itertools.pairwise(tonight)} == {timedelta(days=30)}
    nights = [tonight] + [
        training_cutoffs(as_of + timedelta(days=k), 180, count=12) for k in range(1, 31)
    ]
    # the same cutoffs night after night, until a new grid date comes in and the oldest goes
    changed = [k for k in range(1, 31) if nights[k] != nights[k - 1]]
    assert len(changed) == 1
    assert nights[changed[0]] == [*tonight[1:], tonight[-1] + timedelta(days=30)]


def test_a_young_ledger_keeps_the_longest_horizon_its_history_allows_off_the_grid() -> None:
    as_of = date(2025, 12, 31)
    # 300 days of history: a grid cutoff 180 days back with 90 days of history before it
    horizon, cutoffs = labelled_cutoffs(
        as_of, 180, as_of - timedelta(days=300), count=12, min_history_days=90
    )
    assert horizon == 180 and cutoffs == training_cutoffs(as_of, 180, count=12)[-len(cutoffs) :]
    assert all((cutoff - GRID_EPOCH).days % 30 == 0 for cutoff in cutoffs)
    # 200 days: no grid date leaves both; the labels use the 110 days the history allows,
    # counted back from the as-of date as before the grid
    first = as_of - timedelta(days=200)
    horizon, cutoffs = labelled_cutoffs(as_of, 180, first, count=12, min_history_days=90)
    assert horizon == 110 and cutoffs == [as_of - timedelta(days=110)]
    # not even 30 days of labels after 90 days of history: nothing
    assert labelled_cutoffs(as_of, 180, as_of - timedelta(days=100), count=12,
                            min_history_days=90) == (180, [])  # fmt: skip


def test_the_sample_share_holds_while_customers_grow_a_little() -> None:
    assert training_sample_fraction(90_000, 100_000) == 1.0
    share = training_sample_fraction(1_000_000, 100_000)
    assert 0.84 * 100_000 <= share * 1_000_000 <= 100_000
    assert training_sample_fraction(1_010_000, 100_000) == share  # a night's new customers


def test_fingerprints_through_several_dates_are_each_date_s_own(tmp_path) -> None:
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        staging_facts(con)
        con.execute("insert into staging.invoices values ('2025-01-05', 'a'), ('2025-03-01', 'b'),"
                    " ('2025-03-02', 'b'), ('2025-06-30', 'c')")  # fmt: skip
        con.execute("insert into staging.payments values ('2025-02-01', 'a')")
        con.execute(
            "insert into staging.opportunities values ('O1', 'C1', '2025-01-10', '2025-03-01', "
            "true, 'a'), ('O2', 'C1', '2025-04-01', null, null, 'a')"
        )
        dates = [date(2024, 12, 31), date(2025, 2, 28), date(2025, 3, 1), date(2025, 7, 1)]
        together = history_fingerprints(con, dates)
        assert together == {through: history_fingerprint(con, through) for through in dates}
        assert len(set(together.values())) == len(dates)


# --- two refit nights on the generated ledger -----------------------------------------------


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Split:
    return generate_split(tmp_path_factory.mktemp("split"), CUSTOMERS, None, 11, "csv")


def night(inbox: Path, warehouse: Path, settings: Path, as_of: date) -> None:
    run_cli(inbox, warehouse, "--as-of", as_of.isoformat(), "--config", str(settings), "--quiet")


def cache_keys(warehouse: Path, model: str) -> dict[date, str]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return dict(
            con.sql(
                f"select distinct cutoff_date, cache_key from features.{model}_training_cache"
            ).fetchall()
        )


def cutoff_counts(warehouse: Path) -> dict[str, tuple[bool, int, int]]:
    """The last run's plan per model: (refit, cutoffs reused, cutoffs built)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.sql(
            "select model, refit, cutoffs_reused, cutoffs_built from models.fit_plans "
            "where run_id = (select run_id from ops.runs order by started_at desc limit 1)"
        ).fetchall()
    return {model: (refit, reused, built) for model, refit, reused, built in rows}


def correct_invoices(inbox: Path, start: date, end: date) -> date:
    """A re-delivery of invoices issued from ``start`` to ``end`` with corrected amounts;
    returns the earliest issue date corrected."""
    invoices = pl.read_csv(inbox / "invoices" / "invoices.csv", infer_schema=False)
    corrected = (
        invoices.filter(
            pl.col("issue_date").is_between(pl.lit(start.isoformat()), pl.lit(end.isoformat()))
            & (pl.col("document_type") == "invoice")
        )
        .head(CORRECTED)
        .with_columns(
            (pl.col("amount").cast(pl.Decimal(18, 2)) * pl.lit(11) / pl.lit(10))
            .round(2)
            .cast(pl.String)
            .alias("amount")
        )
    )
    assert corrected.height == CORRECTED
    corrected.write_csv(inbox / "invoices" / "invoices_corrections.csv")
    return date.fromisoformat(corrected["issue_date"].min())


# Training tables and scores compared with the fresh build, each with its key.
TABLES = {
    "features.churn_snapshots": ("cutoff_date", "customer_id"),
    "features.churn_labels": ("cutoff_date", "customer_id"),
    "features.payment_behaviour_history": ("cutoff_date", "customer_id"),
    "features.delinquency_labels": ("cutoff_date", "customer_id"),
    "models.churn_evaluation": ("population", "scorer"),
    "models.delinquency_evaluation": ("population", "scorer"),
    "models.churn_scores": ("customer_id",),
    "models.delinquency_scores": ("customer_id",),
}


def test_a_refit_reuses_kept_cutoffs_and_gives_the_fresh_build(
    split: Split, tmp_path: Path
) -> None:
    settings = tmp_path / "crm-intel.toml"
    settings.write_text(EVERY_NIGHT_REFITS)
    inbox = tmp_path / "inbox"
    shutil.copytree(split.inbox, inbox)
    warehouse = tmp_path / "nightly" / "warehouse.duckdb"
    night(inbox, warehouse, settings, DAY - timedelta(days=1))
    risk = RiskSettings()
    counts = cutoff_counts(warehouse)
    assert counts == {
        "churn": (True, 0, CHURN_CUTOFFS),
        "delinquency": (True, 0, risk.training_cutoffs),
    }
    before = {model: cache_keys(warehouse, model) for model in ("churn", "delinquency")}

    # day D: the day's files, and corrected invoices dated inside the label window of the
    # latest churn cutoff only (after the window of the one before it)
    for day_file in split.day_files():
        target = inbox / day_file.relative_to(split.day_folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(day_file, target)
    horizons = {"churn": ChurnSettings().horizon_days, "delinquency": risk.label_horizon_days}
    churn_cutoffs = sorted(before["churn"])
    assert churn_cutoffs == training_cutoffs(DAY, horizons["churn"], count=CHURN_CUTOFFS)
    window = [churn_cutoffs[-2] + timedelta(days=horizons["churn"] + 1)]
    window.append(churn_cutoffs[-1] + timedelta(days=horizons["churn"]))
    corrected_from = correct_invoices(inbox, *window)
    night(inbox, warehouse, settings, DAY)

    after = {model: cache_keys(warehouse, model) for model in ("churn", "delinquency")}
    for model, horizon in horizons.items():
        assert sorted(after[model]) == sorted(before[model])  # the same grid dates on day D
        rebuilt = {c for c in after[model] if after[model][c] != before[model][c]}
        assert rebuilt == {c for c in before[model] if c + timedelta(horizon) >= corrected_from}
        assert 0 < len(rebuilt) < len(before[model]), model
        assert cutoff_counts(warehouse)[model] == (
            True,
            len(before[model]) - len(rebuilt),
            len(rebuilt),
        )

    fresh = tmp_path / "fresh" / "warehouse.duckdb"
    night(inbox, fresh, settings, DAY)
    assert cache_keys(fresh, "churn") == after["churn"]
    assert cutoff_counts(fresh)["churn"] == (True, 0, CHURN_CUTOFFS)
    same_training_and_scores(warehouse, fresh)
    # the same night again: every cutoff read back, nothing built
    night(inbox, fresh, settings, DAY)
    assert cutoff_counts(fresh) == {
        "churn": (True, CHURN_CUTOFFS, 0),
        "delinquency": (True, risk.training_cutoffs, 0),
    }
    same_training_and_scores(warehouse, fresh)


def same_training_and_scores(warehouse: Path, fresh: Path) -> None:
    for name, keys in TABLES.items():
        frames = []
        for built in (warehouse, fresh):
            with duckdb.connect(str(built), read_only=True) as con:
                frame = con.sql(f"select * from {name}").pl()
            # which run made a row differs by construction between two warehouses
            frames.append(frame.drop(c for c in frame.columns if c.endswith("model_version")))
        assert frames[0].height > 0, name
        assert_frame_equal(frames[0].sort(keys), frames[1].sort(keys), rtol=1e-9, check_exact=False)
