"""Typed, validated settings, and the one loader every runner uses (the CLI and the Airflow DAG alike).

Defaults are defined here, once: `PipelineSettings`' fields. `create_pipeline()` has no defaults of its
own, the components' parameters have none, and the CLI's options show these defaults in `--help` without
restating them.

Sources, later ones winning (`load_sections()`):
  1. the defaults of the settings model;
  2. a YAML or JSON file (the CLI's `--settings FILE`, Airflow's FRAUD_SETTINGS_FILE), one section per model,
     e.g. ``pipeline: {data_dir: /data/transactions, train_steps: 2000}``; relative paths in the file are
     relative to the file's folder; unknown keys are errors that name the file and the key;
  3. environment variables: ``FRAUD_<FIELD>`` for the pipeline section (FRAUD_DATA_DIR, FRAUD_TRAIN_STEPS,
     ...; FRAUD_BEAM_ARGS is split like a shell command line), other prefixes for other sections;
  4. explicit overrides (the CLI's options).
An invalid value is a `fraud.errors.SettingsError` that names where it came from (option, variable, file key).
"""
from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fraud import features as F
from fraud.errors import SettingsError
from fraud.sources import is_url

__all__ = ["DEFAULT_BEAM_ARGS", "DEFAULT_SCHEMA_FILE", "ENV_PREFIX", "PATH_FIELDS", "PipelineSettings", "Section",
           "SettingsError", "describe_validation_error", "is_url", "load_pipeline_settings", "load_sections"]

# One process (docs/scale.md): every component measured as fast or faster than with two worker processes, at
# 300k rows and 1M, with less memory; multi_processing only pays off with cores to spare.
DEFAULT_BEAM_ARGS = (
    "--runner=DirectRunner",  # named explicitly: Beam 2.74 otherwise tries to download its "prism" runner
    "--direct_running_mode=in_memory",
    "--direct_num_workers=1",
)
# The curated TFDV schema of the repository (scripts/make_schema.py writes it from fraud.features).
DEFAULT_SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema" / F.SCHEMA_FILE
ENV_PREFIX = "FRAUD_"
PATH_FIELDS = ("data_dir", "pipeline_root", "serving_dir")


class PipelineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: str = Field(description="Folder of transactions CSVs, or an SQLAlchemy URL (sqlite:///PATH, "
                                      "postgresql://...).", min_length=1)
    pipeline_root: Path = Field(description="Pipeline root: artifacts and ML Metadata (the baseline lives here).")
    serving_dir: Path = Field(description=f"TF Serving model base: versions land in DIR/{F.MODEL_NAME}/<version>/.")
    pipeline_name: str = F.PIPELINE_NAME
    eval_days: int = Field(7, ge=1, le=365, description="Last N days form the eval split.")
    valid_days: int = Field(7, ge=1, le=365,
                            description="N days before eval form the validation split (early stopping).")
    train_steps: int = Field(
        1000, ge=1, le=1_000_000,
        description="Maximum training steps (epochs are whole passes over the train split while they fit).")
    pr_auc_floor: float = Field(0.2, ge=0.0, le=1.0, description="Blessing: minimum PR-AUC.")
    min_valid_roc_auc: float = Field(
        0.6, ge=0.0, le=1.0,
        description="The Trainer fails (nothing is evaluated or pushed) when its model's validation ROC-AUC is "
                    "below this: a model that learned nothing is an error, not a candidate.")
    regression_tolerance: float = Field(
        0.02, ge=0.0, le=1.0,
        description="Blessing: largest allowed drop in PR-AUC/ROC-AUC against the last blessed model.")
    reference_tolerance: float = Field(
        0.05, ge=0.0, le=1.0,
        description="Blessing: the candidate's eval PR-AUC may be at most this much below the best reference model "
                    "(logistic regression, boosted trees) trained on the same train split and inputs.")
    feature_set: Literal["single_row", "behavioural"] = Field(
        F.FEATURE_SET_BEHAVIOURAL, description="Model inputs: single-row features only, or with behavioural history.")
    label_delay_days: int = Field(
        F.LABEL_DELAY_DAYS, ge=0, le=120,
        description="Fraud labels younger than this are unknown to the restaurant fraud-rate feature.")
    alerts_per_day: float = Field(
        50.0, gt=0.0,
        description="Alert budget: the operating threshold is the lowest score threshold with at most this many "
                    "alerts per day on the valid split; it is recorded with the model.")
    threshold_split: str = Field(F.SPLIT_VALID, description="The split the operating threshold is chosen on.")
    decline_precision: float = Field(
        0.9, gt=0.0, le=1.0,
        description="The decision service declines above the lowest score threshold whose precision on the "
                    "threshold split reaches this (never, if none does); it is recorded with the model.")
    beam_args: tuple[str, ...] = DEFAULT_BEAM_ARGS
    schema_file: Path = DEFAULT_SCHEMA_FILE
    seed: int = 42

    @field_validator("pipeline_root", "serving_dir", "schema_file")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return Path(os.path.abspath(os.path.expanduser(str(value))))

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_source(cls, value) -> str:
        value = str(value)
        if value.startswith("sqlite:///") and not value.startswith("sqlite:////"):
            # A relative SQLite path would change meaning under Airflow's working directory.
            value = "sqlite:///" + os.path.abspath(os.path.expanduser(value[len("sqlite:///"):]))
        if is_url(value):
            refuse_password(value)
            return value
        path = os.path.abspath(os.path.expanduser(value))
        if not os.path.isdir(path):
            raise ValueError(f"data directory {value!r} does not exist; create one with `fraudctl generate --out DIR`"
                             " (or pass an SQLAlchemy URL such as sqlite:///transactions.db)")
        return path

    @property
    def serving_model_dir(self) -> Path:
        """TF Serving's model base path: versions land in <serving_dir>/<model name>/<version>/."""
        return self.serving_dir / F.MODEL_NAME

    @property
    def metadata_path(self) -> Path:
        return self.pipeline_root / F.METADATA_FILE

    @property
    def artifacts_root(self) -> Path:
        return self.pipeline_root / F.ARTIFACTS_DIR

    @property
    def logs_dir(self) -> Path:
        return self.pipeline_root / F.LOGS_DIR

    def pipeline_kwargs(self) -> dict:
        """Arguments of pipeline.definition.create_pipeline() (it has no defaults: every value comes from here)."""
        return dict(
            pipeline_name=self.pipeline_name,
            pipeline_root=str(self.artifacts_root),
            data_dir=str(self.data_dir),
            serving_model_dir=str(self.serving_model_dir),
            metadata_path=str(self.metadata_path),
            eval_days=self.eval_days,
            valid_days=self.valid_days,
            train_steps=self.train_steps,
            pr_auc_floor=self.pr_auc_floor,
            min_valid_roc_auc=self.min_valid_roc_auc,
            regression_tolerance=self.regression_tolerance,
            reference_tolerance=self.reference_tolerance,
            feature_set=self.feature_set,
            alerts_per_day=self.alerts_per_day,
            threshold_split=self.threshold_split,
            decline_precision=self.decline_precision,
            label_delay_days=self.label_delay_days,
            beam_pipeline_args=list(self.beam_args),
            schema_file=str(self.schema_file),
            seed=self.seed,
        )


