from pathlib import Path

import pytest

from pipelines.settings import SettingsError, load_settings, parse_settings


def test_defaults_are_documented_values() -> None:
    settings = parse_settings({})
    assert settings.clv.time_unit_days == 7
    assert settings.clv.horizon_days == 365
    assert settings.churn.horizon_days == 180
    assert settings.risk.lgd == pytest.approx(0.45)
    assert settings.run.as_of is None


def test_file_values_override_defaults(tmp_path: Path) -> None:
    path = tmp_path / "crm-intel.toml"
    path.write_text("[clv]\ntime_unit_days = 1\nannual_discount_rate = 0.08\n")
    settings = load_settings(path)
    assert settings.clv.time_unit_days == 1
    assert settings.clv.annual_discount_rate == pytest.approx(0.08)
    assert settings.clv.horizon_days == 365


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"clv": {"time_unit_dayz": 7}}, "time_unit_dayz"),
        ({"clvv": {}}, "[clvv]"),
        ({"risk": {"lgd": "high"}}, "lgd"),
    ],
)
def test_unknown_or_bad_keys_are_named(data: dict, named: str) -> None:
    with pytest.raises(SettingsError, match=named.replace("[", r"\[").replace("]", r"\]")):
        parse_settings(data)


def test_overrides_win_over_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[run]\nas_of = "2024-01-01"\n')
    settings = load_settings(path, overrides={"run": {"as_of": "2024-06-30"}})
    assert settings.run.as_of == "2024-06-30"


def test_round_trip_through_toml(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(parse_settings({"clv": {"horizon_days": 180}}).to_toml())
    assert load_settings(path).clv.horizon_days == 180
