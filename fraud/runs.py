"""Read what a pipeline run did back from ML Metadata: the one reader of the store for the whole project.

`read_run` walks one run (per component: state, time, error, input and output artifacts by key); the run
summary the local runner prints (`summarize`, `format_summary`) and the evaluation report (fraud.report) are
both built on it. The store is opened read-only: reading a run never changes it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from fraud import features as F

_EXECUTION_RESULT = "__execution_result__"  # where TFX records a failed component's error


# ---------------------------------------------------------------------------------------------------------------
# The store and one run
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Node:
    """One component of a run as ML Metadata recorded it."""
    node_id: str
    state: str
    seconds: float
    error: str
    inputs: dict = field(default_factory=dict)  # input key -> [mlmd Artifact]
    outputs: dict = field(default_factory=dict)  # output key -> [mlmd Artifact]
    output_types: dict = field(default_factory=dict)  # output key -> artifact type name ("Examples", ...)
    properties: dict = field(default_factory=dict)  # execution properties (e.g. a component's custom_config)

    def artifact(self, key: str, output: bool = True):
        found = (self.outputs if output else self.inputs).get(key) or []
        return found[0] if found else None


def open_store(metadata_path: str):
    """The ML Metadata store of a pipeline root's SQLite file, read-only."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def props(artifact) -> dict:
    """The properties and custom properties of an MLMD artifact (or execution) as {name: int | float | str};
    {} for None."""
    if artifact is None:
        return {}
    out = {}
    for key, value in list(artifact.properties.items()) + list(artifact.custom_properties.items()):
        out[key] = value.int_value if value.HasField("int_value") else (
            value.double_value if value.HasField("double_value") else value.string_value)
    return out


def _runs(store) -> list:
    return sorted(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.id)


def list_runs(metadata_path: str) -> list[str]:
    """The run ids recorded in a store, oldest first."""
    return [c.name for c in _runs(open_store(metadata_path))]


