"""The settings classes are the one source of every default: the pure layer takes each setting
as a required argument, and the objects the settings build carry the file's values."""

import inspect
from collections.abc import Callable
from pathlib import Path

import pytest

from features.churn import build_churn_snapshots
from features.customer import lifetimes_summary
from features.ingest import IngestOptions
from features.point_in_time import labelled_cutoffs, training_cutoffs, training_sample_fraction
from features.receivables import (
    build_delinquency_labels,
    build_dso,
    build_invoice_settlement,
    build_receivables,
    build_risk_alerts,
    refresh_invoice_settlement,
)
from models.churn import ChurnModel, PurchaseBaseline, churn_risk_band
from models.clv import ClvModel
from models.delinquency import DelinquencyModel, delinquency_class
from models.scorecard import CalibratedScorecard
from pipelines.settings import SECTIONS, load_settings

SETTING_NAMES = {name for section in SECTIONS.values() for name in section.model_fields}

# Each pure entry point that takes settings, with its parameters that carry one whose name
# differs from the setting's (``months`` is ``[risk] dso_months``); every parameter named like
# a setting is checked as well.
ENTRY_POINTS: dict[Callable, tuple[str, ...]] = {
    ClvModel: (),
    IngestOptions: ("validate",),
    ChurnModel: (),
    DelinquencyModel: (),
    CalibratedScorecard: (),
    PurchaseBaseline: ("clv",),
    labelled_cutoffs: ("count",),
    training_cutoffs: ("count",),
    training_sample_fraction: (),
    build_churn_snapshots: ("scoring_horizon_days",),
    lifetimes_summary: (),
    build_dso: ("months",),
    refresh_invoice_settlement: ("full_rebuild_days",),
    build_invoice_settlement: (),
    build_receivables: (),
    build_risk_alerts: ("lookback_days", "failure_score_drop"),
    build_delinquency_labels: (),
    churn_risk_band: ("cut_points",),
    delinquency_class: ("cut_points",),
}

NOT_DEFAULTS = """
[clv]
time_unit_days = 1.0
horizon_days = 730
annual_discount_rate = 0.05
penalizer = 0.01
interval = 0.9
n_bootstrap = 31
min_repeat_customers = 12
purchase_model = "pareto_nbd"

[churn]
calibration = "isotonic"

[risk]
calibration = "isotonic"

[ingest]
base_currency = "CHF"
reject_threshold = 0.25
settle_seconds = 30.0
mappings_dir = "vendor-mappings"
validate_files = false
validation_sample_rows = 1000
"""


@pytest.mark.parametrize("entry_point", ENTRY_POINTS, ids=lambda f: f.__qualname__)
def test_settings_have_no_default_in_the_pure_layer(entry_point: Callable) -> None:
    parameters = inspect.signature(entry_point).parameters
    carried = [name for name in parameters if name in SETTING_NAMES]
    carried += ENTRY_POINTS[entry_point]
    assert carried, f"{entry_point.__qualname__} takes no setting: remove it from the list"
    with_default = [
        name for name in carried if parameters[name].default is not inspect.Parameter.empty
    ]
    assert not with_default, (
        f"{entry_point.__qualname__} has defaults for {with_default}: the settings classes in "
        "pipelines/settings.py hold them"
    )


@pytest.fixture
def settings(tmp_path: Path):
    path = tmp_path / "crm-intel.toml"
    path.write_text(NOT_DEFAULTS)
    return load_settings(path)


def test_the_clv_model_carries_every_clv_setting_of_the_file(settings) -> None:
    model = settings.clv.model()
    taken = [name for name in inspect.signature(ClvModel).parameters if name in SETTING_NAMES]
    assert len(taken) == 8
    for name in taken:
        default = type(settings.clv).model_fields[name].default
        assert getattr(settings.clv, name) != default, f"{name}: the file must change it"
        assert getattr(model, name) == getattr(settings.clv, name), name
    assert settings.clv.model(n_bootstrap=1).n_bootstrap == 1


def test_the_ingest_options_carry_the_file(settings) -> None:
    assert settings.ingest.options() == IngestOptions(
        base_currency="CHF",
        reject_threshold=0.25,
        settle_seconds=30.0,
        mappings_dir=Path("vendor-mappings"),
        validate=False,
        validation_sample_rows=1000,
    )


def test_the_scorers_carry_the_file(settings) -> None:
    assert settings.churn.model().calibration == "isotonic"
    assert settings.churn.model({"payments": "no file"}).missing_groups == {"payments": "no file"}
    assert settings.risk.model().calibration == "isotonic"


def test_the_churn_baseline_is_bg_nbd_with_the_clv_settings(settings) -> None:
    baseline = PurchaseBaseline(settings.clv.model(purchase_model="bg_nbd"))
    assert baseline.time_unit_days == 1.0
    assert baseline.clv.min_repeat_customers == 12
    with pytest.raises(ValueError, match="BG/NBD"):
        PurchaseBaseline(settings.clv.model())
