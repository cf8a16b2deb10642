"""Every model step runs with BLAS threads bounded, from one place (models.threads)."""

import dagster as dg
import numpy as np  # noqa: F401  (loads the BLAS library threadpoolctl then sees)
from threadpoolctl import threadpool_info, threadpool_limits

from models.threads import BLAS_THREADS
from pipelines.common import asset_step
from pipelines.definitions import all_assets


def _blas_threads() -> int:
    return max(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")


def test_an_asset_body_runs_with_blas_threads_bounded() -> None:
    # more threads than the bound outside the step, whatever the machine's cores
    with threadpool_limits(limits=BLAS_THREADS + 1, user_api="blas"):
        outside = _blas_threads()
        result = asset_step(lambda: dg.MaterializeResult(metadata={"blas": _blas_threads()}))()
        after = _blas_threads()
    assert outside == BLAS_THREADS + 1  # otherwise the bound below would prove nothing
    assert result.metadata["blas"] == BLAS_THREADS
    assert after == outside  # restored after the step


def test_every_asset_of_the_job_goes_through_asset_step() -> None:
    step_code = asset_step(lambda: None).__code__
    for assets_def in all_assets:
        body = assets_def.op.compute_fn.decorated_fn
        assert body.__code__ is step_code, assets_def.op.name
