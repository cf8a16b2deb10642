"""Erasure end to end: `crm-intel erase` after a full run, then a re-delivery of the same rows.

Real DuckDB files and real CLI runs on a small generated inbox. What must hold: nothing naming
the erased customer (id, tax id, its contacts' e-mails) or the erased contact remains in any
text column of any table of the working warehouse or of the published snapshot; the tombstone
keeps ids and hashes, never the e-mail; a re-delivered file's rows of them are quarantined as
``erased`` with no content; everyone else's staged rows and per-customer facts are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from features.publish import default_snapshot_path
from features.warehouse import acquire_run_lock
from pipelines.cli import app
from synthetic import generate_demo_data
from tests.conftest import run_cli

# The tombstone tables keep the erased ids on purpose; e-mails and tax ids not even there.
TOMBSTONES = ("ops.erasures", "ops.erasure_keys")
LINEAGE = ("load_id", "source_file", "line_number")


def text_hits(database: Path, needles: list[str], skip: tuple[str, ...] = ()) -> dict[str, int]:
    """Rows per table whose text columns contain any needle (case-insensitive); one SQL a table."""
    pattern = "(?i)" + "|".join(re.escape(needle) for needle in needles)
    hits: dict[str, int] = {}
    with duckdb.connect(str(database), read_only=True) as con:
        tables = con.sql(
            """select schema_name || '.' || table_name,
                      list('"' || column_name || '"::varchar')
               from duckdb_columns()
               where database_name = current_database() and data_type in ('VARCHAR', 'JSON')
               group by all order by 1"""
        ).fetchall()
        for table, columns in tables:
            if table in skip:
                continue
            found = con.execute(
                f"select count(*) from {table} "
                f"where regexp_matches(concat_ws(' ', {', '.join(columns)}), $pattern)",
                {"pattern": pattern},
            ).fetchall()[0][0]
            if found:
                hits[table] = found
    return hits


def erase(warehouse: Path, inbox: Path, *ids: str) -> str:
    result = CliRunner().invoke(
        app, ["erase", *ids, "--warehouse", str(warehouse), "--inbox", str(inbox)]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.fixture(scope="module")
def erased(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A full run, then one customer and one contact of another customer erased."""
    root = tmp_path_factory.mktemp("erasure")
    inbox = root / "inbox"
    generate_demo_data(inbox, customers=300, seed=3)
    warehouse = root / "warehouse.duckdb"
    run_cli(inbox, warehouse)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        customer, tax_id = con.sql(
            """select a.customer_id, a.tax_id from staging.accounts a
               where exists (select 1 from staging.contacts c
                             where c.customer_id = a.customer_id and c.marketing_consent)
                 and exists (select 1 from staging.invoices i join staging.payments p
                             using (invoice_id) where i.customer_id = a.customer_id)
                 and exists (select 1 from models.churn_scores s
                             where s.customer_id = a.customer_id)
                 and exists (select 1 from staging.credit_reports r where r.tax_id = a.tax_id)
               order by a.customer_id limit 1"""
        ).fetchall()[0]
        emails = [
            row[0]
            for row in con.execute(
                "select email from staging.contacts where customer_id = ?", [customer]
            ).fetchall()
        ]
        contact, contact_email, contact_customer = con.execute(
            """select contact_id, email, customer_id from staging.contacts
               where marketing_consent and customer_id <> ? and customer_id in (
                   select customer_id from staging.contacts group by all having count(*) >= 2)
               order by contact_id limit 1""",
            [customer],
        ).fetchall()[0]
    case = {
        "root": root,
        "inbox": inbox,
        "warehouse": warehouse,
        "snapshot": default_snapshot_path(warehouse),
        "customer": customer,
        "tax_id": tax_id,
        "emails": emails,
        "contact": contact,
        "contact_email": contact_email,
        "contact_customer": contact_customer,
    }
    case["ids"] = [customer, contact]
    case["personal"] = [tax_id, *emails, contact_email]
    # the scan finds them before the erasure, so its silence afterwards means something
    case["hits_before"] = text_hits(warehouse, case["ids"] + case["personal"])
    case["snapshot_hits_before"] = text_hits(case["snapshot"], case["ids"] + case["personal"])
    case["output"] = erase(warehouse, inbox, "--customer", customer, "--contact", contact)
    return case


