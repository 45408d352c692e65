"""The evaluation report of a pipeline run: ONE self-contained HTML file (inline CSS, plots as inline PNG) that a
risk analyst can read without TFX: the blessing decision, what the model catches and what it costs in alerts,
where it is weak, the data behind it, and what simple reference models achieve on the same rows.

Sources, so every number can be traced:
- ML Metadata: the run's artifacts (examples, statistics, schema, anomalies, model, baseline, evaluation,
  blessing, push).
- The TFMA result (the Evaluator's output): every candidate/baseline metric, per slice, and the curves: PR and ROC
  from TFMA's confusion-matrix plot (1,000 thresholds), calibration from its calibration plot. Shown as stored.
- Per-transaction scores: the candidate SavedModel's `serving_examples` signature (the one TFMA calls) run on the
  eval split's examples. TFMA keeps only aggregates; the PEN amounts caught/missed, the score distribution and the
  reference-model comparison need one score per row. The report recomputes the metrics from those scores with
  TFMA's own metric code and shows the largest difference from the stored result (0 when the scores are right).
- Reference models (scikit-learn) are scored with the same TFMA metric code, so the rows are comparable.

`build_report(root, pipeline_name, out)` writes `<root>/reports/<run id>.html` by default.
"""
from __future__ import annotations

import base64
import copy
import dataclasses
import html
import io
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fraud import features as F
from pipeline.eval_config import BASELINE as _BASELINE
from pipeline.eval_config import CANDIDATE as _CANDIDATE
from pipeline.eval_config import METRIC_CARD_PRECISION, METRIC_RECALL_AT_1PCT_FPR

REPORTS_DIR = "reports"
# A slice is judged only with enough fraud in it; below that its metrics are noise.
MIN_FRAUD_TO_JUDGE_SLICE = 10
# A slice is weak when it trails the overall model by these gaps. Both measures do not depend on the slice's fraud
# rate; PR-AUC does (a slice with rarer fraud has a lower PR-AUC for the same model), so it is shown, not judged.
WEAK_RECALL_GAP = 0.15  # recall at the operating threshold
WEAK_ROC_AUC_GAP = 0.05
TOP_DRIFTS = 8
# Not drift candidates: identifiers (always new), the event time (always moves in a time split) and the label
# (its shift is the fraud rate per split, shown in the data table).
_DRIFT_EXCLUDED = (F.TRANSACTION_ID, F.USER_ID, F.DEVICE_ID, F.IP_ADDRESS, F.EVENT_TIME, F.LABEL, F.FRAUD_SCENARIO)
_BUDGET_FACTORS = (0.2, 0.5, 1.0, 2.0, 5.0)
# Keys of per-model metric dicts that the report derives at the operating threshold from TFMA's matrices.
OP_PRECISION, OP_RECALL, OP_ALERTS_PER_DAY = "precision_at_op", "recall_at_op", "alerts_per_day_at_op"


# ---------------------------------------------------------------------------------------------------------------
# Data model
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Node:
    node_id: str
    state: str
    seconds: float
    error: str
    inputs: dict = field(default_factory=dict)  # input key -> [mlmd Artifact]
    outputs: dict = field(default_factory=dict)  # output key -> [mlmd Artifact]

    def artifact(self, key: str, output: bool = True):
        found = (self.outputs if output else self.inputs).get(key) or []
        return found[0] if found else None


@dataclass
class Curves:
    """One model's TFMA plots on one slice: confusion matrices per threshold and calibration buckets."""
    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    tn: np.ndarray
    fn: np.ndarray
    calibration: list  # [(lower, upper, examples, labels, predictions)]

    def at(self, threshold: float) -> dict | None:
        idx = np.flatnonzero(np.abs(self.thresholds - threshold) < 1e-7)
        if not len(idx):
            return None
        i = int(idx[0])
        tp, fp, fn = float(self.tp[i]), float(self.fp[i]), float(self.fn[i])
        return {"threshold": float(self.thresholds[i]), "tp": tp, "fp": fp, "fn": fn, "tn": float(self.tn[i]),
                "alerts": tp + fp, "precision": tp / (tp + fp) if tp + fp else float("nan"),
                "recall": tp / (tp + fn) if tp + fn else float("nan")}


@dataclass
class Evaluation:
    """The TFMA result: metrics and plots per slice and model ('candidate' / 'baseline')."""
    uri: str
    eval_config: object
    validation: object
    metrics: dict  # slice -> model -> {metric: value}; slice is "" (overall) or "column=value"
    curves: dict  # slice -> model -> Curves


@dataclass
class DecisionRow:
    metric: str
    kind: str  # "value" | "change"
    rule: str
    bound: float
    candidate: float | None
    baseline: float | None
    margin: float | None  # how far on the right side of the bound (negative: failed)
    status: str  # "passed" | "FAILED" | "not applied"


@dataclass
class Reference:
    name: str
    metrics: dict
    threshold: float
    eval_scores: np.ndarray
    curves: Curves
    seconds: float
    note: str = ""


@dataclass
class ReportData:
    run_id: str
    pipeline_name: str
    root: str
    nodes: dict
    splits: dict  # split -> {rows, fraud, fraud_rate, days}
    anomalies: list | None  # None: not checked
    drifts: list  # [{feature, measure, value, gate_threshold, detail}]
    evaluation: Evaluation | None
    blessed: bool | None
    failed_thresholds: list
    decision: list  # [DecisionRow]
    pushed: dict
    has_baseline: bool
    operating: object | None  # components.threshold.OperatingThreshold of the candidate
    operating_source: str
    baseline_operating: object | None
    baseline_operating_source: str
    eval_days: int
    eval_frame: object | None  # pandas frame: label, amount_pen, score (+ slice columns)
    alert_table: list
    slices: list
    references: list  # [Reference]
    recompute_max_diff: float | None
    tfma_fixed_threshold: float | None  # the EvalConfig's Precision/Recall threshold (--operating-threshold)
    timings: dict
    warnings: list = field(default_factory=list)

    @property
    def candidate(self) -> dict:
        return self.evaluation.metrics.get("", {}).get(_CANDIDATE, {}) if self.evaluation else {}

    @property
    def baseline(self) -> dict:
        return self.evaluation.metrics.get("", {}).get(_BASELINE, {}) if self.evaluation else {}


# ---------------------------------------------------------------------------------------------------------------
# ML Metadata
# ---------------------------------------------------------------------------------------------------------------
def list_runs(metadata_path: str) -> list[str]:
    from fraud.run_summary import open_store

    store = open_store(metadata_path)
    return [c.name for c in sorted(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.id)]


