"""Data validation as plain functions: the anomalies ExampleValidator recorded per split, plus the drift of the
eval split against the train split (the schema's drift comparators), each described in one line.

TFX's ExampleValidator records anomalies but never fails; components/validation.py (DataValidationGate) calls
`check()` and so stops the pipeline before Transform/Trainer when there is any. Drift beyond a limit blocks only
for F.DRIFT_BLOCKING_FEATURES; the other model inputs' drift is printed as a warning (`drift_warnings()`).
"""
from __future__ import annotations

import os

import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2

from fraud import features as F
from fraud.errors import DataValidationError


def _read_proto(path: str, proto):
    with tf.io.gfile.GFile(path, "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def read_statistics(statistics_uri: str, split: str) -> statistics_pb2.DatasetFeatureStatisticsList:
    """The TFDV statistics of one split of an ExampleStatistics artifact."""
    path = os.path.join(F.split_dir(statistics_uri, split), F.FEATURE_STATS_FILE)
    return _read_proto(path, statistics_pb2.DatasetFeatureStatisticsList())


# TFDV's numeric statistics of a feature whose every value is NaN report min = max = 0, so a range in the schema
# fires on a column that is simply absent (the contract lets optional columns be absent: ingestion writes NaN,
# Transform imputes it and sets the *_missing flag). Those range anomalies are not anomalies.
_RANGE_ANOMALIES = {anomalies_pb2.AnomalyInfo.FLOAT_TYPE_SMALL_FLOAT, anomalies_pb2.AnomalyInfo.FLOAT_TYPE_BIG_FLOAT}


def all_missing_numeric(statistics: statistics_pb2.DatasetFeatureStatisticsList) -> set[str]:
    """The optional numeric columns whose every value in this split is missing (NaN)."""
    out = set()
    for dataset in statistics.datasets:
        for feature in dataset.features:
            name = feature.path.step[0] if feature.path.step else feature.name
            if name not in F.OPTIONAL_NUMERIC_COLUMNS or not feature.HasField("num_stats"):
                continue
            stats = feature.num_stats
            present = stats.common_stats.num_non_missing
            nan = max((h.num_nan for h in stats.histograms), default=0)
            if present == 0 or nan >= present:
                out.add(name)
    return out


def without_absent_column_ranges(anomalies: anomalies_pb2.Anomalies, absent: set[str]) -> anomalies_pb2.Anomalies:
    """The anomalies minus the range reasons of columns that are missing in every row."""
    kept = anomalies_pb2.Anomalies()
    kept.CopyFrom(anomalies)
    for feature in absent & set(kept.anomaly_info):
        info = kept.anomaly_info[feature]
        reasons = [r for r in info.reason if r.type not in _RANGE_ANOMALIES]
        if reasons:
            del info.reason[:]
            info.reason.extend(reasons)
        else:
            del kept.anomaly_info[feature]
    return kept


def describe(anomalies: anomalies_pb2.Anomalies, split: str) -> list[str]:
    lines = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        reasons = "; ".join(f"{r.short_description}: {r.description}" for r in info.reason) or info.description
        lines.append(f"[{split}] feature {feature!r}: {reasons}")
    for reason in anomalies.dataset_anomaly_info.reason:
        lines.append(f"[{split}] dataset: {reason.short_description}: {reason.description}")
    return lines


def find_anomalies(statistics_uri: str, anomalies_uri: str, schema, split_names: list[str]) -> list[str]:
    def stats(split):
        return read_statistics(statistics_uri, split)

    problems = []
    for split in split_names:
        path = os.path.join(F.split_dir(anomalies_uri, split), F.SCHEMA_DIFF_FILE)
        if tf.io.gfile.exists(path):
            absent = all_missing_numeric(stats(split))
            if absent:
                print(f"[{split}] {', '.join(sorted(absent))}: missing in every row (an optional column); "
                      "Transform imputes it and sets its missing flag", flush=True)
            problems += describe(without_absent_column_ranges(_read_proto(path, anomalies_pb2.Anomalies()),
                                                              absent), split)

    if F.SPLIT_TRAIN in split_names and F.SPLIT_EVAL in split_names:
        problems += drifts(stats(F.SPLIT_TRAIN), stats(F.SPLIT_EVAL), schema)[0]
    return problems


def drifts(train, evals, schema) -> tuple[list[str], list[str]]:
    """(blocking, warnings): eval-vs-train drift beyond the schema's limits, one line each. Only the
    F.DRIFT_BLOCKING_FEATURES block; every other model input's drift beyond its limit is a warning."""
    blocking, warnings = [], []
    drift = tfdv.validate_statistics(evals, schema, previous_statistics=train)
    for info in sorted(drift.drift_skew_info, key=lambda i: ".".join(i.path.step)):
        feature = ".".join(info.path.step)
        for m in info.drift_measurements:
            if m.value <= m.threshold:
                continue
            measure = "L-infinity distance" if m.type == m.L_INFTY else "Jensen-Shannon divergence"
            line = (f"[eval vs train] feature {feature!r}: drift {measure} {m.value:.3f} is above its limit "
                    f"{m.threshold:g}")
            (blocking if feature in F.DRIFT_BLOCKING_FEATURES else warnings).append(line)
    return blocking, warnings


def drift_warnings(statistics_uri: str, schema, split_names: list[str]) -> list[str]:
    if F.SPLIT_TRAIN not in split_names or F.SPLIT_EVAL not in split_names:
        return []
    return drifts(read_statistics(statistics_uri, F.SPLIT_TRAIN), read_statistics(statistics_uri, F.SPLIT_EVAL),
                  schema)[1]


def check(statistics_uri: str, anomalies_uri: str, schema, split_names: list[str]) -> None:
    """Raise DataValidationError naming every anomaly, or return when there is none."""
    problems = find_anomalies(statistics_uri, anomalies_uri, schema, split_names)
    if problems:
        raise DataValidationError(
            f"data validation failed with {len(problems)} anomal{'y' if len(problems) == 1 else 'ies'}; "
            "nothing was trained or pushed. Fix the data (or, if the change is legitimate, update "
            "schema/schema.pbtxt) and run again:\n  " + "\n  ".join(problems), problems)
