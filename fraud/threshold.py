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

Threshold grid: the split's own scores (every distinct score is a candidate, the finest quantile grid there is),
so the threshold resolves scores of any size: a model whose legitimate scores sit around 1e-6 gets a threshold
there, not the floor of a fixed grid. For a budget of B alerts over the split, the threshold is the (B+1)-th
highest score: the lowest threshold with at most B scores above it. When the split has no more rows than the
budget allows, the budget is not reached: the threshold is 0 and the record says so (`budget_reached`).

One threshold everywhere: the Evaluator (components/evaluator.py) reads this record from the model it evaluates
and sets TFMA's Precision, Recall and exact confusion matrices to it, so TFMA, the report, `fraudctl score`, the
model server and the decision service all use the same number. TFMA counts those matrices exactly (explicit
thresholds, no histogram) with the same rule.

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
    budget_reached: bool = True  # False: the split has no more rows than the budget allows (threshold 0)

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


def format_threshold(threshold: float) -> str:
    """A threshold as people read it, with the digits that tell it from its neighbours (0.3, 2.31e-06, 0.99987)."""
    t = float(threshold)
    return f"{t:.6f}".rstrip("0") if 0.999 < t < 1 else f"{t:.3g}"  # .3g would print 0.99987 as 1


def flagged(scores, threshold: float) -> np.ndarray:
    """Which scores raise an alert at `threshold`: score > threshold (TFMA's rule for explicit thresholds)."""
    return np.asarray(scores) > threshold


def allowed_alerts(days: int, alerts_per_day: float) -> int:
    if alerts_per_day <= 0 or days <= 0:
        raise ValueError(f"alerts_per_day and days must be positive, got {alerts_per_day} and {days}")
    return math.floor(alerts_per_day * days)


def choose_threshold(scores, days: int, alerts_per_day: float) -> tuple[float, int]:
    """The lowest threshold, among the scores themselves, with at most alerts_per_day * days scores above it.

    Returns (threshold, alerts). The lowest such threshold catches the most fraud the budget allows. When the
    scores are no more than the budget allows, every score above 0 alerts: (0.0, alerts); see budget_reached().
    """
    allowed = allowed_alerts(days, alerts_per_day)
    ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]  # highest first
    if allowed >= len(ordered):
        return 0.0, int((ordered > 0).sum())
    threshold = float(ordered[allowed])  # allowed scores are >= it; ties with it do not alert
    return threshold, int((ordered > threshold).sum())


def budget_reached(n_scores: int, days: int, alerts_per_day: float) -> bool:
    return allowed_alerts(days, alerts_per_day) < n_scores


def choose_decline_threshold(scores, labels, *, at_least: float, precision: float) -> tuple[float, float | None, int]:
    """The lowest threshold >= `at_least`, among the scores themselves, whose alerts (score > threshold) have at
    least `precision` fraud precision over at least MIN_DECLINE_ROWS rows. Returns (threshold, measured precision,
    flagged rows); (NEVER, None, 0) if no threshold reaches the target."""
    if not 0 < precision <= 1:
        raise ValueError(f"the decline precision target must be in (0, 1], got {precision}")
    p = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-p, kind="stable")
    ordered, fraud = p[order], np.asarray(labels, dtype=np.int64)[order] == 1
    # Threshold ordered[i] flags exactly the first i rows when ordered[i-1] > ordered[i] (a tie boundary).
    i = np.arange(len(ordered))
    boundary = np.concatenate([[True], ordered[:-1] > ordered[1:]]) if len(ordered) else np.zeros(0, bool)
    frauds_before = np.concatenate([[0], np.cumsum(fraud)[:-1]]) if len(ordered) else np.zeros(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        measured = frauds_before / i
    ok = boundary & (ordered >= at_least) & (i >= MIN_DECLINE_ROWS) & (measured >= precision)
    if not ok.any():
        return NEVER, None, 0
    best = int(np.flatnonzero(ok)[-1])  # the most rows flagged: the lowest threshold
    return float(ordered[best]), float(measured[best]), best


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
                              decline_precision=measured, split_declines=declines,
                              budget_reached=budget_reached(len(scores), days, alerts_per_day))


def select_and_record(model_dir: str, examples_uri: str, *, alerts_per_day: float, split: str,
                      decline_precision: float) -> OperatingThreshold:
    """Choose the thresholds on one split with the model in `model_dir` and record them inside that dir."""
    op = select_threshold(model_dir, examples_uri, split, alerts_per_day, decline_precision)
    write_threshold(model_dir, op)
    return op
