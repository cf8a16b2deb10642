"""The Dagster code location: every asset, check, job and schedule of crm-intel.

``crm-intel run`` executes the same job in-process, so the CLI and the UI never drift apart.
"""

import importlib
import pkgutil
import re
from typing import Any

import dagster as dg

import pipelines
from features.warehouse import RUN_LEDGERS, SCHEMAS
from pipelines.ops.automation import (
    build_failure_sensor,
    build_inbox_sensor,
    build_nightly_schedule,
)
from pipelines.ops.publish import build_published_snapshot
from pipelines.ops.step_runs import keep_failed_step_timing, keep_step_timing
from pipelines.resources import default_resources, warehouse_config
from pipelines.settings import (
    ASSET_SECTIONS,
    Settings,
    engine_at_launch,
    load_settings,
    settings_resources,
    settings_run_config,
)

NIGHTLY_JOB_NAME = "crm_intel_nightly"

# Every stage folder's assets.py and checks.py is picked up: adding a stage adds no wiring here.
STAGE_MODULES = [
    importlib.import_module(module.name)
    for module in pkgutil.walk_packages(pipelines.__path__, "pipelines.")
    if module.name.endswith((".assets", ".checks"))
]
all_assets = dg.load_assets_from_modules(STAGE_MODULES)
all_checks = dg.load_asset_checks_from_modules(STAGE_MODULES)

# The last asset of the job, downstream of every other one: a run publishes only when all of
# them, and every blocking check on them, succeeded.
published_snapshot = build_published_snapshot(
    [key for assets_def in all_assets if isinstance(assets_def, dg.AssetsDefinition)
     for key in assets_def.keys]
)  # fmt: skip
all_assets = [*all_assets, published_snapshot]

# A step that meets a locked DuckDB file is retried after about 1, 3 and 7 s (exponential
# backoff, +-1 s jitter): enough for a short-lived reader of the working warehouse (a
# `crm-intel status`) to release the lock, short enough to page within seconds if it does not.
# Only that error reaches this policy: pipelines.common.asset_step turns every other one into
# dg.Failure(allow_retries=False), and failed blocking checks are never retried.
TRANSIENT_RETRY = dg.RetryPolicy(
    max_retries=3, delay=1, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


@dg.success_hook(required_resource_keys={"run_lock"})
def holds_the_run_lock(context: dg.HookContext) -> None:
    """Does nothing itself: asking for `run_lock` makes every run of the job hold the
    warehouse's run lock (Dagster initializes what a job's hooks ask for once per run, before
    the first step, with the in-process executor)."""


nightly_job = dg.define_asset_job(
    NIGHTLY_JOB_NAME,
    selection=dg.AssetSelection.all(),
    description="Ingest the inbox, score every customer, rebuild the marts, keep history and "
    "publish the snapshot users read.",
    op_retry_policy=TRANSIENT_RETRY,
    hooks={holds_the_run_lock, keep_step_timing, keep_failed_step_timing},
    # steps run one after another anyway (one DuckDB writer); a process per step would cost a
    # full import of the code location each, about 10 s a step on a 2-core host (measured)
    executor_def=dg.in_process_executor,
)


def run_config_for(
    settings: Settings, *, warehouse: str | None = None, inbox: str | None = None
) -> dict[str, Any]:
    """Run config that carries the effective settings (and resource paths) to the assets."""
    resources: dict[str, Any] = settings_run_config(settings)
    if warehouse:
        resources["warehouse"] = {"config": warehouse_config(warehouse)}
    if inbox:
        resources["inbox"] = {"config": {"path": inbox}}
    return {"resources": resources}


# When and how runs start: [nightly] of crm-intel.toml in the working directory (a bad file
# stops the code location from loading, with the message naming the key).
file_settings = load_settings()
nightly_settings = file_settings.nightly
nightly_schedule = build_nightly_schedule(nightly_job, nightly_settings, run_config_for)
inbox_sensor = build_inbox_sensor(nightly_job, nightly_settings.inbox_poll_seconds, run_config_for)
failure_sensor = build_failure_sensor(nightly_job)

engine = engine_at_launch(file_settings)
defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[nightly_job],
    schedules=[nightly_schedule],
    sensors=[inbox_sensor, failure_sensor],
    resources={
        **default_resources(engine=engine),
        **settings_resources(file_settings),
        "engine": engine,
    },
)


def settings_read_by_assets() -> dict[str, tuple[str, ...]]:
    """Every asset (``schema/table``) and the settings sections it asks for in its signature."""
    sections = set(ASSET_SECTIONS)
    return {
        key.to_user_string(): tuple(sorted(assets_def.required_resource_keys & sections))
        for assets_def in all_assets
        for key in assets_def.keys
    }


# A table of the warehouse as an asset's ``writes`` metadata names it (anything else is a file).
WAREHOUSE_TABLE = re.compile(rf"(?:{'|'.join(SCHEMAS)})\.\w+")


def tables_written_by_assets() -> dict[str, str]:
    """Every warehouse table an asset writes, and that asset (``schema/table``).

    An asset writes the table its key names, unless its ``writes`` metadata names another one
    (``ops/run_as_of`` writes ``ops.runs``) or something outside the warehouse (the published
    snapshot file). One owner per table: two assets claiming one is an error.
    """
    graph = defs.get_repository_def().asset_graph
    owners: dict[str, str] = {}
    for assets_def in all_assets:
        for key in assets_def.keys:
            asset = key.to_user_string()
            writes = graph.get(key).metadata.get("writes") or asset.replace("/", ".")
            if not WAREHOUSE_TABLE.fullmatch(writes):
                continue
            if writes in owners:
                raise ValueError(f"{writes} written by both {owners[writes]} and {asset}")
            owners[writes] = asset
    return owners


def describe_assets() -> str:
    """One line per asset: its stage, the sections of crm-intel.toml it reads, what it writes;
    then the run ledgers (``features.warehouse.RUN_LEDGERS``), which no asset owns."""
    graph = defs.get_repository_def().asset_graph
    lines = [f"{'asset':<42}{'stage':<16}{'reads settings':<22}writes"]
    for asset, sections in sorted(settings_read_by_assets().items()):
        node = graph.get(dg.AssetKey.from_user_string(asset))
        writes = node.metadata.get("writes") or asset.replace("/", ".")
        lines.append(f"{asset:<42}{node.group_name:<16}{', '.join(sections) or '-':<22}{writes}")
    lines += [
        "",
        "run ledgers: appended to by several steps or by the run machinery, so no asset owns them",
        f"{'table':<28}written by / read by",
    ]
    for table, ledger in sorted(RUN_LEDGERS.items()):
        lines += [f"{table:<28}{ledger.written_by}", f"{'':<28}read by {ledger.read_by}"]
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe_assets())
