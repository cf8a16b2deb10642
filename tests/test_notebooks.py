"""Notebooks run top to bottom against a real warehouse (their code cells, in order)."""

import json
import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_notebook_runs(notebook: Path, full_run: tuple[Path, str], monkeypatch) -> None:
    warehouse, _ = full_run
    monkeypatch.setenv("CRM_INTEL_WAREHOUSE", str(warehouse))
    cells = json.loads(notebook.read_text())["cells"]
    namespace: dict = {}
    for cell in cells:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{notebook.name}", "exec"), namespace)
    assert os.environ["CRM_INTEL_WAREHOUSE"] == str(warehouse)
    assert namespace["runs"].height > 0
