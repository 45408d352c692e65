"""DataValidationGate: stops the pipeline before Transform/Trainer when the data has anomalies.

TFX's ExampleValidator records anomalies but never fails. This gate reads its per-split anomalies, adds
the drift check of the eval split against the train split (the schema's drift comparators), and raises an
error naming every anomaly. On success it passes the schema on: Transform consumes this output, so it can
only run on validated data.
"""

import os

import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import io_utils

from fraud import features as F

SCHEMA_FILE = "schema.pbtxt"


class DataValidationError(RuntimeError):
    """The data failed validation; the message names each anomaly."""


def _read_proto(path: str, proto):
    with tf.io.gfile.GFile(path, "rb") as f:
        proto.ParseFromString(f.read())
    return proto


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
        path = os.path.join(anomalies_uri, f"Split-{split}", "SchemaDiff.pb")
        if tf.io.gfile.exists(path):
            problems += describe(_read_proto(path, anomalies_pb2.Anomalies()), split)

    def stats(split):
        path = os.path.join(statistics_uri, f"Split-{split}", "FeatureStats.pb")
        return _read_proto(path, statistics_pb2.DatasetFeatureStatisticsList())

    if F.SPLIT_TRAIN in split_names and F.SPLIT_EVAL in split_names:
        drift = tfdv.validate_statistics(stats(F.SPLIT_EVAL), schema, previous_statistics=stats(F.SPLIT_TRAIN))
        for feature, info in drift.anomaly_info.items():
            for reason in info.reason:
                if "DRIFT" in anomalies_pb2.AnomalyInfo.Type.Name(reason.type):
                    problems.append(f"[eval vs train] feature {feature!r}: {reason.short_description}: "
                                    f"{reason.description}")
    return problems


@component
def DataValidationGate(
    statistics: InputArtifact[standard_artifacts.ExampleStatistics],
    schema: InputArtifact[standard_artifacts.Schema],
    anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
    validated_schema: OutputArtifact[standard_artifacts.Schema],
):
    schema_path = os.path.join(schema.uri, SCHEMA_FILE)
    schema_proto = tfdv.load_schema_text(schema_path)
    splits = artifact_utils.decode_split_names(statistics.split_names)
    problems = find_anomalies(statistics.uri, anomalies.uri, schema_proto, splits)
    validated_schema.set_int_custom_property("anomaly_count", len(problems))
    if problems:
        raise DataValidationError(
            f"data validation failed with {len(problems)} anomal{'y' if len(problems) == 1 else 'ies'}; "
            "nothing was trained or pushed. Fix the data (or, if the change is legitimate, update "
            "schema/schema.pbtxt) and run again:\n  " + "\n  ".join(problems))
    io_utils.copy_file(schema_path, os.path.join(validated_schema.uri, SCHEMA_FILE))
    print(f"data validation passed on splits {', '.join(splits)}: no anomalies", flush=True)