def refuse_password(url: str) -> None:
    """A data source URL must not carry its password: TFX stores component parameters in ML Metadata and writes
    them to run logs, and Airflow logs and serializes DAG parameters. libpq (psycopg2) reads it from the
    environment or a file instead."""
    from fraud.sources import url_password

    if url_password(url):
        from fraud.sql_source import redact

        raise ValueError(
            f"the database URL {redact(url)} carries a password, which would be stored in ML Metadata and in the run "
            "and Airflow logs. Remove it from the URL and give it to PostgreSQL's client library instead: the "
            "PGPASSWORD environment variable, or a ~/.pgpass file (mode 600) with the line "
            "host:port:database:user:password")


def required_config(custom_config, key: str):
    """A key of a TFX component's custom_config (Transform, Trainer). Its value comes from PipelineSettings
    through create_pipeline, so the modules that read it have no default of their own."""
    if not custom_config or key not in custom_config:
        raise SettingsError(f"custom_config lacks {key!r}: build the pipeline with pipeline.definition.create_pipeline")
    return custom_config[key]


# ---------------------------------------------------------------------------------------------------------------
# The loader
# ---------------------------------------------------------------------------------------------------------------
class Section:
    """One section of a settings file and its environment variables: `<env_prefix><FIELD>`."""

    def __init__(self, model: type[BaseModel], env_prefix: str, list_fields: tuple[str, ...] = (), title: str = ""):
        self.model, self.env_prefix, self.list_fields = model, env_prefix, list_fields
        self.title = title  # how messages name the section ("DAG"); the section's key by default


