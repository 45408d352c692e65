"""The operating threshold: the score threshold that keeps fraud alerts within a daily budget, recorded WITH
the model so that serving, the Evaluator's report and the business all use the same number.

Design (why a component between Trainer and Evaluator, and why a copy of the model):
- It scores raw examples with the exported `serving_examples` signature: exactly what TFMA and TF Serving run,
  Transform graph included (the Trainer only sees transformed tensors and the weighted Keras model).
- Artifacts are immutable, so it does not write into the Trainer's model: it outputs a new Model artifact, a copy
  of `Format-Serving/` plus `Format-Serving/assets.extra/operating_threshold.json`. The Evaluator evaluates and
  blesses that artifact and the Pusher copies that whole directory, so every pushed version carries its threshold
  (TF Serving ignores unknown files in `assets.extra/`, its conventional place for extra files), and the
  latest-blessed resolver hands the next run a baseline that carries its own threshold too.
- The threshold is also a custom property of the output artifact (`operating_threshold`), visible in ML Metadata.

Which split: `valid` by default, not `eval`. The choice only looks at scores (never labels), so choosing on eval
would not leak labels, but it would make "alerts per day on eval <= budget" true by construction; choosing on the
days before eval turns the eval week into an honest check of the budget on days the choice never saw (the report
shows both). The split is a parameter.

Threshold grid: TFMA's ConfusionMatrixPlot reports thresholds k/1000 (num_thresholds=1000), so the threshold is
rounded UP to that grid (fewer alerts, never more): TFMA's precision and recall at the operating threshold are
then read from its own output, not re-derived. `flagged()` reproduces TFMA's histogram-based counting exactly.

Serving rule: alert when fraud_score > threshold.

The decline threshold (the decision service's `decline`) is chosen on the same split, with its labels: the lowest
grid threshold, at or above the operating threshold, whose flagged rows reach a precision target (0.9 by default:
at most one good guest declined per nine frauds stopped), measured on at least MIN_DECLINE_ROWS rows. If no
threshold reaches the target, it is 1.0: the model alone never declines, it only sends to review.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import tensorflow as tf

from fraud import examples as X
from fraud import features as F
from fraud import timeutil

# TFMA's discretisation (tensorflow_model_analysis.metrics): ConfusionMatrixPlot thresholds are k / 1000 and
# every confusion matrix is derived from a 10,000-bucket calibration histogram of the predictions.
THRESHOLD_GRID = 1000
TFMA_HISTOGRAM_BUCKETS = 10000
_TFMA_EPSILON = 1e-7
_BATCH = 4096
MIN_DECLINE_ROWS = 5  # a precision measured on fewer flagged rows is noise
NEVER = 1.0  # nothing scores above 1.0


@dataclasses.dataclass(frozen=True)
class OperatingThreshold:
    threshold: float  # alert when fraud_score > threshold
    alerts_per_day_budget: float
    split: str  # the split the threshold was chosen on
    split_days: int
    split_rows: int
    split_alerts: int  # alerts the threshold gives on that split (<= budget * days)
    # The decline threshold for a precision target on the same split (NEVER when the target is not reached).
    decline_threshold: float = NEVER
    decline_precision_target: float | None = None
    decline_precision: float | None = None  # measured on the split at decline_threshold
    split_declines: int = 0

    @property
    def split_alerts_per_day(self) -> float:
        return self.split_alerts / max(self.split_days, 1)

    def to_json(self) -> str:
        return json.dumps({**dataclasses.asdict(self), "rule": f"alert when {F.SCORE_OUTPUT} > threshold"},
                          indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "OperatingThreshold":
        data = json.loads(text)  # files written before the decline fields existed get their defaults
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)
                      if f.name in data or f.default is dataclasses.MISSING})


# ---------------------------------------------------------------------------------------------------------------
# Pure functions (no TFX): reading examples, scoring, TFMA-consistent counting, choosing, recording.
# ---------------------------------------------------------------------------------------------------------------
def load_examples_signature(model_dir: str):
    return tf.saved_model.load(model_dir).signatures[F.EXAMPLES_SIGNATURE]


def score_serialized(signature, serialized: list[bytes]) -> np.ndarray:
    """Fraud scores of serialized tf.Examples through the model's serving_examples signature."""
    scores = [signature(**{F.EXAMPLES_INPUT: tf.constant(serialized[s:s + _BATCH])})[F.SCORE_OUTPUT].numpy()
              for s in range(0, len(serialized), _BATCH)]
    return np.concatenate(scores).astype(np.float32) if scores else np.zeros(0, np.float32)


def split_days(event_times) -> int:
    """Lima calendar days spanned by a split (first to last day, inclusive)."""
    days = timeutil.lima_day(np.asarray(event_times, dtype=np.int64))
    return int(days.max() - days.min() + 1) if len(days) else 0


