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
        "models": {"refit_every_days": 3},
        "engine": {"lake": "/srv/crm-intel/lake"},
    }
    path = tmp_path / "crm-intel.toml"
    path.write_text(
        '[run]\nas_of = "2024-06-30"\n'
        "[clv]\ntime_unit_days = 1.0\nhorizon_days = 180\n"
        "[churn]\nhorizon_days = 120\n"
        "[risk]\nsettlement_tolerance = 2.5\ndefault_payment_terms_days = 45\n"
        "[ingest]\nreject_threshold = 0.2\n"
        "[publish]\nreplace_newer = true\n"
        "[models]\nrefit_every_days = 3\n"
        '[engine]\nlake = "/srv/crm-intel/lake"\n'
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
        line.startswith("features/churn_snapshots") and "churn, clv, models, risk" in line
        for line in lines
    )
    assert any(line.startswith("ops/run_as_of") and "ops.runs" in line for line in lines)
    assert any(line.startswith("features/receivables_dso_basis") for line in lines)
    ledgers = lines.index(next(line for line in lines if line.startswith("run ledgers")))
    assert any(line.startswith("quarantine.rejected_rows") for line in lines[ledgers:])
    assert not any(line.startswith("quarantine.rejected_rows") for line in lines[:ledgers])


def _warehouse_tables(warehouse: Path) -> set[str]:
    """Every table and view of a warehouse file, in every schema."""
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {
            f"{schema}.{name}"
            for schema, name in con.sql(
                "select schema_name, table_name from duckdb_tables() "
                "where database_name = current_database() and not internal "
                "union all select schema_name, view_name from duckdb_views() "
                "where database_name = current_database() and not internal"
            ).fetchall()
        }


def test_every_warehouse_table_is_one_assets_or_a_declared_ledger(full_run) -> None:
    """After a full run, no table was written as a side effect: each is an asset's (one owner)
    or a run ledger declared in features.warehouse.RUN_LEDGERS; no asset claims a missing one."""
    from features.warehouse import RUN_LEDGERS
    from pipelines.definitions import tables_written_by_assets

    warehouse, _ = full_run
    tables = _warehouse_tables(warehouse)
    owners = tables_written_by_assets()
    assert not set(owners) & set(RUN_LEDGERS)
    assert tables - set(owners) - set(RUN_LEDGERS) == set(), "written by no asset"
    assert set(owners) - tables == set(), "claimed by an asset, not in the warehouse"
    assert set(RUN_LEDGERS) - tables == set(), "declared a ledger, not in the warehouse"
    # the tables that motivated this: each has its one asset
    assert owners["features.receivables_dso_basis"] == "features/receivables_dso_basis"
    assert owners["marts.finance_status"] == "marts/finance_status"
    assert owners["staging.customer_keys"] == "staging/customer_keys"
    assert owners["raw.invoices"] == "raw/invoices"
    assert owners["ops.runs"] == "ops/run_as_of"


# SQL files named for no table of their own, or run by more assets than the one named like them,
# and the assets whose step runs them.
SQL_RUN_BY: dict[str, tuple[str, ...]] = {
    "feat_payment_behaviour": (
        "features/payment_behaviour",
        "features/payment_behaviour_history",
        "features/churn_snapshots",
    ),
    "feat_churn_engagement": ("features/churn_snapshots",),
    "feat_churn_training_snapshots": ("features/churn_snapshots",),
    "feat_churn_purchases": ("features/churn_snapshots", "features/churn_labels"),
    "feat_clv_holdout_purchases": ("models/clv_backtest",),
    "feat_clv_tracking_actuals": ("models/clv_backtest_tracking",),
    "feat_ledger_sample_invoices": (
        "features/payment_behaviour_history",
        "features/churn_snapshots",
    ),
    "feat_ledger_sample_payments": (
        "features/payment_behaviour_history",
        "features/churn_snapshots",
    ),
    "feat_settlement_changed_customers": ("features/invoice_settlement",),
    "feat_settlement_ledger_checksum": ("features/invoice_settlement",),
}
# Prefixes of the SQL files that build an asset's table: feat_x.sql builds features.x.
LAYER_OF_PREFIX = {"feat": "features", "mart": "marts", "ops": "ops"}
# SQL files of the readers of the published snapshot (the CLI's exports, the report).
READER_PREFIXES = ("export_", "report_")


def _sql_reads() -> dict[str, set[str]]:
    """The warehouse tables each features/sql file reads (``from`` or ``join``), comments aside."""
    import re

    from features.warehouse import SCHEMAS, SQL_DIR

    table = re.compile(rf"\b(?:from|join)\s+((?:{'|'.join(SCHEMAS)})\.\w+)", re.IGNORECASE)
    return {
        path.stem: {
            name.lower() for name in table.findall(re.sub(r"--[^\n]*", "", path.read_text()))
        }
        for path in sorted(SQL_DIR.glob("*.sql"))
    }


def test_every_asset_depends_on_the_assets_of_the_tables_its_sql_reads(full_run) -> None:
    """Lineage is the truth: a table an asset's SQL reads is an upstream asset of it (or a run
    ledger its description names, or the step's own scratch table, gone after the run)."""
    import dagster as dg

    from features.publish import PUBLISHED_TABLES
    from features.warehouse import RUN_LEDGERS
    from pipelines.definitions import defs, tables_written_by_assets

    warehouse, _ = full_run
    tables = _warehouse_tables(warehouse)
    owners = tables_written_by_assets()
    graph = defs.get_repository_def().asset_graph
    reads = _sql_reads()
    assert "features.receivables_dso_basis" in reads["mart_portfolio_risk"]  # the parse works
    published_as = {table.published_as for table in PUBLISHED_TABLES if table.published_as}
    missing: list[str] = []
    for sql, read in reads.items():
        if sql.startswith(READER_PREFIXES):
            # readers open the published snapshot: every table they read is an asset's
            unknown = read - set(owners) - set(RUN_LEDGERS) - published_as
            missing += [f"{sql} reads {name}, which no asset writes" for name in unknown]
            continue
        prefix, _, name = sql.partition("_")
        assets = SQL_RUN_BY.get(sql) or (f"{LAYER_OF_PREFIX.get(prefix)}/{name}",)
        for asset in assets:
            assert asset in set(owners.values()), f"{sql}.sql: which asset runs it?"
            node = graph.get(dg.AssetKey.from_user_string(asset))
            parents = {key.to_user_string() for key in node.parent_keys} | {asset}
            for table in read:
                if table in owners:
                    if owners[table] not in parents:
                        missing.append(f"{asset} reads {table} ({sql}.sql), no dep on it")
                elif table in RUN_LEDGERS:
                    if table not in (node.description or ""):
                        missing.append(f"{asset} reads the ledger {table}, not said")
                elif table in tables:
                    missing.append(f"{asset} reads {table}, which no asset writes")
    assert not missing, "\n".join(missing)
    # the reads that motivated this, named
    for reader, table in (
        ("marts/portfolio_risk", "features/receivables_dso_basis"),
        ("features/receivables_dso", "features/receivables_dso_basis"),
        ("marts/customer_risk", "marts/finance_status"),
        ("marts/customer_equity", "marts/finance_status"),
        ("marts/portfolio_risk", "marts/finance_status"),
        ("marts/risk_alerts", "marts/finance_status"),
        ("features/customer_summary", "staging/customer_keys"),
        ("staging/invoices", "raw/invoices"),
    ):
        node = graph.get(dg.AssetKey.from_user_string(reader))
        assert dg.AssetKey.from_user_string(table) in node.parent_keys, (reader, table)
