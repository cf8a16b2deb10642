"""Small wiring helpers shared by the stages: the run's as-of date and metadata."""

import functools
import time
from collections.abc import Callable
from datetime import date
from typing import Any, ParamSpec

import dagster as dg
import duckdb
import polars as pl

from features.model_store import FitPlan
from features.warehouse import fingerprint, record_model_run, write_frame
from models.selection import Evaluation, candidate_metrics
from models.threads import bounded_blas_threads
from pipelines.resources import Warehouse

Params = ParamSpec("Params")


def run_as_of(con: duckdb.DuckDBPyConnection, run_id: str) -> date:
    """The as-of date this run settled (``ops/run_as_of``, from ``resources.run.config.as_of``).

    Never another run's date: an asset materialized without ``ops/run_as_of`` in its run fails
    here, saying so, rather than describing a date nobody chose for it.
    """
    rows = con.execute("select as_of_date from ops.runs where run_id = ?", [run_id]).fetchall()
    if not rows:
        raise RuntimeError(
            f"run {run_id} has no as-of date: materialize ops/run_as_of in the same run "
            "(the nightly job always does; in the UI, select it with the assets)"
        )
    return rows[0][0]


def preview(frame: pl.DataFrame, rows: int = 12) -> dg.MetadataValue:
    """A Markdown table for the Dagster UI."""
    return dg.MetadataValue.md(frame.head(rows).to_pandas().to_markdown(index=False))


PREVIEW_ROWS = 5


def table_metadata(con: duckdb.DuckDBPyConnection, table: str, **extra: Any) -> dict[str, Any]:
    """Row count and column schema of a written table; marts also show their first rows.

    The schema (DuckDB's own column types, and a column's comment where it has one) is what the
    Dagster UI shows on the asset page, so a reader sees the columns without opening DuckDB.
    The preview leaves out the columns that never leave the warehouse (``WITHHELD_COLUMNS``).
    """
    from features.publish import WITHHELD_COLUMNS

    schema_name, table_name = table.split(".", 1)
    columns = con.execute(
        "select column_name, data_type, is_nullable, comment from duckdb_columns() "
        "where database_name = current_database() and schema_name = ? and table_name = ? "
        "order by column_index",
        [schema_name, table_name],
    ).fetchall()
    rows = con.sql(f"select count(*) from {table}").fetchall()[0][0]
    metadata: dict[str, Any] = {
        "table": table,
        "dagster/row_count": rows,
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn(
                    name,
                    data_type,
                    description=comment or None,
                    constraints=dg.TableColumnConstraints(nullable=nullable),
                )
                for name, data_type, nullable, comment in columns
            ]
        ),
    }
    if schema_name == "marts":
        shown = ", ".join(f'"{name}"' for name, *_ in columns if name not in WITHHELD_COLUMNS)
        metadata["preview"] = preview(
            con.sql(f"select {shown} from {table} limit {PREVIEW_ROWS}").pl(), PREVIEW_ROWS
        )
    return {**metadata, **extra}


def is_lock_error(error: BaseException) -> bool:
    """DuckDB's "Could not set lock on file": another process has the file open."""
    return isinstance(error, duckdb.IOException) and "lock" in str(error).lower()


def asset_step(
    compute: Callable[Params, dg.MaterializeResult],
) -> Callable[Params, dg.MaterializeResult]:
    """What every asset body shares: its duration in the metadata, and which errors are retried.

    Goes between ``@dg.asset(...)`` and the function (Dagster still sees the function's own
    parameters, ``functools.wraps``). It adds ``duration_seconds`` (wall-clock time of the
    body) and ``engine`` (which engine ran its SQL stages, ``Warehouse.take_engine_record``)
    to the metadata, and runs the body with BLAS threads bounded (models.threads). A
    locked DuckDB file is transient: it propagates, and the job's retry policy tries again with
    backoff. Any other error is about the data or the code and would fail the same way again,
    so it becomes a ``dg.Failure`` that is not retried (its cause, shown in the UI and by the
    CLI, is the original error).
    """

    @functools.wraps(compute)
    def compute_step(*args: Params.args, **kwargs: Params.kwargs) -> dg.MaterializeResult:
        started = time.perf_counter()
        try:
            with bounded_blas_threads():
                result = compute(*args, **kwargs)
        except (dg.Failure, dg.RetryRequested):
            raise
        except Exception as error:
            if is_lock_error(error):
                raise
            raise dg.Failure(
                description=f"{type(error).__name__}: {error}", allow_retries=False
            ) from error
        seconds = round(time.perf_counter() - started, 3)
        warehouse = next((v for v in kwargs.values() if isinstance(v, Warehouse)), None)
        engine = warehouse.take_engine_record() if warehouse is not None else {}
        if isinstance(result, tuple) and not isinstance(result, dg.MaterializeResult):
            # a multi-asset's results, one per table it writes: each gets the step's duration
            return tuple(  # type: ignore[return-value]
                part._replace(
                    metadata={**(part.metadata or {}), "duration_seconds": seconds, **engine}
                )
                for part in result
            )
        return result._replace(
            metadata={**(result.metadata or {}), "duration_seconds": seconds, **engine}
        )

    return compute_step


