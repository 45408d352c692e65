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
else (a killed worker, a full disk) is retried with exponential back-off. TFX 1.16's Airflow launcher cannot
retry a component (ML Metadata refuses to record its input events and output artifacts twice) nor run two
components whose outputs share a key and a type: `_launch` below fixes both (AirflowSafeMetadata), and does
not run again a component that already completed in the same DAG run (a new DAG run re-runs the pipeline). The Pusher only runs after the Evaluator and pushes only a blessed model
(`model_blessing=` in create_pipeline: AirflowDagRunner does not evaluate tfx.dsl.Cond).
"""
from __future__ import annotations

import functools
import logging
from datetime import timedelta

import pendulum
from airflow.exceptions import AirflowFailException
from airflow.models.param import Param
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import data_types
from tfx.orchestration import metadata as tfx_metadata
from tfx.orchestration.airflow import airflow_component
from tfx.orchestration.airflow.airflow_dag_runner import AirflowDagRunner, AirflowPipelineConfig
from tfx.utils import telemetry_utils

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
        tfx_launch = task.python_callable
        if not (isinstance(tfx_launch, functools.partial)
                and tfx_launch.func is airflow_component._airflow_component_launcher):
            raise RuntimeError(f"{task.task_id}: AirflowDagRunner built an unexpected callable ({tfx_launch!r}); "
                               "the TFX version changed: review pipeline/airflow_dag.py")
        task.python_callable = functools.partial(_run_task, tfx_args=dict(tfx_launch.keywords), settings=settings)
    return dag


def _run_task(*, tfx_args: dict, settings: AirflowSettings, exec_properties: dict, **context) -> None:
    """One Airflow task: launch one TFX component with the run's settings (`dag_run.conf` applied)."""
    component = tfx_args["component"]
    conf = context["dag_run"].conf or {}
    try:
        run = run_settings(settings, conf)
    except SettingsError as exc:
        raise AirflowFailException(f"{component.id}: {exc}") from None  # bad parameters: retrying won't help
    log.info("%s: run parameters %s", component.id, {name: getattr(run, name) for name in settings.run_params()})
    run.pipeline_root.mkdir(parents=True, exist_ok=True)  # ML Metadata's SQLite file lives there
    rebuilt = {c.id: c for c in create_pipeline(**run.pipeline_kwargs()).components}
    try:
        _launch(tfx_args, {**exec_properties, **rebuilt[component.id].exec_properties}, context["ti"])
    except Exception as exc:
        chain = _chain(exc)
        if any(type(e).__name__ in DATA_ERRORS for e in chain):
            raise AirflowFailException(
                f"{component.id} rejected the data of {run.data_dir} (not retried: the same data fails the "
                f"same way); nothing downstream runs, nothing is pushed. {type(chain[-1]).__name__}: {chain[-1]}"
            ) from exc
        raise


def _launch(tfx_args: dict, exec_properties: dict, ti) -> None:
    """TFX's airflow_component._airflow_component_launcher, with retries that work (AirflowSafeMetadata) and
    without re-running a component that already completed in this DAG run."""
    component, pipeline_info = tfx_args["component"], tfx_args["pipeline_info"]
    component.exec_properties.update(exec_properties)
    pipeline_info.run_id = ti.get_dagrun().run_id  # TFX's pipeline-run context is the Airflow DAG run
    done = _completed_execution(tfx_args["metadata_connection_config"], component, pipeline_info)
    if done is not None:
        # A task killed after its component published, or cleared by hand after success: running again would
        # overwrite published artifacts in place (same execution, same URIs). A new DAG run re-runs everything.
        log.warning("%s already completed in DAG run %s (ML Metadata execution %d): not run again; trigger a "
                    "new DAG run to run the pipeline again", component.id, pipeline_info.run_id, done.id)
        return
    launcher = tfx_args["component_launcher_class"].create(
        component=component,
        pipeline_info=pipeline_info,
        driver_args=tfx_args["driver_args"],
        metadata_connection=AirflowSafeMetadata(tfx_args["metadata_connection_config"]),
        beam_pipeline_args=tfx_args["beam_pipeline_args"],
        additional_pipeline_args=tfx_args["additional_pipeline_args"],
        component_config=tfx_args["component_config"])
    with telemetry_utils.scoped_labels({telemetry_utils.LABEL_TFX_RUNNER: "airflow"}):
        launcher.launch()


