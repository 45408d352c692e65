"""FraudExampleGen: reads the transactions (CSV folder or database), enforces the data contract, splits by time.

The TFX adapter of fraud.sources / fraud.ingest / fraud.examples. Output: an Examples artifact with splits
train / valid / eval (gzipped TFRecords of tf.Example), where eval = the last `eval_days` Lima calendar days,
valid = the `valid_days` before, train = everything earlier. Never a random split: nothing from the future
trains the model that is evaluated on it. Row counts and fraud rates per split are recorded as custom
properties of the artifact (names in fraud.features).
"""

import os

from tfx.dsl.component.experimental.annotations import OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from fraud import examples as X
from fraud import features as F
from fraud import ingest, sources

_FLOAT_COLUMNS = F.NUMERIC_FEATURES
_INT_COLUMNS = (F.EVENT_TIME, F.LABEL)
_STRING_COLUMNS = F.CATEGORICAL_FEATURES + tuple(
    c for c in F.PASSTHROUGH_STRING_COLUMNS if c not in F.CATEGORICAL_FEATURES)


def to_examples(frame) -> "list[bytes]":
    """Serialize standardised rows as tf.Examples: every column present in every row (dense)."""
    return X.encode_columns(
        floats={c: frame[c].to_numpy() for c in _FLOAT_COLUMNS},
        ints={c: frame[c].to_numpy() for c in _INT_COLUMNS if c in frame.columns},
        strings={c: frame[c].to_numpy() for c in _STRING_COLUMNS})  # not str objects: X.encode_columns str()s them


# Rows per file of a split: above it the split is written as several files at once (gzip, the most of the write,
# lets go of the GIL), one per core at most.
SHARD_ROWS = 200_000


def write_split(frame, split_dir: str) -> None:
    write_sharded(to_examples(frame), split_dir)


def write_sharded(records: list, split_dir: str) -> None:
    """A split's records as `data_tfrecord-0000k-of-0000n.gz` files, in order: file k holds the k-th slice."""
    shards = max(1, min(X.cores(), len(records) // SHARD_ROWS))
    paths = [os.path.join(split_dir, f"{F.EXAMPLES_FILE_PREFIX}-{k:05d}-of-{shards:05d}.gz") for k in range(shards)]
    size = -(-len(records) // shards)
    parts = [records[k * size:(k + 1) * size] for k in range(shards)]
    if shards == 1:
        X.write_records(paths[0], parts[0])
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(shards) as pool:
        list(pool.map(X.write_records, paths, parts))


@component
def FraudExampleGen(
    examples: OutputArtifact[standard_artifacts.Examples],
    data_dir: Parameter[str],
    eval_days: Parameter[int],
    valid_days: Parameter[int],
):
    standard = ingest.standardise(sources.read_source(data_dir), require_label=True)
    splits = ingest.split_by_time(standard.frame, eval_days=eval_days, valid_days=valid_days)
    for name, frame in splits.items():
        write_split(frame, F.split_dir(examples.uri, name))
        examples.set_int_custom_property(F.prop_rows(name), len(frame))
        examples.set_int_custom_property(F.prop_fraud(name), int(frame[F.LABEL].sum()))
        examples.set_int_custom_property(F.prop_start(name), int(frame[F.EVENT_TIME].min()))
        examples.set_int_custom_property(F.prop_end(name), int(frame[F.EVENT_TIME].max()))
    examples.split_names = artifact_utils.encode_split_names(list(splits))
    examples.set_string_custom_property(F.PROP_PAYLOAD_FORMAT, "FORMAT_TF_EXAMPLE")
    examples.set_int_custom_property(F.PROP_DENSE_EXAMPLES, 1)  # to_examples writes every column in every row
    examples.set_int_custom_property(F.PROP_ROWS_IN, standard.rows_in)
    examples.set_string_custom_property(F.PROP_IMPUTED_COLUMNS, ",".join(standard.imputed_columns))
    print(f"ingested {standard.rows_in} rows: "
          + ", ".join(f"{n}={len(f)} (fraud {int(f[F.LABEL].sum())})" for n, f in splits.items()), flush=True)
