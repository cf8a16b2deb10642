"""Scoring every customer on Spark's executors with a scorer fitted on the driver.

Fits stay on a bounded, reproducible sample collected to one machine (the training caps do
that already); scoring is per customer, so it spreads over the cluster. The scoring function (a
``functools.partial`` of a pure scoring function with the fitted scorer bound) is broadcast once,
and each Arrow batch of a partition becomes a polars frame, is scored there, reasons included,
and goes back as Arrow in the declared schema.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import polars as pl
import pyarrow as pa

# polars type -> (Spark SQL type, Arrow type Spark reads it back as)
_TYPES: dict[Any, tuple[str, pa.DataType]] = {
    pl.String: ("string", pa.string()),
    pl.Date: ("date", pa.date32()),
    pl.Float64: ("double", pa.float64()),
    pl.Float32: ("float", pa.float32()),
    pl.Boolean: ("boolean", pa.bool_()),
    pl.Int64: ("bigint", pa.int64()),
    pl.Int32: ("int", pa.int32()),
}


def _spark_schema(schema: Mapping[str, Any]) -> tuple[str, pa.Schema]:
    unknown = [f"{name}: {dtype}" for name, dtype in schema.items() if dtype not in _TYPES]
    if unknown:
        raise TypeError(f"no Spark type for {', '.join(unknown)}")
    ddl = ", ".join(f"`{name}` {_TYPES[dtype][0]}" for name, dtype in schema.items())
    arrow = pa.schema([(name, _TYPES[dtype][1]) for name, dtype in schema.items()])
    return ddl, arrow


def score_on_spark(
    frame: Any, score: Callable[[pl.DataFrame], pl.DataFrame], schema: Mapping[str, Any]
) -> Any:
    """``score`` applied to every partition of the Spark DataFrame ``frame``, on the executors.

    ``score`` must be picklable without closures (a ``functools.partial`` of a module-level
    function) and must score each customer from that customer's row alone, so that any split
    of the customers into batches gives the same scores; ``schema`` is its output's polars
    schema.
    """
    ddl, arrow_schema = _spark_schema(schema)
    shared = frame.sparkSession.sparkContext.broadcast(score)

    def score_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            scored = shared.value(pl.from_arrow(batch))
            yield from scored.to_arrow().cast(arrow_schema).to_batches()

    return frame.mapInArrow(score_batches, ddl)
