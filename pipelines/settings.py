"""Tunables: one TOML file (``crm-intel.toml``) whose sections are typed Dagster resources.

An asset reads a section by naming it in its signature (``churn: ChurnSettings``); the resource
key is the section's name, so ``[churn]`` in the file, in the CLI and in the Dagster UI
launchpad (``resources.churn.config``) mean the same thing and reach every asset that asks for
them. The defaults live here and nowhere else. Every key is optional; unknown keys are an error
that names them, because a silently ignored typo in a nightly job is worse than a failed start.
"""

import itertools
import re
import tomllib
import types
import typing
import zoneinfo
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
from pydantic import Field, ValidationError, field_validator, model_validator

from features.publish import lake_current

if TYPE_CHECKING:  # the builders import them when called: the CLI starts without the models
    from features.ingest import IngestOptions
    from models.churn import ChurnModel
    from models.clv import ClvModel
    from models.delinquency import DelinquencyModel

DEFAULT_CONFIG_FILE = "crm-intel.toml"


class RunSettings(dg.ConfigurableResource):
    """Which date the run describes."""

    as_of: str | None = Field(
        default=None,
        description="As-of date YYYY-MM-DD; default: the latest invoice issue date in staging.",
    )

    @field_validator("as_of")
    @classmethod
    def _iso_date(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                date.fromisoformat(value)
            except ValueError:
                raise ValueError("must be a date YYYY-MM-DD") from None
        return value


class ClvSettings(dg.ConfigurableResource):
    """BG/NBD + Gamma-Gamma lifetime value."""

    time_unit_days: float = Field(
        default=7.0, gt=0, le=365, description="Model time unit in days (7 = weeks)."
    )
    horizon_days: int = Field(default=365, ge=1, description="CLV horizon in days.")
    annual_discount_rate: float = Field(
        default=0.10, ge=0, lt=1, description="Yearly discount rate for CLV."
    )
    penalizer: float = Field(default=0.0, ge=0, description="L2 penalizer of the BG/NBD fit.")
    interval: float = Field(
        default=0.80, gt=0, lt=1, description="Central interval width for clv_low/high."
    )
    n_bootstrap: int = Field(default=200, ge=1, description="Bootstrap draws for the CLV interval.")
    min_repeat_customers: int = Field(
        default=30, ge=1, description="Fewer repeat buyers than this fails the CLV stage."
    )
    holdout_days: int = Field(
        default=182,
        ge=0,
        description="Backtest holdout: refit on data up to as-of minus this many days and "
        "compare predicted with actual purchases after it; 0 turns the backtest off.",
    )
    max_frequency_spend_correlation: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Warn when |corr(frequency, spend)| of repeat buyers exceeds this: "
        "Gamma-Gamma assumes spend independent of purchase frequency.",
    )
    purchase_model: Literal["bg_nbd", "pareto_nbd"] = Field(
        default="bg_nbd",
        description="Purchase model: BG/NBD (default) or Pareto/NBD (dropout at any time; "
        "lifetimes' fitter, slower). Either falls back to NBD when dropout is not identifiable.",
    )

    def model(self, **changes: Any) -> "ClvModel":
        """The CLV model of these settings; ``changes`` replace some of its arguments (the
        backtest's point scores need one parameter draw, not ``n_bootstrap``)."""
        from models.clv import ClvModel

        arguments = {
            "time_unit_days": self.time_unit_days,
            "horizon_days": self.horizon_days,
            "annual_discount_rate": self.annual_discount_rate,
            "penalizer": self.penalizer,
            "interval": self.interval,
            "n_bootstrap": self.n_bootstrap,
            "min_repeat_customers": self.min_repeat_customers,
            "purchase_model": self.purchase_model,
        }
        return ClvModel(**arguments | changes)


