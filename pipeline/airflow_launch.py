"""How each Airflow task launches its TFX component: TFX 1.16's Airflow launcher, with the fixes it needs.

`run_task` replaces the python_callable AirflowDagRunner gives every task (pipeline/airflow_dag.py installs it):
it applies the run's `dag_run.conf` through the same settings as `fraudctl`, fails at once (no retries) when the
data is rejected, and launches the component with `AirflowSafeMetadata`, which makes retries work and lets two
components with same-named outputs run in one DAG run. See the DAG file's docstring for why.
"""
from __future__ import annotations

import logging

from airflow.exceptions import AirflowFailException
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import data_types
from tfx.orchestration import metadata as tfx_metadata
from tfx.utils import telemetry_utils

from fraud import errors, sources
from pipeline.airflow_settings import AirflowSettings, SettingsError, run_settings
from pipeline.definition import create_pipeline

log = logging.getLogger(__name__)


def run_task(*, tfx_args: dict, settings: AirflowSettings, exec_properties: dict, **context) -> None:
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
        if errors.is_data_rejected(exc):
            raise AirflowFailException(
                f"{component.id} rejected the data of {sources.display(run.data_dir)} (not retried: the same data "
                f"fails the same way); nothing downstream runs, nothing is pushed. {errors.root_message(exc)}"
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
