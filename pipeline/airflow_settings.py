"""Settings of the Airflow DAG: one typed object, loaded once from environment variables or a file.

The DAG file is parsed by the scheduler every few minutes, on machines where the data may not have landed
yet, so the parse-time settings (`DagPipelineSettings`) are `fraud.settings.PipelineSettings` minus its
"data directory exists" check. Each task re-validates the run's settings with the strict `PipelineSettings`
(see `run_settings()`): a missing data directory fails the run at its first task, with the same message as
`fraudctl`, instead of breaking the DAG for every run.

Loaded by fraud.settings' one loader (the same as `fraudctl`'s), with two sections. Sources, later ones winning:
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

import os
from datetime import datetime
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fraud.errors import SettingsError
from fraud.settings import (ENV_PREFIX, PATH_FIELDS, PipelineSettings, Section, is_url, load_sections,
                            refuse_password, require_absolute, validate)

__all__ = ["AIRFLOW_BEAM_ARGS", "AirflowSettings", "DagOptions", "DagPipelineSettings", "PARAM_SCHEMA", "RUN_PARAMS",
           "SettingsError", "load_settings", "run_settings"]
DAG_ENV_PREFIX = "FRAUD_DAG_"
SETTINGS_FILE_ENV = "FRAUD_SETTINGS_FILE"

# Settings a single run may override through `dag_run.conf` (`airflow dags trigger --conf '{...}'` or the
# UI's trigger form). Only settings that reach the components as execution properties qualify: the
# pipeline root, the ML Metadata store, the serving directory and the Beam arguments are bound when the
# DAG is built and stay fixed for every run of the DAG.
RUN_PARAMS = ("data_dir", "eval_days", "valid_days", "train_steps")


def _param_schemas() -> dict:
    """The JSON schema of each run parameter (Airflow's trigger form checks it), derived from PipelineSettings'
    own fields: the type, range and description are defined once, in fraud/settings.py."""
    fields = PipelineSettings.model_json_schema()["properties"]
    keep = ("type", "minimum", "maximum", "minLength", "description")
    return {name: {k: v for k, v in fields[name].items() if k in keep} for name in RUN_PARAMS}


PARAM_SCHEMA = _param_schemas()


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
        if is_url(value):
            refuse_password(value)  # it would be a DAG param default, serialized and shown by Airflow
            return value
        return os.path.normpath(value)


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
        require_absolute("data_dir", conf["data_dir"], "dag_run.conf")
    return validate(PipelineSettings, {**settings.pipeline.model_dump(), **conf},
                    lambda loc: f"dag_run.conf[{loc[-1]!r}]" if loc and loc[-1] in conf
                    else f"setting {'.'.join(map(str, loc))}")


SECTIONS = {"pipeline": Section(DagPipelineSettings, ENV_PREFIX, ("beam_args",)),
            "dag": Section(DagOptions, DAG_ENV_PREFIX, ("tags",), title="DAG")}


def load_settings(environ: Mapping[str, str] | None = None) -> AirflowSettings:
    """Build the settings from FRAUD_SETTINGS_FILE and FRAUD_* variables; SettingsError names what to fix."""
    environ = os.environ if environ is None else environ
    settings_file = environ.get(SETTINGS_FILE_ENV, "").strip() or None
    if settings_file:
        require_absolute(SETTINGS_FILE_ENV, settings_file, "the environment")
    raw, origin = load_sections(SECTIONS, file=settings_file, environ=environ, require_absolute_paths=True)
    missing = [f for f in PATH_FIELDS if f not in raw["pipeline"]]
    if missing:
        raise SettingsError(
            "the fraud-detection DAG needs " + ", ".join(f"{ENV_PREFIX}{f.upper()}" for f in missing)
            + f" (absolute paths), set in the scheduler's environment or as pipeline.<name> in the YAML/JSON "
              f"file named by {SETTINGS_FILE_ENV}")
    return validate(AirflowSettings, raw, lambda loc: origin.get(tuple(str(p) for p in loc[:2]),
                                                                 ".".join(map(str, loc))))
