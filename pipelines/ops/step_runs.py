"""Every step's timing kept in the warehouse (``ops.step_runs``), whatever Dagster instance ran it.

Dagster keeps step durations in its instance; ``crm-intel run`` without ``DAGSTER_HOME`` uses a
throwaway one, so which step took how long would be gone after the run. Two job hooks copy each
step's start, duration, rows written (the ``dagster/row_count`` of its materializations) and
outcome into the warehouse the step wrote, where ``crm-intel status --steps`` reads them.
"""

from datetime import datetime

import dagster as dg

from pipelines.resources import Warehouse


def _keep(context: dg.HookContext, outcome: str) -> None:
    warehouse: Warehouse = context.resources.warehouse
    stats = context.instance.get_run_step_stats(context.run_id, step_keys=[context.step_key])
    started = stats[0].start_time if stats else None
    ended = (stats[0].end_time if stats else None) or datetime.now().timestamp()
    rows = [
        int(value.value)
        for event in (stats[0].materialization_events if stats else ())
        if event.asset_materialization is not None
        for key, value in event.asset_materialization.metadata.items()
        if key == "dagster/row_count"
    ]
    warehouse.keep_step_run(
        run_id=context.run_id,
        step=context.step_key,
        started_at=datetime.fromtimestamp(started) if started else None,
        seconds=round(ended - started, 3) if started else None,
        rows=sum(rows) if rows else None,
        outcome=outcome,
    )


@dg.success_hook(required_resource_keys={"warehouse"})
def keep_step_timing(context: dg.HookContext) -> None:
    """A succeeded step's timing, for ``ops.step_runs``."""
    _keep(context, "succeeded")


@dg.failure_hook(required_resource_keys={"warehouse"})
def keep_failed_step_timing(context: dg.HookContext) -> None:
    """A failed step's timing, for ``ops.step_runs``."""
    _keep(context, "failed")
