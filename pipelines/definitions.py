"""The Dagster code location: every asset, check, job and schedule of crm-intel.

``crm-intel run`` executes the same job in-process, so the CLI and the UI never drift apart.
"""

from typing import Any

import dagster as dg

from pipelines.customer_value import assets as customer_value_assets
from pipelines.ingest import assets as ingest_assets
from pipelines.ingest import checks as ingest_checks
from pipelines.marts import assets as mart_assets
from pipelines.marts import checks as mart_checks
from pipelines.resources import default_resources
from pipelines.settings import Settings

NIGHTLY_JOB_NAME = "crm_intel_nightly"

all_assets = [
    *ingest_assets.staging_assets,
    *dg.load_assets_from_modules([customer_value_assets, mart_assets]),
]
all_checks = dg.load_asset_checks_from_modules([ingest_checks, mart_checks])

nightly_job = dg.define_asset_job(
    NIGHTLY_JOB_NAME,
    selection=dg.AssetSelection.all(),
    description="Ingest the inbox, score every customer and rebuild the marts.",
)

nightly_schedule = dg.ScheduleDefinition(
    name="crm_intel_nightly_schedule",
    job=nightly_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    description="Every night at 02:00 UTC, after the exports land.",
)

# Which settings section configures which asset op: the file's [clv] table is the clv_scores
# asset's run config, and so on.
SETTINGS_CONSUMERS: dict[str, str] = {
    "ops__run_as_of": "run",
    "models__clv_scores": "clv",
}


def run_config_for(
    settings: Settings, *, warehouse: str | None = None, inbox: str | None = None
) -> dict[str, Any]:
    """Run config that carries the effective settings (and resource paths) to the assets."""
    config: dict[str, Any] = {
        "ops": {
            op: {"config": settings.sections[section].model_dump(exclude_none=True)}
            for op, section in SETTINGS_CONSUMERS.items()
        }
    }
    resources: dict[str, Any] = {}
    if warehouse:
        resources["warehouse"] = {"config": {"path": warehouse}}
    if inbox:
        resources["inbox"] = {"config": {"path": inbox}}
    if resources:
        config["resources"] = resources
    return config


defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[nightly_job],
    schedules=[nightly_schedule],
    resources=default_resources(),
)