def write_scorer_choice(
    context: dg.AssetExecutionContext,
    con: duckdb.DuckDBPyConnection,
    *,
    target: str,
    evaluation: Evaluation,
    as_of: date,
    holdout_cutoffs: list[date],
    label_horizon_days: int,
    settings: dict[str, Any],
    labels_query: str,
) -> tuple[dg.MaterializeResult, dg.MaterializeResult]:
    """Write ``models.<target>_evaluation`` and ``_reliability`` (also when empty, so no bins of
    an earlier run linger), record the choice with every candidate's metrics in
    ``models.model_runs`` and return both tables' metadata (the evaluation asset's first): one
    story for churn and delinquency."""
    chosen, reason, notes = evaluation.chosen, evaluation.choice.reason, evaluation.notes
    evaluation_table, reliability_table = (
        f"models.{target}_evaluation",
        f"models.{target}_reliability",
    )
    summary = evaluation.summary.with_columns(pl.lit(as_of).alias("as_of_date"))
    write_frame(con, evaluation_table, summary)
    last = max(holdout_cutoffs) if holdout_cutoffs else None
    write_frame(
        con,
        reliability_table,
        evaluation.reliability.with_columns(
            pl.lit(as_of).alias("as_of_date"), pl.lit(last, pl.Date).alias("holdout_cutoff")
        ),
    )
    metrics = candidate_metrics(summary)
    record_model_run(
        con,
        run_id=context.run_id,
        model=f"{target}_choice",
        as_of_date=as_of,
        parameters={
            "chosen": chosen,
            "reason": reason,
            "holdout_cutoffs": holdout_cutoffs,
            "label_horizon_days": label_horizon_days,
            "not_candidates": notes,
            "settings": settings,
        },
        metrics=metrics,
        data_fingerprint=fingerprint(con, labels_query),
    )
    context.log.info(f"{target} scorer: {chosen}: {reason}")
    evaluated = dg.MaterializeResult(
        asset_key=dg.AssetKey(evaluation_table.split(".")),
        metadata={
            **table_metadata(con, evaluation_table),
            "dagster/row_count": summary.height,
            "chosen": chosen,
            "choice_reason": reason,
            "holdout_cutoffs": [c.isoformat() for c in holdout_cutoffs],
            "label_horizon_days": label_horizon_days,
            "not_candidates": dg.MetadataValue.json(notes),
            "metrics": dg.MetadataValue.json(metrics),
            "comparison": preview(summary.drop("as_of_date")),
        },
    )
    reliability = dg.MaterializeResult(
        asset_key=dg.AssetKey(reliability_table.split(".")),
        metadata={**table_metadata(con, reliability_table), "holdout_cutoff": str(last)},
    )
    return evaluated, reliability


def kept_scorer_choice(
    con: duckdb.DuckDBPyConnection, *, target: str, plan: FitPlan
) -> tuple[dg.MaterializeResult, dg.MaterializeResult]:
    """The evaluation step of a night that scores with the kept fit: the tables keep the grading
    of that fit (they are what it was chosen on), and the metadata says so."""
    chosen = con.sql(
        f"select scorer from models.{target}_evaluation where chosen and population = 'all'"
    ).fetchall()[0][0]
    kept = {"refit": False, "refit_reason": plan.reason, "chosen": chosen}
    return tuple(  # type: ignore[return-value]
        dg.MaterializeResult(
            asset_key=dg.AssetKey(["models", table]),
            metadata={**table_metadata(con, f"models.{table}"), **kept},
        )
        for table in (f"{target}_evaluation", f"{target}_reliability")
    )


def scorer_evaluation_specs(
    target: str, deps: list[Any], group: str, graded_on: str
) -> list[dg.AssetSpec]:
    """The two tables a scorer's evaluation step writes: the grading of every candidate and the
    reliability bins of the holdout (one shape for churn and delinquency)."""
    return [
        dg.AssetSpec(
            dg.AssetKey(["models", f"{target}_evaluation"]),
            deps=deps,
            group_name=group,
            kinds={"duckdb", "scikitlearn"},
            description=f"Every {target} scorer graded on {graded_on}; the best one is chosen.",
        ),
        dg.AssetSpec(
            dg.AssetKey(["models", f"{target}_reliability"]),
            deps=deps,
            group_name=group,
            kinds={"duckdb", "scikitlearn"},
            description=f"Mean predicted against observed {target} rate in ten probability bins "
            "on the holdout: how far to trust the level (the report's reliability curve).",
        ),
    ]