def load_sections(sections: Mapping[str, Section], *, file: str | Path | None = None,
                  environ: Mapping[str, str] | None = None, overrides: Mapping[str, Mapping[str, Any]] | None = None,
                  override_names: Callable[[str, str], str] | None = None,
                  require_absolute_paths: bool = False) -> tuple[dict[str, dict[str, Any]], dict]:
    """The raw values of every section from the file, the environment and the overrides (later wins), and
    where each came from ({(section, field): "FRAUD_TRAIN_STEPS" | "pipeline.x in FILE" | "--option"}).

    Environment variables are matched to the longest prefix first (FRAUD_DAG_RETRIES belongs to a section
    with prefix FRAUD_DAG_, not to FRAUD_'s field "dag_retries"); variables that match no field of the
    section with the longest matching prefix are errors only for prefixes longer than ENV_PREFIX: other
    FRAUD_* variables belong to other tools.
    """
    environ = {} if environ is None else environ
    raw: dict[str, dict[str, Any]] = {name: {} for name in sections}
    origin: dict[tuple[str, str], str] = {}
    if file:
        path = Path(file)
        if require_absolute_paths:
            require_absolute(str(file), str(file), "the environment")
        for section, values in _read_file(path, sections).items():
            raw[section].update(values)
            origin.update({(section, key): f"{section}.{key} in {file}" for key in values})

    by_prefix = sorted(sections.items(), key=lambda kv: -len(kv[1].env_prefix))
    for key, value in sorted(environ.items()):
        match = next(((name, s) for name, s in by_prefix if key.startswith(s.env_prefix)), None)
        if match is None:
            continue
        name, section = match
        field = key[len(section.env_prefix):].lower()
        if field not in section.model.model_fields:
            if section.env_prefix != ENV_PREFIX:
                raise SettingsError(f"{key} is not a {section.title or name} setting; known: "
                                    + ", ".join(section.env_prefix + f.upper() for f in section.model.model_fields))
            continue  # other FRAUD_* variables belong to other tools (serving, the standalone script)
        if field in section.list_fields:
            value = shlex.split(value)
        if require_absolute_paths and field in PATH_FIELDS and not (field == "data_dir" and is_url(value)):
            require_absolute(key, value, "the environment")
        raw[name][field] = value
        origin[(name, field)] = key

    for name, values in (overrides or {}).items():
        for field, value in values.items():
            raw[name][field] = value
            origin[(name, field)] = override_names(name, field) if override_names else field
    return raw, origin


def validate(model: type[BaseModel], raw: Mapping[str, Any], where: Callable[[tuple], str]):
    """`model.model_validate(raw)`, or a SettingsError naming where each bad value came from."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc, where)) from None


def load_pipeline_settings(overrides: Mapping[str, Any] | None = None, *, file: str | Path | None = None,
                           environ: Mapping[str, str] | None = None,
                           option_name: Callable[[str], str] | None = None) -> PipelineSettings:
    """PipelineSettings from a file's `pipeline` section, FRAUD_* variables and overrides (the CLI's options)."""
    sections = {"pipeline": Section(PipelineSettings, ENV_PREFIX, ("beam_args",))}
    raw, origin = load_sections(sections, file=file, environ=environ, overrides={"pipeline": overrides or {}},
                                override_names=(lambda _s, f: option_name(f)) if option_name else None)

    def where(loc):
        return origin.get(("pipeline", str(loc[0])), str(loc[0]).replace("_", "-")) if loc else "settings"

    return validate(PipelineSettings, raw["pipeline"], where)


def _read_file(path: Path, sections: Mapping[str, Section]) -> dict[str, dict[str, Any]]:
    import yaml  # YAML is a superset of JSON; PyYAML comes with Airflow

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise SettingsError(f"settings file {path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"settings file {path}: not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict) or set(data) - set(sections):
        raise SettingsError(f"{path}: expected a mapping with the section(s) "
                            + " and/or ".join(repr(s) for s in sections) + ", got "
                            + (", ".join(map(repr, sorted(data))) if isinstance(data, dict) else type(data).__name__))
    out = {}
    for section, values in data.items():
        if not isinstance(values, dict):
            raise SettingsError(f"{path}: section {section!r} must be a mapping")
        values = dict(values)
        for field in PATH_FIELDS:
            if field in sections[section].model.model_fields and isinstance(values.get(field), str) \
                    and not is_url(values[field]):
                if values[field].startswith("~"):
                    raise SettingsError(f"{path}: {section}.{field}={values[field]!r}: '~' is not expanded "
                                        "(the scheduler's $HOME is not yours); use an absolute path")
                values[field] = str((path.parent / values[field]).resolve())
        out[section] = values
    return out


def require_absolute(name: str, value: Any, source: str) -> None:
    if not isinstance(value, str) or not os.path.isabs(value):
        raise SettingsError(f"{name}={value!r} (from {source}) must be an absolute path: the scheduler, "
                            "the workers and the CLI run in different directories")


def describe_validation_error(exc: ValidationError, where: Callable[[tuple], str]) -> str:
    def one(err) -> str:
        if not err["loc"]:  # a model-level check
            return err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            return f"{where(err['loc'])}: required"
        if err["type"] == "value_error":  # our own validators' messages read as sentences
            return f"{where(err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
        return f"{where(err['loc'])}: {err['msg']} (got {json.dumps(err.get('input'), default=str)})"

    return "invalid settings: " + "; ".join(one(err) for err in exc.errors())
