"""Settings of the Airflow DAG: one typed object, loaded once from environment variables or a file.

The DAG file is parsed by the scheduler every few minutes, on machines where the data may not have landed
yet, so the parse-time settings (`DagPipelineSettings`) are `fraud.settings.PipelineSettings` minus its
"data directory exists" check. Each task re-validates the run's settings with the strict `PipelineSettings`
(see `run_settings()`): a missing data directory fails the run at its first task, with the same message as
`fraudctl`, instead of breaking the DAG for every run.

Sources, later ones winning:
  1. the defaults below and in fraud/settings.py;
  2. a YAML or JSON file named by FRAUD_SETTINGS_FILE, with two sections:
         pipeline: {data_dir: /data/transactions, pipeline_root: /srv/fraud/pipeline, train_steps: 2000}
         dag: {retries: 3}
     (relative paths in the file are relative to the file's folder; unknown keys are errors);
  3. environment variables: FRAUD_<FIELD> for the pipeline section (FRAUD_DATA_DIR, FRAUD_PIPELINE_ROOT,
     FRAUD_SERVING_DIR, FRAUD_TRAIN_STEPS, FRAUD_EVAL_DAYS, ...; FRAUD_BEAM_ARGS is split like a shell
     command line) and FRAUD_DAG_<FIELD> for the dag section (FRAUD_DAG_RETRIES, FRAUD_DAG_SCHEDULE, ...).

Nothing here reads $HOME or the working directory: paths must be absolute (the scheduler, the workers
and the CLI each run in a different directory).
"""
from __future__ import annotations

import json
import os
import shlex
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fraud.settings import PipelineSettings, is_url

ENV_PREFIX = "FRAUD_"
DAG_ENV_PREFIX = "FRAUD_DAG_"
SETTINGS_FILE_ENV = "FRAUD_SETTINGS_FILE"
PATH_FIELDS = ("data_dir", "pipeline_root", "serving_dir")

# Settings a single run may override through `dag_run.conf` (`airflow dags trigger --conf '{...}'` or the
# UI's trigger form). Only settings that reach the components as execution properties qualify: the
# pipeline root, the ML Metadata store, the serving directory and the Beam arguments are bound when the
# DAG is built and stay fixed for every run of the DAG.
RUN_PARAMS = ("data_dir", "eval_days", "valid_days", "train_steps")
PARAM_SCHEMA = {
    "data_dir": {"type": "string", "minLength": 1,
                 "description": "Absolute path of the folder of transactions CSVs, or an SQLAlchemy URL."},
    "eval_days": {"type": "integer", "minimum": 1, "maximum": 365,
                  "description": "The last N Lima calendar days form the eval split (Evaluator)."},
    "valid_days": {"type": "integer", "minimum": 1, "maximum": 365,
                   "description": "The N days before the eval split form the validation split."},
    "train_steps": {"type": "integer", "minimum": 1, "maximum": 1_000_000,
                    "description": "Maximum training steps of the Trainer."},
}


class SettingsError(ValueError):
    """The DAG's settings are missing or invalid; the message names the variable or file key to fix."""


# Beam runs inside each Airflow task process. In-process by default (measured on the small data set: the
# `dags test` run took half the CPU time of DirectRunner's multi-processing mode, StatisticsGen 13 s instead
# of 27 s, Transform 46 s instead of 75 s, Evaluator 18 s instead of 41 s); it also leaves no Beam worker
# processes behind when Airflow kills a task on timeout. Parallelism comes from Airflow's executor across
# tasks, and scale from a distributed Beam runner (docs/airflow.md). The runner is named explicitly, as in
# fraud/settings.py (even so, Beam 2.74's DirectRunner first tries to download its "prism" runner; offline it
# falls back at once).
AIRFLOW_BEAM_ARGS = ("--runner=DirectRunner", "--direct_running_mode=in_memory")


class DagPipelineSettings(PipelineSettings):
    """PipelineSettings, except that the data directory need not exist when the DAG file is parsed."""

    beam_args: tuple[str, ...] = AIRFLOW_BEAM_ARGS

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_source(cls, value) -> str:  # same name: replaces the parent's check; each task runs it (run_settings)
        value = str(value)
        return value if is_url(value) else os.path.normpath(value)


class DagOptions(BaseModel):
    """How Airflow schedules and retries the pipeline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedule: str = "@daily"  # midnight in `timezone`: each run sees the whole previous Lima day
    timezone: str = "America/Lima"  # Peru has no daylight saving time
    start_date: datetime = datetime(2026, 1, 1)
    owner: str = "fraud-ml"
    retries: int = Field(2, ge=0, le=10)
    retry_delay_seconds: float = Field(300, gt=0)
    max_retry_delay_seconds: float = Field(3600, gt=0)
    # ML Metadata is a SQLite file (pipeline.create_pipeline): one writer at a time. Also, on a small machine,
    # two TFX components in parallel fight for the same cores and memory.
    max_active_tasks: int = Field(1, ge=1, le=64)
    task_timeout_minutes: float = Field(180, gt=0)
    run_timeout_hours: float = Field(12, gt=0)
    tags: tuple[str, ...] = ("fraud", "tfx")


class AirflowSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pipeline: DagPipelineSettings
    dag: DagOptions = DagOptions()

    def run_params(self) -> dict[str, Any]:
        """The per-run parameters' defaults (JSON-able), from these settings."""
        values = self.pipeline.model_dump(include=set(RUN_PARAMS))
        return {name: str(values[name]) if name in PATH_FIELDS else values[name] for name in RUN_PARAMS}


