"""Ingest: one staging asset per input file group, generated from the contracts."""

from pathlib import Path

import dagster as dg

from features.contracts import CONTRACTS, Contract
from features.erasure import ERASED_REASON
from features.ingest import CUSTOMER_KEYED_TABLES, InboxError, data_quality_inputs, ingest_group
from features.warehouse import materialize_sql
from pipelines.common import asset_step, run_as_of, table_metadata
from pipelines.resources import DUCKDB_POOL, Inbox, Warehouse
from pipelines.settings import IngestSettings

CUSTOMER_KEYS = dg.AssetKey(["staging", "customer_keys"])


def build_staging_asset(contract: Contract) -> dg.AssetsDefinition:
    """One step per file group: ``raw.<table>`` (every loaded file's rows) and ``staging.<table>``
    (typed, deduplicated); ``staging.customer_keys`` too where the table carries the key."""
    raw = dg.AssetKey(["raw", contract.table])
    staging = dg.AssetKey(["staging", contract.table])
    keyed = contract.table in CUSTOMER_KEYED_TABLES
    specs = [
        dg.AssetSpec(
            staging,
            # referential rules (unknown_customer, unknown_invoice) and FX conversion read these
            deps=[
                raw,
                *([CUSTOMER_KEYS] if keyed else []),
                *(dg.AssetKey(["staging", table]) for table in contract.depends_on),
            ],
            group_name="ingest",
            kinds={"duckdb", "polars"},
            description=f"{contract.description} Typed, deduplicated; bad rows quarantined "
            "(quarantine.rejected_rows), every file recorded (ops.loaded_files).",
        ),
        dg.AssetSpec(
            raw,
            group_name="ingest",
            kinds={"duckdb", "polars"},
            description=f"Every row of every {contract.group}* file loaded so far, as text, with "
            "the file's content hash (load_id) and line: what staging is rebuilt from.",
        ),
    ]
    if keyed:
        specs.append(
            dg.AssetSpec(
                CUSTOMER_KEYS,
                deps=[raw],
                group_name="ingest",
                kinds={"duckdb"},
                description="A dense integer key per staged customer id, in id order: what "
                "per-customer summaries group by.",
            )
        )

    # one result per table, which Dagster reads off the return annotation
    Results = tuple[(dg.MaterializeResult,) * len(specs)]

    @dg.multi_asset(specs=specs, name=f"staging__{contract.table}", pool=DUCKDB_POOL)
    @asset_step
    def staging_table(
        context: dg.AssetExecutionContext,
        ingest: IngestSettings,
        warehouse: Warehouse,
        inbox: Inbox,
    ) -> Results:
        with warehouse.connect() as con:
            try:
                result = ingest_group(
                    con, Path(inbox.path), contract, context.run_id, ingest.options()
                )
            except InboxError as error:
                raise dg.Failure(description=str(error), allow_retries=False) from error
            tables = {
                staging: table_metadata(con, f"staging.{contract.table}"),
                raw: table_metadata(con, f"raw.{contract.table}"),
                **({CUSTOMER_KEYS: table_metadata(con, "staging.customer_keys")} if keyed else {}),
            }
        gone = [
            f"{source_file} (load {load_id[:12]}, {rows} row(s))"
            for source_file, load_id, rows in result.gone_files
        ]
        if not result.present and result.staged_rows:
            context.log.warning(
                f"no {contract.group}* file in the inbox now: staging.{contract.table} keeps "
                f"{result.staged_rows} row(s) of earlier loads of files no longer there: "
                f"{', '.join(gone) or 'none'}"
            )
        elif gone:
            context.log.info(
                f"no longer in the inbox, rows still staged (deliveries never delete): "
                f"{', '.join(gone)}"
            )
        elif not result.present and contract.quiet_when_absent:
            context.log.info(
                f"no {contract.group}* file in the inbox: staging.{contract.table} is empty; "
                "only rows that need it are affected (and quarantined)"
            )
        elif not result.present:
            context.log.warning(
                f"no {contract.group}* file in the inbox: staging.{contract.table} is empty "
                "and the stages that use it run without it"
            )
        if result.reasons.get("unknown_currency"):
            context.log.warning(
                f"{result.reasons['unknown_currency']} {contract.group} row(s) in a currency "
                f"with no FX rate to {ingest.base_currency} quarantined as unknown_currency"
            )
        for warning in result.warnings:
            context.log.warning(warning)
        for skipped in result.skipped_rules:
            context.log.warning(f"rule skipped for {contract.group}: {skipped}")
        if result.build == "kept":
            context.log.info(
                f"staging.{contract.table} kept as it was: no new file, and nothing its checks "
                "read has changed"
            )
        elif result.build == "merged":
            context.log.info(
                f"staging.{contract.table}: the new files' rows merged in, the rows staged before "
                "kept (nothing they were checked against changed)"
            )
        if result.duplicate_files:
            context.log.info(f"already loaded, skipped: {', '.join(result.duplicate_files)}")
        if result.quarantined_rows:
            context.log.warning(
                f"{result.quarantined_rows} row(s) of {contract.group} quarantined: "
                f"{result.reasons}"
            )
        staged = dg.MaterializeResult(
            asset_key=staging,
            metadata={
                **tables[staging],
                "source_present": result.present,
                # kept as it was, new loads merged in, or rebuilt from raw (ops.staging_builds)
                "staging_build": result.build,
                "files": dg.MetadataValue.json(list(result.files)),
                "new_files": dg.MetadataValue.json(list(result.new_files)),
                "duplicate_files": dg.MetadataValue.json(list(result.duplicate_files)),
                "raw_rows": result.raw_rows,
                "dagster/row_count": result.staged_rows,
                "quarantined_rows": result.quarantined_rows,
                # rows of erased customers or contacts kept out by their tombstones
                "erased_rows": result.reasons.get(ERASED_REASON, 0),
                "superseded_rows": result.superseded_rows,
                "quarantine_reasons": dg.MetadataValue.json(result.reasons),
                "skipped_rules": dg.MetadataValue.json(list(result.skipped_rules)),
                "validation": dg.MetadataValue.json(result.validations),
                "file_warnings": dg.MetadataValue.json(list(result.warnings)),
                "files_gone": dg.MetadataValue.json(
                    [
                        {"source_file": f, "load_id": load_id, "staged_rows": rows}
                        for f, load_id, rows in result.gone_files
                    ]
                ),
            },
        )
        # in lineage order, as Dagster wants a step's results: raw, customer keys, staging
        results = [
            dg.MaterializeResult(
                asset_key=raw,
                metadata={
                    **tables[raw],
                    "new_files": dg.MetadataValue.json(list(result.new_files)),
                },
            )
        ]
        if keyed:
            results.append(
                dg.MaterializeResult(asset_key=CUSTOMER_KEYS, metadata=tables[CUSTOMER_KEYS])
            )
        return (*results, staged)

    return staging_table


