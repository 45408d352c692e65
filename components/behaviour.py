"""BehaviouralFeatures: adds fraud.behaviour's features to every example, as a Beam job on columns.

Records are read in batches (`BATCH_ROWS`) and the fields the features need are parsed into columns
(fraud.behaviour.Columns) in C++ (tf.io.parse_example). Each batch is cut, per entity kind, into shards of the
entity id's hash; a shard's chunks from every batch and split are grouped, and the features of its rows are
computed on arrays by fraud.behaviour (the same functions as the online path), then sent back to their file. The
join reads each file again, cut into the same batches, and appends the features to the serialized records without
re-parsing them (fraud.examples.FloatSuffix): the records never cross a grouping, only the parsed fields and the
features do. Beam sees a few elements per batch, not several per row. Splits are kept as they are: because every
split goes into the same shards, eval rows see the history of the train period before them, and nothing after.

Memory per key is bounded: devices and restaurants are grouped per (shard, time block one look-back long,
fraud.behaviour.lookback_s), each block carrying the previous block as history, so a hot terminal or an
aggregator's shared device is cut into blocks of at most two look-backs. A user's features look at the whole
history ("new device"), so a card stays in one group, as arrays (about 100 bytes per event). A missing id is no
entity: such rows get their cold-start values in the batch, without joining any group.

Nothing is lost silently: every row must get the features of each entity kind (else LostRows naming a
transaction and the kind), a transaction id twice in the input stops the job (DuplicateTransaction), and after
the job the rows written per split must equal the rows read (the counts ExampleGen recorded), else LostRows
naming the split.
"""
import os
import typing

import apache_beam as beam
from apache_beam.io import tfrecordio
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf
from tfx.dsl.component.experimental.annotations import (BeamComponentParameter, InputArtifact,
                                                        OutputArtifact, Parameter)
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from fraud import behaviour as B
from fraud import examples as X
from fraud import features as F
from fraud.errors import DuplicateTransaction, LostRows

METRICS_NAMESPACE = "BehaviouralFeatures"
_RUNNER_HINT = ("the Beam runner lost part of the data; re-run, and if it happens again go back to the default "
                "DirectRunner mode (--direct_running_mode=in_memory) or use another runner")
BATCH_ROWS = 50_000  # records per batch: Beam handles a few elements per batch, numpy the rows
SHARDS = 16  # entity shards per kind: the unit of parallelism and of memory (with time blocks)
_BATCHES_PER_FILE = 1 << 32  # (file, batch) as one int64 key: file * _BATCHES_PER_FILE + batch

ENTITIES = B.ENTITIES  # (kind, feature names), in the order the features are joined into an example
_ID_FIELD = {"user": "user_id", "device": "device_id", "restaurant": "restaurant_id"}
_KINDS = tuple(kind for kind, _ in ENTITIES)
_OFFSETS = {}  # kind -> first column of its features in F.BEHAVIOUR_FEATURES
for _kind, _names in ENTITIES:
    _OFFSETS[_kind] = sum(len(n) for k, n in ENTITIES[:_KINDS.index(_kind)])
# The suffix holds the features in join order, which must be fraud.features' order of BEHAVIOUR_FEATURES.
assert tuple(n for _, names in ENTITIES for n in names) == F.BEHAVIOUR_FEATURES
_SUFFIX = X.FloatSuffix(F.BEHAVIOUR_FEATURES)
_PARSE_SPEC = {  # what the features read of an example, as ingestion writes it; an absent feature: its default
    F.TRANSACTION_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
    F.EVENT_TIME: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    F.USER_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
    F.AMOUNT: tf.io.FixedLenFeature([], tf.float32, default_value=float("nan")),
    F.CURRENCY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    F.CITY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    F.RESTAURANT_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
    F.DEVICE_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
    F.LABEL: tf.io.FixedLenFeature([], tf.int64, default_value=B.UNKNOWN_LABEL),
}


def _rows_written_counter(split: str) -> str:
    return f"rows_written[{split}]"


def check_counts(expected: dict[str, int], written: dict[str, int]) -> None:
    """Every split written with exactly the rows it was read with, or LostRows naming the splits that differ."""
    wrong = [f"{split}: {written.get(split, 0)} rows written, {rows} read" for split, rows in sorted(expected.items())
             if written.get(split, 0) != rows]
    if wrong:
        raise LostRows(f"BehaviouralFeatures did not write every example exactly once ({'; '.join(wrong)}): "
                       + _RUNNER_HINT)


