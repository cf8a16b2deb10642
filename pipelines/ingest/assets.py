"""Ingest: one staging asset per input file group, generated from the contracts."""

from pathlib import Path

import dagster as dg

from features.contracts import CONTRACTS, Contract
from features.ingest import ingest_group
from pipelines.resources import DUCKDB_POOL, Inbox, Warehouse


def build_staging_asset(contract: Contract) -> dg.AssetsDefinition:
    @dg.asset(
        key=["staging", contract.table],
        group_name="ingest",
        kinds={"duckdb", "polars"},
        pool=DUCKDB_POOL,
        description=f"{contract.description} Typed, deduplicated; bad rows quarantined.",
    )
    def staging_table(
        context: dg.AssetExecutionContext, warehouse: Warehouse, inbox: Inbox
    ) -> dg.MaterializeResult:
        with warehouse.connect() as con:
            result = ingest_group(con, Path(inbox.path), contract, context.run_id)
        if not result.present:
            context.log.warning(
                f"no {contract.group}* file in the inbox: staging.{contract.table} is empty "
                "and the stages that use it run without it"
            )
        if result.quarantined_rows:
            context.log.warning(
                f"{result.quarantined_rows} row(s) of {contract.group} quarantined: "
                f"{result.reasons}"
            )
        return dg.MaterializeResult(
            metadata={
                "source_present": result.present,
                "files": dg.MetadataValue.json(list(result.files)),
                "raw_rows": result.raw_rows,
                "dagster/row_count": result.staged_rows,
                "quarantined_rows": result.quarantined_rows,
                "quarantine_reasons": dg.MetadataValue.json(result.reasons),
            }
        )

    return staging_table


staging_assets = [build_staging_asset(contract) for contract in CONTRACTS]
