"""TFMA configuration: metrics, slices and the blessing thresholds, from fraud.features names."""
from __future__ import annotations

import json

import tensorflow_model_analysis as tfma

from fraud import features as F
from fraud import tfma_metrics

CANDIDATE = F.CANDIDATE
BASELINE = F.BASELINE


def _metric(class_name: str, threshold: tfma.MetricThreshold | None = None, module: str = "",
            **config) -> tfma.MetricConfig:
    metric = tfma.MetricConfig(class_name=class_name, config=json.dumps(config), module=module)
    if threshold is not None:
        # Gate on the overall slice only: small slices (a city with no fraud in the eval week) have no
        # meaningful PR-AUC. Slices are reported, not gated.
        metric.per_slice_thresholds.append(
            tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold))
    return metric


def blessing_threshold(floor: float, tolerance: float) -> tfma.MetricThreshold:
    """A floor on the value and a bounded regression against the baseline.

    The change threshold is ignored when there is no baseline (the first run).
    """
    return tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": floor}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -tolerance}),
    )


def regression_threshold(tolerance: float) -> tfma.MetricThreshold:
    return tfma.MetricThreshold(change_threshold=tfma.GenericChangeThreshold(
        direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -tolerance}))


def operating_metrics(threshold: float, more_thresholds=()) -> list[tfma.MetricConfig]:
    """TFMA's precision and recall at the operating threshold, and its exact confusion matrices (explicit
    thresholds: counted as score > threshold, no histogram) at that threshold and the other recorded ones."""
    thresholds = sorted({float(threshold), *(float(t) for t in more_thresholds)})
    return [_metric("Precision", name=F.METRIC_PRECISION, thresholds=[float(threshold)]),
            _metric("Recall", name=F.METRIC_RECALL, thresholds=[float(threshold)]),
            _metric("ConfusionMatrixAtThresholds", name=F.METRIC_OPERATING_MATRICES, thresholds=thresholds)]


_OPERATING_NAMES = (F.METRIC_PRECISION, F.METRIC_RECALL, F.METRIC_OPERATING_MATRICES)


def with_operating_thresholds(eval_config: tfma.EvalConfig, threshold: float,
                              more_thresholds=()) -> tfma.EvalConfig:
    """A copy of `eval_config` whose operating-threshold metrics are at `threshold` (replacing any there)."""
    config = tfma.EvalConfig()
    config.CopyFrom(eval_config)
    for spec in config.metrics_specs:
        kept = [m for m in spec.metrics if json.loads(m.config or "{}").get("name") not in _OPERATING_NAMES]
        del spec.metrics[:]
        spec.metrics.extend(kept + operating_metrics(threshold, more_thresholds))
    return config


def operating_thresholds_of(eval_config) -> list[float]:
    """The thresholds of the EvalConfig's exact confusion matrices (empty if it has none)."""
    for spec in eval_config.metrics_specs:
        for m in spec.metrics:
            cfg = json.loads(m.config or "{}")
            if cfg.get("name") == F.METRIC_OPERATING_MATRICES:
                return [float(t) for t in cfg.get("thresholds", [])]
    return []


def build_eval_config(*, pr_auc_floor: float, regression_tolerance: float, operating_threshold: float | None = None,
                      card_precision_k: int = F.DEFAULT_CARD_PRECISION_K) -> tfma.EvalConfig:
    """The run's EvalConfig. In the pipeline `operating_threshold` is None: the threshold is chosen at run time
    (OperatingThresholdSelector) and the Evaluator adds the operating metrics from the model it evaluates."""
    def spec(name: str, is_baseline: bool) -> tfma.ModelSpec:
        return tfma.ModelSpec(name=name, signature_name=F.EXAMPLES_SIGNATURE, label_key=F.LABEL,
                              prediction_key=F.SCORE_OUTPUT, is_baseline=is_baseline)

    metrics = [
        _metric("ExampleCount", name=F.METRIC_EXAMPLE_COUNT),
        _metric("MeanLabel", name=F.METRIC_MEAN_LABEL),
        _metric("MeanPrediction", name=F.METRIC_MEAN_PREDICTION),
        _metric("AUCPrecisionRecall", blessing_threshold(pr_auc_floor, regression_tolerance),
                name=F.METRIC_PR_AUC, num_thresholds=10000),
        _metric("AUC", regression_threshold(regression_tolerance), name=F.METRIC_ROC_AUC, num_thresholds=10000),
        _metric("SensitivityAtSpecificity", regression_threshold(regression_tolerance),
                name=F.METRIC_RECALL_AT_1PCT_FPR, specificity=0.99, num_thresholds=10000),
        _metric("CardPrecisionAtK", regression_threshold(regression_tolerance), module=tfma_metrics.__name__,
                name=F.METRIC_CARD_PRECISION, k=card_precision_k),
        _metric("Calibration", name=F.METRIC_CALIBRATION),
        _metric("CalibrationPlot", name=F.METRIC_CALIBRATION_PLOT, num_buckets=20),
        _metric("ConfusionMatrixPlot", name=F.METRIC_CONFUSION_MATRIX_PLOT),
    ] + (operating_metrics(operating_threshold) if operating_threshold is not None else [])
    return tfma.EvalConfig(
        model_specs=[spec(CANDIDATE, False), spec(BASELINE, True)],
        slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[k]) for k in F.SLICE_COLUMNS],
        metrics_specs=[tfma.MetricsSpec(metrics=metrics)],
    )