def _text(values) -> np.ndarray:
    return np.array([v.decode() for v in values.tolist()], dtype=object)


def to_columns(records) -> B.Columns:
    """The events of serialized examples (fraud.examples' kinds: ids and strings as bytes, the time and the label
    as int64, the amount as float), parsed in C++."""
    if not len(records):
        return B.Columns.empty()
    try:
        parsed = {k: v.numpy() for k, v in tf.io.parse_example(tf.constant(records, tf.string), _PARSE_SPEC).items()}
    except tf.errors.InvalidArgumentError as err:
        raise LostRows(f"BehaviouralFeatures cannot read its input examples ({err.message.splitlines()[0]}): "
                       "it expects the examples FraudExampleGen writes") from None
    return B.Columns(
        transaction_id=_text(parsed[F.TRANSACTION_ID]), time=parsed[F.EVENT_TIME], user_id=_text(parsed[F.USER_ID]),
        amount_pen=B.amount_pen(parsed[F.AMOUNT].astype(np.float64), _text(parsed[F.CURRENCY])),
        city=_text(parsed[F.CITY]), restaurant_id=_text(parsed[F.RESTAURANT_ID]),
        device_id=_text(parsed[F.DEVICE_ID]), label=parsed[F.LABEL])


def _batches(path: str, batch_rows: int):
    """The records of one file in batches of `batch_rows`, always cut the same way: the join reads them again."""
    return tf.data.TFRecordDataset(path, compression_type=X.GZIP).batch(batch_rows).as_numpy_iterator()


class _ReadBatches(beam.DoFn):
    """(split, file number, path) -> ((file number, batch number), columns) per BATCH_ROWS records."""

    def __init__(self, batch_rows: int):
        self.batch_rows = batch_rows

    def process(self, item):
        _, number, path = item
        for i, records in enumerate(_batches(path, self.batch_rows)):
            yield (number, i), to_columns(records)


def _hash_shards(ids, shards: int) -> np.ndarray:
    import pandas as pd

    return (pd.util.hash_array(ids.astype(object)) % np.uint64(shards)).astype(np.int64)


class _FanOut(beam.DoFn):
    """One batch -> its duplicate-check ids (keyed by an id shard) and per entity kind, chunks of its rows keyed
    by (kind, shard, block); rows without the kind's id get the cold-start features here, keyed by their file
    (a missing id is no entity). The records themselves stay in their file: the join reads them again."""

    def __init__(self, label_delay_days: int, shards: int):
        self.label_delay_days, self.shards = label_delay_days, shards

    def process(self, item):
        (number, batch), cols = item
        n = len(cols)
        for shard, rows in _split_by(_hash_shards(cols.transaction_id, self.shards)):  # as Arrow: one buffer each
            yield beam.pvalue.TaggedOutput("ids", (shard, pa.array(cols.transaction_id[rows], pa.string())))
        for kind in _KINDS:
            ids = getattr(cols, _ID_FIELD[kind])
            missing = np.flatnonzero(ids == "")
            if len(missing):
                values = B.features_of(kind, B.Columns.empty(), cols.take(missing),
                                       label_delay_days=self.label_delay_days)
                yield number, (kind, batch, missing, values.astype(np.float32))
            present = np.flatnonzero(ids != "") if len(missing) else np.arange(n)
            if not len(present):
                continue
            shard = _hash_shards(ids[present], self.shards)
            lookback = B.lookback_s(kind, label_delay_days=self.label_delay_days)
            group = np.full(len(present), -1) if lookback is None else cols.time[present] // lookback
            for (s, block), rows in _split_by(shard, group):
                chunk = present[rows]
                keys = np.full(len(chunk), number * _BATCHES_PER_FILE + batch, np.int64)
                part = (True, keys, chunk, cols.select(B.FIELDS_READ[kind]).take(chunk))
                yield beam.pvalue.TaggedOutput(kind, ((kind, s, block), part))
                if lookback is not None:  # history of the next block (block = one look-back)
                    yield beam.pvalue.TaggedOutput(kind, ((kind, s, block + 1), (False,) + part[1:]))


def _split_by(*arrays):
    """(tuple of values, row indices) per distinct combination of values of equal-length int arrays."""
    if len(arrays[0]) == 0:
        return
    order = np.lexsort(arrays[::-1])
    sorted_ = [a[order] for a in arrays]
    change = np.zeros(len(order), bool)
    change[0] = True
    for a in sorted_:
        change[1:] |= a[1:] != a[:-1]
    starts = np.flatnonzero(change)
    ends = np.r_[starts[1:], len(order)]
    for start, end in zip(starts.tolist(), ends.tolist()):
        values = tuple(int(a[start]) for a in sorted_)
        yield (values[0] if len(values) == 1 else values), order[start:end]


