"""Resources, from one place. Paths come from environment variables with local defaults."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from features.warehouse import ensure_layout

DEFAULT_WAREHOUSE = "data/warehouse.duckdb"
DEFAULT_INBOX = "data/inbox"
# Every asset that opens the DuckDB file shares this pool (limit 1 in dagster.yaml): DuckDB
# allows one writing process, so two steps must never race for the file lock.
DUCKDB_POOL = "duckdb"


class Warehouse(dg.ConfigurableResource):
    """The working DuckDB warehouse file.

    `memory_limit` (e.g. "8GB") and `temp_directory` bound what one run may take on a shared
    server: DuckDB's default is 80% of the machine's RAM and spilling next to the file; big
    ledgers spill instead of failing when the limit is lower (BENCHMARKS.md, credit risk).
    `retained_memory` (e.g. "8GB", at most the memory limit) is memory DuckDB allocates once and
    keeps between queries instead of handing back to the OS and faulting it in again, page by
    page, at the next query: a night of large scans runs faster (BENCHMARKS.md, credit risk) but
    the process holds that memory until it ends, so it is off unless set.
    Insertion order is not preserved: every table whose order matters is written with an ORDER
    BY, and without the guarantee DuckDB writes large tables from both threads at once.
    """

    path: str = DEFAULT_WAREHOUSE
    memory_limit: str | None = None
    temp_directory: str | None = None
    retained_memory: str | None = None

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        config: dict[str, str | bool] = {"preserve_insertion_order": False}
        if self.memory_limit:
            config["memory_limit"] = self.memory_limit
        if self.temp_directory:
            config["temp_directory"] = self.temp_directory
        if self.retained_memory:
            config.update(_retained_memory_settings(self.retained_memory))
        con = duckdb.connect(self.path, config=config)
        try:
            ensure_layout(con)
            yield con
        finally:
            con.close()


def _retained_memory_settings(size: str) -> dict[str, str]:
    """DuckDB settings that keep ``size`` of memory between queries: a block pool allocated once,
    and no flush of the allocator after a task or a bulk free below that size."""
    return {
        "block_allocator_memory": size,
        "allocator_flush_threshold": size,
        "allocator_bulk_deallocation_flush_threshold": size,
    }


class Inbox(dg.ConfigurableResource):
    """The folder the three systems export into (crm/, invoices/, credit/, fx/)."""

    path: str = DEFAULT_INBOX


def warehouse_config(path: str | None = None) -> dict[str, str]:
    """The warehouse resource's config: `path` or $CRM_INTEL_WAREHOUSE, DuckDB limits from env."""
    config = {"path": path or os.environ.get("CRM_INTEL_WAREHOUSE", DEFAULT_WAREHOUSE)}
    for field, variable in (
        ("memory_limit", "CRM_INTEL_DUCKDB_MEMORY_LIMIT"),
        ("temp_directory", "CRM_INTEL_DUCKDB_TEMP_DIRECTORY"),
        ("retained_memory", "CRM_INTEL_DUCKDB_RETAINED_MEMORY"),
    ):
        if os.environ.get(variable):
            config[field] = os.environ[variable]
    return config


def default_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "warehouse": Warehouse(**warehouse_config()),
        "inbox": Inbox(path=os.environ.get("CRM_INTEL_INBOX", DEFAULT_INBOX)),
    }