class ChurnSettings(dg.ConfigurableResource):
    """Churn definition."""

    horizon_days: int = Field(
        default=180,
        ge=1,
        description="Churned = no purchase in this many days after the as-of date.",
    )
    training_cutoffs: int = Field(
        default=12,
        ge=2,
        description="Past cutoffs (30 days apart on a fixed calendar grid, the latest at least "
        "horizon_days before the as-of date) the churn model learns from.",
    )
    holdout_cutoffs: int = Field(
        default=1,
        ge=1,
        description="Most recent labelled cutoffs held out to grade every scorer (the supervised "
        "model, BG/NBD, recency, frequency, net revenue) before one ships.",
    )
    min_history_days: int = Field(
        default=90,
        ge=0,
        description="A labelled cutoff needs this many days of invoices before it; with less "
        "history the labels use the longest horizon that fits, and say so.",
    )
    max_training_customers: int = Field(
        default=100_000,
        ge=1,
        description="Above this many customers, training snapshots use a hash sample of them.",
    )
    band_cut_points: list[float] = Field(
        default=[0.3, 0.6],
        description="churn_risk_band: low below the first, medium below the second, else high.",
    )

    @field_validator("band_cut_points")
    @classmethod
    def _two_increasing_probabilities(cls, value: list[float]) -> list[float]:
        if len(value) != 2 or not 0 < value[0] < value[1] < 1:
            raise ValueError(
                "must be two increasing probabilities between 0 and 1, e.g. [0.3, 0.6]"
            )
        return value

    @model_validator(mode="after")
    def _training_left_after_holdout(self) -> "ChurnSettings":
        if self.holdout_cutoffs >= self.training_cutoffs:
            raise ValueError(
                f"holdout_cutoffs = {self.holdout_cutoffs} must be less than training_cutoffs = "
                f"{self.training_cutoffs}: the model needs cutoffs left to learn from"
            )
        return self

    calibration: Literal["sigmoid", "isotonic"] = Field(
        default="sigmoid", description="Probability calibration: 'sigmoid' (Platt) or 'isotonic'."
    )

    def model(self, missing_groups: dict[str, str] | None = None) -> "ChurnModel":
        """The supervised churn scorer; ``missing_groups`` names feature groups without data."""
        from models.churn import ChurnModel

        return ChurnModel(calibration=self.calibration, missing_groups=missing_groups)


class RiskSettings(dg.ConfigurableResource):
    """Credit risk."""

    lgd: float = Field(
        default=0.45,
        ge=0,
        le=1,
        description="Loss given default; 45% is the Basel foundation-IRB value for senior "
        "unsecured claims.",
    )
    default_payment_terms_days: int = Field(
        default=30,
        ge=0,
        description="Due date of an invoice exported without one: issue date + this.",
    )
    settlement_tolerance: float = Field(
        default=1.0,
        ge=0,
        description="An invoice counts as settled when less than this amount is left unpaid.",
    )
    settlement_full_rebuild_days: int = Field(
        default=7,
        ge=0,
        description="Invoice settlement is refreshed for changed customers only, and rebuilt for "
        "everyone when its last full build is this many days before the as-of date.",
    )
    label_days_past_due: int = Field(
        default=30,
        ge=1,
        description="Delinquent = an invoice more than this many days past due ...",
    )
    label_horizon_days: int = Field(
        default=90, ge=1, description="... on some day within this many days after the cutoff."
    )
    training_cutoffs: int = Field(
        default=8,
        ge=2,
        description="Past cutoffs (30 days apart) the delinquency model learns from.",
    )
    min_history_days: int = Field(
        default=90,
        ge=0,
        description="A labelled cutoff needs this many days of invoices before it; with less "
        "history the labels use the longest horizon that fits, and say so.",
    )
    max_training_customers: int = Field(
        default=50_000,
        ge=1,
        description="Above this many customers, training snapshots use a hash sample of them.",
    )
    calibration: Literal["sigmoid", "isotonic"] = Field(
        default="sigmoid", description="Probability calibration: 'sigmoid' (Platt) or 'isotonic'."
    )
    class_cut_points: list[int] = Field(
        default=[70, 60, 50, 35],
        description="Delinquency score cut points A/B, B/C, C/D, D/E (score 1-100, higher safer).",
    )
    dso_months: int = Field(
        default=12, ge=1, description="Countback DSO looks back this many months."
    )
    alert_lookback_days: int = Field(
        default=31,
        ge=1,
        description="Alerts cover events from this many days before the as-of date.",
    )
    alert_failure_score_drop: int = Field(
        default=15,
        ge=1,
        le=99,
        description="Alert when the bureau failure score falls by this many points.",
    )

    def model(self) -> "DelinquencyModel":
        """The supervised delinquency scorer."""
        from models.delinquency import DelinquencyModel

        return DelinquencyModel(calibration=self.calibration)

    @field_validator("class_cut_points")
    @classmethod
    def _four_decreasing_scores(cls, value: list[int]) -> list[int]:
        if len(value) != 4 or not all(100 >= a > b >= 1 for a, b in itertools.pairwise(value)):
            raise ValueError(
                "must be four decreasing scores between 1 and 100 (A/B, B/C, C/D, D/E), "
                "e.g. [70, 60, 50, 35]"
            )
        return value


