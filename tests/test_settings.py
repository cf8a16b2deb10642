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


@pytest.mark.parametrize(
    ("section", "key", "value", "valid"),
    [
        ("clv", "interval", 1.5, "a number > 0 and < 1"),
        ("clv", "horizon_days", -5, "a whole number >= 1"),
        ("clv", "horizon_days", 30.5, "a whole number >= 1"),
        ("clv", "n_bootstrap", "200", "a whole number >= 1"),
        ("churn", "horizon_days", 0, "a whole number >= 1"),
        ("churn", "calibration", "platt", 'one of "sigmoid", "isotonic"'),
        ("clv", "purchase_model", "gamma", 'one of "bg_nbd", "pareto_nbd"'),
        ("risk", "lgd", 1.2, "a number >= 0 and <= 1"),
        ("risk", "settlement_tolerance", -1.0, "a number >= 0"),
        ("ingest", "reject_threshold", 2.0, "a number >= 0.0 and <= 1.0"),
        ("ingest", "validate_files", 1, "true or false"),
        ("ingest", "base_currency", "euro", "text matching ^[A-Z]{3}$"),
    ],
)
def test_out_of_range_values_name_file_section_key_value_and_range(
    tmp_path: Path, section: str, key: str, value: object, valid: str
) -> None:
    path = tmp_path / "crm-intel.toml"
    shown = f'"{value}"' if isinstance(value, str) else str(value)
    path.write_text(f"[{section}]\n{key} = {shown}\n")
    with pytest.raises(SettingsError) as raised:
        load_settings(path)
    message = str(raised.value)
    assert str(path) in message
    assert f"[{section}] {key} = {shown}: must be {valid}" in message


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"churn": {"band_cut_points": [0.6, 0.3]}}, "two increasing probabilities"),
        ({"risk": {"class_cut_points": [35, 50, 60, 70]}}, "four decreasing scores"),
        ({"churn": {"training_cutoffs": 3, "holdout_cutoffs": 3}}, "cutoffs left to learn"),
        ({"nightly": {"schedule": "every night"}}, "cron expression"),
        ({"nightly": {"timezone": "Europe/Atlantis"}}, "IANA timezone"),
        ({"run": {"as_of": "2024-02-30"}}, "YYYY-MM-DD"),
        ({"engine": {"lake": "s3a://bucket/lake"}}, "the lake must be a folder"),
    ],
)
def test_rules_across_values_say_what_is_expected(data: dict, named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        parse_settings(data)


def test_every_problem_is_told_at_once_and_unknown_keys_list_the_valid_ones() -> None:
    with pytest.raises(SettingsError) as raised:
        parse_settings({"clv": {"interval": 1.5, "horizon_days": -5}, "risk": {"lgdd": 0.4}})
    message = str(raised.value)
    assert "[clv] interval = 1.5" in message and "[clv] horizon_days = -5" in message
    assert "[risk] has no key 'lgdd'; valid keys: lgd, default_payment_terms_days" in message


def test_integers_stay_integers_and_defaults_pass_their_own_rules() -> None:
    settings = parse_settings({"clv": {"horizon_days": 180}, "churn": {"calibration": "isotonic"}})
    assert settings.clv.horizon_days == 180 and isinstance(settings.clv.horizon_days, int)
    assert "horizon_days = 180\n" in settings.to_toml()
    assert parse_settings(parse_settings({}).as_dict()).as_dict() == parse_settings({}).as_dict()