def read_run(metadata_path: str, pipeline_name: str, run_id: str | None = None) -> tuple[str, dict]:
    """(run id, {node id: Node}) of one pipeline run (the latest by default), in execution order."""
    from ml_metadata.proto import metadata_store_pb2

    if not os.path.exists(metadata_path):
        raise FileNotFoundError(f"no ML Metadata at {metadata_path}: is this a pipeline root?")
    store = open_store(metadata_path)
    runs = _runs(store)
    if not runs:
        raise RuntimeError(f"no pipeline run recorded in {metadata_path}")
    if run_id is None:
        run = runs[-1]
    else:
        matches = [c for c in runs if c.name == run_id]
        if not matches:
            raise ValueError(f"no run {run_id!r} in {metadata_path}; runs: {', '.join(c.name for c in runs)}")
        run = matches[0]
    event = metadata_store_pb2.Event
    state = metadata_store_pb2.Execution.State
    type_names = {t.id: t.name for t in store.get_artifact_types()}
    nodes = {}
    for execution in sorted(store.get_executions_by_context(run.id), key=lambda e: e.id):
        name = next((c.name for c in store.get_contexts_by_execution(execution.id)
                     if c.name.startswith(pipeline_name + ".")), execution.type)
        node_id = name.split(".", 1)[-1]
        events = store.get_events_by_execution_ids([execution.id])
        artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
        execution_props = props(execution)
        node = Node(node_id, state.Name(execution.last_known_state),
                    max(0.0, (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000),
                    str(execution_props.pop(_EXECUTION_RESULT, "")), properties=execution_props)
        for e in events:
            key = e.path.steps[0].key if e.path.steps else ""
            artifact = artifacts[e.artifact_id]
            if e.type in (event.INPUT, event.DECLARED_INPUT):
                node.inputs.setdefault(key, []).append(artifact)
            elif e.type in (event.OUTPUT, event.DECLARED_OUTPUT):
                node.outputs.setdefault(key, []).append(artifact)
                node.output_types[key] = type_names.get(artifact.type_id, "")
        nodes[node_id] = node
    return run.name, nodes


# ---------------------------------------------------------------------------------------------------------------
# TFMA results
# ---------------------------------------------------------------------------------------------------------------
def overall_metrics(eval_uri: str) -> tuple[dict[str, float], dict[str, float]]:
    """(candidate, baseline) metrics of the overall slice from a TFMA output directory."""
    import tensorflow_model_analysis as tfma

    candidate, baseline = {}, {}
    for metrics_for_slice in tfma.load_metrics(eval_uri):
        if metrics_for_slice.slice_key.single_slice_keys:
            continue
        for kv in metrics_for_slice.metric_keys_and_values:
            key = kv.key
            if key.is_diff:
                continue
            if not kv.value.HasField("double_value"):
                continue
            target = baseline if key.model_name == F.BASELINE else candidate
            target[key.name] = kv.value.double_value.value
    return candidate, baseline


def _bound_text(bound) -> str:
    fields = {f.name: v for f, v in bound.ListFields()}
    if "lower_bound" in fields:
        return f">= {fields['lower_bound'].value:g}"
    if "upper_bound" in fields:
        return f"<= {fields['upper_bound'].value:g}"
    if "absolute" in fields:
        return f"change >= {fields['absolute'].value:+g} vs baseline"
    if "relative" in fields:
        return f"relative change >= {fields['relative'].value:+g} vs baseline"
    return str(bound).replace("\n", " ")


def failed_thresholds(eval_uri: str) -> list[str]:
    """One line per blessing threshold TFMA's validation failed: metric, kind, slice, value and bound."""
    import tensorflow_model_analysis as tfma

    result = tfma.load_validation_result(eval_uri)
    out = []
    for failure in result.metric_validations_per_slice:
        where = ", ".join(f"{k.column}={k.bytes_value.decode() or k.int64_value or k.float_value}"
                          for k in failure.slice_key.single_slice_keys) or "overall"
        for f in failure.failures:
            kind = "change vs baseline" if f.metric_key.is_diff else "value"
            threshold = f.metric_threshold
            bound = (threshold.change_threshold if f.metric_key.is_diff else threshold.value_threshold)
            out.append(f"{f.metric_key.name} ({kind}, {where}) = {f.metric_value.double_value.value:+.4f}; "
                       f"threshold: {_bound_text(bound)}")
    return out


# ---------------------------------------------------------------------------------------------------------------
# The run summary (printed by the local runner after every run)
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class ComponentRun:
    node_id: str
    state: str
    seconds: float
    outputs: dict = field(default_factory=dict)  # output artifact type name -> list of artifacts
    error: str = ""

    @classmethod
    def of(cls, node: Node) -> "ComponentRun":
        outputs: dict = {}
        for key, artifacts in node.outputs.items():
            outputs.setdefault(node.output_types.get(key, ""), []).extend(artifacts)
        return cls(node.node_id, node.state, node.seconds, outputs, node.error)


@dataclass
class RunSummary:
    run_id: str
    components: list[ComponentRun]
    splits: dict[str, dict]  # split -> {rows, fraud, fraud_rate}
    anomaly_count: int | None
    candidate: dict[str, float]
    baseline: dict[str, float]
    blessed: bool | None
    failed_thresholds: list[str]
    pushed: bool
    pushed_version: str
    pushed_path: str
    eval_uri: str
    reference: object = None  # fraud.reference.GateResult, when the reference gate ran

    @property
    def evaluator_blessed(self) -> bool | None:
        return None if self.reference is None else self.reference.evaluator_blessed

    def component(self, node_id: str) -> ComponentRun | None:
        return next((c for c in self.components if c.node_id == node_id), None)


def _output(nodes: dict, node_id: str, key: str):
    node = nodes.get(node_id)
    return node.artifact(key) if node is not None else None


def summarize(metadata_path: str, pipeline_name: str) -> RunSummary:
    """The summary of the latest run: components, data per split, anomalies, metrics, blessing and push."""
    run_id, nodes = read_run(metadata_path, pipeline_name)
    summary = RunSummary(run_id, [ComponentRun.of(n) for n in nodes.values()], {}, None, {}, {}, None, [], False,
                         "", "", "")
    p = props(_output(nodes, F.NODE_EXAMPLE_GEN, "examples"))
    for split in F.SPLITS:
        if F.prop_rows(split) in p:
            rows, fraud = p[F.prop_rows(split)], p[F.prop_fraud(split)]
            summary.splits[split] = {"rows": rows, "fraud": fraud, "fraud_rate": fraud / max(rows, 1)}
    schema = _output(nodes, F.NODE_VALIDATION_GATE, "validated_schema")
    if schema is not None:
        summary.anomaly_count = int(props(schema).get(F.PROP_ANOMALY_COUNT, 0))
    evaluation = _output(nodes, F.NODE_EVALUATOR, "evaluation")
    if evaluation is not None:
        summary.eval_uri = evaluation.uri
        summary.candidate, summary.baseline = overall_metrics(summary.eval_uri)
        summary.failed_thresholds = failed_thresholds(summary.eval_uri)
    blessing = _output(nodes, F.NODE_EVALUATOR, "blessing")
    if blessing is not None:
        summary.blessed = bool(props(blessing).get("blessed", 0))
    gate = _output(nodes, F.NODE_REFERENCE_GATE, "blessing")
    if gate is not None and os.path.exists(os.path.join(gate.uri, F.REFERENCE_FILE)):
        from fraud.reference import read_result

        summary.reference = read_result(gate.uri)
        summary.blessed = bool(props(gate).get("blessed", 0))
    pushed = _output(nodes, F.NODE_PUSHER, "pushed_model")
    if pushed is not None:
        p = props(pushed)
        summary.pushed = bool(p.get("pushed", 0))
        summary.pushed_version = str(p.get("pushed_version", ""))
        summary.pushed_path = str(p.get("pushed_destination", ""))
    return summary


def format_summary(s: RunSummary) -> str:
    lines = [f"Run {s.run_id}", "", "Components:"]
    for c in s.components:
        lines.append(f"  {c.node_id:<32} {c.state:<9} {c.seconds:7.1f} s")
    if s.splits:
        lines += ["", "Data (time split):"]
        for name, v in s.splits.items():
            lines.append(f"  {name:<6} {v['rows']:>8} rows  {v['fraud']:>5} fraud  ({v['fraud_rate']:.2%})")
    lines.append("")
    lines.append("Validation anomalies: " + ("not checked" if s.anomaly_count is None else str(s.anomaly_count)))
    if s.candidate:
        lines += ["", f"  {'metric (eval split)':<22} {'candidate':>10} {'baseline':>10}"]
        for name in F.HEADLINE_METRICS:
            if name in s.candidate:
                base = s.baseline.get(name)
                lines.append(f"  {name:<22} {s.candidate[name]:>10.4f} "
                             + (f"{base:>10.4f}" if base is not None else f"{'(none)':>10}"))
    if s.reference is not None:
        lines += ["", f"  {'reference (eval split)':<22} {'PR-AUC':>10} {'ROC-AUC':>10} {'seconds':>8}"]
        for r in s.reference.references:
            if r.error:
                lines.append(f"  {r.name:<22} FAILED: {r.error}")
            else:
                lines.append(f"  {r.name:<22} {r.metrics.get(F.METRIC_PR_AUC, float('nan')):>10.4f} "
                             f"{r.metrics.get(F.METRIC_ROC_AUC, float('nan')):>10.4f} {r.seconds:>8.1f}")
    if s.blessed is not None:
        lines += ["", "Blessed: " + ("YES" if s.blessed else "NO")]
        for failure in s.failed_thresholds:
            lines.append(f"  failed: {failure}")
        if s.reference is not None:
            lines.append(f"  reference gate {s.reference.reason}")
    lines.append("Pushed: " + (f"version {s.pushed_version} -> {s.pushed_path}" if s.pushed else "no"))
    return "\n".join(lines)