class IngestSettings(dg.ConfigurableResource):
    """Loading the inbox: file gate, currency, vendor mappings."""

    reject_threshold: float = Field(
        default=0.10,
        ge=0.0,
        le=1.0,
        description="A new file with a larger share of rejected rows is refused and fails the run.",
    )
    base_currency: str = Field(
        default="EUR",
        pattern=r"^[A-Z]{3}$",
        description="Currency every amount is converted to (fx/rates* inputs).",
    )
    mappings_dir: str | None = Field(
        default=None,
        description="Extra folder of vendor mapping .toml files (besides <inbox>/mappings/).",
    )
    settle_seconds: float = Field(
        default=0.0,
        ge=0.0,
        description="A file modified less than this many seconds ago is still being written: "
        "the run fails naming it (0 = off).",
    )
    validate_files: bool = Field(
        default=True, description="Run the Great Expectations gate on every newly loaded file."
    )
    validation_sample_rows: int = Field(
        default=200_000,
        ge=1,
        description="Above this many rows GX validates a fixed sample (SQL checks every row).",
    )

    def options(self) -> "IngestOptions":
        """The loader's options: these settings as ``features.ingest`` takes them."""
        from features.ingest import IngestOptions

        return IngestOptions(
            base_currency=self.base_currency,
            reject_threshold=self.reject_threshold,
            settle_seconds=self.settle_seconds,
            mappings_dir=Path(self.mappings_dir) if self.mappings_dir else None,
            validate=self.validate_files,
            validation_sample_rows=self.validation_sample_rows,
        )


class PublishSettings(dg.ConfigurableResource):
    """The read-only snapshot users read, written only when every blocking check passed."""

    path: str | None = Field(
        default=None,
        description="Published snapshot file; default: published/<warehouse file name> beside "
        "the working warehouse.",
    )
    enabled: bool = Field(
        default=True,
        description="Publish at the end of the run (a backfill of past dates turns it off).",
    )
    replace_newer: bool = Field(
        default=False,
        description="Publish even when the published snapshot holds a newer as-of date (a run "
        "for an earlier date otherwise leaves it as it is; `crm-intel run --publish`).",
    )


class ModelsSettings(dg.ConfigurableResource):
    """When the churn and delinquency scorers are refitted; they score every night."""

    refit_every_days: int = Field(
        default=7,
        ge=0,
        description="Refit (build the training snapshots, grade every candidate, fit) when the "
        "kept fit is this many days old; in between, the kept fit scores the night's customers. "
        "0: refit every night.",
    )
    max_customer_change: float = Field(
        default=0.10,
        ge=0.0,
        description="Refit early when the customers scored moved by more than this share since "
        "the kept fit (a new segment, a migration). A fact dated before the kept fit's as-of date "
        "that arrives or changes, new code or new settings always refit.",
    )


