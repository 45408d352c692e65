"""Airflow DAG of the fraud-detection pipeline: one task per node of the same `create_pipeline()` as
`fraudctl pipeline run`, each run by TFX's own launcher.

Light to parse: this file never imports TFX. The node graph comes from the pipeline compiled once to TFX's
intermediate representation (pipeline/airflow_plan.py: `python -m pipeline.airflow_plan`, which `make airflow`
runs; if it is missing, the first parse compiles it in a child process). Each task imports TFX, compiles the run's
pipeline and runs its node (pipeline/airflow_launch.py).

Deploy it by pointing Airflow's dags_folder at this folder (pipeline/.airflowignore keeps Airflow to this file),
by linking this file into a dags folder, or by copying it there: it imports only the installed project.

Settings: pipeline/airflow_settings.py (FRAUD_DATA_DIR, FRAUD_PIPELINE_ROOT, FRAUD_SERVING_DIR, ... or a
YAML/JSON file named by FRAUD_SETTINGS_FILE). A missing or invalid setting is an import error that names
the variable (`airflow dags list-import-errors`).

Per-run parameters: `airflow dags trigger fraud_detection --conf '{"train_steps": 300, "eval_days": 5}'`,
or the UI's trigger form (keys: pipeline.airflow_settings.RUN_PARAMS). Each task rebuilds the pipeline with the
run's settings, validated and range-checked by the same PipelineSettings as the CLI; ML Metadata records each
run's values as usual.

Failures: a node that rejects the data (fraud.errors.DataRejected: the data contract, validation anomalies) fails
its task at once, without retries (the same data fails the same way) and with the anomalies in the task log;
anything else (a killed worker, a full disk) is retried with exponential back-off, each attempt a new ML Metadata
execution. A node that already completed in the same DAG run is not run again. The Pusher pushes only a model the
ReferenceGate blessed.

Executors: SequentialExecutor (SQLite), LocalExecutor or CeleryExecutor (scripts/airflow_standalone.sh,
docs/airflow.md). Workers need the project, the same settings and the shared pipeline root.
"""
from __future__ import annotations

import functools
from datetime import timedelta

import pendulum
from airflow.models.dag import DAG
from airflow.models.param import Param
from airflow.operators.python import PythonOperator

from pipeline.airflow_launch import run_node
from pipeline.airflow_plan import load_plan
from pipeline.airflow_settings import PARAM_SCHEMA, AirflowSettings, load_settings


def dag_config(settings: AirflowSettings) -> dict:
    """Arguments of airflow.models.DAG."""
    opts = settings.dag
    start = pendulum.instance(opts.start_date) if opts.start_date.tzinfo else \
        pendulum.instance(opts.start_date, tz=pendulum.timezone(opts.timezone))
    return dict(
        dag_id=settings.pipeline.pipeline_name,
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


def build_dag(settings: AirflowSettings) -> DAG:
    plan = load_plan(settings.pipeline)
    with DAG(**dag_config(settings)) as built:
        tasks = {node: PythonOperator(task_id=node, python_callable=functools.partial(
                     run_node, node_id=node, plan=plan, settings=settings))
                 for node, _ in plan}
        for node, upstream in plan:
            for parent in upstream:
                tasks[parent] >> tasks[node]
    return built


# Airflow collects module-level DAG objects. Settings errors surface as this file's import error.
dag = build_dag(load_settings())
