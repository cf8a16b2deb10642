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
    """The working DuckDB warehouse file."""

    path: str = DEFAULT_WAREHOUSE

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(self.path)
        try:
            ensure_layout(con)
            yield con
        finally:
            con.close()


class Inbox(dg.ConfigurableResource):
    """The folder the three systems export into (crm/, invoices/, credit/, fx/)."""

    path: str = DEFAULT_INBOX


def default_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "warehouse": Warehouse(path=os.environ.get("CRM_INTEL_WAREHOUSE", DEFAULT_WAREHOUSE)),
        "inbox": Inbox(path=os.environ.get("CRM_INTEL_INBOX", DEFAULT_INBOX)),
    }