class _Features(beam.DoFn):
    """One (kind, shard, block) group of chunks -> (file number, (kind, batch number, rows, feature values)) per
    batch of its targets. Chunks marked as history come from the previous block: they are history, not targets."""

    def __init__(self, label_delay_days: int):
        self.label_delay_days = label_delay_days

    def process(self, item):
        (kind, _, _), parts = item
        parts = list(parts)
        targets = [p for p in parts if p[0]]
        if not targets:
            return
        target_cols = B.Columns.concat([p[3] for p in targets])
        history = target_cols if len(targets) == len(parts) else B.Columns.concat([p[3] for p in parts])
        values = B.features_of(kind, history, target_cols, label_delay_days=self.label_delay_days).astype(np.float32)
        keys = np.concatenate([p[1] for p in targets])
        rows = np.concatenate([p[2] for p in targets])
        for key, index in _split_by(keys):
            yield key // _BATCHES_PER_FILE, (kind, key % _BATCHES_PER_FILE, rows[index], values[index])


def _check_unique(item):
    _, parts = item
    counts = pc.value_counts(pa.concat_arrays(list(parts)))
    most = pc.max(counts.field("counts")).as_py()
    if most is not None and most > 1:
        tid = counts.field("values")[pc.index(counts.field("counts"), most).as_py()].as_py()
        raise DuplicateTransaction(f"transaction id {tid!r} appears {most} times across splits")
    return []


class _Join(beam.DoFn):
    """One input file and the features of its rows, per batch and kind -> its records, read again batch by batch,
    with the features appended."""

    def __init__(self, files, batch_rows: int):
        self.files = {number: (split, path) for split, number, path in files}
        self.batch_rows = batch_rows
        splits = sorted({split for split, _, _ in files})
        self.written = {s: beam.metrics.Metrics.counter(METRICS_NAMESPACE, _rows_written_counter(s)) for s in splits}

    def process(self, item):
        number, parts = item
        split, path = self.files[number]
        by_batch: dict = {}
        for kind, batch, rows, values in parts:
            by_batch.setdefault(batch, {}).setdefault(kind, []).append((rows, values))
        batches = 0
        for i, records in enumerate(_batches(path, self.batch_rows)):
            batches = i + 1
            matrix = _joined(by_batch.pop(i, {}), records)
            suffixes = _SUFFIX.many(matrix)
            self.written[split].inc(len(records))
            yield beam.pvalue.TaggedOutput(split, [r + s for r, s in zip(records.tolist(), suffixes)])
        if by_batch:
            raise LostRows(f"features were computed for batch {min(by_batch)} of {path}, which has {batches} "
                           "batches: " + _RUNNER_HINT)


def _joined(features: dict, records) -> np.ndarray:
    """(rows x BEHAVIOUR_FEATURES) of one batch from its pieces per kind; every row covered once per kind."""
    n = len(records)
    matrix = np.zeros((n, len(F.BEHAVIOUR_FEATURES)), np.float32)
    for kind, names in ENTITIES:
        covered = np.zeros(n, np.int64)
        for rows, values in features.get(kind, []):
            matrix[rows, _OFFSETS[kind]:_OFFSETS[kind] + len(names)] = values
            np.add.at(covered, rows, 1)
        if (covered != 1).any():
            bad = int(np.flatnonzero(covered != 1)[0])
            tid = to_columns(records[bad:bad + 1]).transaction_id[0]
            raise LostRows(f"transaction {tid!r} has {covered[bad]} sets of its {kind} features after "
                           f"the join instead of 1, e.g. {list(names[:3])}: " + _RUNNER_HINT)
    return matrix


