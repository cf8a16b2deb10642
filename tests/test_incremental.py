"""An incremental night gives the marts a fresh run gives on the same data.

One warehouse lives through three nights: the ledger up to the day before D, then day D's
deliveries (new invoices, payments, activities, contacts, deals), then a corrected re-delivery of
invoices dated months before. After each of the last two nights a fresh warehouse runs once on
the same inbox, and the published tables are compared.

Between refits the kept churn and delinquency fits score (``[models] refit_every_days``), so
after day D the scorer-dependent columns are those of the kept fit, by design; every other
column must equal the fresh run's. The corrected re-delivery rewrites history the kept fits
learnt from, which forces a refit: then every table equals the fresh run's.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from bench.bench_nightly import DAY, Split, generate_split
from tests.conftest import run_cli
from tests.test_bench_nightly import QUICK_SETTINGS

CUSTOMERS = 400
# Published tables compared, each with its key.
TABLES = {
    "marts.customer_360": ("customer_id",),
    "marts.receivables_aging": ("customer_id",),
    "marts.customer_risk": ("customer_id",),
    "marts.portfolio_risk": ("dimension", "dimension_value"),
    "marts.segment_summary": ("rfm_segment",),
    "marts.segment_members": ("customer_id",),
    "models.clv_scores": ("customer_id",),
    "models.churn_scores": ("customer_id",),
    "models.delinquency_scores": ("customer_id",),
    "features.payment_behaviour": ("customer_id",),
}
# Which run or fit made a row: different by construction between two warehouses.
RUN_COLUMNS = ("model_version", "run_id")
# Columns that come from the churn or delinquency scorer (or from its probability).
SCORER_COLUMNS = (
    "churn_",
    "delinquency_",
    "expected_loss",
    "risk_adjusted",
    "exposure_weighted_probability",
)


def table(warehouse: Path, name: str, keys: tuple[str, ...]) -> pl.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        frame = con.sql(f"select * from {name}").pl()
    return frame.sort(keys, nulls_last=True)


def compare(incremental: Path, fresh: Path, *, scorer_columns: bool) -> None:
    for name, keys in TABLES.items():
        left, right = table(incremental, name, keys), table(fresh, name, keys)
        assert left.columns == right.columns, name
        kept = [
            column
            for column in left.columns
            if not column.endswith(RUN_COLUMNS)
            and (scorer_columns or not column.startswith(SCORER_COLUMNS))
        ]
        assert_frame_equal(left.select(kept), right.select(kept), rtol=1e-9, check_exact=False)


def built_by_run(warehouse: Path) -> dict[str, tuple[int, str]]:
    """Which night (1, 2, 3, in run order) last built each staging table, and how."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {
            table: (night, mode)
            for table, night, mode in con.sql(
                "select b.staging_table, n.night, b.mode from ops.staging_builds b join ("
                "select run_id, row_number() over (order by started_at) as night from ops.runs"
                ") n using (run_id)"
            ).fetchall()
        }


def fit_plans(warehouse: Path) -> list[tuple[str, bool, str]]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.sql(
            "select p.model, p.refit, p.reason from models.fit_plans p "
            "join ops.runs r using (run_id) where r.started_at = (select max(started_at) "
            "from ops.runs) order by p.model"
        ).fetchall()


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Split:
    return generate_split(tmp_path_factory.mktemp("split"), CUSTOMERS, None, 7, "csv")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("settings") / "crm-intel.toml"
    path.write_text(QUICK_SETTINGS)
    return path


def night(inbox: Path, warehouse: Path, settings: Path, as_of) -> None:
    run_cli(inbox, warehouse, "--as-of", as_of.isoformat(), "--config", str(settings), "--quiet")


def correct_invoices(inbox: Path) -> int:
    """A re-delivery of 20 invoices issued three months before D, with corrected amounts."""
    invoices = pl.read_csv(inbox / "invoices" / "invoices.csv", infer_schema=False)
    months_before = (DAY - timedelta(days=90)).isoformat()
    corrected = (
        invoices.filter(
            (pl.col("issue_date") <= months_before) & (pl.col("document_type") == "invoice")
        )
        .tail(20)
        .with_columns(
            (pl.col("amount").cast(pl.Decimal(18, 2)) * pl.lit(11) / pl.lit(10))
            .round(2)
            .cast(pl.String)
            .alias("amount")
        )
    )
    corrected.write_csv(inbox / "invoices" / "invoices_corrections.csv")
    return corrected.height


def test_incremental_nights_give_the_fresh_run_s_marts(
    split: Split, settings: Path, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    shutil.copytree(split.inbox, inbox)
    warehouse = tmp_path / "nightly" / "warehouse.duckdb"
    night(inbox, warehouse, settings, DAY - timedelta(days=1))
    assert {refit for _, refit, _ in fit_plans(warehouse)} == {True}

    # day D: one more file per group
    for day_file in split.day_files():
        target = inbox / day_file.relative_to(split.day_folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(day_file, target)
    night(inbox, warehouse, settings, DAY)
    plans = fit_plans(warehouse)
    assert [(model, refit) for model, refit, _ in plans] == [
        ("churn", False),
        ("delinquency", False),
    ], plans
    fresh = tmp_path / "fresh_day" / "warehouse.duckdb"
    night(inbox, fresh, settings, DAY)
    compare(warehouse, fresh, scorer_columns=False)
    # tonight's churn snapshot, built alone next to the kept training snapshots
    scored_tonight = "select * from features.churn_snapshots where cutoff_date = $day"
    snapshots = []
    for built in (warehouse, fresh):
        with duckdb.connect(str(built), read_only=True) as con:
            snapshots.append(con.sql(scored_tonight, params={"day": DAY}).pl().sort("customer_id"))
    assert snapshots[0].height > 0
    assert_frame_equal(*snapshots, rtol=1e-9, check_exact=False)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        versions = con.sql("select distinct churn_model_version from models.churn_scores")
        assert len(versions.fetchall()) == 1  # one fit, the one kept from the night before
        staged = con.sql(
            "select count(*) from staging.invoices where issue_date = $day", params={"day": DAY}
        ).fetchall()[0][0]
    assert staged == split.day_rows["invoices/invoices"]
    built = built_by_run(warehouse)
    # the bureau delivered nothing on D (it reports on the 1st): its staging table was kept;
    # day D's files were merged into the others
    assert built["credit_reports"] == (1, "rebuilt")
    delivered = [group.split("/")[1] for group, rows in split.day_rows.items() if rows]
    assert {"invoices", "payments"} <= set(delivered)
    for table in delivered:
        assert built[table] == (2, "merged"), (table, built[table])

    # a corrected re-delivery of old invoices: history the kept fits learnt from has changed
    assert correct_invoices(inbox) == 20
    night(inbox, warehouse, settings, DAY)
    plans = fit_plans(warehouse)
    assert all(refit and "corrected delivery" in reason for _, refit, reason in plans), plans
    built = built_by_run(warehouse)
    # payments are checked against the invoices: the corrected amounts rebuild them, though no
    # payment arrived
    assert built["invoices"] == (3, "merged") and built["payments"] == (3, "rebuilt")
    assert built["credit_reports"] == (1, "rebuilt")
    fresh = tmp_path / "fresh_corrected" / "warehouse.duckdb"
    night(inbox, fresh, settings, DAY)
    compare(warehouse, fresh, scorer_columns=True)
