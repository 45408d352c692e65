"""The TFMA side of the report: loading the Evaluator's result (metrics and plots per slice and model),
recomputing the run's metrics in-process with TFMA's own metric code on any (labels, scores), and the blessing
decision (each threshold with its bound and margin; pass/fail is TFMA's), including a what-if re-judgement."""
from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np

from fraud import features as F
from fraud.report.model import Curves, DecisionRow, Evaluation, ReportData


def _slice_name(slice_key) -> str:
    parts = []
    for k in slice_key.single_slice_keys:
        value = k.bytes_value.decode() if k.HasField("bytes_value") else (
            k.int64_value if k.HasField("int64_value") else k.float_value)
        parts.append(f"{k.column}={value if value != '' else '(missing)'}")
    return ", ".join(parts)


def _model(name: str) -> str:
    return F.BASELINE if name == F.BASELINE else F.CANDIDATE  # '' when there is no baseline (first run)


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
    exact: dict = {}  # slice -> model -> TFMA's exact matrices at the recorded thresholds
    for per_slice in tfma.load_metrics(eval_uri):
        if per_slice.HasField("cross_slice_key"):
            continue
        slice_name = _slice_name(per_slice.slice_key)
        for kv in per_slice.metric_keys_and_values:
            if not kv.key.is_diff and kv.value.HasField("confusion_matrix_at_thresholds"):
                exact.setdefault(slice_name, {})[_model(kv.key.model_name)] = \
                    list(kv.value.confusion_matrix_at_thresholds.matrices)
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
    # TFMA labels these matrices with thresholds rounded to 6 decimals (2.31e-06 reads 2e-06), but counts at the
    # exact ones, in the order the EvalConfig lists them: the exact thresholds come from there.
    from fraud.eval_config import operating_thresholds_of

    configured = operating_thresholds_of(eval_config)
    for slice_name, by_model in exact.items():
        for model, matrices in by_model.items():
            if slice_name in curves and model in curves[slice_name]:
                thresholds = configured if len(configured) == len(matrices) else [m.threshold for m in matrices]
                curves[slice_name][model] = curves[slice_name][model].with_points(
                    [(t, m.true_positives, m.false_positives, m.true_negatives, m.false_negatives)
                     for t, m in zip(thresholds, matrices)])
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


# TFMA combiners (and this project's card precision) whose add_input iterates over every row of an element.
_FLATTENING_COMBINERS = frozenset({"_CalibrationHistogramCombiner", "_BinaryConfusionMatrixCombiner",
                                   "_WeightedLabelsPredictionsExamplesCombiner", "_CardPrecisionCombiner"})


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
    # The combiners that flatten their inputs (each row of an element counts as an example) take all rows as one
    # element: the same sums as row by row (tests/unit/test_runs_and_report.py holds them equal), about 10x
    # faster. The example count counts elements, so it and any combiner not known to flatten see one row at a time.
    batched = [type(c).__name__ in _FLATTENING_COMBINERS for c in combiners]
    everything = metric_types.StandardMetricInputs(
        labels=labels.reshape(-1), predictions=scores.reshape(-1), example_weights=np.ones(len(labels), np.float32),
        features={name: values.reshape(-1) for name, values in columns.items()})
    for j, combiner in enumerate(combiners):
        if batched[j] and len(labels):
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
        elif isinstance(value, (float, int, np.number)) or (isinstance(value, np.ndarray) and value.ndim == 0):
            metrics[key.name] = float(value)  # matrices at thresholds (protos) are read from the stored result
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
    gate_ok = data.reference_gate is None or data.reference_gate.passed  # TFMA's thresholds change, not the gate
    return dataclasses.replace(data, evaluation=evaluation, decision=decision,
                               blessed=bool(validation.validation_ok) and gate_ok,
                               failed_thresholds=failed, pushed={})


def metric_config(eval_config, name: str) -> dict:
    """The JSON config of the EvalConfig's metric called `name` ({} when there is none)."""
    for spec in eval_config.metrics_specs:
        for m in spec.metrics:
            cfg = json.loads(m.config or "{}")
            if cfg.get("name") == name:
                return cfg
    return {}
