"""What the report shows, as plain data: the TFMA result, the decision rows, the reference models and
everything collected from one run (ReportData), plus the rules that judge slices."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fraud import features as F

# A slice is judged only with enough fraud in it; below that its metrics are noise.
MIN_FRAUD_TO_JUDGE_SLICE = 10
# A slice is weak when it trails the overall model by these gaps. Both measures do not depend on the slice's fraud
# rate; PR-AUC does (a slice with rarer fraud has a lower PR-AUC for the same model), so it is shown, not judged.
WEAK_RECALL_GAP = 0.15  # recall at the operating threshold
WEAK_ROC_AUC_GAP = 0.05
TOP_DRIFTS = 8
BUDGET_FACTORS = (0.2, 0.5, 1.0, 2.0, 5.0)  # the alert-budget table: these multiples of the operating budget
# The reference models (fraud.report.references), by name.
LOGISTIC, FOREST, ISOLATION = "Logistic regression", "Random forest", "Isolation forest (unsupervised)"
# Keys of per-model metric dicts that the report derives at the operating threshold from TFMA's matrices.
OP_PRECISION, OP_RECALL, OP_ALERTS_PER_DAY = "precision_at_op", "recall_at_op", "alerts_per_day_at_op"


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
        """The confusion matrix at exactly this threshold, if TFMA computed one there (the plot's k/1000 grid,
        or the exact matrices at the thresholds recorded with the models)."""
        idx = np.flatnonzero(np.abs(self.thresholds - threshold) <= 1e-12 * max(1.0, abs(threshold)))
        if not len(idx):
            return None
        i = int(idx[0])
        tp, fp, fn = float(self.tp[i]), float(self.fp[i]), float(self.fn[i])
        return {"threshold": float(self.thresholds[i]), "tp": tp, "fp": fp, "fn": fn, "tn": float(self.tn[i]),
                "alerts": tp + fp, "precision": tp / (tp + fp) if tp + fp else float("nan"),
                "recall": tp / (tp + fn) if tp + fn else float("nan")}

    def with_points(self, matrices) -> "Curves":
        """These curves with exact confusion matrices merged in, as (threshold, tp, fp, tn, fn); an exact point
        replaces a plot point at the same threshold."""
        points = {float(t): (tp, fp, tn, fn) for t, tp, fp, tn, fn in
                  zip(self.thresholds, self.tp, self.fp, self.tn, self.fn)}
        for t, tp, fp, tn, fn in matrices:
            points[float(t)] = (tp, fp, tn, fn)
        order = sorted(points)
        col = lambda k: np.array([points[t][k] for t in order], dtype=np.float64)  # noqa: E731
        return Curves(np.array(order, dtype=np.float64), col(0), col(1), col(2), col(3), self.calibration)


def exact_point(labels, scores, threshold: float) -> tuple:
    """(threshold, tp, fp, tn, fn) of `score > threshold`: TFMA's rule for explicit thresholds."""
    fraud = np.asarray(labels) > 0.5
    alert = np.asarray(scores) > threshold
    return (float(threshold), float((alert & fraud).sum()), float((alert & ~fraud).sum()),
            float((~alert & ~fraud).sum()), float((~alert & fraud).sum()))


@dataclass
class Evaluation:
    """The TFMA result: metrics and plots per slice and model (F.CANDIDATE / F.BASELINE)."""
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
    nodes: dict  # node id -> fraud.runs.Node
    splits: dict  # split -> {rows, fraud, fraud_rate, days}
    anomalies: list | None  # None: not checked
    drifts: list  # [{feature, measure, value, limit, blocks, over_limit, detail}]
    evaluation: Evaluation | None
    blessed: bool | None
    failed_thresholds: list
    decision: list  # [DecisionRow]
    pushed: dict
    has_baseline: bool
    operating: object | None  # fraud.threshold.OperatingThreshold of the candidate
    operating_source: str
    baseline_operating: object | None
    baseline_operating_source: str
    eval_days: int
    eval_frame: object | None  # pandas frame: label, amount_pen, score (+ slice columns)
    alert_table: list
    slices: list
    references: list  # [Reference]
    recompute_max_diff: float | None
    timings: dict
    warnings: list = field(default_factory=list)
    references_note: str = ""  # why the reference models were not computed (when they were not)
    references_sample: str = ""  # which train rows they were trained on
    reference_gate: object = None  # fraud.reference.GateResult: the pipeline's reference gate, when it ran
    reference_gate_note: str = ""  # why there is no gate result (when there is none)

    @property
    def candidate(self) -> dict:
        return self.evaluation.metrics.get("", {}).get(F.CANDIDATE, {}) if self.evaluation else {}

    @property
    def baseline(self) -> dict:
        return self.evaluation.metrics.get("", {}).get(F.BASELINE, {}) if self.evaluation else {}
