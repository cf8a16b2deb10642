import subprocess
import sys
from pathlib import Path

from pipelines.definitions import NIGHTLY_JOB_NAME, defs

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_load_with_job_schedule_and_checks() -> None:
    repository = defs.get_repository_def()
    job = defs.resolve_job_def(NIGHTLY_JOB_NAME)
    assert job is not None
    assert [s.name for s in repository.schedule_defs] == ["crm_intel_nightly_schedule"]
    keys = {key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()}
    assert {"staging/invoices", "models/clv_scores", "marts/customer_360"} <= keys


def test_dagster_definitions_validate() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "pipelines.definitions"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_features_and_models_never_import_dagster() -> None:
    for package in ("features", "models", "synthetic"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            assert "import dagster" not in text and "from dagster" not in text, path