def read_run(metadata_path: str, pipeline_name: str, run_id: str | None = None) -> tuple[str, dict]:
    """(run id, {node id: Node}) of one pipeline run (the latest by default), inputs and outputs by key."""
    from ml_metadata.proto import metadata_store_pb2

    from fraud.run_summary import open_store

    if not os.path.exists(metadata_path):
        raise FileNotFoundError(f"no ML Metadata at {metadata_path}: is this a pipeline root?")
    store = open_store(metadata_path)
    runs = sorted(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.id)
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
    nodes = {}
    for execution in sorted(store.get_executions_by_context(run.id), key=lambda e: e.id):
        name = next((c.name for c in store.get_contexts_by_execution(execution.id)
                     if c.name.startswith(pipeline_name + ".")), execution.type)
        node_id = name.split(".", 1)[-1]
        events = store.get_events_by_execution_ids([execution.id])
        artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
        node = Node(node_id, state.Name(execution.last_known_state),
                    max(0.0, (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000),
                    execution.custom_properties["__execution_result__"].string_value
                    if "__execution_result__" in execution.custom_properties else "")
        for e in events:
            key = e.path.steps[0].key if e.path.steps else ""
            if e.type in (event.INPUT, event.DECLARED_INPUT):
                node.inputs.setdefault(key, []).append(artifacts[e.artifact_id])
            elif e.type in (event.OUTPUT, event.DECLARED_OUTPUT):
                node.outputs.setdefault(key, []).append(artifacts[e.artifact_id])
        nodes[node_id] = node
    return run.name, nodes


def _props(artifact) -> dict:
    from fraud.run_summary import _props as props

    return props(artifact) if artifact is not None else {}


def examples_artifact(nodes: dict):
    """The Examples the model was evaluated on: the Evaluator's input (with behavioural features when the pipeline
    adds them), else what StatisticsGen read, else the ingestion output (a run that stopped early)."""
    for node_id in ("Evaluator", "StatisticsGen"):
        node = nodes.get(node_id)
        if node is not None and node.artifact("examples", output=False) is not None:
            return node.artifact("examples", output=False)
    return _find_output(nodes, "examples")


def _find_output(nodes: dict, key: str):
    for node in nodes.values():
        if node.artifact(key) is not None:
            return node.artifact(key)
    return None


# ---------------------------------------------------------------------------------------------------------------
# TFMA
# ---------------------------------------------------------------------------------------------------------------
def _slice_name(slice_key) -> str:
    parts = []
    for k in slice_key.single_slice_keys:
        value = k.bytes_value.decode() if k.HasField("bytes_value") else (
            k.int64_value if k.HasField("int64_value") else k.float_value)
        parts.append(f"{k.column}={value if value != '' else '(missing)'}")
    return ", ".join(parts)


def _model(name: str) -> str:
    return _BASELINE if name == _BASELINE else _CANDIDATE  # '' when there is no baseline (first run)


def curves_from_plot(value) -> Curves | None:
    """Curves from one TFMA PlotData value (confusion_matrix_at_thresholds + calibration_histogram_buckets)."""
    matrices = value.confusion_matrix_at_thresholds.matrices
    if not matrices:
        return None
    arr = lambda attr: np.array([getattr(m, attr) for m in matrices], dtype=np.float64)  # noqa: E731
    calibration = [(b.lower_threshold_inclusive, b.upper_threshold_exclusive, b.num_weighted_examples.value,
                    b.total_weighted_label.value, b.total_weighted_refined_prediction.value)
                   for b in value.calibration_histogram_buckets.buckets]
    return Curves(arr("threshold"), arr("true_positives"), arr("false_positives"), arr("true_negatives"),
                  arr("false_negatives"), calibration)


def load_evaluation(eval_uri: str) -> Evaluation:
    import tensorflow_model_analysis as tfma
    from tensorflow_model_analysis.writers import eval_config_writer

    eval_config = eval_config_writer.load_eval_run(eval_uri)[0]
    metrics: dict = {}
    for per_slice in tfma.load_metrics(eval_uri):
        if per_slice.HasField("cross_slice_key"):
            continue
        slice_name = _slice_name(per_slice.slice_key)
        for kv in per_slice.metric_keys_and_values:
            if kv.key.is_diff or not kv.value.HasField("double_value"):
                continue
            metrics.setdefault(slice_name, {}).setdefault(_model(kv.key.model_name), {})[kv.key.name] = \
                kv.value.double_value.value
    curves: dict = {}
    for per_slice in tfma.load_plots(eval_uri):
        slice_name = _slice_name(per_slice.slice_key)
        # The confusion-matrix plot and the calibration plot arrive as separate PlotData values per model.
        merged: dict = {}
        for kv in per_slice.plot_keys_and_values:
            merged.setdefault(_model(kv.key.model_name), []).append(kv.value)
        for model, values in merged.items():
            combined = type(values[0])()
            for v in values:
                combined.MergeFrom(v)
            c = curves_from_plot(combined)
            if c is not None:
                curves.setdefault(slice_name, {})[model] = c
    return Evaluation(eval_uri, eval_config, tfma.load_validation_result(eval_uri), metrics, curves)


def _local_eval_config(eval_config):
    """The run's metrics without thresholds, for one unnamed model with label 'label', prediction 'prediction'."""
    import tensorflow_model_analysis as tfma

    metrics = []
    for spec in eval_config.metrics_specs:
        for m in spec.metrics:
            m2 = copy.deepcopy(m)
            m2.ClearField("threshold")
            m2.ClearField("per_slice_thresholds")
            m2.ClearField("cross_slice_thresholds")
            metrics.append(m2)
    return tfma.EvalConfig(model_specs=[tfma.ModelSpec(label_key="label", prediction_key="prediction")],
                           metrics_specs=[tfma.MetricsSpec(metrics=metrics)])


def tfma_metrics_from_scores(labels, scores, eval_config, features=None) -> tuple[dict, Curves | None]:
    """The run's TFMA metrics (and plots) computed in-process by TFMA's own metric code on (labels, scores).

    Each row goes through TFMA's combiners as one example, as in the Evaluator's Beam pipeline, with its raw
    features (`features`: a DataFrame of the eval rows) for metrics that read them (card precision reads the
    card and the day). So the candidate's recomputed metrics equal the stored TFMA result, and reference models
    are scored by exactly the same definitions.
    """
    from tensorflow_model_analysis.metrics import metric_specs, metric_types
    from tensorflow_model_analysis.proto import metrics_for_slice_pb2

    config = _local_eval_config(eval_config)
    labels = np.asarray(labels, dtype=np.float32).reshape(-1, 1)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1, 1)
    weight = np.ones(1, dtype=np.float32)
    columns = {}
    if features is not None:
        for name in features.columns:
            values = features[name].to_numpy()
            if values.dtype == object:
                values = np.array([str(v).encode() for v in values], dtype=object)
            columns[name] = values.reshape(-1, 1)
    # Computations are shared between metrics (the same histogram, the same matrices): run each once, like TFMA.
    unique = list(dict.fromkeys(metric_specs.to_computations(config.metrics_specs, eval_config=config)))
    combiners = [c.combiner for c in unique if isinstance(c, metric_types.MetricComputation)]
    accumulators = []
    for combiner in combiners:
        combiner.setup()
        accumulators.append(combiner.create_accumulator())
    # TFMA's calibration histogram (behind every AUC, matrix and plot) flattens its inputs, so it takes all rows
    # at once; every other combiner sees one example at a time.
    batched = [type(c).__name__ == "_CalibrationHistogramCombiner" for c in combiners]
    everything = metric_types.StandardMetricInputs(labels=labels.reshape(-1), predictions=scores.reshape(-1),
                                                   example_weights=np.ones(len(labels), np.float32), features={})
    for j, combiner in enumerate(combiners):
        if batched[j]:
            accumulators[j] = combiner.add_input(accumulators[j], everything)
    per_example = [j for j in range(len(combiners)) if not batched[j]]
    for i in range(len(labels) if per_example else 0):
        element = metric_types.StandardMetricInputs(
            labels=labels[i], predictions=scores[i], example_weights=weight,
            features={name: values[i] for name, values in columns.items()})
        for j in per_example:
            accumulators[j] = combiners[j].add_input(accumulators[j], element)
    results: dict = {}
    with np.errstate(divide="ignore", invalid="ignore"):  # TFMA's own 0/0 at empty thresholds
        for combiner, accumulator in zip(combiners, accumulators):
            results.update(combiner.extract_output(accumulator))
        for c in unique:
            if isinstance(c, metric_types.DerivedMetricComputation):
                results.update(c.result(results))
    metrics = {}
    plot_data = metrics_for_slice_pb2.PlotData()
    for key, value in results.items():
        if key.name.startswith("_"):
            continue
        if isinstance(key, metric_types.PlotKey):
            if hasattr(value, "matrices"):
                plot_data.confusion_matrix_at_thresholds.CopyFrom(value)
            elif hasattr(value, "buckets"):
                plot_data.calibration_histogram_buckets.CopyFrom(value)
        elif np.ndim(value) == 0:
            metrics[key.name] = float(value)
    return metrics, curves_from_plot(plot_data)


def overall_thresholds(eval_config) -> list[tuple[str, object]]:
    """(metric name, MetricThreshold) of every threshold that applies to the overall slice."""
    import tensorflow_model_analysis as tfma

    out = []
    for spec in eval_config.metrics_specs:
        for m in spec.metrics:
            name = json.loads(m.config or "{}").get("name") or m.class_name
            if m.HasField("threshold"):
                out.append((name, m.threshold))
            for pst in m.per_slice_thresholds:
                if any(s == tfma.SlicingSpec() for s in pst.slicing_specs):
                    out.append((name, pst.threshold))
    return out


def decision_rows(eval_config, validation, candidate: dict, baseline: dict) -> list[DecisionRow]:
    """Each blessing threshold with its bound, the candidate's and baseline's values and the margin.

    Pass/fail is TFMA's (the validation result the Evaluator wrote); the margin is how far the value is from the
    bound on the passing side.
    """
    from tensorflow_model_analysis.proto import config_pb2

    failed = set()
    if validation is not None:
        for per_slice in validation.metric_validations_per_slice:
            if per_slice.slice_key.single_slice_keys:
                continue
            for f in per_slice.failures:
                failed.add((f.metric_key.name, "change" if f.metric_key.is_diff else "value"))
    rows = []
    for name, threshold in overall_thresholds(eval_config):
        cand, base = candidate.get(name), baseline.get(name)
        if threshold.HasField("value_threshold"):
            vt = threshold.value_threshold
            if vt.HasField("lower_bound"):
                bound, rule = vt.lower_bound.value, f"{name} >= {vt.lower_bound.value:g}"
                margin = None if cand is None else cand - bound
            else:
                bound, rule = vt.upper_bound.value, f"{name} <= {vt.upper_bound.value:g}"
                margin = None if cand is None else bound - cand
            status = "FAILED" if (name, "value") in failed else ("passed" if cand is not None else "not applied")
            rows.append(DecisionRow(name, "value", rule, bound, cand, base, margin, status))
        if threshold.HasField("change_threshold"):
            ct = threshold.change_threshold
            higher = ct.direction == config_pb2.MetricDirection.HIGHER_IS_BETTER
            if ct.HasField("absolute"):
                bound = ct.absolute.value
                rule = f"{name} change vs baseline {'>=' if higher else '<='} {bound:+g}"
                diff = None if cand is None or base is None else cand - base
            else:
                bound = ct.relative.value
                rule = f"{name} relative change vs baseline {'>=' if higher else '<='} {bound:+g}"
                diff = None if cand is None or not base else (cand - base) / base
            margin = None if diff is None else (diff - bound if higher else bound - diff)
            if (name, "change") in failed:
                status = "FAILED"
            elif base is None:
                status = "not applied"  # TFMA ignores change thresholds without a baseline (first run)
            else:
                status = "passed"
            rows.append(DecisionRow(name, "change", rule, bound, cand, base, margin, status))
    return rows


def rejudge(data: ReportData, eval_config) -> ReportData:
    """What-if: the decision on this run's TFMA metrics under other thresholds, by TFMA's own validator.

    E.g. "would this model pass a PR-AUC floor of 0.8?" without re-running the Evaluator. Returns a copy.
    """
    import tensorflow_model_analysis as tfma
    from tensorflow_model_analysis.evaluators import metrics_validator
    from tensorflow_model_analysis.metrics import metric_types

    if data.evaluation is None:
        raise ValueError("the run has no TFMA result to judge")
    overall = {}
    for per_slice in tfma.load_metrics(data.evaluation.uri):
        if per_slice.slice_key.single_slice_keys or per_slice.HasField("cross_slice_key"):
            continue
        for kv in per_slice.metric_keys_and_values:
            if kv.value.HasField("double_value"):
                overall[metric_types.MetricKey.from_proto(kv.key)] = kv.value.double_value.value
    validation = metrics_validator.validate_metrics(((), overall), eval_config)
    evaluation = dataclasses.replace(data.evaluation, eval_config=eval_config, validation=validation)
    decision = decision_rows(eval_config, validation, data.candidate, data.baseline)
    failed = [f"{r.rule}: candidate {r.candidate:.4f}, margin {r.margin:+.4f}" for r in decision
              if r.status == "FAILED" and r.candidate is not None and r.margin is not None]
    return dataclasses.replace(data, evaluation=evaluation, decision=decision, blessed=validation.validation_ok,
                               failed_thresholds=failed, pushed={})


