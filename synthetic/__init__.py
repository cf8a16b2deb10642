"""Synthetic CRM / invoice / bureau exports with known ground truth."""

from synthetic.generator import (
    FAULT_KINDS,
    FILE_GROUPS,
    REGIMES,
    GenerationSummary,
    TrueParameters,
    generate_demo_data,
)

__all__ = [
    "FAULT_KINDS",
    "FILE_GROUPS",
    "REGIMES",
    "GenerationSummary",
    "TrueParameters",
    "generate_demo_data",
]
