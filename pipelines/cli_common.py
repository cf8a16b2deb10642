"""What every ``crm-intel`` command shares: where the warehouse is, how to fail, how to read."""

import os
from pathlib import Path
from typing import Annotated

import duckdb
import typer

from pipelines.resources import DEFAULT_WAREHOUSE
from pipelines.settings import SettingsError, load_settings

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Settings TOML (default: ./crm-intel.toml).")
]
WarehouseOption = Annotated[
    Path | None,
    typer.Option(
        "--warehouse", help=f"DuckDB file (default: $CRM_INTEL_WAREHOUSE or {DEFAULT_WAREHOUSE})."
    ),
]


def warehouse_path_of(option: Path | None) -> Path:
    return option or Path(os.environ.get("CRM_INTEL_WAREHOUSE", DEFAULT_WAREHOUSE))


def fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def published_path(warehouse_path: Path, settings=None) -> Path:
    """Where the read-only snapshot of this warehouse is published ([publish] path)."""
    from pipelines.ops.publish import snapshot_path

    if settings is None:
        try:
            settings = load_settings()
        except SettingsError as error:
            raise fail(str(error)) from None
    return snapshot_path(settings.publish, warehouse_path)


def publication_outcome(warehouse_path: Path, settings) -> str:
    """Whether the run just finished was published and, if not, why: said plainly."""
    from features.publish import newer_snapshot_reason, published_as_of

    target = published_path(warehouse_path, settings)
    if not settings.publish.enabled:
        return f"not published: [publish] enabled = false; {target} stays as it was"
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        run_id, as_of = con.sql(
            "select run_id, as_of_date from ops.runs order by started_at desc limit 1"
        ).fetchall()[0]
    published = published_as_of(target)
    if published and published[0] == run_id:
        return f"published: {target}"
    return newer_snapshot_reason(target, as_of) or f"not published: {target} is as it was"


def read_published(warehouse: Path | None) -> duckdb.DuckDBPyConnection:
    """The published snapshot: never locked by a run, never half a run."""
    path = published_path(warehouse_path_of(warehouse))
    if not path.is_file():
        raise fail(
            f"nothing published at {path} yet: `crm-intel run` publishes it when a run succeeds"
        )
    try:
        return duckdb.connect(str(path), read_only=True)
    except duckdb.Error as error:
        raise fail(
            f"{path} is not a readable snapshot ({error}); the next `crm-intel run` publishes it "
            "again"
        ) from None


def refuse_to_overwrite(out: Path, warehouse: Path | None) -> None:
    """An export never replaces the working warehouse, the published snapshot or any database."""
    from features.publish import is_duckdb_file

    working = warehouse_path_of(warehouse)
    protected = {
        "the working warehouse": working,
        "the published snapshot": published_path(working),
    }
    for what, path in protected.items():
        for file in (path, Path(f"{path}.wal")):
            if out.resolve() == file.resolve():
                raise fail(f"--out {out} is {what}; choose another file for the export")
    if is_duckdb_file(out):
        raise fail(f"--out {out} is a DuckDB database; choose another file for the export")
