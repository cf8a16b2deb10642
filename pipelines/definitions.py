"""The Dagster code location: every asset, check, job and schedule of crm-intel.

``crm-intel run`` executes the same job in-process, so the CLI and the UI never drift apart.
"""

import importlib
import pkgutil
from typing import Any

import dagster as dg

import pipelines
from features.contracts import CONTRACTS
from pipelines.resources import default_resources
from pipelines.settings import Settings

NIGHTLY_JOB_NAME = "crm_intel_nightly"

# Every stage folder's assets.py and checks.py is picked up: adding a stage adds no wiring here.
STAGE_MODULES = [
    importlib.import_module(module.name)
    for module in pkgutil.walk_packages(pipelines.__path__, "pipelines.")
    if module.name.endswith((".assets", ".checks"))
]
all_assets = dg.load_assets_from_modules(STAGE_MODULES)
all_checks = dg.load_asset_checks_from_modules(STAGE_MODULES)

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
    "models__clv_backtest": "clv",
    **{f"staging__{contract.table}": "ingest" for contract in CONTRACTS},
    "marts__receivables_aging": "risk",
    "features__receivables_dso": "risk",
    "features__invoice_settlement": "risk",
    "features__delinquency_training": "risk",
    "models__delinquency_evaluation": "risk",
    "models__delinquency_scores": "risk",
    "marts__customer_risk": "risk",
    "marts__risk_alerts": "risk",
    "features__churn_snapshots": "churn",
    "models__churn_evaluation": "churn",
    "models__churn_scores": "churn",
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