class NightlySettings(dg.Config):
    """When the nightly run starts, how the inbox is watched, and who hears about failures."""

    schedule: str = Field(default="0 2 * * *", description="Cron expression of the nightly run.")
    timezone: str = Field(default="UTC", description="IANA timezone the schedule is read in.")
    inbox_poll_seconds: int = Field(
        default=60,
        ge=5,
        description="The inbox sensor looks this often; a file counts once its size and "
        "modification time are the same on two looks in a row.",
    )
    failure_webhook: str | None = Field(
        default=None,
        description="URL that receives a JSON POST (run, failing assets, reason) when a run fails.",
    )
    failure_command: str | None = Field(
        default=None,
        description="Shell command run when a run fails; the same JSON comes on its stdin.",
    )
    hook_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Give up on the webhook or command after this long."
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from dagster._utils.schedules import is_valid_cron_string

        if not is_valid_cron_string(value):
            raise ValueError('must be a cron expression of five fields, e.g. "0 2 * * *"')
        return value

    @field_validator("timezone")
    @classmethod
    def _iana_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                'must be an IANA timezone name, e.g. "UTC" or "Europe/Berlin"'
            ) from None
        return value


class EngineSettings(dg.ConfigurableResource):
    """Which engine runs the warehouse's SQL stages.

    ``spark`` runs every SQL stage (staging's typing and checks, settlement, receivables,
    customer summary, payment behaviour, training snapshots, marts, history) as Spark SQL,
    translated from the same SQL, through dagster-pyspark's Spark resource; each stage's table
    lands in the DuckDB warehouse, which keeps the run's ledgers and feeds the model fits. The
    published tables go to the snapshot file and, as Parquet, to the lake
    (``published/current``). Reading the inbox, staging's bookkeeping and the model fits stay in
    DuckDB and Python.
    """

    kind: Literal["duckdb", "spark"] = Field(
        default="duckdb",
        description="duckdb: the embedded default. spark: the SQL stages run on Spark (needs "
        "the spark extra: pip install 'crm-intel[spark]').",
    )
    lake: str | None = Field(
        default=None,
        description="The Spark side's folder: the published tables as Parquet "
        "(published/current/<schema>/<table>) and the run's scratch (_work, deleted when the "
        "run ends); default: <warehouse>.lake beside the warehouse file. On a cluster, a shared "
        "file system mounted at the same path on the driver and every executor.",
    )
    spark_config: dict[str, str] = Field(
        default_factory=dict,
        description="Spark session settings over the local defaults (all cores, a quarter of "
        "the machine's memory, UTC), e.g. spark.master = a cluster's master URL, "
        "spark.driver.memory, spark.sql.shuffle.partitions.",
    )

    def lake_path(self, warehouse: str | Path) -> Path:
        """Where Spark's tables go for the warehouse file ``warehouse``."""
        return Path(self.lake) if self.lake else Path(warehouse).with_suffix(".lake")

    def describe_spark(self, warehouse: str | Path) -> str:
        """Where a Spark run's SQL ran, in words (the CLI says it after the run)."""
        master = self.spark_config.get("spark.master", "local, all cores")
        published = lake_current(self.lake_path(warehouse))
        return f"SQL stages and scoring on Spark ({master}); published tables also in {published}"

    @field_validator("lake")
    @classmethod
    def _lake_is_a_folder(cls, value: str | None) -> str | None:
        # DuckDB on the driver and Spark's executors exchange each stage's rows through it
        if value is not None and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value):
            raise ValueError(
                f"{value} is a URL: the lake must be a folder that DuckDB, on the driver, "
                "writes and reads as files, and Spark's executors see at the same path (on a "
                "cluster a shared file system: NFS, or object storage mounted through FUSE)"
            )
        return value

    @field_validator("kind")
    @classmethod
    def _spark_installed(cls, value: str) -> str:
        import importlib.util

        if value == "spark" and not all(
            importlib.util.find_spec(module) for module in ("pyspark", "dagster_pyspark")
        ):
            raise ValueError(
                "spark needs the spark extra: pip install 'crm-intel[spark]' "
                "(or requirements-spark.lock)"
            )
        return value