staging_assets = [build_staging_asset(contract) for contract in CONTRACTS]


@dg.asset(
    key=["ops", "data_quality"],
    # and the run ledgers ops.loaded_files and quarantine.rejected_rows, which no asset owns
    deps=[
        dg.AssetKey(["ops", "run_as_of"]),
        *(dg.AssetKey(["staging", contract.table]) for contract in CONTRACTS),
    ],
    group_name="ingest",
    kinds={"duckdb"},
    pool=DUCKDB_POOL,
)
@asset_step
def data_quality(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """Rows staged, quarantined (per reason), superseded or refused, per source file.

    Read from the run ledgers every staging step appends to, ops.loaded_files and
    quarantine.rejected_rows. Counts only: the published snapshot carries it, so the report can
    show the data quality of the night without raw rows or quarantined content leaving the
    working warehouse.
    """
    params, fragments = data_quality_inputs()
    with warehouse.connect() as con:
        materialize_sql(
            con,
            "ops.data_quality",
            "ops_data_quality",
            fragments=fragments,
            as_of=run_as_of(con, context.run_id),
            **params,
        )
        metadata = table_metadata(con, "ops.data_quality")
        totals = dict(
            con.sql("select outcome, sum(rows) from ops.data_quality group by 1").fetchall()
        )
    return dg.MaterializeResult(
        metadata={**metadata, **{f"{outcome}_rows": int(n) for outcome, n in totals.items()}}
    )
