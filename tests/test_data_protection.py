"""Safe with real exports and personal data: what leaves the warehouse, and in what form.

Formula injection in segment exports, the published snapshot holding only what readers need,
publishing that follows the newest as-of date, and exports that cannot overwrite a database.
Runs are real `crm-intel` invocations on DuckDB files under tmp_path.
"""

import csv
import hashlib
import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb
import openpyxl
import polars as pl
import pytest
from typer.testing import CliRunner

from features.history import HISTORY_TABLES
from features.publish import (
    FORMULA_TRIGGERS,
    PUBLISHED_TABLES,
    WITHHELD_COLUMNS,
    default_snapshot_path,
)
from pipelines.cli import app
from synthetic import generate_demo_data
from tests.conftest import run_cli
from tests.published_reader import observe

ROOT = Path(__file__).resolve().parents[1]
EARLIER_AS_OF = "2025-06-30"
TEXT_COLUMNS = ("customer_id", "customer_name", "contact_id", "email", "phone", "role")
NUMBER_COLUMNS = ("recency_days", "frequency", "monetary", "clv", "p_alive")
runner = CliRunner()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.fixture(scope="module")
def hostile_inbox(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    """A small inbox whose company names and consenting e-mails start with each trigger.

    Returns the inbox and, per customer id, the injected name and e-mail of one contact.
    """
    inbox = tmp_path_factory.mktemp("hostile_inbox")
    generate_demo_data(
        inbox,
        customers=300,
        seed=11,
        include=frozenset({"invoices/invoices", "crm/accounts", "crm/contacts"}),
    )
    accounts = pl.read_csv(inbox / "crm/accounts.csv", infer_schema=False)
    contacts = pl.read_csv(inbox / "crm/contacts.csv", infer_schema=False)
    targets = (
        contacts.filter(pl.col("marketing_consent") == "true")
        .unique("customer_id", keep="first", maintain_order=True)
        .head(len(FORMULA_TRIGGERS))
    )
    injected: dict[str, dict] = {}
    for trigger, (customer_id, contact_id) in zip(
        FORMULA_TRIGGERS, targets.select("customer_id", "contact_id").iter_rows(), strict=True
    ):
        injected[customer_id] = {
            "contact_id": contact_id,
            "name": f"{trigger}2+3+cmd|' /C calc'!A0 {customer_id}",
            "email": f"{trigger}HYPERLINK(1)@{customer_id.lower()}.example.com",
        }
    names = {k: v["name"] for k, v in injected.items()}
    emails = {v["contact_id"]: v["email"] for v in injected.values()}
    accounts.with_columns(
        pl.col("customer_id").replace_strict(names, default=pl.col("name")).alias("name")
    ).write_csv(inbox / "crm/accounts.csv")
    contacts.with_columns(
        pl.col("contact_id").replace_strict(emails, default=pl.col("email")).alias("email")
    ).write_csv(inbox / "crm/contacts.csv")
    return inbox, injected


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No CLV backtest, no GX gate: tested elsewhere, and they slow a run."""
    path = tmp_path_factory.mktemp("protection_config") / "crm-intel.toml"
    path.write_text("[clv]\nholdout_days = 0\n[ingest]\nvalidate_files = false\n")
    return path


@pytest.fixture(scope="module")
def hostile_run(
    hostile_inbox: tuple[Path, dict[str, dict]],
    config: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The hostile inbox run and published as of its latest invoice date."""
    warehouse = tmp_path_factory.mktemp("protection") / "warehouse.duckdb"
    output = run_cli(hostile_inbox[0], warehouse, "--config", str(config))
    assert f"published: {default_snapshot_path(warehouse)}" in output
    return warehouse


def _xlsx_text(value: object) -> object:
    # XLSX stores a carriage return as the escape _x000D_ (ECMA-376); Excel reads it back as \r
    return value.replace("_x000D_", "\r") if isinstance(value, str) else value


def test_exports_neutralise_formulas_in_csv_and_keep_xlsx_cells_text(
    hostile_run: Path, hostile_inbox: tuple[Path, dict[str, dict]], tmp_path: Path
) -> None:
    _, injected = hostile_inbox
    with duckdb.connect(str(default_snapshot_path(hostile_run)), read_only=True) as con:
        segments = dict(
            con.execute(
                "select customer_id, rfm_segment from marts.segment_members "
                "where customer_id in (select unnest(?))",
                [list(injected)],
            ).fetchall()
        )
    assert set(segments) == set(injected)
    csv_rows: dict[str, dict] = {}
    csv_texts: list[str] = []
    xlsx_rows: dict[str, dict] = {}
    for number, segment in enumerate(sorted(set(segments.values()))):
        csv_out, xlsx_out = tmp_path / f"{number}.csv", tmp_path / f"{number}.xlsx"
        for out, file_format in ((csv_out, "csv"), (xlsx_out, "xlsx")):
            cli("segments", "export", segment, "--out", str(out), "--format", file_format,
                "--warehouse", str(hostile_run))  # fmt: skip
        with csv_out.open(newline="") as handle:  # keeps a \r inside a quoted cell
            csv_texts.append(handle.read())
            handle.seek(0)
            rows = list(csv.DictReader(handle))
        # no text cell a spreadsheet would evaluate: every one starting with a trigger is
        # prefixed with ' and quoted
        for row in rows:
            for column in TEXT_COLUMNS:
                assert not row[column].startswith(FORMULA_TRIGGERS), (column, row[column])
        csv_rows |= {row["contact_id"]: row for row in rows}
        # numbers stay numbers: no prefix, read back as numbers
        schema = pl.read_csv(csv_out).schema
        assert schema["monetary"].is_numeric() and schema["clv"].is_numeric()
        assert schema["frequency"].is_integer()
        assert not any(row[c].startswith("'") for row in rows for c in NUMBER_COLUMNS)
        sheet = openpyxl.load_workbook(xlsx_out).worksheets[0]
        header = [cell.value for cell in sheet[1]]
        for cells in sheet.iter_rows(min_row=2):
            assert all(cell.data_type != "f" for cell in cells)  # never a formula
            values = dict(zip(header, cells, strict=True))
            assert values["frequency"].data_type == "n" and values["monetary"].data_type == "n"
            xlsx_rows[values["contact_id"].value] = {
                column: _xlsx_text(cell.value) for column, cell in values.items()
            }
            assert all(values[c].data_type == "s" for c in ("customer_name", "email"))
    for customer_id, hostile in injected.items():
        contact = hostile["contact_id"]
        assert csv_rows[contact]["customer_name"] == "'" + hostile["name"], customer_id
        assert csv_rows[contact]["email"] == "'" + hostile["email"], customer_id
        assert any(f'"\'{hostile["email"]}"' in text for text in csv_texts)  # quoted
        # XLSX keeps the text as it is, as a string cell
        assert xlsx_rows[contact]["customer_name"] == hostile["name"]
        assert xlsx_rows[contact]["email"] == hostile["email"]


def test_exports_refuse_to_overwrite_the_warehouse_or_the_snapshot(
    hostile_run: Path, tmp_path: Path
) -> None:
    snapshot = default_snapshot_path(hostile_run)
    other_database = tmp_path / "other.duckdb"
    duckdb.connect(str(other_database)).close()
    before = {path: sha256(path) for path in (hostile_run, snapshot, other_database)}
    for out in before:
        for file_format in ("csv", "xlsx"):
            result = runner.invoke(
                app,
                ["segments", "export", "Champions", "--out", str(out), "--format", file_format,
                 "--warehouse", str(hostile_run)],
            )  # fmt: skip
            assert result.exit_code == 1, result.output
            assert "choose another file for the export" in result.output
    assert {path: sha256(path) for path in before} == before
    assert "Champions" in cli("segments", "list", "--warehouse", str(hostile_run))


def test_an_earlier_date_does_not_replace_a_newer_snapshot_unless_asked(
    hostile_run: Path, hostile_inbox: tuple[Path, dict[str, dict]], config: Path
) -> None:
    inbox, _ = hostile_inbox
    snapshot = default_snapshot_path(hostile_run)
    with duckdb.connect(str(snapshot), read_only=True) as con:
        newest = con.sql("select max(as_of_date) from ops.publications").fetchall()[0][0]
    assert newest > date.fromisoformat(EARLIER_AS_OF)
    before = sha256(snapshot)

    output = run_cli(inbox, hostile_run, "--as-of", EARLIER_AS_OF, "--config", str(config))
    assert sha256(snapshot) == before
    assert f"not published: {snapshot} holds as of {newest}" in output
    assert f"newer than this run's {EARLIER_AS_OF}" in output and "--publish" in output
    assert f"published: {snapshot}" not in output.splitlines()
    # the working warehouse and its history have the earlier date; readers keep the newest
    with duckdb.connect(str(hostile_run), read_only=True) as con:
        history = con.sql(
            "select count(*) from marts.customer_360_history where as_of_date = $d",
            params={"d": EARLIER_AS_OF},
        ).fetchall()[0][0]
        current = con.sql("select distinct as_of_date from marts.customer_360").fetchall()
    assert history > 0 and current == [(date.fromisoformat(EARLIER_AS_OF),)]
    listing = cli("segments", "list", "--warehouse", str(hostile_run))
    assert str(newest) in listing and EARLIER_AS_OF not in listing

    forced = run_cli(
        inbox, hostile_run, "--as-of", EARLIER_AS_OF, "--publish", "--config", str(config)
    )
    assert f"published: {snapshot}" in forced.splitlines()
    listing = cli("segments", "list", "--warehouse", str(hostile_run))
    assert EARLIER_AS_OF in listing and str(newest) not in listing


def _text_columns(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    return con.sql(
        "select schema_name || '.' || table_name, column_name from duckdb_columns() "
        "where database_name = current_database() and table_name != 'secret_values' "
        "and data_type in ('VARCHAR', 'JSON') order by 1, 2"
    ).fetchall()


def _leaks(con: duckdb.DuckDBPyConnection, values: list[str]) -> list[str]:
    """Text columns of ``con`` holding any of ``values``, whole or inside a longer text."""
    con.register("secret_values", pl.DataFrame({"secret": values}))
    found = []
    for table, column in _text_columns(con):
        schema, name = table.split(".", 1)
        hits = con.sql(
            f'select count(*) from {schema}."{name}" as t, secret_values as s '
            f'where contains(t."{column}"::varchar, s.secret)'
        ).fetchall()[0][0]
        if hits:
            found.append(f"{table}.{column}")
    return found


def test_snapshot_holds_what_readers_need_and_no_more(
    full_run: tuple[Path, str], tmp_path: Path
) -> None:
    warehouse, _ = full_run
    snapshot = default_snapshot_path(warehouse)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        working = {
            f"{schema}.{table}": rows
            for schema, table, rows in con.sql(
                "select schema_name, table_name, estimated_size from duckdb_tables()"
            ).fetchall()
        }
        tax_ids = [row[0] for row in con.sql("select tax_id from staging.accounts").fetchall()]
        contacts = con.sql(
            "select contact_id, customer_id, email, phone, marketing_consent from staging.contacts"
        ).pl()
    withheld = contacts.filter(~pl.col("marketing_consent"))
    assert tax_ids and withheld.height > 0
    with duckdb.connect(str(snapshot), read_only=True) as con:
        published = {
            f"{schema}.{table}"
            for schema, table in con.sql(
                "select schema_name, table_name from duckdb_tables()"
            ).fetchall()
        }
        columns = {
            (f"{schema}.{table}", column)
            for schema, table, column in con.sql(
                "select schema_name, table_name, column_name from duckdb_columns()"
            ).fetchall()
        }
        consenting = set(
            con.sql("select contact_id from marts.consenting_contacts").pl()["contact_id"]
        )
        counts = {
            table: con.sql(f"select count(*) from {table}").fetchall()[0][0] for table in published
        }
        # no raw or staging rows, no quarantined content, no tax id, no contact without consent
        assert not {t for t in published if t.split(".")[0] in ("raw", "staging")}
        assert {c for t, c in columns if t.startswith("quarantine.")} <= {
            "run_id", "staging_table", "reason", "rejected_at"
        }  # fmt: skip
        assert not {c for _, c in columns if c in WITHHELD_COLUMNS}
        assert _leaks(con, tax_ids) == []
        personal = [v for v in withheld["email"].to_list() + withheld["phone"].to_list() if v]
        assert _leaks(con, personal) == []
    assert consenting == set(contacts.filter(pl.col("marketing_consent"))["contact_id"])
    # what readers need: every mart (history included), scores, evaluations, runs, publications
    wanted = {t for t in working if t.startswith("marts.")} | {
        "models.model_runs", "models.clv_scores", "models.churn_scores", "models.rfm_scores",
        "models.delinquency_scores", "models.churn_evaluation", "models.delinquency_evaluation",
        "models.churn_reliability", "models.delinquency_reliability", "ops.runs",
        "ops.publications", "ops.run_failures", "quarantine.rejected_rows",
    }  # fmt: skip
    assert wanted <= published
    assert {t for t in HISTORY_TABLES if t.startswith("marts.")} <= published
    with duckdb.connect(str(warehouse), read_only=True) as con:
        for table in sorted(wanted - {"ops.publications"}):
            assert counts[table] == con.sql(f"select count(*) from {table}").fetchall()[0][0]
    # the list in code is the list in the README
    readme = (ROOT / "README.md").read_text()
    for rule in PUBLISHED_TABLES:
        assert f"`{rule.published_as or rule.pattern}`" in readme, rule.pattern

    # every reader of the snapshot still works: the concurrent reader, exports, status
    seen = observe(str(snapshot), set(HISTORY_TABLES))
    assert seen["run_as_of"] == seen["as_of"] and seen["current"]
    out = tmp_path / "champions.csv"
    cli("segments", "export", "Champions", "--out", str(out), "--warehouse", str(warehouse))
    exported = pl.read_csv(out, infer_schema=False)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        expected = {
            row[0]
            for row in con.sql(
                "select k.contact_id from marts.segment_members m join staging.contacts k "
                "using (customer_id) where m.rfm_segment = 'Champions' and k.marketing_consent"
            ).fetchall()
        }
    assert expected and set(exported["contact_id"]) == expected
    locker = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('locked', flush=True); time.sleep(30)", str(warehouse)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        during_run = cli("status", "--warehouse", str(warehouse))
    finally:
        locker.kill()
        locker.wait()
    assert "a run is writing it now" in during_run and "quarantined rows:" in during_run