SECTIONS: dict[str, type[dg.Config]] = {
    "run": RunSettings,
    "clv": ClvSettings,
    "churn": ChurnSettings,
    "risk": RiskSettings,
    "ingest": IngestSettings,
    "publish": PublishSettings,
    "models": ModelsSettings,
    "nightly": NightlySettings,
    "engine": EngineSettings,
}
# The sections assets read, as resources of the same name; [nightly] configures the schedule
# and sensors, which read it when the code location loads. [engine] is the warehouse
# resource's (configured at launch, so a run's config reaches it; pipelines/resources.py).
ASSET_SECTIONS = ("run", "clv", "churn", "risk", "ingest", "publish", "models", "engine")


class SettingsError(ValueError):
    """The settings file names a section or key we do not know, or a value of the wrong type."""


class Settings:
    """Effective settings: defaults overlaid with the TOML file and CLI overrides."""

    def __init__(self, sections: dict[str, dg.Config], source: Path | None = None) -> None:
        self.sections = sections
        self.source = source

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["sections"][name]
        except KeyError as missing:
            raise AttributeError(name) from missing

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: section.model_dump() for name, section in self.sections.items()}

    def to_toml(self) -> str:
        lines: list[str] = []
        for name, values in self.as_dict().items():
            lines.append(f"[{name}]")
            for key, value in values.items():
                if value is None:
                    lines.append(f"# {key} = (unset)")
                elif isinstance(value, str):
                    lines.append(f'{key} = "{value}"')
                elif isinstance(value, bool):
                    lines.append(f"{key} = {str(value).lower()}")
                elif isinstance(value, dict):
                    pairs = ", ".join(f'"{k}" = "{v}"' for k, v in value.items())
                    lines.append(f"{key} = {{{' ' + pairs + ' ' if pairs else ''}}}")
                else:
                    lines.append(f"{key} = {value}")
            lines.append("")
        return "\n".join(lines)


