"""Airflow DAG of the fraud-detection pipeline: the same `create_pipeline()` as `fraudctl pipeline run`,
turned into one Airflow task per TFX component by TFX's AirflowDagRunner.

Settings: pipeline/airflow_settings.py (FRAUD_DATA_DIR, FRAUD_PIPELINE_ROOT, FRAUD_SERVING_DIR, ... or a
YAML/JSON file named by FRAUD_SETTINGS_FILE). A missing or invalid setting is an import error that names
the variable (`airflow dags list-import-errors`).

Per-run parameters: `airflow dags trigger fraud_detection --conf '{"train_steps": 300, "eval_days": 5}'`,
or the UI's trigger form (keys: pipeline.airflow_settings.RUN_PARAMS). Why not TFX RuntimeParameters:
AirflowDagRunner turns a RuntimeParameter into a `{{ dag_run.conf.get(...) }}` template, which renders to a
string, so it accepts only `ptype=str` parameters, and only whole execution properties; eval_days is an int
and train_steps sits inside the Trainer's TrainArgs proto. Instead each task rebuilds the pipeline with the
run's validated settings and launches its component with that build's execution properties: the values are
typed and range-checked by the same PipelineSettings as the CLI, and every run's values are recorded in ML
Metadata as usual.

Failures: a component that rejects the data (DataContractError, DataValidationError) fails its task at
once, without retries (the same data fails the same way) and with the anomalies in the task log; anything
else (a killed worker, a full disk) is retried with exponential back-off. The Pusher only runs after the
Evaluator and pushes only a blessed model (`model_blessing=` in create_pipeline: AirflowDagRunner does not
evaluate tfx.dsl.Cond).
"""
from __future__ import annotations

import functools
import logging
from datetime import timedelta

import pendulum
from airflow.exceptions import AirflowFailException
from airflow.models.param import Param
from tfx.orchestration.airflow.airflow_dag_runner import AirflowDagRunner, AirflowPipelineConfig

from pipeline.airflow_settings import PARAM_SCHEMA, AirflowSettings, SettingsError, load_settings, run_settings
from pipeline.local_runner import DATA_ERRORS
from pipeline.pipeline import create_pipeline

log = logging.getLogger(__name__)


def dag_config(settings: AirflowSettings) -> dict:
    """Arguments of airflow.models.DAG (the dag_id is the pipeline name: AirflowDagRunner sets it)."""
    opts = settings.dag
    start = pendulum.instance(opts.start_date) if opts.start_date.tzinfo else \
        pendulum.instance(opts.start_date, tz=pendulum.timezone(opts.timezone))
    return dict(
        schedule=opts.schedule,
        start_date=start,
        catchup=False,  # a paused or new DAG runs the latest interval only, never a storm of past days
        max_active_runs=1,  # runs share the pipeline root, ML Metadata and the baseline model
        max_active_tasks=opts.max_active_tasks,
        dagrun_timeout=timedelta(hours=opts.run_timeout_hours),
        default_args=dict(
            owner=opts.owner,
            depends_on_past=False,
            retries=opts.retries,
            retry_delay=timedelta(seconds=opts.retry_delay_seconds),
            retry_exponential_backoff=True,
            max_retry_delay=timedelta(seconds=opts.max_retry_delay_seconds),
            execution_timeout=timedelta(minutes=opts.task_timeout_minutes),
        ),
        params={name: Param(value, **PARAM_SCHEMA[name]) for name, value in settings.run_params().items()},
        tags=list(opts.tags),
        doc_md=__doc__,
    )


def build_dag(settings: AirflowSettings):
    pipeline = create_pipeline(**settings.pipeline.pipeline_kwargs())
    dag = AirflowDagRunner(AirflowPipelineConfig(airflow_dag_config=dag_config(settings))).run(pipeline)
    for task in dag.tasks:
        task.python_callable = functools.partial(_launch_for_run, launch=task.python_callable, settings=settings)
    return dag


def _launch_for_run(*, launch, settings: AirflowSettings, exec_properties: dict, **context) -> None:
    """Launch one TFX component with the run's settings (`dag_run.conf` applied), in the Airflow task."""
    component_id = context["ti"].task_id
    conf = context["dag_run"].conf or {}
    try:
        run = run_settings(settings, conf)
    except SettingsError as exc:
        raise AirflowFailException(f"{component_id}: {exc}") from None  # bad parameters: retrying won't help
    log.info("%s: run parameters %s", component_id,
             {name: str(getattr(run, name)) for name in settings.run_params()})
    run.pipeline_root.mkdir(parents=True, exist_ok=True)  # ML Metadata's SQLite file lives there
    rebuilt = {c.id: c for c in create_pipeline(**run.pipeline_kwargs()).components}
    exec_properties = {**exec_properties, **rebuilt[component_id].exec_properties}
    try:
        launch(exec_properties=exec_properties, **context)
    except Exception as exc:
        chain = _chain(exc)
        if any(type(e).__name__ in DATA_ERRORS for e in chain):
            raise AirflowFailException(
                f"{component_id} rejected the data of {run.data_dir} (not retried: the same data fails the "
                f"same way); nothing downstream runs, nothing is pushed. {type(chain[-1]).__name__}: {chain[-1]}"
            ) from exc
        raise


def _chain(exc: BaseException) -> list[BaseException]:
    out = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


# Airflow collects module-level DAG objects. Settings errors surface as this file's import error.
dag = build_dag(load_settings())
