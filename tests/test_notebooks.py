"""Every notebook runs top to bottom in a real Jupyter kernel against a real published snapshot.

The kernel is this venv's Python (ipykernel's ``python3``), started by nbclient as Jupyter
would; the warehouse reaches it through ``$CRM_INTEL_WAREHOUSE``, as it does for a user. The
notebooks are kept without outputs in git; the executed copy lives in memory only.
"""

import json
from pathlib import Path

import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PLOTLY_MIMETYPE = "application/vnd.plotly.v1+json"


def test_there_are_notebooks_and_they_are_stored_without_outputs() -> None:
    assert NOTEBOOKS
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        code = [cell for cell in cells if cell["cell_type"] == "code"]
        assert code, path.name
        assert all(not cell["outputs"] and cell["execution_count"] is None for cell in code), (
            f"{path.name} holds outputs: clear them before committing"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_notebook_runs_and_draws(path: Path, full_run: tuple[Path, str], monkeypatch) -> None:
    warehouse, _ = full_run
    monkeypatch.setenv("CRM_INTEL_WAREHOUSE", str(warehouse))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output["output_type"] == "error"]
    plots = [output for output in outputs if PLOTLY_MIMETYPE in output.get("data", {})]
    assert plots, f"{path.name} drew no plot"
    for plot in plots:
        figure = plot["data"][PLOTLY_MIMETYPE]
        assert figure["data"], f"{path.name}: a plot without traces"
    printed = "".join(output.get("text", "") for output in outputs)
    assert str(warehouse.parent) in printed  # it read the snapshot beside this warehouse
