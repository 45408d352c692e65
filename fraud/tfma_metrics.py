"""Card-fraud metrics as TFMA custom metrics, so they are computed per slice and can gate blessing.

CardPrecisionAtK (the card-fraud literature's "card precision top-k"): for every Lima calendar day, rank the
cards seen that day by their highest score, take the k highest-ranked cards that were not already flagged
(in the top k) on an earlier day, and count the share that had a fraudulent transaction that day. The
metric is the mean over days. It answers "if investigators can check k cards a day, how many are fraud".
A card is the user_id column (one card per guest in this data).

Referenced from the EvalConfig as MetricConfig(class_name="CardPrecisionAtK", module="fraud.tfma_metrics").
"""
from typing import Dict, Iterable, List, Optional

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types, metric_util
from tensorflow_model_analysis.proto import config_pb2
from tensorflow_model_analysis.utils import util

from fraud import features as F
from fraud import timeutil

CARD_PRECISION_NAME = F.METRIC_CARD_PRECISION
DEFAULT_K = F.DEFAULT_CARD_PRECISION_K


def card_precision_at_k(days: np.ndarray, cards: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                        k: int = DEFAULT_K) -> float:
    """Plain-numpy definition (tested on its own); the TFMA combiner calls it."""
    if len(days) == 0:
        return float("nan")
    flagged: set = set()
    precisions = []
    for day in np.unique(days):
        on_day = days == day
        best: Dict[str, tuple] = {}
        for card, score, label in zip(cards[on_day], scores[on_day], labels[on_day]):
            if card in flagged:
                continue
            top, fraud = best.get(card, (-np.inf, 0))
            best[card] = (max(top, score), max(fraud, int(label)))
        if not best:
            continue
        ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
        precisions.append(sum(fraud for _, (_, fraud) in ranked) / k)
        flagged.update(card for card, _ in ranked)
    return float(np.mean(precisions)) if precisions else float("nan")


class CardPrecisionAtK(metric_types.Metric):
    def __init__(self, name: str = CARD_PRECISION_NAME, k: int = DEFAULT_K):
        super().__init__(_computations, name=name, k=k)


metric_types.register_metric(CardPrecisionAtK)


def _computations(name: str = CARD_PRECISION_NAME, k: int = DEFAULT_K,
                  eval_config: Optional[config_pb2.EvalConfig] = None,
                  model_names: Optional[List[str]] = None, output_names: Optional[List[str]] = None,
                  example_weighted: bool = False) -> metric_types.MetricComputations:
    computations = []
    for model_name in model_names or [""]:
        for output_name in output_names or [""]:
            key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                                         example_weighted=example_weighted)
            computations.append(metric_types.MetricComputation(
                keys=[key],
                preprocessors=[metric_types.FeaturePreprocessor(feature_keys=[F.USER_ID, F.EVENT_TIME])],
                combiner=_CardPrecisionCombiner(key, eval_config, k)))
    return computations


class _CardPrecisionCombiner(beam.CombineFn):
    """Keeps (day, card, score, label) per example: the eval window is days, not years, so this is small."""

    def __init__(self, key, eval_config, k: int):
        self._key, self._eval_config, self._k = key, eval_config, k

    def create_accumulator(self):
        return []

    def add_input(self, accumulator, element):
        """One example (TFMA's Evaluator) or many at once (arrays of n rows: fraud.report.metrics scores whole
        splits this way); either way each row adds one (day, card, score, label)."""
        labels, predictions, _ = next(metric_util.to_label_prediction_example_weight(
            element, eval_config=self._eval_config, model_name=self._key.model_name,
            output_name=self._key.output_name, example_weighted=False, flatten=False, squeeze=False))
        cards = np.asarray(util.get_by_keys(element.features, [F.USER_ID])).reshape(-1)
        times = np.asarray(util.get_by_keys(element.features, [F.EVENT_TIME])).reshape(-1).astype(np.int64)
        scores = np.asarray(predictions, dtype=np.float64).reshape(-1)
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        if not len(cards) == len(times) == len(scores) == len(labels):
            raise ValueError(f"{self._key.name}: {len(scores)} predictions for {len(cards)} cards")
        accumulator.extend(zip(timeutil.lima_day(times).tolist(),
                               [c.decode() if isinstance(c, bytes) else str(c) for c in cards.tolist()],
                               scores.tolist(), labels.tolist()))
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[list]):
        merged = []
        for acc in accumulators:
            merged.extend(acc)
        return merged

    def extract_output(self, accumulator):
        if not accumulator:
            return {self._key: float("nan")}
        days, cards, scores, labels = (np.array(col) for col in zip(*accumulator))
        return {self._key: card_precision_at_k(days, cards, scores, labels, self._k)}