def _metric_config(eval_config, name: str) -> dict:
    for spec in eval_config.metrics_specs:
        for m in spec.metrics:
            cfg = json.loads(m.config or "{}")
            if cfg.get("name") == name:
                return cfg
    return {}


def fixed_tfma_threshold(eval_config) -> float | None:
    """The threshold of the EvalConfig's Precision metric (the pipeline's --operating-threshold), if any."""
    for spec in eval_config.metrics_specs:
        for m in spec.metrics:
            cfg = json.loads(m.config or "{}")
            if m.class_name == "Precision" and cfg.get("name") == F.METRIC_PRECISION and cfg.get("thresholds"):
                t = cfg["thresholds"]
                return float(t[0] if isinstance(t, list) else t)
    return None


# ---------------------------------------------------------------------------------------------------------------
# Data: statistics, anomalies, drift
# ---------------------------------------------------------------------------------------------------------------
def _read_stats(statistics_uri: str, split: str):
    import tensorflow as tf
    from tensorflow_metadata.proto.v0 import statistics_pb2

    path = os.path.join(statistics_uri, f"Split-{split}", "FeatureStats.pb")
    if not tf.io.gfile.exists(path):
        return None
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    with tf.io.gfile.GFile(path, "rb") as f:
        stats.ParseFromString(f.read())
    return stats


def feature_drifts(statistics_uri: str, schema_path: str, top: int = TOP_DRIFTS) -> list[dict]:
    """Drift of every feature between train and eval, measured by TFDV itself (L-infinity distance for
    categorical features, Jensen-Shannon divergence for numeric ones), largest first.

    The schema's comparators are set on every feature with an unreachable threshold, so TFDV measures them all
    without raising anomalies; the gate's own thresholds (where the schema has one) are shown next to them.
    """
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import schema_pb2

    train, evals = _read_stats(statistics_uri, F.SPLIT_TRAIN), _read_stats(statistics_uri, F.SPLIT_EVAL)
    if train is None or evals is None:
        return []
    schema = tfdv.load_schema_text(schema_path)
    gate = {}
    for f in schema.feature:
        if f.HasField("drift_comparator"):
            c = f.drift_comparator
            gate[f.name] = (c.infinity_norm.threshold if c.HasField("infinity_norm")
                            else c.jensen_shannon_divergence.threshold)
        f.ClearField("drift_comparator")
        if f.name in _DRIFT_EXCLUDED:
            continue
        if f.type == schema_pb2.BYTES:
            f.drift_comparator.infinity_norm.threshold = 1e9
        else:
            f.drift_comparator.jensen_shannon_divergence.threshold = 1e9
    anomalies = tfdv.validate_statistics(evals, schema, previous_statistics=train)
    details = _drift_details(train.datasets[0], evals.datasets[0])
    out = []
    for info in anomalies.drift_skew_info:
        name = ".".join(info.path.step)
        for m in info.drift_measurements:
            measure = "L-infinity" if m.type == m.L_INFTY else "Jensen-Shannon"
            out.append({"feature": name, "measure": measure, "value": float(m.value),
                        "gate_threshold": gate.get(name), "detail": details.get(name, "")})
    return sorted(out, key=lambda d: -d["value"])[:top]


def _drift_details(train, evals) -> dict:
    """A plain-words hint per feature: mean train -> eval, or the value whose share moved most."""
    def by_name(ds):
        return {".".join(f.path.step) or f.name: f for f in ds.features}

    tr, ev = by_name(train), by_name(evals)
    out = {}
    for name, f in tr.items():
        g = ev.get(name)
        if g is None:
            continue
        if f.HasField("num_stats"):
            out[name] = f"mean {f.num_stats.mean:,.4g} -> {g.num_stats.mean:,.4g}"
        elif f.HasField("string_stats"):
            def shares(feat):
                total = feat.string_stats.common_stats.num_non_missing or 1
                return {b.label: b.sample_count / total for b in feat.string_stats.rank_histogram.buckets}
            a, b = shares(f), shares(g)
            if a or b:
                value = max(set(a) | set(b), key=lambda v: abs(a.get(v, 0) - b.get(v, 0)))
                out[name] = f"{value or '(empty)'}: {a.get(value, 0):.1%} -> {b.get(value, 0):.1%}"
    return out


def split_rows(examples_artifact) -> dict:
    p = _props(examples_artifact)
    out = {}
    for split in F.SPLITS:
        if f"rows_{split}" in p:
            rows, fraud = int(p[f"rows_{split}"]), int(p[f"fraud_{split}"])
            start, end = p.get(f"start_{split}"), p.get(f"end_{split}")
            days = None
            if start is not None and end is not None:
                from components.threshold import split_days
                days = split_days([start, end])
            out[split] = {"rows": rows, "fraud": fraud, "fraud_rate": fraud / max(rows, 1), "days": days}
    return out


def list_anomalies(nodes: dict) -> list | None:
    """The anomalies the validation gate acts on (per split, plus eval-vs-train drift); None if not checked."""
    stats, schema, anomalies = (_find_output(nodes, "statistics"), _find_output(nodes, "schema"),
                                _find_output(nodes, "anomalies"))
    if stats is None or schema is None or anomalies is None:
        return None
    import tensorflow_data_validation as tfdv

    from components.validation import SCHEMA_FILE, find_anomalies
    from tfx.types import artifact_utils

    splits = artifact_utils.decode_split_names(_props(stats).get("split_names", "[]"))
    return find_anomalies(stats.uri, anomalies.uri, tfdv.load_schema_text(os.path.join(schema.uri, SCHEMA_FILE)),
                          splits)


# ---------------------------------------------------------------------------------------------------------------
# Scores, alert budget, slices, reference models
# ---------------------------------------------------------------------------------------------------------------
def amount_pen(frame) -> np.ndarray:
    amount = frame[F.AMOUNT].to_numpy(np.float64)
    usd = (frame[F.CURRENCY] == "USD").to_numpy() if F.CURRENCY in frame else np.zeros(len(frame), bool)
    return np.nan_to_num(np.where(usd, amount * F.USD_TO_PEN, amount))


def _serving_dir(model_artifact) -> str:
    from tfx.utils import path_utils

    return path_utils.serving_model_path(model_artifact.uri)


def operating_threshold_of(model_artifact):
    """(OperatingThreshold | None, where it came from) recorded with a model artifact."""
    from components.threshold import read_threshold

    if model_artifact is None:
        return None, ""
    model_dir = _serving_dir(model_artifact)
    op = read_threshold(model_dir)
    return (op, os.path.join(model_dir, "assets.extra", "operating_threshold.json")) if op else (None, "")


def alert_budget_table(data_eval, curves: Curves | None, thresholds: list[tuple[float, float]], days: int,
                       operating: float | None) -> list[dict]:
    """For each (budget, threshold): alerts/day, precision, recall (TFMA's matrices) and PEN caught/missed."""
    from components.threshold import flagged

    labels = data_eval["label"].to_numpy() > 0.5
    amounts = data_eval["amount_pen"].to_numpy()
    scores = data_eval["score"].to_numpy()
    rows = []
    merged: dict = {}
    for budget, t in thresholds:  # budgets that land on the same grid threshold share one row
        merged.setdefault(t, []).append(budget)
    for t, budgets in merged.items():
        budget = budgets[0]
        mask = flagged(scores, t)
        own = {"tp": float((mask & labels).sum()), "fp": float((mask & ~labels).sum())}
        cm = curves.at(t) if curves is not None else None
        source = cm if cm is not None else {**own, "fn": float((~mask & labels).sum())}
        tp, fp, fn = source["tp"], source["fp"], source["fn"]
        caught, missed = float(amounts[mask & labels].sum()), float(amounts[~mask & labels].sum())
        rows.append({
            "budget_per_day": budget, "budgets": budgets, "threshold": t,
            "operating": operating is not None and abs(t - operating) < 1e-9,
            "alerts": tp + fp, "alerts_per_day": (tp + fp) / max(days, 1), "tp": tp, "fp": fp,
            "false_alarms_per_day": fp / max(days, 1),
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "recall": tp / (tp + fn) if tp + fn else float("nan"),
            "pen_caught": caught, "pen_missed": missed,
            "pen_caught_share": caught / (caught + missed) if caught + missed else float("nan"),
            "source": "TFMA" if cm is not None else "scores",
            "count_mismatch": abs(own["tp"] - tp) + abs(own["fp"] - fp),
        })
    return rows


