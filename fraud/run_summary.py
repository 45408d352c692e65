"""Read what a pipeline run did back from ML Metadata: per-component state and time, data, metrics,
blessing and push. Used by the local runner's summary (and later by reports)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import tensorflow_model_analysis as tfma
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from fraud import features as F

HEADLINE_METRICS = (F.METRIC_PR_AUC, F.METRIC_ROC_AUC, "recall_at_1pct_fpr", "card_precision_at_k", F.METRIC_PRECISION,
                    F.METRIC_RECALL, F.METRIC_CALIBRATION, F.METRIC_EXAMPLE_COUNT)
_STATE = metadata_store_pb2.Execution.State


@dataclass
class ComponentRun:
    node_id: str
    state: str
    seconds: float
    outputs: dict = field(default_factory=dict)  # output artifact type name -> list of artifacts
    error: str = ""


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

    def component(self, node_id: str) -> ComponentRun | None:
        return next((c for c in self.components if c.node_id == node_id), None)


def open_store(metadata_path: str) -> metadata_store.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def _props(artifact) -> dict:
    out = {}
    for key, value in list(artifact.properties.items()) + list(artifact.custom_properties.items()):
        out[key] = value.int_value if value.HasField("int_value") else (
            value.double_value if value.HasField("double_value") else value.string_value)
    return out


def overall_metrics(eval_uri: str) -> tuple[dict[str, float], dict[str, float]]:
    """(candidate, baseline) metrics of the overall slice from a TFMA output directory."""
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
            target = baseline if key.model_name == "baseline" else candidate
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


def summarize(metadata_path: str, pipeline_name: str) -> RunSummary:
    store = open_store(metadata_path)
    runs = [c for c in store.get_contexts_by_type("pipeline_run")]
    if not runs:
        raise RuntimeError(f"no pipeline run recorded in {metadata_path}")
    run = max(runs, key=lambda c: c.id)
    executions = store.get_executions_by_context(run.id)
    components: list[ComponentRun] = []
    for execution in sorted(executions, key=lambda e: e.id):
        node = next((c.name for c in store.get_contexts_by_execution(execution.id)
                     if c.name.startswith(pipeline_name + ".")), execution.type)
        node_id = node.split(".", 1)[-1]
        events = store.get_events_by_execution_ids([execution.id])
        out_ids = [e.artifact_id for e in events if e.type in (metadata_store_pb2.Event.OUTPUT,
                                                               metadata_store_pb2.Event.DECLARED_OUTPUT)]
        outputs: dict[str, list] = {}
        if out_ids:
            types = {t.id: t.name for t in store.get_artifact_types()}
            for artifact in store.get_artifacts_by_id(out_ids):
                outputs.setdefault(types[artifact.type_id], []).append(artifact)
        seconds = max(0.0, (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000)
        error = ""
        if "__execution_result__" in execution.custom_properties:
            error = execution.custom_properties["__execution_result__"].string_value
        components.append(ComponentRun(node_id, _STATE.Name(execution.last_known_state), seconds, outputs, error))

    summary = RunSummary(run.name, components, {}, None, {}, {}, None, [], False, "", "", "")
    gen = summary.component("FraudExampleGen")
    if gen and gen.outputs.get("Examples"):
        p = _props(gen.outputs["Examples"][0])
        for split in F.SPLITS:
            if f"rows_{split}" in p:
                rows, fraud = p[f"rows_{split}"], p[f"fraud_{split}"]
                summary.splits[split] = {"rows": rows, "fraud": fraud, "fraud_rate": fraud / max(rows, 1)}
    gate = summary.component("DataValidationGate")
    if gate and gate.outputs.get("Schema"):
        summary.anomaly_count = int(_props(gate.outputs["Schema"][0]).get("anomaly_count", 0))
    evaluator = summary.component("Evaluator")
    if evaluator and evaluator.outputs.get("ModelEvaluation"):
        summary.eval_uri = evaluator.outputs["ModelEvaluation"][0].uri
        summary.candidate, summary.baseline = overall_metrics(summary.eval_uri)
        summary.failed_thresholds = failed_thresholds(summary.eval_uri)
    if evaluator and evaluator.outputs.get("ModelBlessing"):
        summary.blessed = bool(_props(evaluator.outputs["ModelBlessing"][0]).get("blessed", 0))
    pusher = summary.component("Pusher")
    if pusher and pusher.outputs.get("PushedModel"):
        p = _props(pusher.outputs["PushedModel"][0])
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
        for name in HEADLINE_METRICS:
            if name in s.candidate:
                base = s.baseline.get(name)
                lines.append(f"  {name:<22} {s.candidate[name]:>10.4f} "
                             + (f"{base:>10.4f}" if base is not None else f"{'(none)':>10}"))
    if s.blessed is not None:
        lines += ["", "Blessed: " + ("YES" if s.blessed else "NO")]
        for failure in s.failed_thresholds:
            lines.append(f"  failed: {failure}")
    lines.append("Pushed: " + (f"version {s.pushed_version} -> {s.pushed_path}" if s.pushed else "no"))
    return "\n".join(lines)
