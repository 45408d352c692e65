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


def describe(anomalies: anomalies_pb2.Anomalies, split: str) -> list[str]:
    lines = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        reasons = "; ".join(f"{r.short_description}: {r.description}" for r in info.reason) or info.description
        lines.append(f"[{split}] feature {feature!r}: {reasons}")
    for reason in anomalies.dataset_anomaly_info.reason:
        lines.append(f"[{split}] dataset: {reason.short_description}: {reason.description}")
    return lines


def find_anomalies(statistics_uri: str, anomalies_uri: str, schema, split_names: list[str]) -> list[str]:
    problems = []
    for split in split_names:
        path = os.path.join(F.split_dir(anomalies_uri, split), F.SCHEMA_DIFF_FILE)
        if tf.io.gfile.exists(path):
            problems += describe(_read_proto(path, anomalies_pb2.Anomalies()), split)

    def stats(split):
        return read_statistics(statistics_uri, split)

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
