"""The last asset of every run: publish the read-only snapshot that users read."""

from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from features.publish import (
    PublishError,
    default_snapshot_path,
    lake_current,
    newer_snapshot_reason,
    publish_snapshot,
)
from pipelines.common import asset_step, run_as_of
from pipelines.resources import DUCKDB_POOL, Warehouse
from pipelines.settings import PublishSettings

PUBLISHED_SNAPSHOT = dg.AssetKey(["ops", "published_snapshot"])


def snapshot_path(config: PublishSettings, warehouse: str | Path) -> Path:
    return Path(config.path) if config.path else default_snapshot_path(Path(warehouse))


def build_published_snapshot(upstream: Sequence[dg.AssetKey]) -> dg.AssetsDefinition:
    """The publish asset, downstream of every asset of the job.

    Depending on every asset directly means a failed asset, or a failed blocking check on any
    of them, skips the publish: readers keep the last good snapshot.
    """

    @dg.asset(
        key=PUBLISHED_SNAPSHOT,
        deps=sorted(set(upstream) - {PUBLISHED_SNAPSHOT}, key=lambda key: key.to_user_string()),
        group_name="ops",
        kinds={"duckdb"},
        pool=DUCKDB_POOL,
        metadata={"writes": "the published snapshot file (recorded in ops.publications)"},
    )
    @asset_step
    def published_snapshot(
        context: dg.AssetExecutionContext, publish: PublishSettings, warehouse: Warehouse
    ) -> dg.MaterializeResult:
        """The read-only snapshot (features.publish.PUBLISHED_TABLES) that readers open."""
        target = snapshot_path(publish, warehouse.path)
        lake = warehouse.lake()
        if not publish.enabled:
            context.log.info(f"publishing is off for this run: {target} stays as it was")
            return dg.MaterializeResult(metadata={"published": False, "snapshot": str(target)})
        with warehouse.connect() as con:
            as_of = run_as_of(con, context.run_id)
            newer = None if publish.replace_newer else newer_snapshot_reason(target, as_of)
            if newer:
                context.log.warning(newer)
                return dg.MaterializeResult(
                    metadata={
                        "published": False,
                        "snapshot": str(target),
                        "as_of_date": str(as_of),
                        "reason": newer,
                    }
                )
            try:
                publication = publish_snapshot(
                    con,
                    Path(warehouse.path),
                    target,
                    run_id=context.run_id,
                    as_of_date=as_of,
                    lake=lake,
                )
            except PublishError as error:
                raise dg.Failure(description=str(error), allow_retries=False) from error
        context.log.info(f"published {target} as of {as_of}")
        metadata = {
            "published": True,
            "snapshot": dg.MetadataValue.path(str(target)),
            "as_of_date": str(as_of),
            "size_mb": round(publication.size_bytes / 1e6, 2),
            "tables": publication.tables,
        }
        if lake is not None:  # the same tables as Parquet, for readers on the cluster
            context.log.info(f"published the same tables to {lake_current(lake)}")
            metadata["lake"] = dg.MetadataValue.path(str(lake_current(lake)))
        return dg.MaterializeResult(metadata=metadata)

    return published_snapshot
