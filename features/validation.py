"""Great Expectations 1.x gate on each newly loaded file, with suites built from the contracts.

GX has no DuckDB dialect, so each incoming batch (the typed rows of one loaded file) is handed
to GX as a pandas frame in an ephemeral context. Above ``sample_rows`` rows GX sees a
deterministic sample of about that many rows; the full file is always held to the whole
contract in SQL (the quarantine), so the sample only bounds GX's cost, not what is checked.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import duckdb

from features.contracts import Contract, typed_select

# GX would otherwise try to send usage statistics on every context.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


@lru_cache(maxsize=1)
def _gx() -> Any:
    import great_expectations as gx

    return gx


def build_suite(contract: Contract, mostly: float) -> Any:
    """The contract as an expectation suite; ``mostly`` is 1 - the reject threshold."""
    gx = _gx()
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name=f"{contract.table}_contract")
    for column in contract.columns:
        if column.required:
            # typed values: a required value that is missing or does not parse is null
            suite.add_expectation(
                gxe.ExpectColumnValuesToNotBeNull(column=column.name, mostly=mostly)
            )
        if column.allowed:
            suite.add_expectation(
                gxe.ExpectColumnValuesToBeInSet(
                    column=column.name, value_set=list(column.allowed), mostly=mostly
                )
            )
        if column.minimum is not None or column.maximum is not None:
            suite.add_expectation(
                gxe.ExpectColumnValuesToBeBetween(
                    column=column.name,
                    min_value=column.minimum,
                    max_value=column.maximum,
                    mostly=mostly,
                )
            )
    if len(contract.key) == 1:
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeUnique(column=contract.key[0], mostly=mostly)
        )
    else:
        suite.add_expectation(
            gxe.ExpectCompoundColumnsToBeUnique(column_list=list(contract.key), mostly=mostly)
        )
    return suite


def validate_frame(frame: Any, contract: Contract, mostly: float) -> dict[str, Any]:
    """Run the contract's suite on one pandas frame; a JSON-able summary of the result."""
    gx = _gx()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    batch = (
        context.data_sources.add_pandas("inbox")
        .add_dataframe_asset(contract.table)
        .add_batch_definition_whole_dataframe("incoming_file")
    )
    suite = context.suites.add(build_suite(contract, mostly))
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{contract.table}_gate", data=batch, suite=suite)
    )
    result = validation.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
    failed = [
        {
            "expectation": r.expectation_config.type,
            "column": r.expectation_config.kwargs.get("column")
            or r.expectation_config.kwargs.get("column_list"),
            "unexpected_count": r.result.get("unexpected_count"),
            "unexpected_percent": r.result.get("unexpected_percent"),
        }
        for r in result.results
        if not r.success
    ]
    return {
        "success": bool(result.success),
        "evaluated_expectations": result.statistics["evaluated_expectations"],
        "failed": failed,
    }


def validate_batch(
    con: duckdb.DuckDBPyConnection,
    contract: Contract,
    load_id: str,
    reject_threshold: float,
    sample_rows: int,
) -> dict[str, Any]:
    """Validate the typed rows of one loaded file (``load_id``) with the contract's suite."""
    decimal, date_format, rows = con.execute(
        "select decimal_mark, date_format, rows from ops.loaded_files "
        "where content_hash = ? and outcome = 'loaded' limit 1",
        [load_id],
    ).fetchall()[0]
    sampled = rows > sample_rows
    # About sample_rows rows spread over the whole file: those whose line number hashes to 0
    # modulo rows / sample_rows. A filter on raw, so only the sampled rows are typed (a
    # reservoir sample scans and shuffles every row: 1.4 s at 2M rows), and the same rows on
    # every rebuild, so the report does not change.
    every = -(-rows // sample_rows)
    sample = f" and hash(line_number) % {every} = 0" if sampled else ""
    source = f"(select * from raw.{contract.table} where load_id = '{load_id}'{sample})"
    typed = typed_select(contract, source, decimal, date_format)
    columns = ", ".join(contract.column_names)
    frame = con.sql(f"select {columns} from ({typed})").df()
    report = validate_frame(frame, contract, mostly=1.0 - reject_threshold)
    return report | {"rows_validated": len(frame), "sampled": sampled}
