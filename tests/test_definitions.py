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


def test_every_asset_receives_the_settings_files_values(tmp_path) -> None:
    """An asset reads a section by naming it in its signature; the file's values reach it."""
    import inspect

    from pipelines.definitions import all_assets, run_config_for, settings_read_by_assets
    from pipelines.settings import ASSET_SECTIONS, SECTIONS, load_settings, parse_settings

    changed = {
        "run": {"as_of": "2024-06-30"},
        "clv": {"time_unit_days": 1.0, "horizon_days": 180},
        "churn": {"horizon_days": 120},
        "risk": {"settlement_tolerance": 2.5, "default_payment_terms_days": 45},
        "ingest": {"reject_threshold": 0.2},
        "publish": {"replace_newer": True},
    }
    path = tmp_path / "crm-intel.toml"
    path.write_text(
        '[run]\nas_of = "2024-06-30"\n'
        "[clv]\ntime_unit_days = 1.0\nhorizon_days = 180\n"
        "[churn]\nhorizon_days = 120\n"
        "[risk]\nsettlement_tolerance = 2.5\ndefault_payment_terms_days = 45\n"
        "[ingest]\nreject_threshold = 0.2\n"
        "[publish]\nreplace_newer = true\n"
    )
    settings = load_settings(path)
    defaults = parse_settings({})
    resources = run_config_for(settings)["resources"]
    for section in ASSET_SECTIONS:
        given = resources[section]["config"]
        for key, value in changed[section].items():
            assert given[key] == value != getattr(defaults.sections[section], key), (section, key)
        assert given == settings.sections[section].model_dump(exclude_none=True)
    # every parameter typed with a section's class is named after the section and is a resource
    # of the asset, so Dagster hands it exactly resources.<section>.config
    section_of = {cls: name for name, cls in SECTIONS.items()}
    reads = settings_read_by_assets()
    for assets_def in all_assets:
        compute = assets_def.op.compute_fn.decorated_fn
        typed = {
            name: section_of[parameter.annotation]
            for name, parameter in inspect.signature(compute).parameters.items()
            if parameter.annotation in section_of
        }
        for name, section in typed.items():
            assert name == section, (assets_def.key, name)
            assert section in assets_def.required_resource_keys
        for key in assets_def.keys:
            assert set(reads[key.to_user_string()]) == set(typed), key
    # the stages that share a setting read it from the same section
    assert {"risk", "clv", "churn"} <= set(reads["features/churn_snapshots"])
    assert "risk" in reads["features/payment_behaviour"]


def test_the_asset_listing_names_every_asset_and_what_it_reads() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "pipelines.definitions"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert any(
        line.startswith("features/churn_snapshots") and "churn, clv, risk" in line for line in lines
    )
    assert any(line.startswith("ops/run_as_of") and "ops.runs" in line for line in lines)