def slice_rows(evaluation: Evaluation, op: float | None, baseline_op: float | None, days: int) -> list[dict]:
    overall = evaluation.metrics.get("", {}).get(_CANDIDATE, {})
    overall_roc = overall.get(F.METRIC_ROC_AUC)
    overall_cm = evaluation.curves.get("", {}).get(_CANDIDATE)
    overall_recall = (overall_cm.at(op) or {}).get("recall") if overall_cm is not None and op is not None else None
    rows = []
    for name, by_model in evaluation.metrics.items():
        if not name:
            continue
        m = by_model.get(_CANDIDATE, {})
        b = by_model.get(_BASELINE, {})
        count = m.get(F.METRIC_EXAMPLE_COUNT, 0.0)
        fraud = round(m.get(F.METRIC_MEAN_LABEL, 0.0) * count)
        cm = evaluation.curves.get(name, {}).get(_CANDIDATE)
        at = cm.at(op) if cm is not None and op is not None else None
        bcm = evaluation.curves.get(name, {}).get(_BASELINE)
        bat = bcm.at(baseline_op) if bcm is not None and baseline_op is not None else None
        column, _, value = name.partition("=")
        row = {"slice": name, "column": column, "value": value, "examples": count, "fraud": fraud,
               "fraud_rate": fraud / count if count else float("nan"),
               "pr_auc": m.get(F.METRIC_PR_AUC), "roc_auc": m.get(F.METRIC_ROC_AUC),
               "recall_at_1pct_fpr": m.get(METRIC_RECALL_AT_1PCT_FPR), "calibration": m.get(F.METRIC_CALIBRATION),
               "precision_at_op": at["precision"] if at else None, "recall_at_op": at["recall"] if at else None,
               "alerts_per_day": at["alerts"] / max(days, 1) if at else None,
               "baseline_pr_auc": b.get(F.METRIC_PR_AUC), "baseline_recall_at_op": bat["recall"] if bat else None,
               "status": "ok", "why": ""}
        if fraud < MIN_FRAUD_TO_JUDGE_SLICE:
            row["status"], row["why"] = "few", f"only {fraud} fraud case(s): too few to judge"
        else:
            reasons = []
            if row["recall_at_op"] is not None and overall_recall is not None and \
                    row["recall_at_op"] < overall_recall - WEAK_RECALL_GAP:
                reasons.append(f"catches {row['recall_at_op']:.0%} of fraud vs {overall_recall:.0%} overall")
            if row["roc_auc"] is not None and overall_roc is not None and \
                    row["roc_auc"] < overall_roc - WEAK_ROC_AUC_GAP:
                reasons.append(f"ROC-AUC {row['roc_auc']:.3f} vs {overall_roc:.3f} overall")
            if reasons:
                row["status"], row["why"] = "weak", "; ".join(reasons)
        rows.append(row)
    order = {c: i for i, c in enumerate(F.SLICE_COLUMNS)}
    return sorted(rows, key=lambda r: (order.get(r["column"], 99), -r["examples"]))


