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


def _project_imports() -> dict[str, set[tuple[str, str]]]:
    """Every project module's imports of project modules: (module, name) pairs, at any depth."""
    import ast

    imports: dict[str, set[tuple[str, str]]] = {}
    for package in ("features", "models", "pipelines", "synthetic"):
        for path in (ROOT / package).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(
                ".__init__"
            )
            found: set[tuple[str, str]] = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found |= {(node.module, alias.name) for alias in node.names}
                elif isinstance(node, ast.Import):
                    found |= {(alias.name, "") for alias in node.names}
            imports[module] = {
                (m, n) for m, n in found if m.split(".")[0] in {"features", "models", "pipelines"}
            }
    return imports


def test_layers_do_not_leak() -> None:
    """Features never import models; no private name crosses a module; no import cycle."""
    imports = _project_imports()
    for module, used in imports.items():
        if module.startswith("features"):
            assert not [m for m, _ in used if m.startswith(("models", "pipelines"))], module
        if module.startswith("models"):
            assert not [m for m, _ in used if m.startswith("pipelines")], module
        private = [f"{m}.{n}" for m, n in used if n.startswith("_") and m != module]
        assert not private, (module, private)
    graph = {module: {m for m, _ in used if m in imports} for module, used in imports.items()}

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return [*path, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
        return None

    cycles = [cycle for module in graph if (cycle := cycle_from(module))]
    assert not cycles, cycles[0]