def _kinds(annotation: Any) -> set[type]:
    """The plain Python types a field takes (``int | None`` gives {int, NoneType})."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set().union(*(_kinds(arg) for arg in typing.get_args(annotation)))
    if typing.get_origin(annotation) is Literal:
        return {type(arg) for arg in typing.get_args(annotation)}
    return {typing.get_origin(annotation) or annotation}


def valid_values(config_class: type[dg.Config], key: str) -> str:
    """What a key accepts, in words: its type, its range or its allowed values."""
    field = config_class.model_fields[key]
    annotation = field.annotation
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(f'"{arg}"' for arg in typing.get_args(annotation))
    kinds = _kinds(annotation) - {type(None)}
    what = (
        "true or false" if kinds == {bool}
        else "a whole number" if kinds == {int}
        else "a number" if kinds == {float}
        else "a list" if kinds == {list}
        else 'a table of quoted values, e.g. { "spark.master" = "local[4]" }' if kinds == {dict}
        else "text"
    )  # fmt: skip
    bounds = []
    for rule in field.metadata:
        for name, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(rule, name, None) is not None:
                bounds.append(f"{sign} {getattr(rule, name)}")
        if getattr(rule, "pattern", None):
            what += f" matching {rule.pattern}"
    if type(None) in _kinds(annotation):
        what += " (or left out)"
    return what + (" " + " and ".join(bounds) if bounds else "")


def _wrong_kind(config_class: type[dg.Config], key: str, value: Any) -> bool:
    """TOML has types: a quoted number or a number for a flag is a mistake, not a conversion."""
    kinds = _kinds(config_class.model_fields[key].annotation)
    if value is None or kinds & {Any, object}:
        return False
    if isinstance(value, bool):
        return bool not in kinds
    if isinstance(value, int):
        return not kinds & {int, float}
    if isinstance(value, float):  # 365.0 for a whole number is refused too: integers stay integers
        return float not in kinds
    return not isinstance(value, tuple(k for k in kinds if isinstance(k, type)))


def _shown(value: Any) -> str:
    return (
        f'"{value}"'
        if isinstance(value, str)
        else str(value).lower()
        if isinstance(value, bool)
        else str(value)
    )


def _section_problems(name: str, config_class: type[dg.Config], values: dict) -> list[str]:
    """Each bad key of one section, with its value and what it accepts."""
    known = ", ".join(config_class.model_fields)
    unknown = sorted(set(values) - set(config_class.model_fields))
    if unknown:
        return [f"[{name}] has no key {', '.join(repr(k) for k in unknown)}; valid keys: {known}"]
    problems = [
        f"[{name}] {key} = {_shown(value)}: must be {valid_values(config_class, key)}"
        for key, value in values.items()
        if _wrong_kind(config_class, key, value)
    ]
    try:
        config_class(**{k: v for k, v in values.items() if not _wrong_kind(config_class, k, v)})
    except ValidationError as error:
        for detail in error.errors():
            key = str(detail["loc"][0]) if detail["loc"] else None
            if key is None:  # a rule across keys names them itself
                problems.append(f"[{name}] {detail['msg'].removeprefix('Value error, ')}")
                continue
            value = _shown(values.get(key, detail["input"]))
            if detail["type"] == "value_error":
                reason = detail["msg"].removeprefix("Value error, ")
            else:
                reason = f"must be {valid_values(config_class, key)}"
            problems.append(f"[{name}] {key} = {value}: {reason}")
    return problems


def parse_settings(data: dict[str, Any], source: Path | None = None) -> Settings:
    """Validate a settings mapping: every section, key, type and range, all problems at once.

    A bad value fails here, before a run starts, naming the file, section, key, value and what
    the key accepts, instead of in the middle of a nightly run.
    """
    problems = [
        f"unknown section [{name}]; valid sections: "
        + ", ".join(f"[{known}]" for known in SECTIONS)
        for name in sorted(set(data) - set(SECTIONS))
    ]
    sections: dict[str, dg.Config] = {}
    for name, config_class in SECTIONS.items():
        values = data.get(name, {})
        if not isinstance(values, dict):
            problems.append(f"[{name}] must be a table, got {type(values).__name__}")
            continue
        section_problems = _section_problems(name, config_class, values)
        problems += section_problems
        if not section_problems:
            sections[name] = config_class(**values)
    if problems:
        where = f"in {source}" if source else "(defaults and command-line options)"
        raise SettingsError(f"bad settings {where}:\n  " + "\n  ".join(problems))
    return Settings(sections, source)


def load_settings(path: Path | None = None, overrides: dict[str, dict[str, Any]] | None = None):
    """Read ``path`` (or ``crm-intel.toml`` in the working directory if it exists)."""
    data: dict[str, Any] = {}
    source = path
    if source is None and Path(DEFAULT_CONFIG_FILE).is_file():
        source = Path(DEFAULT_CONFIG_FILE)
    if source is not None:
        if not source.is_file():
            raise SettingsError(f"settings file not found: {source}")
        with source.open("rb") as handle:
            try:
                data = tomllib.load(handle)
            except tomllib.TOMLDecodeError as error:
                raise SettingsError(f"{source} is not valid TOML: {error}") from error
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    return parse_settings(data, source)


def settings_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The sections assets read, keyed by section name: the resources of the definitions
    (with [engine] as ``engine_at_launch`` gives it there)."""
    return {name: settings.sections[name] for name in ASSET_SECTIONS}


def engine_at_launch(settings: Settings) -> Any:
    """[engine] as the definitions hold it: configured at launch, the file's values its
    defaults. The warehouse resource holds it (``default_resources``), and a nested resource
    takes a run's config only that way."""
    return EngineSettings.configure_at_launch(
        **settings.sections["engine"].model_dump(exclude_none=True)
    )


def settings_run_config(settings: Settings) -> dict[str, dict[str, Any]]:
    """The same sections as run config (``resources.<section>.config``) for one run."""
    return {
        name: {"config": settings.sections[name].model_dump(exclude_none=True)}
        for name in ASSET_SECTIONS
    }


def default_settings_resources() -> dict[str, dg.ConfigurableResource]:
    """Every asset section at its defaults (no settings file): for materializing assets alone."""
    return settings_resources(parse_settings({}))