def reference_features(frame):
    """Per-transaction features for the scikit-learn reference models, from the raw example columns."""
    import pandas as pd

    amount = frame[F.AMOUNT].to_numpy(np.float64)
    lima = frame[F.EVENT_TIME].to_numpy(np.int64) + F.LIMA_UTC_OFFSET_HOURS * 3600
    hour = (lima // 3600) % 24
    dow = (lima // 86400 + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
    coords = F.CITY_COORDS

    def distance(a, b):
        if a in coords and b in coords:
            return F.haversine_km(*coords[a], *coords[b])
        return np.nan

    pairs = list(zip(frame[F.CITY], frame[F.HOME_CITY]))
    cache = {p: distance(*p) for p in set(pairs)}
    numeric = pd.DataFrame({
        "log_amount_pen": np.log1p(np.nan_to_num(amount_pen(frame))),
        "amount_missing": np.isnan(amount).astype(float),
        "user_age": frame[F.USER_AGE].to_numpy(np.float64),
        "hour_sin": np.sin(2 * np.pi * hour / 24), "hour_cos": np.cos(2 * np.pi * hour / 24),
        "dow_sin": np.sin(2 * np.pi * dow / 7), "dow_cos": np.cos(2 * np.pi * dow / 7),
        "is_night": (hour < 6).astype(float), "is_weekend": (dow >= 5).astype(float),
        "home_distance_log": np.log1p(np.array([cache[p] for p in pairs], dtype=np.float64)),
        "is_usd": (frame[F.CURRENCY] == "USD").to_numpy(float),
    }, index=frame.index)
    # The behavioural history features, when the examples carry them: the reference models get the same inputs.
    for name in getattr(F, "BEHAVIOUR_FEATURES", ()):
        if name in frame:
            numeric[name] = frame[name].to_numpy(np.float64)
    categorical = frame[list(F.CATEGORICAL_FEATURES)].astype(str)
    return pd.concat([numeric, categorical], axis=1), list(numeric.columns), list(F.CATEGORICAL_FEATURES)


def reference_models(train, valid, evals, eval_config, alerts_per_day: float, seed: int = 0) -> list[Reference]:
    """Logistic regression, random forest (supervised) and isolation forest (unsupervised) trained on the train
    split, thresholded for the same alert budget on the valid split, scored on eval with the run's TFMA metrics."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import IsolationForest, RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from components.threshold import choose_threshold, split_days

    x_train, num, cat = reference_features(train)
    x_valid, _, _ = reference_features(valid)
    x_eval, _, _ = reference_features(evals)
    y_train = train[F.LABEL].to_numpy()
    prep = ColumnTransformer([
        ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), num),
        ("cat", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=20, sparse_output=False), cat),
    ])
    started = time.time()
    z_train = prep.fit_transform(x_train).astype(np.float32)
    z_valid, z_eval = prep.transform(x_valid).astype(np.float32), prep.transform(x_eval).astype(np.float32)
    prep_seconds = time.time() - started
    valid_days = split_days(valid[F.EVENT_TIME])
    labels = evals[F.LABEL].to_numpy()
    out = []

    def add(name, fit_and_score, note=""):
        t0 = time.time()
        s_valid, s_eval = fit_and_score()
        threshold, _ = choose_threshold(s_valid, valid_days, alerts_per_day)
        metrics, curves = tfma_metrics_from_scores(labels, s_eval, eval_config, evals)
        at = curves.at(threshold) if curves is not None else None
        if at:
            metrics[OP_PRECISION], metrics[OP_RECALL] = at["precision"], at["recall"]
            metrics[OP_ALERTS_PER_DAY] = at["alerts"] / max(split_days(evals[F.EVENT_TIME]), 1)
        out.append(Reference(name, metrics, threshold, s_eval, curves, time.time() - t0, note))

    def logistic():
        model = LogisticRegression(max_iter=2000, C=1.0)
        model.fit(z_train, y_train)
        return model.predict_proba(z_valid)[:, 1], model.predict_proba(z_eval)[:, 1]

    def forest():
        model = RandomForestClassifier(n_estimators=120, max_depth=14, min_samples_leaf=3, max_features="sqrt",
                                       n_jobs=2, random_state=seed)
        model.fit(z_train, y_train)
        return model.predict_proba(z_valid)[:, 1], model.predict_proba(z_eval)[:, 1]

    def isolation():
        model = IsolationForest(n_estimators=150, random_state=seed, n_jobs=2)
        model.fit(z_train)
        ref = np.sort(-model.score_samples(z_train))
        # Anomaly score -> share of training rows that are less anomalous: a rank in [0, 1], not a probability.
        rank = lambda z: np.searchsorted(ref, -model.score_samples(z), side="right") / len(ref)  # noqa: E731
        return rank(z_valid), rank(z_eval)

    out_note = (f"the shared feature preparation (imputation, scaling, one-hot encoding; {prep_seconds:.1f} s) "
                "is not included in its seconds")
    add("Logistic regression", logistic, note=out_note)
    add("Random forest", forest)
    add("Isolation forest (unsupervised)", isolation,
        note="trained without labels; its score is an anomaly rank, so calibration does not apply")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Collect
# ---------------------------------------------------------------------------------------------------------------
def collect(root: Path, pipeline_name: str = F.PIPELINE_NAME, run_id: str | None = None, *,
            references: bool = True) -> ReportData:
    """Everything the report shows, read from ML Metadata and the run's artifacts."""
    import pandas as pd

    from components.threshold import (DEFAULT_ALERTS_PER_DAY, OperatingThreshold, choose_threshold,
                                      load_examples_signature, read_split, score_serialized, split_days)
    from fraud.run_summary import failed_thresholds

    timings: dict = {}
    t0 = time.time()
    root = Path(root).resolve()
    run_name, nodes = read_run(str(root / "metadata.sqlite"), pipeline_name, run_id)
    examples = examples_artifact(nodes)
    splits = split_rows(examples) if examples is not None else {}
    warnings = []
    anomalies = None
    try:
        anomalies = list_anomalies(nodes)
    except Exception as exc:  # a report of a broken run must still render
        warnings.append(f"anomalies not read: {exc}")
    drifts = []
    stats, schema = _find_output(nodes, "statistics"), nodes.get("ImportSchemaGen")
    if stats is not None and schema is not None and schema.artifact("schema") is not None:
        from components.validation import SCHEMA_FILE
        try:
            drifts = feature_drifts(stats.uri, os.path.join(schema.artifact("schema").uri, SCHEMA_FILE))
        except Exception as exc:
            warnings.append(f"drift not measured: {exc}")
    timings["metadata, statistics"] = time.time() - t0

    evaluator = nodes.get("Evaluator")
    evaluation_artifact = evaluator.artifact("evaluation") if evaluator else None
    evaluation = None
    if evaluation_artifact is not None and evaluator.state == "COMPLETE":
        t = time.time()
        evaluation = load_evaluation(evaluation_artifact.uri)
        timings["TFMA result"] = time.time() - t
    blessing = evaluator.artifact("blessing") if evaluator else None
    blessed = bool(_props(blessing).get("blessed", 0)) if blessing is not None else None
    pusher = nodes.get("Pusher")
    pushed = _props(pusher.artifact("pushed_model")) if pusher and pusher.artifact("pushed_model") else {}

    candidate_model = evaluator.artifact("model", output=False) if evaluator else None
    if candidate_model is None and nodes.get("Trainer"):
        candidate_model = nodes["Trainer"].artifact("model")
    baseline_model = evaluator.artifact("baseline_model", output=False) if evaluator else None
    operating, operating_source = operating_threshold_of(candidate_model)
    baseline_operating, baseline_source = operating_threshold_of(baseline_model)

    data = ReportData(
        run_id=run_name, pipeline_name=pipeline_name, root=str(root), nodes=nodes, splits=splits,
        anomalies=anomalies, drifts=drifts, evaluation=evaluation, blessed=blessed,
        failed_thresholds=failed_thresholds(evaluation.uri) if evaluation else [],
        decision=decision_rows(evaluation.eval_config, evaluation.validation,
                               evaluation.metrics.get("", {}).get(_CANDIDATE, {}),
                               evaluation.metrics.get("", {}).get(_BASELINE, {})) if evaluation else [],
        pushed=pushed, has_baseline=bool(evaluation and evaluation.metrics.get("", {}).get(_BASELINE)),
        operating=operating, operating_source=operating_source, baseline_operating=baseline_operating,
        baseline_operating_source=baseline_source, eval_days=(splits.get(F.SPLIT_EVAL) or {}).get("days") or 0,
        eval_frame=None, alert_table=[], slices=[], references=[], recompute_max_diff=None,
        tfma_fixed_threshold=fixed_tfma_threshold(evaluation.eval_config) if evaluation else None,
        timings=timings, warnings=warnings)
    if evaluation is None or examples is None or candidate_model is None:
        return data

    # Per-row scores of the candidate on eval (and valid, for thresholds not recorded with the model).
    t = time.time()
    serialized_eval, eval_frame = read_split(examples.uri, F.SPLIT_EVAL)
    serialized_valid, valid_frame = read_split(examples.uri, F.SPLIT_VALID)
    signature = load_examples_signature(_serving_dir(candidate_model))
    eval_scores = score_serialized(signature, serialized_eval)
    valid_scores = score_serialized(signature, serialized_valid)
    timings["scoring eval + valid"] = time.time() - t
    data.eval_days = split_days(eval_frame[F.EVENT_TIME])
    valid_days = split_days(valid_frame[F.EVENT_TIME])
    if operating is None:
        budget = DEFAULT_ALERTS_PER_DAY
        threshold, alerts = choose_threshold(valid_scores, valid_days, budget)
        data.operating = OperatingThreshold(threshold, budget, F.SPLIT_VALID, valid_days, len(valid_scores), alerts)
        data.operating_source = ("not recorded with this model (it predates the OperatingThresholdSelector): "
                                 f"chosen by this report, same rule, default budget {budget:g}/day")
    op = data.operating
    if baseline_model is not None and baseline_operating is None:
        data.baseline_operating = op
        data.baseline_operating_source = "not recorded with the baseline model: the candidate's threshold is used"
    frame = pd.DataFrame({"label": eval_frame[F.LABEL].to_numpy(np.float32), "score": eval_scores,
                          "amount_pen": amount_pen(eval_frame)})
    for column in F.SLICE_COLUMNS:
        frame[column] = eval_frame[column].to_numpy()
    data.eval_frame = frame

    # Scores -> TFMA's own metric code: must reproduce the stored result.
    recomputed, _ = tfma_metrics_from_scores(frame["label"], frame["score"], evaluation.eval_config, eval_frame)
    stored = data.candidate
    common = [k for k in recomputed if k in stored and not math.isnan(stored[k]) and not math.isnan(recomputed[k])]
    data.recompute_max_diff = max((abs(recomputed[k] - stored[k]) for k in common), default=None)

    # Operating-threshold metrics (TFMA's matrices at the threshold) for candidate and baseline.
    for model, threshold in ((_CANDIDATE, op.threshold),
                             (_BASELINE, data.baseline_operating.threshold if data.baseline_operating else None)):
        curves = evaluation.curves.get("", {}).get(model)
        at = curves.at(threshold) if curves is not None and threshold is not None else None
        target = evaluation.metrics.get("", {}).get(model)
        if at and target is not None:
            target[OP_PRECISION], target[OP_RECALL] = at["precision"], at["recall"]
            target[OP_ALERTS_PER_DAY] = at["alerts"] / max(data.eval_days, 1)

    # Other budgets: the same rule on the split the operating threshold was chosen on.
    choice_scores, choice_days = ((eval_scores, data.eval_days) if op.split == F.SPLIT_EVAL
                                  else (valid_scores, valid_days))
    budgets = sorted({round(op.alerts_per_day_budget * f, 1) for f in _BUDGET_FACTORS})
    pairs = []
    for budget in budgets:
        if abs(budget - op.alerts_per_day_budget) < 1e-9:
            pairs.append((budget, op.threshold))
        else:
            pairs.append((budget, choose_threshold(choice_scores, choice_days, budget)[0]))
    data.alert_table = alert_budget_table(frame, evaluation.curves.get("", {}).get(_CANDIDATE), pairs,
                                          data.eval_days, op.threshold)
    data.slices = slice_rows(evaluation, op.threshold,
                             data.baseline_operating.threshold if data.baseline_operating else None, data.eval_days)

    if references:
        t = time.time()
        _, train_frame = read_split(examples.uri, F.SPLIT_TRAIN)
        timings["reading train"] = time.time() - t
        t = time.time()
        try:
            data.references = reference_models(train_frame, valid_frame, eval_frame, evaluation.eval_config,
                                               op.alerts_per_day_budget)
        except Exception as exc:
            warnings.append(f"reference models failed: {type(exc).__name__}: {exc}")
        timings["reference models"] = time.time() - t
    return data


# ---------------------------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg backend, inline PNG)
# ---------------------------------------------------------------------------------------------------------------
_COLORS = {"candidate": "#1f5fa8", "baseline": "#8a8a8a", "Logistic regression": "#d08c1d",
           "Random forest": "#2f8f46", "Isolation forest (unsupervised)": "#a33b8f"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _curve_sets(data: ReportData) -> list[tuple[str, Curves, float | None, str]]:
    ev = data.evaluation
    sets = []
    # Drawn in this order: the candidate last, on top (it hides an identical baseline, not the reverse).
    baseline = ev.curves.get("", {}).get(_BASELINE)
    if baseline is not None:
        sets.append((_BASELINE, baseline, data.baseline_operating.threshold if data.baseline_operating else None, "-"))
    for ref in data.references:
        if ref.curves is not None:
            sets.append((ref.name, ref.curves, ref.threshold, "--"))
    candidate = ev.curves.get("", {}).get(_CANDIDATE)
    if candidate is not None:
        sets.append((_CANDIDATE, candidate, data.operating.threshold if data.operating else None, "-"))
    return sets


def plot_pr_roc(data: ReportData) -> str:
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    for name, c, op, style in _curve_sets(data):
        keep = (c.tp + c.fp) > 0
        recall = c.tp / np.maximum(c.tp + c.fn, 1)
        precision = np.where(keep, c.tp / np.maximum(c.tp + c.fp, 1), np.nan)
        fpr = c.fp / np.maximum(c.fp + c.tn, 1)
        width = 2.2 if style == "-" else 1.2
        color = _COLORS.get(name, None)
        ax1.plot(recall[keep], precision[keep], style, color=color, lw=width, label=name)
        ax2.plot(np.maximum(fpr, 1e-5), recall, style, color=color, lw=width, label=name)
        at = c.at(op) if op is not None else None
        if at and name in (_CANDIDATE, _BASELINE):
            fp_rate = at["fp"] / max(at["fp"] + at["tn"], 1)
            ax1.plot([at["recall"]], [at["precision"]], "o", color=color, ms=8)
            ax2.plot([max(fp_rate, 1e-5)], [at["recall"]], "o", color=color, ms=8)
    ax1.set(xlabel="recall (share of fraud caught)", ylabel="precision (share of alerts that are fraud)",
            title="Precision-recall (eval split)", xlim=(0, 1), ylim=(0, 1.02))
    ax2.set_xscale("log")
    ax2.axvline(0.01, color="#c33", lw=0.8, ls=":")
    ax2.text(0.0105, 0.03, "1% FPR", color="#c33", fontsize=8)
    ax2.set(xlabel="false positive rate (log scale)", ylabel="recall", title="ROC (eval split)",
            xlim=(1e-5, 1), ylim=(0, 1.02))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8, loc="lower left")
    fig.text(0.5, -0.02, "Dots: the operating threshold. Candidate and baseline curves are TFMA's confusion-matrix "
             "plots; reference models use the same TFMA code on their scores.", ha="center", fontsize=8)
    return _png(fig)


def _wilson(k: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """95% Wilson interval of an observed rate k/n (honest for small buckets and rates near 0 or 1)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def plot_calibration(data: ReportData) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.4, 4.6))
    ax.plot([0, 1], [0, 1], ":", color="#666", lw=1, label="perfect calibration")
    for model, shift in ((_BASELINE, 0.006), (_CANDIDATE, 0.0)):  # candidate on top
        c = data.evaluation.curves.get("", {}).get(model)
        if c is None:
            continue
        pts = [(p / n, l, n) for _, _, n, l, p in c.calibration if n > 0]
        if not pts:
            continue
        x, k, n = map(np.array, zip(*pts))
        y = k / n
        lo, hi = _wilson(k, n)
        color = _COLORS[model]
        ax.errorbar(x + shift, y, yerr=[np.maximum(y - lo, 0), np.maximum(hi - y, 0)], fmt="none", ecolor=color,
                    alpha=0.45, lw=1)
        big = n >= 20
        ax.scatter(x[big] + shift, y[big], s=28, color=color, label=f"{model} (TFMA calibration plot)", zorder=3)
        ax.scatter(x[~big] + shift, y[~big], s=28, facecolors="white", edgecolors=color, zorder=3,
                   label=f"{model}: bucket with < 20 transactions")
    ax.set(xlabel="mean predicted fraud probability (bucket)", ylabel="observed fraud rate (bucket)",
           xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), title="Calibration (eval split, TFMA's 20 buckets)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.text(0.5, -0.04, "Bars: 95% interval of the observed rate; small buckets are uncertain.", ha="center",
             fontsize=8)
    return _png(fig)


def plot_score_distribution(data: ReportData) -> str:
    plt = _pyplot()
    frame = data.eval_frame
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    bins = np.logspace(-4, 0, 41)
    for label, name, color in ((0, "legitimate", "#2f8f46"), (1, "fraudulent", "#c0392b")):
        s = np.clip(frame.loc[frame["label"] == label, "score"].to_numpy(), 1e-4, 1)
        if len(s):
            ax.hist(s, bins=bins, weights=np.full(len(s), 1 / len(s)), histtype="stepfilled", alpha=0.45,
                    color=color, label=f"{name} ({len(s):,})")
    ax.axvline(data.operating.threshold, color="#1f5fa8", lw=1.5, ls="--",
               label=f"operating threshold {data.operating.threshold:.3f}")
    ax.set_xscale("log")
    ax.set(xlabel="candidate fraud score (log scale; scores < 0.0001 shown at 0.0001)",
           ylabel="share of the class", title="Score distribution on eval: fraud vs legitimate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


# ---------------------------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------------------------
_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0;background:#f4f5f7;color:#1d2430}
main{max-width:1180px;margin:0 auto;padding:18px 26px 60px;background:#fff}
h1{font-size:24px;margin:8px 0 2px}h2{font-size:19px;margin:30px 0 8px;border-bottom:2px solid #e4e7ec;
padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.sub{color:#5b6472;font-size:13px}.note{color:#5b6472;font-size:12.5px;margin:4px 0 10px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}th,td{border:1px solid #dfe3e8;padding:4px 8px;
text-align:right}th{background:#f0f2f5;font-weight:600}td.l,th.l{text-align:left}
.banner{padding:14px 18px;border-radius:6px;font-size:20px;font-weight:700;margin:14px 0 6px}
.blessed{background:#e3f4e8;color:#14632f;border:1px solid #9fd4b0}
.not-blessed{background:#fde8e6;color:#8f1d12;border:1px solid #f0a79e}
.unknown{background:#fff4d6;color:#7a5600;border:1px solid #f0d48a}
.FAILED{color:#b3261e;font-weight:700}.passed{color:#14632f}.na{color:#7a7f87}
tr.weak td{background:#fdecea}tr.few td{color:#8a9099}tr.op td{background:#e8f0fb;font-weight:600}
.pill{display:inline-block;padding:1px 7px;border-radius:9px;font-size:11.5px}
.pill.weak{background:#f6c6c0;color:#8f1d12}.pill.few{background:#e9ebee;color:#5b6472}
.pill.ok{background:#d9f0df;color:#14632f}
.scroll{overflow-x:auto}#slice-table{font-size:12px}#slice-table td.l:last-child{min-width:90px}
img{max-width:100%;border:1px solid #eceef1;border-radius:4px}
.grid2{display:flex;gap:18px;flex-wrap:wrap;align-items:flex-start}
code,pre{font-family:Menlo,Consolas,monospace;font-size:12px;background:#f3f4f6;border-radius:4px}
pre{padding:10px;overflow-x:auto}code{padding:1px 4px}
.kpi{display:flex;gap:14px;flex-wrap:wrap;margin:10px 0}.kpi div{background:#f6f8fb;border:1px solid #e4e7ec;
border-radius:6px;padding:8px 14px;min-width:150px}.kpi b{display:block;font-size:20px}
.kpi span{font-size:12px;color:#5b6472}nav a{margin-right:12px;font-size:13px}
"""


def _e(value) -> str:
    return html.escape(str(value))


def _num(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    return f"{value:.{digits}f}"


def _pct(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    return f"{value * 100:.{digits}f}%"


def _pen(value) -> str:
    return f"S/ {value:,.0f}"


def _cell(value, model: str, metric: str, digits: int = 4, shown: str | None = None) -> str:
    raw = "" if value is None else repr(float(value))
    text = _num(value, digits) if shown is None else shown
    return f'<td data-model="{model}" data-metric="{_e(metric)}" data-value="{raw}">{text}</td>'


_HEADLINE = (
    (F.METRIC_PR_AUC, "PR-AUC", "area under the precision-recall curve (fraud is rare: the key ranking metric)"),
    (F.METRIC_ROC_AUC, "ROC-AUC", "probability a fraud scores above a legitimate transaction"),
    (METRIC_RECALL_AT_1PCT_FPR, "Recall at 1% FPR", "share of fraud caught when 1% of legitimate ones are flagged"),
    (OP_PRECISION, "Precision at operating threshold", "share of alerts that are fraud"),
    (OP_RECALL, "Recall at operating threshold", "share of fraud that raises an alert"),
    (OP_ALERTS_PER_DAY, "Alerts per day at operating threshold", "eval split"),
    (METRIC_CARD_PRECISION, "Card precision at k",
     "share of the k highest-scored cards each day (not flagged before) that had fraud that day"),
    (F.METRIC_CALIBRATION, "Calibration", "mean score / fraud rate: 1.0 is right, below 1 under-predicts"),
    (F.METRIC_MEAN_LABEL, "Fraud rate", "share of eval transactions that are fraud"),
    (F.METRIC_EXAMPLE_COUNT, "Eval transactions", ""),
)


def _section_decision(d: ReportData) -> str:
    if d.blessed is True:
        banner = '<div class="banner blessed" id="verdict">BLESSED: the candidate passed every threshold</div>'
    elif d.blessed is False:
        rules = [r.rule for r in d.decision if r.status == "FAILED"]
        banner = ('<div class="banner not-blessed" id="verdict">NOT BLESSED: failed '
                  + _e("; ".join(rules) or "a threshold") + " &middot; the model was not pushed</div>")
    else:
        failed = [n for n in d.nodes.values() if n.state == "FAILED"]
        why = f"the pipeline failed in {failed[0].node_id}" if failed else "the Evaluator did not run"
        banner = f'<div class="banner unknown" id="verdict">NOT EVALUATED: {_e(why)}; nothing was pushed</div>'
    out = ['<section id="decision"><h2>1. Decision</h2>', banner]
    if d.pushed.get("pushed"):
        out.append(f'<p class="sub">Pushed as version <code>{_e(d.pushed.get("pushed_version"))}</code> to '
                   f'<code>{_e(d.pushed.get("pushed_destination"))}</code>.</p>')
    elif d.blessed is not None:
        out.append('<p class="sub">Not pushed.</p>')
    if d.decision:
        out.append('<table id="thresholds"><tr><th class="l">threshold (overall eval slice)</th><th>bound</th>'
                   '<th>candidate</th><th>baseline</th><th>margin</th><th class="l">result</th></tr>')
        for r in d.decision:
            cls = {"FAILED": "FAILED", "passed": "passed"}.get(r.status, "na")
            diff = None if r.candidate is None or r.baseline is None else r.candidate - r.baseline
            margin_note = "" if r.kind == "value" else f' title="candidate - baseline = {_num(diff)}"'
            out.append(f'<tr data-threshold="{_e(r.metric)}:{r.kind}" data-status="{r.status}"><td class="l">'
                       f'{_e(r.rule)}</td><td>{r.bound:g}</td>{_cell(r.candidate, _CANDIDATE, r.metric)}'
                       f'{_cell(r.baseline, _BASELINE, r.metric)}<td{margin_note}>{_num(r.margin)}</td>'
                       f'<td class="l {cls}">{_e(r.status)}</td></tr>')
        out.append("</table>")
        out.append('<p class="note">Margin: how far the candidate is on the passing side of the bound (value '
                   'thresholds: value - bound; change thresholds: (candidate - baseline) - bound). Negative means '
                   'failed. Pass/fail is TFMA\'s validation result; change thresholds are not applied when there is '
                   'no blessed baseline yet (first run).</p>')
    for failure in d.failed_thresholds:
        out.append(f'<p class="FAILED failure">Failed: {_e(failure)}</p>')
    out.append("</section>")
    return "\n".join(out)


def _section_headline(d: ReportData) -> str:
    c, b = d.candidate, d.baseline
    op = d.operating
    out = ['<section id="headline"><h2>2. Headline metrics: candidate vs baseline</h2>']
    if op is not None:
        out.append('<div class="kpi">'
                   f'<div><span>operating threshold</span><b>{op.threshold:.3f}</b>'
                   f'<span>budget {op.alerts_per_day_budget:g} alerts/day</span></div>'
                   f'<div><span>fraud caught (recall)</span><b>{_pct(c.get(OP_RECALL))}</b>'
                   '<span>eval split</span></div>'
                   f'<div><span>alerts that are fraud</span><b>{_pct(c.get(OP_PRECISION))}</b>'
                   f'<span>precision</span></div>'
                   f'<div><span>alerts per day</span><b>{_num(c.get(OP_ALERTS_PER_DAY), 1)}</b>'
                   f'<span>eval, {d.eval_days} days</span></div></div>')
    if not d.has_baseline:
        out.append('<p class="note">No baseline: this is the first model evaluated in this pipeline root (no '
                   'blessed model before it), so there is nothing to compare against yet.</p>')
    out.append('<table id="headline-table"><tr><th class="l">metric</th><th>candidate</th><th>baseline</th>'
               '<th>candidate - baseline</th><th class="l">meaning</th></tr>')
    for key, label, meaning in _HEADLINE:
        cv, bv = c.get(key), b.get(key)
        if cv is None and bv is None and key == METRIC_CARD_PRECISION:
            continue  # a run evaluated before the metric existed
        if key == METRIC_CARD_PRECISION and d.evaluation is not None:
            k = _metric_config(d.evaluation.eval_config, METRIC_CARD_PRECISION).get("k")
            label = f"Card precision at k={k}" if k else label
        digits = 0 if key == F.METRIC_EXAMPLE_COUNT else (1 if key == OP_ALERTS_PER_DAY else 4)
        diff = None if cv is None or bv is None else cv - bv
        out.append(f'<tr><td class="l">{_e(label)}</td>{_cell(cv, _CANDIDATE, key, digits)}'
                   f'{_cell(bv, _BASELINE, key, digits)}<td>{_num(diff, digits)}</td>'
                   f'<td class="l note">{_e(meaning)}</td></tr>')
    out.append("</table>")
    if op is not None and d.baseline_operating is not None and d.has_baseline:
        out.append(f'<p class="note">Baseline at its own operating threshold '
                   f'{d.baseline_operating.threshold:.3f} ({_e(d.baseline_operating_source)}).</p>')
    if d.tfma_fixed_threshold is not None and op is not None:
        out.append(f'<p class="note">TFMA\'s <code>precision</code> / <code>recall</code> metrics are configured at '
                   f'the fixed threshold {d.tfma_fixed_threshold:g} (<code>--operating-threshold</code>): '
                   f'{_num(c.get(F.METRIC_PRECISION))} / {_num(c.get(F.METRIC_RECALL))}. The operating-threshold '
                   'rows above are read from TFMA\'s confusion-matrix plot at the budget threshold.</p>')
    if d.recompute_max_diff is not None:
        out.append(f'<p class="note" id="recompute">Check: scoring the eval split with the candidate SavedModel '
                   f'and running TFMA\'s metric code on those scores reproduces the stored TFMA metrics (largest '
                   f'difference {d.recompute_max_diff:.2g}).</p>')
    out.append("</section>")
    return "\n".join(out)


def _source_html(source: str) -> str:
    if source.endswith(".json"):
        return (f"Recorded with the model in <code>{_e(source)}</code>; the pushed model carries the same file, "
                "so serving and this report use the same number.")
    return _e(source[:1].upper() + source[1:]) + "."


def _section_threshold(d: ReportData) -> str:
    op = d.operating
    if op is None:
        return ""
    eval_row = next((r for r in d.alert_table if r["operating"]), None)
    return f"""<section id="operating-threshold"><h2>3. Operating threshold from the alert budget</h2>
<p>A transaction raises an alert when its fraud score is above <b>{op.threshold:.3f}</b>. The pipeline chose the
lowest threshold (on TFMA's 0.001 grid) that keeps alerts within <b>{op.alerts_per_day_budget:g} per day</b> on the
<b>{_e(op.split)}</b> split: {op.split_alerts:,} alerts over {op.split_days} days
({op.split_alerts_per_day:.1f}/day, {op.split_rows:,} transactions). On the eval split, which the choice never saw,
it gives <b>{_num(eval_row['alerts_per_day'] if eval_row else None, 1)} alerts/day</b>.</p>
<p class="note">{_source_html(d.operating_source)}</p>
<p class="note">Why the valid split and not eval: the choice only uses scores, never labels, so choosing on eval
would not leak fraud labels, but it would make "eval alerts/day &le; budget" true by construction. Choosing on the
days just before eval keeps the eval week an honest check that the budget holds on unseen days (traffic changes
from week to week), and keeps every decision about the model out of the data that judges it.</p></section>"""


def _section_plots(d: ReportData) -> str:
    if d.evaluation is None:
        return ""
    out = ['<section id="plots"><h2>4. Curves, calibration and score distribution</h2>',
           f'<img id="plot-pr-roc" alt="precision-recall and ROC curves" src="data:image/png;base64,{plot_pr_roc(d)}">',
           '<div class="grid2">',
           f'<img id="plot-calibration" alt="calibration plot" style="width:48%" '
           f'src="data:image/png;base64,{plot_calibration(d)}">']
    if d.eval_frame is not None:
        out.append(f'<img id="plot-scores" alt="score distribution" style="width:48%" '
                   f'src="data:image/png;base64,{plot_score_distribution(d)}">')
    out.append("</div>")
    out.append('<p class="note">Calibration: each dot is a bucket of transactions with similar scores; on the '
               'diagonal the score is the real fraud probability. Score distribution: each class sums to 100%; '
               'good separation means little red left of the threshold and little green right of it.</p>')
    out.append("</section>")
    return "\n".join(out)


def _section_alerts(d: ReportData) -> str:
    if not d.alert_table:
        return ""
    out = ['<section id="alert-budget"><h2>5. Alert budget: what each threshold costs and catches</h2>',
           f'<p class="note">Thresholds chosen on the {_e(d.operating.split)} split for each daily budget (the same '
           f'rule as the operating threshold); the results are on the eval split ({d.eval_days} days). Amounts '
           f'are fraudulent charges in PEN (USD at {F.USD_TO_PEN} PEN). The highlighted row is the operating '
           'threshold. Budgets that land on the same threshold (TFMA reports thresholds in steps of 0.001) share '
           'a row.</p>',
           '<table id="alert-table"><tr><th>budget (alerts/day)</th><th>threshold</th><th>alerts/day</th>'
           '<th>false alarms/day</th><th>precision</th><th>recall</th><th>fraud caught (PEN)</th>'
           '<th>fraud missed (PEN)</th><th>share of fraud PEN caught</th></tr>']
    for r in d.alert_table:
        out.append(f'<tr class="{"op" if r["operating"] else ""}" data-threshold="{r["threshold"]}">'
                   f'<td>{", ".join(f"{b:g}" for b in r["budgets"])}</td><td>{r["threshold"]:.3f}</td>'
                   f'<td>{r["alerts_per_day"]:.1f}</td>'
                   f'<td>{r["false_alarms_per_day"]:.1f}</td><td>{_pct(r["precision"])}</td>'
                   f'<td>{_pct(r["recall"])}</td><td>{_pen(r["pen_caught"])}</td><td>{_pen(r["pen_missed"])}</td>'
                   f'<td>{_pct(r["pen_caught_share"])}</td></tr>')
    out.append("</table>")
    out.append('<p class="note">Alert counts, precision and recall are TFMA\'s confusion matrices at each '
               'threshold; PEN amounts add up the same flagged transactions from the per-row scores.</p></section>')
    return "\n".join(out)


def _section_slices(d: ReportData) -> str:
    if not d.slices:
        return ""
    weak = [r for r in d.slices if r["status"] == "weak"]
    out = ['<section id="slices"><h2>6. Metrics per slice (eval split)</h2>',
           f'<p class="note">A slice is <span class="pill weak">weak</span> when it has at least '
           f'{MIN_FRAUD_TO_JUDGE_SLICE} fraud cases and it catches a share of its fraud at the operating threshold '
           f'more than {WEAK_RECALL_GAP:.0%} points below the overall model, or its ROC-AUC is more than '
           f'{WEAK_ROC_AUC_GAP:.2f} below. PR-AUC is shown but not judged: it falls with the slice\'s fraud rate '
           'even when the model is as good. Slices with fewer fraud cases are greyed: too few to judge. '
           'Precision/recall at the operating threshold come from TFMA\'s per-slice confusion matrices.</p>',
           f'<p id="weak-summary"><b>{len(weak)} weak slice(s)</b>'
           + (": " + _e(", ".join(r["slice"] for r in weak)) if weak else "") + "</p>",
           '<div class="scroll"><table id="slice-table"><tr><th class="l">slice</th><th>transactions</th><th>fraud</th>'
           '<th>fraud rate</th><th>PR-AUC</th><th>ROC-AUC</th><th>recall @1% FPR</th><th>precision @op</th>'
           '<th>recall @op</th><th>alerts/day @op</th><th>calibration</th>'
           + ('<th>baseline PR-AUC</th><th>baseline recall @op</th>' if d.has_baseline else "")
           + '<th class="l">assessment</th></tr>']
    for r in d.slices:
        pill = {"weak": "weak", "few": "few"}.get(r["status"], "ok")
        label = {"weak": "weak", "few": "too few"}.get(r["status"], "ok")
        out.append(
            f'<tr class="{r["status"]}" data-slice="{_e(r["slice"])}"><td class="l">{_e(r["slice"])}</td>'
            f'<td>{r["examples"]:,.0f}</td><td>{r["fraud"]:,}</td><td>{_pct(r["fraud_rate"], 2)}</td>'
            # With no fraud in a slice TFMA reports 0 for the AUCs: undefined, shown as a dash.
            f'{_cell(r["pr_auc"], _CANDIDATE, F.METRIC_PR_AUC, shown=None if r["fraud"] else "&ndash;")}'
            f'{_cell(r["roc_auc"], _CANDIDATE, F.METRIC_ROC_AUC, shown=None if r["fraud"] else "&ndash;")}'
            f'{_cell(r["recall_at_1pct_fpr"], _CANDIDATE, METRIC_RECALL_AT_1PCT_FPR, 3)}'
            f'<td>{_pct(r["precision_at_op"])}</td><td>{_pct(r["recall_at_op"])}</td>'
            f'<td>{_num(r["alerts_per_day"], 1)}</td><td>{_num(r["calibration"], 2)}</td>'
            + (f'<td>{_num(r["baseline_pr_auc"]) if r["fraud"] else "&ndash;"}</td>'
               f'<td>{_pct(r["baseline_recall_at_op"])}</td>'
               if d.has_baseline else "")
            + f'<td class="l" title="{_e(r["why"])}"><span class="pill {pill}">{label}</span>'
            + (f' {_e(r["why"])}' if r["status"] == "weak" else "") + '</td></tr>')
    out.append("</table></div></section>")
    return "\n".join(out)


def _section_data(d: ReportData) -> str:
    out = ['<section id="data"><h2>7. The data behind it</h2><h3>Rows and fraud rate per split (time split)</h3>',
           '<table id="split-table"><tr><th class="l">split</th><th>days</th><th>transactions</th><th>fraud</th>'
           '<th>fraud rate</th><th class="l">used for</th></tr>']
    use = {F.SPLIT_TRAIN: "training", F.SPLIT_VALID: "early stopping, operating threshold",
           F.SPLIT_EVAL: "evaluation and blessing (this report)"}
    for split, v in d.splits.items():
        out.append(f'<tr data-split="{split}"><td class="l">{split}</td><td>{v["days"] or "&ndash;"}</td>'
                   f'<td>{v["rows"]:,}</td><td>{v["fraud"]:,}</td><td>{_pct(v["fraud_rate"], 2)}</td>'
                   f'<td class="l">{use.get(split, "")}</td></tr>')
    out.append("</table><h3>Validation anomalies</h3>")
    if d.anomalies is None:
        out.append('<p id="anomalies">Not checked (the validation components did not run).</p>')
    elif not d.anomalies:
        out.append('<p id="anomalies">None: every split matches the schema and eval has not drifted from train '
                   'beyond the schema\'s limits.</p>')
    else:
        out.append(f'<ul id="anomalies">' + "".join(f"<li>{_e(a)}</li>" for a in d.anomalies) + "</ul>")
    out.append("<h3>Top feature drifts: train vs eval</h3>")
    if d.drifts:
        out.append('<p class="note">Measured by TensorFlow Data Validation on the StatisticsGen statistics: '
                   'L-infinity distance between value shares (categorical) or Jensen-Shannon divergence (numeric). '
                   '0 means identical distributions. The gate column is the schema\'s limit that stops the '
                   'pipeline, where one is set.</p>')
        out.append('<table id="drift-table"><tr><th class="l">feature</th><th class="l">measure</th><th>drift</th>'
                   '<th>gate limit</th><th class="l">what moved</th></tr>')
        for r in d.drifts:
            gate = f'{r["gate_threshold"]:g}' if r["gate_threshold"] is not None else "&ndash;"
            out.append(f'<tr><td class="l">{_e(r["feature"])}</td><td class="l">{_e(r["measure"])}</td>'
                       f'<td>{r["value"]:.4f}</td><td>{gate}</td><td class="l">{_e(r["detail"])}</td></tr>')
        out.append("</table>")
    else:
        out.append('<p id="drift-table">No statistics to compare.</p>')
    out.append("</section>")
    return "\n".join(out)


def _section_references(d: ReportData) -> str:
    if d.evaluation is None:
        return ""
    out = ['<section id="reference-models"><h2>8. Reference models on the same split</h2>',
           '<p class="note">Simple scikit-learn models on the same rows: per-transaction features (amount in PEN, '
           'hour, day of week, distance from the home city, currency, the categorical columns one-hot encoded) '
           'plus the behavioural history features when the examples carry them; trained on the train split, '
           'thresholded for the same alert budget on the valid split, and scored on eval with the run\'s TFMA '
           'metric code. The gap to the candidate is what the deep model adds.</p>']
    if not d.references:
        out.append('<p>Not computed.</p></section>')
        return "\n".join(out)
    out.append('<table id="reference-table"><tr><th class="l">model</th><th>PR-AUC</th><th>ROC-AUC</th>'
               '<th>recall @1% FPR</th><th>card precision @k</th><th>threshold</th><th>precision @budget</th>'
               '<th>recall @budget</th><th>alerts/day</th><th>calibration</th><th>seconds</th></tr>')
    c = d.candidate
    out.append(f'<tr class="op"><td class="l">candidate (TFMA)</td>'
               f'{_cell(c.get(F.METRIC_PR_AUC), _CANDIDATE, F.METRIC_PR_AUC)}'
               f'{_cell(c.get(F.METRIC_ROC_AUC), _CANDIDATE, F.METRIC_ROC_AUC)}'
               f'{_cell(c.get(METRIC_RECALL_AT_1PCT_FPR), _CANDIDATE, METRIC_RECALL_AT_1PCT_FPR)}'
               f'{_cell(c.get(METRIC_CARD_PRECISION), _CANDIDATE, METRIC_CARD_PRECISION)}'
               f'<td>{_num(d.operating.threshold if d.operating else None, 3)}</td><td>{_pct(c.get(OP_PRECISION))}</td>'
               f'<td>{_pct(c.get(OP_RECALL))}</td><td>{_num(c.get(OP_ALERTS_PER_DAY), 1)}</td>'
               f'<td>{_num(c.get(F.METRIC_CALIBRATION), 2)}</td><td>&ndash;</td></tr>')
    for r in d.references:
        m = r.metrics
        calibration = "n/a" if "Isolation" in r.name else _num(m.get(F.METRIC_CALIBRATION), 2)
        out.append(f'<tr data-reference="{_e(r.name)}"><td class="l">{_e(r.name)}</td>'
                   f'{_cell(m.get(F.METRIC_PR_AUC), r.name, F.METRIC_PR_AUC)}'
                   f'{_cell(m.get(F.METRIC_ROC_AUC), r.name, F.METRIC_ROC_AUC)}'
                   f'{_cell(m.get(METRIC_RECALL_AT_1PCT_FPR), r.name, METRIC_RECALL_AT_1PCT_FPR)}'
                   f'{_cell(m.get(METRIC_CARD_PRECISION), r.name, METRIC_CARD_PRECISION)}'
                   f'<td>{r.threshold:.3f}</td><td>{_pct(m.get(OP_PRECISION))}</td><td>{_pct(m.get(OP_RECALL))}</td>'
                   f'<td>{_num(m.get(OP_ALERTS_PER_DAY), 1)}</td><td>{calibration}</td><td>{r.seconds:.1f}</td></tr>')
    out.append("</table>")
    for r in d.references:
        if r.note:
            out.append(f'<p class="note">{_e(r.name)}: {_e(r.note)}.</p>')
    out.append("</section>")
    return "\n".join(out)


def _section_run(d: ReportData) -> str:
    rows = "".join(f'<tr><td class="l">{_e(n.node_id)}</td><td class="l">{_e(n.state)}</td><td>{n.seconds:.1f}</td>'
                   f'<td class="l">{_e(n.error[:300])}</td></tr>' for n in d.nodes.values())
    uri = d.evaluation.uri if d.evaluation else "<evaluation dir>"
    model_arg = ', model_name="candidate"' if d.has_baseline else ""
    notebook = (f'import tensorflow_model_analysis as tfma\n'
                f'result = tfma.load_eval_result("{uri}"{model_arg})\n'
                f'tfma.view.render_slicing_metrics(result, slicing_column="{F.CITY}")\n'
                f'tfma.view.render_plot(result, tfma.SlicingSpec())  # overall slice')
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in d.timings.items())
    warnings = "".join(f'<p class="note FAILED">{_e(w)}</p>' for w in d.warnings)
    return f"""<section id="run"><h2>9. Run details and the TFMA result in a notebook</h2>
<table><tr><th class="l">component</th><th class="l">state</th><th>seconds</th><th class="l">error</th></tr>
{rows}</table>
<p class="note">To explore the TFMA result interactively (Jupyter with the TFMA widgets):</p>
<pre id="notebook">{_e(notebook)}</pre>
<p class="note">Built from ML Metadata at <code>{_e(os.path.join(d.root, "metadata.sqlite"))}</code>
({_e(timings)}).</p>
{warnings}</section>"""


def report_json(d: ReportData) -> dict:
    """The numbers of the report in machine-readable form (embedded in the HTML, used by tests)."""
    def clean(v):
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, (np.floating, np.integer)):
            return v.item()
        return v

    op = dataclasses.asdict(d.operating) if d.operating else None
    return {
        "run_id": d.run_id, "pipeline_name": d.pipeline_name, "blessed": d.blessed,
        "failed_thresholds": d.failed_thresholds, "eval_uri": d.evaluation.uri if d.evaluation else None,
        "decision": [{k: clean(v) for k, v in dataclasses.asdict(r).items()} for r in d.decision],
        "candidate": {k: clean(v) for k, v in d.candidate.items()},
        "baseline": {k: clean(v) for k, v in d.baseline.items()},
        "operating_threshold": op, "operating_threshold_source": d.operating_source,
        "alert_table": [{k: clean(v) for k, v in r.items()} for r in d.alert_table],
        "slices": [{k: clean(v) for k, v in r.items()} for r in d.slices],
        "splits": d.splits, "anomalies": d.anomalies, "drifts": d.drifts,
        "references": [{"name": r.name, "threshold": r.threshold, "seconds": r.seconds,
                        "metrics": {k: clean(v) for k, v in r.metrics.items()}} for r in d.references],
        "recompute_max_diff": d.recompute_max_diff, "timings": d.timings,
    }


def render_html(d: ReportData) -> str:
    title = f"Fraud model evaluation: run {d.run_id}"
    verdict = {True: "blessed", False: "NOT blessed", None: "not evaluated"}[d.blessed]
    payload = json.dumps(report_json(d), default=str).replace("</", "<\\/")
    body = "\n".join([
        _section_decision(d), _section_headline(d), _section_threshold(d), _section_plots(d), _section_alerts(d),
        _section_slices(d), _section_data(d), _section_references(d), _section_run(d)])
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in (
        ("decision", "Decision"), ("headline", "Metrics"), ("operating-threshold", "Threshold"), ("plots", "Plots"),
        ("alert-budget", "Alert budget"), ("slices", "Slices"), ("data", "Data"),
        ("reference-models", "Reference models"), ("run", "Run")))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}</style></head>
<body><main>
<h1>Fraud detection model: evaluation report</h1>
<p class="sub">Pipeline <code>{_e(d.pipeline_name)}</code> &middot; run <code>{_e(d.run_id)}</code> &middot;
model {verdict} &middot; generated {time.strftime("%Y-%m-%d %H:%M:%S")} &middot; pipeline root
<code>{_e(d.root)}</code></p>
<nav>{nav}</nav>
{body}
<script type="application/json" id="report-data">{payload}</script>
</main></body></html>
"""


def default_report_path(root: Path, run_id: str) -> Path:
    return Path(root) / REPORTS_DIR / (re.sub(r"[^A-Za-z0-9._-]", "-", run_id) + ".html")


def write_html(text: str, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)  # never a half-written report
    return out


def build_report(root: Path, pipeline_name: str = F.PIPELINE_NAME, out: Path | None = None,
                 run_id: str | None = None) -> Path:
    """Build the HTML report of a run (the latest by default) and return its path."""
    started = time.time()
    data = collect(Path(root), pipeline_name, run_id)
    t = time.time()
    text = render_html(data)
    data.timings["plots and HTML"] = time.time() - t
    data.timings["total"] = time.time() - started
    return write_html(text, Path(out) if out else default_report_path(Path(root), data.run_id))
