"""DataValidationGate: stops the pipeline before Transform/Trainer when the data has anomalies.

The TFX adapter of fraud.validation: it reads ExampleValidator's per-split anomalies and the drift of eval
against train, and raises fraud.errors.DataValidationError naming every anomaly. On success it passes the schema
on: Transform consumes this output, so it can only run on validated data.
"""

import os

import tensorflow_data_validation as tfdv
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import io_utils

from fraud import features as F
from fraud import validation
from fraud.errors import DataValidationError


@component
def DataValidationGate(
    statistics: InputArtifact[standard_artifacts.ExampleStatistics],
    schema: InputArtifact[standard_artifacts.Schema],
    anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
    validated_schema: OutputArtifact[standard_artifacts.Schema],
):
    schema_path = os.path.join(schema.uri, F.SCHEMA_FILE)
    splits = artifact_utils.decode_split_names(statistics.split_names)
    try:
        validation.check(statistics.uri, anomalies.uri, tfdv.load_schema_text(schema_path), splits)
    except DataValidationError as exc:
        validated_schema.set_int_custom_property(F.PROP_ANOMALY_COUNT, exc.anomaly_count)
        raise
    validated_schema.set_int_custom_property(F.PROP_ANOMALY_COUNT, 0)
    for line in validation.drift_warnings(statistics.uri, tfdv.load_schema_text(schema_path), splits):
        print(f"drift warning (watched, does not stop the pipeline): {line}", flush=True)
    io_utils.copy_file(schema_path, os.path.join(validated_schema.uri, F.SCHEMA_FILE))
    print(f"data validation passed on splits {', '.join(splits)}: no anomalies", flush=True)