def run_settings(settings: AirflowSettings, conf: Mapping[str, Any] | None) -> PipelineSettings:
    """The settings of one DAG run: the DAG's settings with the run's `dag_run.conf` applied, validated by
    the strict PipelineSettings (same ranges as `fraudctl`, and the data directory must exist)."""
    conf = dict(conf or {})
    unknown = sorted(set(conf) - set(RUN_PARAMS))
    if unknown:
        raise SettingsError(f"dag_run.conf has unknown key(s) {', '.join(map(repr, unknown))}; "
                            f"a run may override only {', '.join(RUN_PARAMS)}")
    if "data_dir" in conf and not is_url(str(conf["data_dir"])):
        _require_absolute("data_dir", conf["data_dir"], "dag_run.conf")
    values = {**settings.pipeline.model_dump(), **conf}
    try:
        return PipelineSettings.model_validate(values)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, lambda loc: f"dag_run.conf[{loc[-1]!r}]"
                                      if loc and loc[-1] in conf else f"setting {'.'.join(map(str, loc))}"))


def load_settings(environ: Mapping[str, str] | None = None) -> AirflowSettings:
    """Build the settings from FRAUD_SETTINGS_FILE and FRAUD_* variables; SettingsError names what to fix."""
    environ = os.environ if environ is None else environ
    raw: dict[str, dict[str, Any]] = {"pipeline": {}, "dag": {}}
    origin: dict[tuple[str, str], str] = {}

    settings_file = environ.get(SETTINGS_FILE_ENV, "").strip()
    if settings_file:
        _require_absolute(SETTINGS_FILE_ENV, settings_file, "the environment")
        for section, values in _read_file(Path(settings_file)).items():
            raw[section].update(values)
            origin.update({(section, key): f"{section}.{key} in {settings_file}" for key in values})

    pipeline_fields = set(DagPipelineSettings.model_fields)
    for key, value in sorted(environ.items()):
        if key.startswith(DAG_ENV_PREFIX):
            section, field = "dag", key[len(DAG_ENV_PREFIX):].lower()
        elif key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX):].lower() in pipeline_fields:
            section, field = "pipeline", key[len(ENV_PREFIX):].lower()
        else:
            continue  # other FRAUD_* variables belong to other tools (serving, the standalone script)
        if section == "dag" and field not in DagOptions.model_fields:
            raise SettingsError(f"{key} is not a DAG setting; known: "
                                + ", ".join(DAG_ENV_PREFIX + f.upper() for f in DagOptions.model_fields))
        if field in ("beam_args", "tags"):
            value = shlex.split(value)
        if field in PATH_FIELDS and not (field == "data_dir" and is_url(value)):
            _require_absolute(key, value, "the environment")
        raw[section][field] = value
        origin[(section, field)] = key

    missing = [f for f in PATH_FIELDS if f not in raw["pipeline"]]
    if missing:
        raise SettingsError(
            "the fraud-detection DAG needs " + ", ".join(f"{ENV_PREFIX}{f.upper()}" for f in missing)
            + f" (absolute paths), set in the scheduler's environment or as pipeline.<name> in the YAML/JSON "
              f"file named by {SETTINGS_FILE_ENV}")

    def where(loc):
        key = tuple(str(part) for part in loc[:2])
        return origin.get(key, ".".join(map(str, loc)))

    try:
        return AirflowSettings.model_validate(raw)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, where)) from None


def _read_file(path: Path) -> dict[str, dict[str, Any]]:
    import yaml  # YAML is a superset of JSON; PyYAML comes with Airflow

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise SettingsError(f"{SETTINGS_FILE_ENV}={path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{SETTINGS_FILE_ENV}={path}: not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict) or set(data) - {"pipeline", "dag"}:
        raise SettingsError(f"{path}: expected a mapping with the sections 'pipeline' and/or 'dag', got "
                            + (", ".join(map(repr, sorted(data))) if isinstance(data, dict) else type(data).__name__))
    out = {}
    for section, values in data.items():
        if not isinstance(values, dict):
            raise SettingsError(f"{path}: section {section!r} must be a mapping")
        values = dict(values)
        for field in PATH_FIELDS:
            if section == "pipeline" and isinstance(values.get(field), str) and not is_url(values[field]):
                if values[field].startswith("~"):
                    raise SettingsError(f"{path}: pipeline.{field}={values[field]!r}: '~' is not expanded "
                                        "(the scheduler's $HOME is not yours); use an absolute path")
                values[field] = str((path.parent / values[field]).resolve())
        out[section] = values
    return out


def _require_absolute(name: str, value: Any, source: str) -> None:
    if not isinstance(value, str) or not os.path.isabs(value):
        raise SettingsError(f"{name}={value!r} (from {source}) must be an absolute path: the scheduler, "
                            "the workers and the CLI run in different directories")


def _describe(exc: ValidationError, where) -> str:
    def one(err) -> str:
        if not err["loc"]:  # a model-level check, e.g. "data directory ... does not exist"
            return err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            return f"{where(err['loc'])}: required"
        return f"{where(err['loc'])}: {err['msg']} (got {json.dumps(err.get('input'), default=str)})"

    return "invalid settings: " + "; ".join(one(err) for err in exc.errors())