class _TFRecordBatchWriter:
    """TensorFlow's TFRecord writer (framing and gzip at fraud.examples.GZIP_LEVEL in C++) behind the file handle
    Beam's sink opens; `write_batch` hands a list of records to a writing thread (gzip lets go of the GIL, so the
    next batch is joined meanwhile) and `close` waits for it; an error in the thread is raised by the next call."""

    def __init__(self, path: str):
        import queue
        import threading

        options = tf.io.TFRecordOptions(compression_type=X.GZIP, compression_level=X.GZIP_LEVEL)
        self.writer = tf.io.TFRecordWriter(path, options=options)
        self.queue, self.error = queue.Queue(maxsize=2), None
        self.thread = threading.Thread(target=self._run, name=f"write {os.path.basename(path)}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        write = self.writer.write
        while (records := self.queue.get()) is not None:
            if self.error is None:
                try:
                    for record in records:
                        write(record)
                except Exception as err:  # noqa: BLE001 - raised in the caller's thread
                    self.error = err

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def write_batch(self, records) -> None:
        self._raise()
        self.queue.put(records)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self.writer.close()
        self._raise()


class _GzipTFRecordSink(tfrecordio._TFRecordSink):
    """Beam's TFRecord sink (temporary files, renamed into place when the job finishes) taking batches of records,
    written by TensorFlow's writer: Beam's own frames and compresses record by record in Python, most of this
    job's write time."""

    def __init__(self, file_path_prefix: str):
        super().__init__(file_path_prefix, beam.coders.BytesCoder(), ".gz", 0, None,
                         beam.io.filesystem.CompressionTypes.UNCOMPRESSED)

    def open(self, temp_path):
        return _TFRecordBatchWriter(temp_path)

    def write_record(self, file_handle, value):
        file_handle.write_batch(value)


def _files(inputs: dict) -> list[tuple[str, int, str]]:
    """(split, file number, path) of every input file, in a stable order."""
    from apache_beam.io.filesystems import FileSystems

    out = []
    for split, pattern in inputs.items():
        paths = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
        if not paths:
            raise LostRows(f"BehaviouralFeatures found no examples for split {split!r} at {pattern}")
        first = len(out)
        out.extend((split, first + i, path) for i, path in enumerate(paths))
    return out


def build(p: beam.Pipeline, inputs: dict, output_dir: str, *, label_delay_days: int, shards: int = SHARDS,
          batch_rows: int = BATCH_ROWS):
    """The Beam graph: `inputs` maps split name -> file pattern of gzipped tf.Example TFRecords; every split
    is written to <output_dir>/Split-<name>/ with the behavioural features added."""
    splits = list(inputs)
    files = _files(inputs)
    fanned = (p
              | "Files" >> beam.Create(files)
              | "ReadBatches" >> beam.ParDo(_ReadBatches(batch_rows))
              | "FanOut" >> beam.ParDo(_FanOut(label_delay_days, shards)).with_output_types(typing.Any)
              .with_outputs("ids", *_KINDS, main="cold_start"))
    _ = (fanned.ids
         | "GroupIds" >> beam.GroupByKey()
         | "UniqueIds" >> beam.FlatMap(_check_unique))
    streams = [fanned.cold_start]
    for kind in _KINDS:
        streams.append(fanned[kind]
                       | f"Group[{kind}]" >> beam.GroupByKey()
                       | f"Features[{kind}]" >> beam.ParDo(_Features(label_delay_days)).with_output_types(typing.Any))
    written = (streams
               | "AllParts" >> beam.Flatten()
               | "ByFile" >> beam.GroupByKey()
               | "Join" >> beam.ParDo(_Join(files, batch_rows)).with_outputs(*splits))
    for s in splits:
        written[s] | f"Write[{s}]" >> beam.io.Write(
            _GzipTFRecordSink(os.path.join(F.split_dir(output_dir, s), F.EXAMPLES_FILE_PREFIX)))


def rows_written(result, splits) -> dict[str, int]:
    """Rows written per split, from the finished job's counters."""
    from apache_beam.metrics.metric import MetricsFilter

    counters = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]
    return {s: sum(int(c.committed) for c in counters if c.key.metric.name == _rows_written_counter(s))
            for s in splits}


@component(use_beam=True)
def BehaviouralFeatures(
    examples: InputArtifact[standard_artifacts.Examples],
    augmented_examples: OutputArtifact[standard_artifacts.Examples],
    label_delay_days: Parameter[int],
    beam_pipeline: BeamComponentParameter[beam.Pipeline] = None,
):
    splits = artifact_utils.decode_split_names(examples.split_names)
    with beam_pipeline as p:
        build(p, {s: os.path.join(F.split_dir(examples.uri, s), "*") for s in splits}, augmented_examples.uri,
              label_delay_days=label_delay_days)
    check_counts({s: examples.get_int_custom_property(F.prop_rows(s)) for s in splits},
                 rows_written(p.result, splits))
    augmented_examples.split_names = examples.split_names
    for key, value in examples.mlmd_artifact.custom_properties.items():  # row counts, time ranges per split
        augmented_examples.mlmd_artifact.custom_properties[key].CopyFrom(value)