def test_erase_reports_rows_removed_per_table_and_republishes(erased: dict) -> None:
    output = erased["output"]
    assert f"erased customer {erased['customer']}" in output
    assert f"erased contact {erased['contact']}" in output
    for table in ("raw.accounts", "staging.invoices", "staging.payments", "models.churn_scores"):
        assert re.search(rf"^  {re.escape(table)}\s+\d+$", output, re.MULTILINE), output
    assert "snapshot republished without them" in output
    assert "crm/accounts.csv" in output  # the inbox file that still holds them is named


def test_nothing_of_them_remains_in_the_warehouse_or_the_snapshot(erased: dict) -> None:
    assert {"raw.accounts", "staging.contacts", "marts.customer_360"} <= set(erased["hits_before"])
    assert {"marts.customer_360", "marts.consenting_contacts"} <= set(
        erased["snapshot_hits_before"]
    )
    needles = erased["ids"] + erased["personal"]
    assert text_hits(erased["warehouse"], needles, skip=TOMBSTONES) == {}
    assert text_hits(erased["warehouse"], erased["personal"]) == {}
    assert text_hits(erased["snapshot"], needles) == {}
    with duckdb.connect(str(erased["snapshot"]), read_only=True) as snapshot:
        customers = snapshot.sql("select count(*) from marts.customer_360").fetchall()[0][0]
        assert customers == 299  # everyone else is still published
        assert snapshot.execute(
            "select count(*) from marts.consenting_contacts where customer_id = ?",
            [erased["contact_customer"]],
        ).fetchall()[0][0]  # the erased contact's colleagues stay


def test_the_tombstone_keeps_ids_and_hashes_not_the_email(erased: dict) -> None:
    with duckdb.connect(str(erased["warehouse"]), read_only=True) as con:
        subjects = con.sql("select kind, subject_id from ops.erasures order by kind").fetchall()
        assert subjects == [("contact", erased["contact"]), ("customer", erased["customer"])]
        keys = set(con.sql("select key_column, key_sha256 from ops.erasure_keys").fetchall())
        removed = con.sql(
            "select rows_removed->>'$.rows_removed.\"raw.payments\"' from ops.erasures "
            "where kind = 'customer'"
        ).fetchall()[0][0]
    assert int(removed) > 0

    def digest(value: str) -> str:
        return hashlib.sha256(value.strip().lower().encode()).hexdigest()

    assert ("email", digest(erased["contact_email"])) in keys
    assert ("tax_id", digest(erased["tax_id"])) in keys
    assert {("email", digest(email)) for email in erased["emails"]} <= keys


def test_erase_waits_for_no_run_it_is_refused_while_a_run_holds_the_warehouse(
    erased: dict,
) -> None:
    lock = acquire_run_lock(erased["warehouse"], "a-nightly-run", started_by="crm-intel run")
    try:
        result = CliRunner().invoke(
            app, ["erase", "--customer", "C0000002", "--warehouse", str(erased["warehouse"])]
        )
    finally:
        lock.release()
    assert result.exit_code == 1
    assert "a-nightly-run" in result.output
    with duckdb.connect(str(erased["warehouse"]), read_only=True) as con:
        assert con.sql("select count(*) from ops.erasures").fetchall()[0][0] == 2


def _state(warehouse: Path, customer: str, contact: str) -> dict[str, list[tuple]]:
    """Everyone else's staged rows and per-customer facts, in a stable order."""
    queries = {
        "accounts": f"select * exclude ({', '.join(LINEAGE)}) from staging.accounts",
        "contacts": f"select * exclude ({', '.join(LINEAGE)}) from staging.contacts "
        "where contact_id <> $contact",
        "invoices": "select invoice_id, customer_id, amount, load_id from staging.invoices",
        "payments": "select payment_id, invoice_id, amount, load_id from staging.payments",
        "customer_summary": "select * from features.customer_summary",
        "receivables_aging": "select * from marts.receivables_aging",
    }
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {
            name: sorted(
                con.execute(query, {"contact": contact} if "$contact" in query else {}).fetchall(),
                key=repr,
            )
            for name, query in queries.items()
        }


