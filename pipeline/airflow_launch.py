"""What each Airflow task runs: one node of the pipeline, with TFX's own launcher, as `fraudctl pipeline run` does.

`run_node` is every task's python_callable (pipeline/airflow_dag.py). Importing this module is light: TFX is
imported when a task runs, not when Airflow parses the DAG file.

A task:
1. applies the run's `dag_run.conf` through the same settings as `fraudctl` (a bad parameter fails the task at
   once, without retries);
2. compiles the run's pipeline (`create_pipeline()` with those settings) to TFX's intermediate representation and
   checks that its node graph is the one the DAG was built from (pipeline/airflow_plan.py);
3. sets the IR's pipeline-run id to the Airflow DAG run's id, so that the tasks of one DAG run are one TFX pipeline
   run in ML Metadata: each node's inputs are the outputs its upstream nodes produced in this run;
4. does nothing if the node already completed in this DAG run (a task killed after its node published, or
   cleared by hand): a new DAG run runs the pipeline again;
5. launches the node with TFX's portable launcher (tfx.orchestration.portable.launcher), the one LocalDagRunner
   uses. Each attempt is a new ML Metadata execution with its own output folders, so Airflow's retries just work;
6. data that the pipeline rejects (fraud.errors.DataRejected: the data contract, validation anomalies) fails the
   task without retries (the same data fails the same way); anything else is retried with back-off.
"""
from __future__ import annotations

import logging

from fraud import errors, sources
from pipeline.airflow_plan import nodes_of
from pipeline.airflow_settings import AirflowSettings, SettingsError, run_settings

log = logging.getLogger(__name__)


def run_node(*, node_id: str, plan: list, settings: AirflowSettings, **context) -> None:
    """One Airflow task: node `node_id` of the run's pipeline (`plan`: the DAG's node graph)."""
    from airflow.exceptions import AirflowFailException

    conf = context["dag_run"].conf or {}
    try:
        run = run_settings(settings, conf)
    except SettingsError as exc:
        raise AirflowFailException(f"{node_id}: {exc}") from None  # bad parameters: retrying won't help
    log.info("%s: run parameters %s", node_id, {name: getattr(run, name) for name in settings.run_params()})
    run.pipeline_root.mkdir(parents=True, exist_ok=True)  # ML Metadata's SQLite file lives there
    try:
        launch_node(run, node_id, context["dag_run"].run_id, plan)
    except Exception as exc:
        if errors.is_data_rejected(exc):
            raise AirflowFailException(
                f"{node_id} rejected the data of {sources.display(run.data_dir)} (not retried: the same data "
                f"fails the same way); nothing downstream runs, nothing is pushed. {errors.root_message(exc)}"
            ) from exc
        raise


def launch_node(run, node_id: str, run_id: str, plan: list | None = None) -> bool:
    """Run node `node_id` of the pipeline of `run` (PipelineSettings) as part of pipeline run `run_id`; False if
    it had already completed in that run (nothing done)."""
    from tfx.dsl.compiler import compiler, constants
    from tfx.orchestration import metadata
    from tfx.orchestration.local import runner_utils
    from tfx.orchestration.portable import launcher, runtime_parameter_utils
    from tfx.utils import telemetry_utils

    from pipeline.definition import create_pipeline

    ir = compiler.Compiler().compile(create_pipeline(**run.pipeline_kwargs()))
    graph = [(node, list(upstream)) for node, upstream in nodes_of(ir)]
    if plan is not None and graph != [(node, list(upstream)) for node, upstream in plan]:
        raise errors.FraudError("the pipeline's nodes changed since Airflow parsed the DAG (new code or settings on "
                                "this worker?): let the scheduler parse the DAG file again, then trigger a new run")
    runtime_parameter_utils.substitute_runtime_parameter(ir, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id})
    deployment = runner_utils.extract_local_deployment_config(ir)
    connection = getattr(deployment.metadata_connection_config,
                         deployment.metadata_connection_config.WhichOneof("connection_config"))
    nodes = {n.pipeline_node.node_info.id: n.pipeline_node for n in ir.nodes}
    if node_id not in nodes:
        raise errors.FraudError(f"the pipeline has no node {node_id!r} (nodes: {', '.join(nodes)})")
    node = nodes[node_id]
    done = completed_execution(connection, ir.pipeline_info.id, node_id, run_id)
    if done is not None:
        log.warning("%s already completed in run %s (ML Metadata execution %d): not run again; trigger a new DAG "
                    "run to run the pipeline again", node_id, run_id, done)
        return False
    node_launcher = launcher.Launcher(
        pipeline_node=node, mlmd_connection=metadata.Metadata(connection), pipeline_info=ir.pipeline_info,
        pipeline_runtime_spec=ir.runtime_spec, executor_spec=runner_utils.extract_executor_spec(deployment, node_id),
        custom_driver_spec=runner_utils.extract_custom_driver_spec(deployment, node_id))
    with telemetry_utils.scoped_labels({telemetry_utils.LABEL_TFX_RUNNER: "airflow"}):
        node_launcher.launch()
    return True


def completed_execution(connection, pipeline_name: str, node_id: str, run_id: str) -> int | None:
    """The id of an execution of the node that completed (or was cached) in pipeline run `run_id`, if any."""
    from ml_metadata.proto import metadata_store_pb2
    from tfx.orchestration import metadata

    final = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)
    with metadata.Metadata(connection) as m:
        run_context = m.store.get_context_by_type_and_name("pipeline_run", run_id)
        node_context = m.store.get_context_by_type_and_name("node", f"{pipeline_name}.{node_id}")
        if run_context is None or node_context is None:
            return None
        in_run = {e.id for e in m.store.get_executions_by_context(run_context.id)}
        for execution in m.store.get_executions_by_context(node_context.id):
            if execution.id in in_run and execution.last_known_state in final:
                return execution.id
    return None