def _histogram_floor(scores) -> np.ndarray:
    """The lower edge of the TFMA calibration-histogram bucket of each score (TFMA truncates to 1e-4)."""
    p = np.asarray(scores, dtype=np.float64)
    bucket = np.clip(np.floor(p * TFMA_HISTOGRAM_BUCKETS + 1), 0, TFMA_HISTOGRAM_BUCKETS + 1)
    return np.where(bucket <= 0, -np.inf, np.where(bucket >= TFMA_HISTOGRAM_BUCKETS + 1, np.inf,
                                                   (bucket - 1) / TFMA_HISTOGRAM_BUCKETS))


def flagged(scores, threshold: float) -> np.ndarray:
    """Which scores TFMA counts as positive at `threshold` (its confusion matrices come from a 1e-4 histogram:
    this equals score > threshold except for scores less than 1e-4 above it)."""
    cut = threshold + _TFMA_EPSILON if threshold != 0 else threshold
    return _histogram_floor(scores) >= cut


def grid_thresholds() -> np.ndarray:
    return np.array([k / THRESHOLD_GRID for k in range(THRESHOLD_GRID + 1)])


def choose_threshold(scores, days: int, alerts_per_day: float) -> tuple[float, int]:
    """The lowest grid threshold whose alerts on these scores stay within alerts_per_day * days.

    Returns (threshold, alerts). The lowest such threshold catches the most fraud the budget allows.
    """
    if alerts_per_day <= 0 or days <= 0:
        raise ValueError(f"alerts_per_day and days must be positive, got {alerts_per_day} and {days}")
    allowed = math.floor(alerts_per_day * days)
    floors = np.sort(_histogram_floor(scores))
    for t in grid_thresholds():
        cut = t + _TFMA_EPSILON if t != 0 else t
        alerts = len(floors) - int(np.searchsorted(floors, cut, side="left"))
        if alerts <= allowed:
            return float(t), alerts
    return 1.0, 0  # unreachable: nothing is flagged above 1.0


def choose_decline_threshold(scores, labels, *, at_least: float, precision: float) -> tuple[float, float | None, int]:
    """The lowest grid threshold >= `at_least` whose flagged rows (TFMA's counting) have at least `precision`
    fraud precision over at least MIN_DECLINE_ROWS rows. Returns (threshold, measured precision, flagged rows);
    (NEVER, None, 0) if no threshold reaches the target."""
    if not 0 < precision <= 1:
        raise ValueError(f"the decline precision target must be in (0, 1], got {precision}")
    floors = _histogram_floor(scores)
    order = np.argsort(floors, kind="stable")
    floors, fraud = floors[order], np.asarray(labels, dtype=np.int64)[order] == 1
    fraud_above = np.concatenate([np.cumsum(fraud[::-1])[::-1], [0]])  # frauds from position i to the end
    for t in grid_thresholds():
        if t < at_least:
            continue
        first = int(np.searchsorted(floors, t + _TFMA_EPSILON if t != 0 else t, side="left"))
        flagged_rows = len(floors) - first
        if flagged_rows < MIN_DECLINE_ROWS:
            break
        measured = float(fraud_above[first]) / flagged_rows
        if measured >= precision:
            return float(t), measured, flagged_rows
    return NEVER, None, 0


def threshold_path(model_dir: str) -> str:
    return os.path.join(model_dir, F.THRESHOLD_FILE)


def write_threshold(model_dir: str, op: OperatingThreshold) -> str:
    path = threshold_path(model_dir)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(op.to_json())
    return path


def read_threshold(model_dir: str) -> "OperatingThreshold | None":
    """The threshold recorded in a model directory (a pushed version dir or an artifact's Format-Serving)."""
    path = threshold_path(model_dir)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return OperatingThreshold.from_json(f.read())


def select_threshold(model_dir: str, examples_uri: str, split: str, alerts_per_day: float,
                     decline_precision: float) -> OperatingThreshold:
    """Score one split with the model: the threshold for the alert budget, and the decline threshold for the
    precision target (with the split's labels)."""
    serialized, frame = X.read_split(examples_uri, split)
    scores = score_serialized(load_examples_signature(model_dir), serialized)
    days = split_days(frame[F.EVENT_TIME])
    threshold, alerts = choose_threshold(scores, days, alerts_per_day)
    decline, measured, declines = choose_decline_threshold(scores, frame[F.LABEL].to_numpy(), at_least=threshold,
                                                           precision=decline_precision)
    return OperatingThreshold(threshold=threshold, alerts_per_day_budget=float(alerts_per_day), split=split,
                              split_days=days, split_rows=len(serialized), split_alerts=alerts,
                              decline_threshold=decline, decline_precision_target=float(decline_precision),
                              decline_precision=measured, split_declines=declines)


def select_and_record(model_dir: str, examples_uri: str, *, alerts_per_day: float, split: str,
                      decline_precision: float) -> OperatingThreshold:
    """Choose the thresholds on one split with the model in `model_dir` and record them inside that dir."""
    op = select_threshold(model_dir, examples_uri, split, alerts_per_day, decline_precision)
    write_threshold(model_dir, op)
    return op