@pytest.fixture(scope="module")
def redelivered(erased: dict) -> dict:
    """A copy of the erased warehouse rerun on its inbox plus re-delivered files holding them."""
    root = erased["root"] / "redelivery"
    warehouse = root / "warehouse.duckdb"
    root.mkdir()
    shutil.copy(erased["warehouse"], warehouse)
    shutil.copytree(erased["snapshot"].parent, default_snapshot_path(warehouse).parent)
    before = _state(warehouse, erased["customer"], erased["contact"])
    inbox = root / "inbox"
    shutil.copytree(erased["inbox"], inbox)
    customer, contact, tax_id = erased["customer"], erased["contact"], erased["tax_id"]
    other = erased["contact_customer"]
    redelivery = {
        # each file also re-delivers someone else's rows unchanged: they must stay as they were
        "crm/accounts": f"customer_id in ('{customer}', '{other}')",
        "crm/contacts": f"customer_id = '{customer}' or customer_id = '{other}'",
        "invoices/invoices": f"customer_id = '{customer}'",
        "credit/reports": f"tax_id = '{tax_id}'",
    }
    with duckdb.connect() as con:
        for group, condition in redelivery.items():
            con.execute(
                f"copy (select * from read_csv('{erased['inbox']}/{group}.csv', all_varchar = true)"
                f" where {condition}) to '{inbox}/{group}_redelivered.csv' (header)"
            )
        con.execute(
            f"""copy (select p.* from read_csv('{erased["inbox"]}/invoices/payments.csv',
                                               all_varchar = true) p
                      semi join (select invoice_id
                                 from read_csv('{erased["inbox"]}/invoices/invoices.csv',
                                               all_varchar = true)
                                 where customer_id = '{customer}') i using (invoice_id))
                to '{inbox}/invoices/payments_redelivered.csv' (header)"""
        )
    run_cli(inbox, warehouse)
    return {
        "warehouse": warehouse,
        "snapshot": default_snapshot_path(warehouse),
        "before": before,
        "after": _state(warehouse, customer, contact),
        "contact": contact,
    }


def test_a_redelivery_is_quarantined_as_erased_without_content(
    erased: dict, redelivered: dict
) -> None:
    with duckdb.connect(str(redelivered["warehouse"]), read_only=True) as con:
        erased_rows = dict(
            con.sql(
                "select staging_table, count(*) from quarantine.rejected_rows "
                "where reason = 'erased' group by all"
            ).fetchall()
        )
        records = {
            row[0]
            for row in con.sql(
                "select raw_record::varchar from quarantine.rejected_rows where reason = 'erased'"
            ).fetchall()
        }
        refused = con.sql(
            "select count(*) from ops.loaded_files where outcome = 'refused'"
        ).fetchall()[0][0]
    assert erased_rows["accounts"] == 1
    assert erased_rows["contacts"] == len(erased["emails"]) + 1
    assert erased_rows["invoices"] > 0 and erased_rows["payments"] > 0
    assert erased_rows["credit_reports"] > 0
    assert {json.dumps(json.loads(record)) for record in records} == {'{"redacted": true}'}
    assert refused == 0  # erased rows never count against a file's rejected share
    needles = erased["ids"] + erased["personal"]
    assert text_hits(redelivered["warehouse"], needles, skip=TOMBSTONES) == {}
    assert text_hits(redelivered["snapshot"], needles) == {}


def test_a_redelivery_leaves_everyone_else_as_they_were(redelivered: dict) -> None:
    before, after = redelivered["before"], redelivered["after"]
    assert before["accounts"] and before["payments"]
    for name in before:
        assert after[name] == before[name], name
