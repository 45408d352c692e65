"""FraudExampleGen: reads the transactions CSVs, enforces the data contract, splits by time.

Output: an Examples artifact with splits train / valid / eval (gzipped TFRecords of tf.Example), where
eval = the last `eval_days` Lima calendar days, valid = the `valid_days` before, train = everything earlier.
Never a random split: nothing from the future trains the model that is evaluated on it.
Row counts and fraud rates per split are recorded as custom properties of the artifact.
"""

import os

import numpy as np
import tensorflow as tf
from tfx.dsl.component.experimental.annotations import OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from fraud import features as F
from fraud import ingest

_FLOAT_COLUMNS = F.NUMERIC_FEATURES
_INT_COLUMNS = (F.EVENT_TIME, F.LABEL)
_STRING_COLUMNS = F.CATEGORICAL_FEATURES + tuple(
    c for c in F.PASSTHROUGH_STRING_COLUMNS if c not in F.CATEGORICAL_FEATURES)


def to_examples(frame) -> "list[bytes]":
    """Serialize standardised rows as tf.Examples: every column present in every row (dense)."""
    floats = {c: frame[c].to_numpy(np.float32) for c in _FLOAT_COLUMNS}
    ints = {c: frame[c].to_numpy(np.int64) for c in _INT_COLUMNS if c in frame.columns}
    strings = {c: [s.encode() for s in frame[c].astype(str)] for c in _STRING_COLUMNS}
    out = []
    for i in range(len(frame)):
        feature = {c: tf.train.Feature(float_list=tf.train.FloatList(value=[v[i]])) for c, v in floats.items()}
        feature.update({c: tf.train.Feature(int64_list=tf.train.Int64List(value=[v[i]])) for c, v in ints.items()})
        feature.update({c: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v[i]])) for c, v in strings.items()})
        out.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return out


def write_split(frame, split_dir: str) -> None:
    tf.io.gfile.makedirs(split_dir)
    path = os.path.join(split_dir, "data_tfrecord-00000-of-00001.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for record in to_examples(frame):
            writer.write(record)


@component
def FraudExampleGen(
    examples: OutputArtifact[standard_artifacts.Examples],
    data_dir: Parameter[str],
    eval_days: Parameter[int] = 7,
    valid_days: Parameter[int] = 7,
):
    standard = ingest.standardise(ingest.read_source(data_dir), require_label=True)
    splits = ingest.split_by_time(standard.frame, eval_days=eval_days, valid_days=valid_days)
    for name, frame in splits.items():
        write_split(frame, os.path.join(examples.uri, f"Split-{name}"))
        examples.set_int_custom_property(f"rows_{name}", len(frame))
        examples.set_int_custom_property(f"fraud_{name}", int(frame[F.LABEL].sum()))
        examples.set_int_custom_property(f"start_{name}", int(frame[F.EVENT_TIME].min()))
        examples.set_int_custom_property(f"end_{name}", int(frame[F.EVENT_TIME].max()))
    examples.split_names = artifact_utils.encode_split_names(list(splits))
    examples.set_string_custom_property("payload_format", "FORMAT_TF_EXAMPLE")
    examples.set_int_custom_property("rows_in", standard.rows_in)
    examples.set_string_custom_property("imputed_columns", ",".join(standard.imputed_columns))
    print(f"ingested {standard.rows_in} rows: "
          + ", ".join(f"{n}={len(f)} (fraud {int(f[F.LABEL].sum())})" for n, f in splits.items()), flush=True)
