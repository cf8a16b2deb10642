"""A reader process for test_operations: queries the published snapshot in a loop.

Usage: python published_reader.py SNAPSHOT STOP_FILE OUT_JSON HISTORY_TABLES_JSON

Each pass opens the snapshot read-only (as a marketer's export would), notes which run it
holds and the as-of dates of every mart, and closes it. Errors are collected, not raised, so
the test sees every one. After STOP_FILE appears it makes one last pass and writes OUT_JSON.
"""

import json
import os
import sys

import duckdb


def observe(snapshot: str, history_tables: set[str]) -> dict:
    with duckdb.connect(snapshot, read_only=True) as con:
        run_id, as_of = con.sql(
            "select run_id, as_of_date::varchar from ops.publications "
            "order by published_at desc limit 1"
        ).fetchall()[0]
        run_as_of = con.execute(
            "select as_of_date::varchar from ops.runs where run_id = ?", [run_id]
        ).fetchall()
        marts = [
            row[0]
            for row in con.sql(
                "select table_schema || '.' || table_name from information_schema.columns "
                "where table_schema = 'marts' and column_name = 'as_of_date' order by 1"
            ).fetchall()
        ]
        current = {}
        history = {}
        for table in marts:
            if table in history_tables:
                history[table] = con.execute(
                    f"select count(*) from {table} where as_of_date = ?", [as_of]
                ).fetchall()[0][0]
            else:
                current[table] = [
                    row[0]
                    for row in con.sql(
                        f"select distinct as_of_date::varchar from {table} order by 1"
                    ).fetchall()
                ]
    return {
        "run_id": run_id,
        "as_of": as_of,
        "run_as_of": run_as_of[0][0] if run_as_of else None,
        "current": current,
        "history_rows_for_as_of": history,
    }


def main() -> None:
    snapshot, stop_file, out, history_json = sys.argv[1:]
    history_tables = set(json.loads(history_json))
    observations: list[dict] = []
    errors: list[str] = []
    while True:
        stopping = os.path.exists(stop_file)
        try:
            observations.append(observe(snapshot, history_tables))
        except Exception as error:  # every error is what the test is looking for
            errors.append(f"{type(error).__name__}: {error}")
        if stopping:
            break
    with open(out, "w") as handle:
        json.dump({"observations": observations, "errors": errors}, handle)


if __name__ == "__main__":
    main()
