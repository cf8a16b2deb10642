"""How many BLAS threads a model may use, set here once for every fit and scoring.

The nightly job runs one step at a time on a shared host, and the matrices are small
(customers x a few parameters, or a few dozen scorecard columns): BLAS threads gain nothing and,
when the host is busy, oversubscribed cores slow a step many times over. Every model step of the
pipeline runs inside ``bounded_blas_threads`` (``pipelines.common.asset_step``), and the models
enter it themselves where they are used on their own (benchmarks, notebooks).
"""

from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import threadpool_limits

BLAS_THREADS = 1


@contextmanager
def bounded_blas_threads() -> Iterator[None]:
    """BLAS (OpenBLAS, MKL) limited to ``BLAS_THREADS`` inside the block, restored after it."""
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        yield