class AirflowSafeMetadata(tfx_metadata.Metadata):
    """The ML Metadata handle of AirflowDagRunner's launcher (TFX's older launcher), with three fixes.

    1. Retries. The launcher names a component's execution context after the DAG run. A retry finds the failed
       attempt's context, reuses its execution and records the same input events again, which ML Metadata
       refuses ("AlreadyExistsError: Given event already exists"): with TFX 1.16 as released, every retry of
       a component that has inputs fails at once, whatever the first failure was. Here a retry records only
       the input events not recorded yet.
    2. Retries, outputs: the failed attempt already registered the execution's output artifacts under the same
       names; a retry reuses them (same execution, same URIs: TFX's driver reuses output folders on purpose)
       instead of failing on ML Metadata's unique (type, name).
    3. Names. The launcher names output artifacts "<output key>:<run id>", unique per artifact type in ML
       Metadata, so two components with an output of the same key and type (the Trainer's and the
       OperatingThresholdSelector's `model`) cannot both run in one DAG run. Names here are
       "<component id>.<output key>:<run id>". Nothing resolves artifacts by name: inputs are found through
       the producer's output events.
    """

    def register_execution(self, pipeline_info, component_info, contexts, exec_properties=None,
                           input_artifacts=None):
        context = self.get_component_run_context(component_info)
        if context is not None and input_artifacts:
            recorded = {event.artifact_id for event in self._events_of(context)
                        if event.type == metadata_store_pb2.Event.INPUT}
            log.info("retry of %s: input events already recorded for artifacts %s", component_info.component_id,
                     sorted(recorded))
            input_artifacts = {key: [a for a in artifacts if a.id not in recorded]
                               for key, artifacts in input_artifacts.items()}
        return super().register_execution(pipeline_info=pipeline_info, component_info=component_info,
                                          contexts=contexts, exec_properties=exec_properties,
                                          input_artifacts=input_artifacts)

    def update_execution(self, execution, component_info, input_artifacts=None, output_artifacts=None,
                         exec_properties=None, execution_state=None, artifact_state=None, contexts=None):
        outputs = None
        for artifacts in (output_artifacts or {}).values():
            for artifact in artifacts:
                if artifact.id:
                    continue
                prefix = component_info.component_id + "."
                if not artifact.name.startswith(prefix):
                    artifact.name = prefix + artifact.name
                existing = self.store.get_artifact_by_type_and_name(artifact.type_name, artifact.name)
                if existing is None:
                    continue
                if outputs is None:
                    outputs = {e.artifact_id for e in self.store.get_events_by_execution_ids([execution.id])
                               if e.type == metadata_store_pb2.Event.OUTPUT}
                if existing.id in outputs:  # registered by a failed attempt of this execution
                    artifact.set_mlmd_artifact_type(self._prepare_artifact_type(artifact.artifact_type))
                    artifact.id = existing.id
        return super().update_execution(execution=execution, component_info=component_info,
                                        input_artifacts=input_artifacts, output_artifacts=output_artifacts,
                                        exec_properties=exec_properties, execution_state=execution_state,
                                        artifact_state=artifact_state, contexts=contexts)

    def _events_of(self, context):
        executions = self.store.get_executions_by_context(context.id)
        return self.store.get_events_by_execution_ids([e.id for e in executions])


def _completed_execution(connection_config, component, pipeline_info):
    info = data_types.ComponentInfo(component_type=component.type, component_id=component.id,
                                    pipeline_info=pipeline_info)
    with tfx_metadata.Metadata(connection_config) as store:
        context = store.get_component_run_context(info)
        if context is None:
            return None
        for execution in store.store.get_executions_by_context(context.id):
            if execution.properties["state"].string_value in tfx_metadata.FINAL_EXECUTION_STATES:
                return execution
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    out = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


# Airflow collects module-level DAG objects. Settings errors surface as this file's import error.
dag = build_dag(load_settings())
