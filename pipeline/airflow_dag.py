"""Airflow DAG of the fraud-detection pipeline: the same `create_pipeline()` as `fraudctl pipeline run`,
turned into one Airflow task per TFX component by TFX's AirflowDagRunner.

Deploy it by pointing Airflow's dags_folder at this folder (pipeline/.airflowignore keeps Airflow to this file),
by linking this file into a dags folder, or by copying it there: it imports only the installed project.

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

Failures: a component that rejects the data (fraud.errors.DataRejected: the data contract, validation
anomalies) fails its task at once, without retries (the same data fails the same way) and with the anomalies in the task log; anything
else (a killed worker, a full disk) is retried with exponential back-off. TFX 1.16's Airflow launcher cannot
retry a component (ML Metadata refuses to record its input events and output artifacts twice) nor run two
components whose outputs share a key and a type: pipeline/airflow_launch.py fixes both (AirflowSafeMetadata), and does
not run again a component that already completed in the same DAG run (a new DAG run re-runs the pipeline). The Pusher only runs after the Evaluator and pushes only a blessed model
(`model_blessing=` in create_pipeline: AirflowDagRunner does not evaluate tfx.dsl.Cond).
"""
from __future__ import annotations

import functools
from datetime import timedelta

import pendulum
from airflow.models.param import Param
from tfx.orchestration.airflow import airflow_component
from tfx.orchestration.airflow.airflow_dag_runner import AirflowDagRunner, AirflowPipelineConfig

from pipeline.airflow_launch import run_task
from pipeline.airflow_settings import PARAM_SCHEMA, AirflowSettings, load_settings
from pipeline.definition import create_pipeline


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
        tfx_launch = task.python_callable
        if not (isinstance(tfx_launch, functools.partial)
                and tfx_launch.func is airflow_component._airflow_component_launcher):
            raise RuntimeError(f"{task.task_id}: AirflowDagRunner built an unexpected callable ({tfx_launch!r}); "
                               "the TFX version changed: review pipeline/airflow_dag.py")
        task.python_callable = functools.partial(run_task, tfx_args=dict(tfx_launch.keywords), settings=settings)
    return dag


# Airflow collects module-level DAG objects. Settings errors surface as this file's import error.
dag = build_dag(load_settings())
