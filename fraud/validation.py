"""Data validation as plain functions: the anomalies ExampleValidator recorded per split, plus the drift of the
eval split against the train split (the schema's drift comparators), each described in one line.

TFX's ExampleValidator records anomalies but never fails; components/validation.py (DataValidationGate) calls
`check()` and so stops the pipeline before Transform/Trainer when there is any.
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
        drift = tfdv.validate_statistics(stats(F.SPLIT_EVAL), schema, previous_statistics=stats(F.SPLIT_TRAIN))
        for feature, info in drift.anomaly_info.items():
            for reason in info.reason:
                if "DRIFT" in anomalies_pb2.AnomalyInfo.Type.Name(reason.type):
                    problems.append(f"[eval vs train] feature {feature!r}: {reason.short_description}: "
                                    f"{reason.description}")
    return problems


def check(statistics_uri: str, anomalies_uri: str, schema, split_names: list[str]) -> None:
    """Raise DataValidationError naming every anomaly, or return when there is none."""
    problems = find_anomalies(statistics_uri, anomalies_uri, schema, split_names)
    if problems:
        raise DataValidationError(
            f"data validation failed with {len(problems)} anomal{'y' if len(problems) == 1 else 'ies'}; "
            "nothing was trained or pushed. Fix the data (or, if the change is legitimate, update "
            "schema/schema.pbtxt) and run again:\n  " + "\n  ".join(problems), problems)
