"""BehaviouralFeatures: adds fraud.behaviour's features to every example, as a Beam job.

Events of all splits are grouped by user, by device and by restaurant, each group is ordered by time and
walked through fraud.behaviour (the same functions as the online state), and the features are joined back
to the examples by transaction id. Splits are kept as they are: because every split goes into the same
groups, eval rows see the history of the train period before them, and nothing after them.

Memory per key is bounded: a device or restaurant with more than `hot_key_events` events (a hot terminal, an
aggregator's shared device) is grouped per time block of its look-back (fraud.behaviour.time_blocks), each block
carrying the previous block's events as history, so no group holds more than two look-backs of one entity.
A user's features look at the whole history ("new device"), so a user is always one group.

Lean per row: each record is parsed once into a tuple (Beam's fast coder, no pickling), one DoFn fans it out to
every stream, features travel as tuples of floats, and they are appended to the serialized example without
re-parsing it (fraud.examples.FloatSuffix).

Nothing is lost silently: every example must get the features of each of its entities (else LostRows naming
the transaction and the entity), and after the job the rows written per split must equal the rows read (the
counts ExampleGen recorded), else LostRows naming the split.
"""
import os
import zlib

import apache_beam as beam
from apache_beam.io import tfrecordio
import tensorflow as tf
from tfx.dsl.component.experimental.annotations import (BeamComponentParameter, InputArtifact,
                                                        OutputArtifact, Parameter)
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from fraud import behaviour as B
from fraud import examples as X
from fraud import features as F
from fraud.errors import DuplicateTransaction, LostRows

_GZIP = beam.io.filesystem.CompressionTypes.GZIP
METRICS_NAMESPACE = "BehaviouralFeatures"
_RUNNER_HINT = ("the Beam runner lost part of the data; re-run, and if it happens again go back to the default "
                "DirectRunner mode (--direct_running_mode=in_memory) or use another runner")
HOT_KEY_EVENTS = 100_000  # a device or restaurant with more events is grouped per time block

ENTITIES = B.ENTITIES  # (kind, feature names), in the order the features are joined into an example
_KIND_INDEX = {kind: i + 1 for i, (kind, _) in enumerate(ENTITIES)}  # 0 tags the example itself
_EXAMPLE = 0
_NAMES = dict(ENTITIES)
_EVENT_FIELDS = tuple(B.Event.__dataclass_fields__)  # an event travels as the tuple of these
# The suffix holds the features in join order, which must be fraud.features' order of BEHAVIOUR_FEATURES.
assert tuple(n for _, names in ENTITIES for n in names) == F.BEHAVIOUR_FEATURES
_SUFFIX = X.FloatSuffix(F.BEHAVIOUR_FEATURES)


def _rows_written_counter(split: str) -> str:
    return f"rows_written[{split}]"


def check_counts(expected: dict[str, int], written: dict[str, int]) -> None:
    """Every split written with exactly the rows it was read with, or LostRows naming the splits that differ."""
    wrong = [f"{split}: {written.get(split, 0)} rows written, {rows} read" for split, rows in sorted(expected.items())
             if written.get(split, 0) != rows]
    if wrong:
        raise LostRows(f"BehaviouralFeatures did not write every example exactly once ({'; '.join(wrong)}): "
                       + _RUNNER_HINT)


def to_event(record: bytes) -> B.Event:
    """The event of one example as ingestion writes it (fraud.examples' kinds: ids and strings as bytes, the time
    and the label as int64, the amount as float); an absent feature takes its default."""
    feature = tf.train.Example.FromString(record).features.feature

    def text(key):
        values = feature[key].bytes_list.value if key in feature else ()
        return values[0].decode() if values else ""

    def number(key, default):
        if key not in feature:
            return default
        f = feature[key]
        values = f.int64_list.value or f.float_list.value
        return values[0] if values else default

    return B.Event(
        transaction_id=text(F.TRANSACTION_ID), time=int(number(F.EVENT_TIME, 0)), user_id=text(F.USER_ID),
        amount_pen=B.amount_pen(float(number(F.AMOUNT, float("nan"))), text(F.CURRENCY)),
        city=text(F.CITY), restaurant_id=text(F.RESTAURANT_ID), device_id=text(F.DEVICE_ID),
        label=int(number(F.LABEL, B.UNKNOWN_LABEL)))


def _values(kind: str, feats: dict) -> tuple:
    return tuple(feats[name] for name in _NAMES[kind])


class _FanOut(beam.DoFn):
    """One record -> the example keyed by transaction id, and the event keyed by each of its entities; an event
    without an entity's id gets that entity's cold-start features here (a missing id is no entity)."""

    def __init__(self, label_delay_days: int):
        self.label_delay_days = label_delay_days

    def process(self, split_record):
        split, record = split_record
        e = to_event(record)
        tid = e.transaction_id
        yield tid, (_EXAMPLE, split, record)
        ids = B.entity_ids(e)
        event = tuple(getattr(e, name) for name in _EVENT_FIELDS)
        for kind, _ in ENTITIES:
            if kind in ids:
                yield beam.pvalue.TaggedOutput(kind, (ids[kind], event))
            else:
                ((_, feats),) = B.features_for_entity(kind, [e], label_delay_days=self.label_delay_days)
                yield tid, (_KIND_INDEX[kind], _values(kind, feats))


class _Features(beam.DoFn):
    """One group of an entity's events (tuples) -> (transaction id, (kind index, feature values)) per target.
    The group's key is (id, block): block None holds the whole history; a block's own events are targets,
    the events marked as history come from the previous block."""

    def __init__(self, kind: str, label_delay_days: int):
        self.kind, self.label_delay_days = kind, label_delay_days

    def process(self, item):
        (_, block), values = item
        if block is None:
            events, targets = [B.Event(*v) for v in values], None
        else:
            events = [B.Event(*v) for v, _ in values]
            targets = {v[0] for v, is_target in values if is_target}
        index = _KIND_INDEX[self.kind]
        for tid, feats in B.features_for_entity(self.kind, events, label_delay_days=self.label_delay_days):
            if targets is None or tid in targets:
                yield tid, (index, _values(self.kind, feats))


def _blocks(keyed, hot: dict, lookback: int):
    """(id, event) -> ((id, None), event) for an ordinary entity, ((id, block), (event, is_target)) for a hot
    one: in its own block as a target, and in the next block as history (fraud.behaviour.time_blocks)."""
    key, event = keyed
    if key not in hot:
        yield (key, None), event
        return
    own, later = B.time_blocks(event[1], lookback, lookback)
    yield (key, own), (event, True)
    for block in later:
        yield (key, block), (event, False)


class _Join(beam.DoFn):
    def __init__(self, splits):
        self.written = {s: beam.metrics.Metrics.counter(METRICS_NAMESPACE, _rows_written_counter(s)) for s in splits}

    def process(self, item):
        tid, parts = item
        examples, found = [], {}
        for part in parts:
            if part[0] == _EXAMPLE:
                examples.append(part)
            else:
                found[part[0]] = part[1]
        if not examples:
            raise LostRows(f"features were computed for transaction {tid!r} but its example is missing: "
                           + _RUNNER_HINT)
        if len(examples) != 1:
            raise DuplicateTransaction(f"transaction id {tid!r} appears {len(examples)} times across splits")
        values = []
        for kind, names in ENTITIES:
            part = found.get(_KIND_INDEX[kind])
            if part is None:
                raise LostRows(f"transaction {tid!r} lacks {len(names)} behavioural feature(s) after the join, e.g. "
                               f"{list(names[:3])} (its {kind} features): " + _RUNNER_HINT)
            values.extend(part)
        _, split, record = examples[0]
        self.written[split].inc()
        yield beam.pvalue.TaggedOutput(split, record + _SUFFIX(values))


class _GzipStream:
    """A gzip stream at fraud.examples.GZIP_LEVEL over the raw file Beam opens, compressing ~1 MiB at a time."""

    def __init__(self, raw):
        self.raw, self.chunk, self.size = raw, [], 0
        self.zlib = zlib.compressobj(X.GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def write(self, data: bytes) -> None:
        self.chunk.append(data)
        self.size += len(data)
        if self.size >= 1 << 20:
            self._compress()

    def _compress(self):
        if self.chunk:
            self.raw.write(self.zlib.compress(b"".join(self.chunk)))
            self.chunk, self.size = [], 0

    def close(self) -> None:
        self._compress()
        self.raw.write(self.zlib.flush())
        self.raw.close()


class _GzipTFRecordSink(tfrecordio._TFRecordSink):
    """Beam's TFRecord sink (temporary files, renamed into place when the job finishes), gzip at X.GZIP_LEVEL:
    Beam's own gzip writer compresses record by record at zlib's default level, most of this job's write time."""

    def __init__(self, file_path_prefix: str):
        super().__init__(file_path_prefix, beam.coders.BytesCoder(), ".gz", 0, None,
                         beam.io.filesystem.CompressionTypes.UNCOMPRESSED)

    def open(self, temp_path):
        return _GzipStream(super().open(temp_path))


def build(p: beam.Pipeline, inputs: dict, output_dir: str, *, label_delay_days: int,
          hot_key_events: int = HOT_KEY_EVENTS):
    """The Beam graph: `inputs` maps split name -> file pattern of gzipped tf.Example TFRecords; every split
    is written to <output_dir>/Split-<name>/ with the behavioural features added."""
    splits = list(inputs)
    tagged = [
        p | f"Read[{s}]" >> beam.io.ReadFromTFRecord(pattern, compression_type=_GZIP)
        | f"Tag[{s}]" >> beam.Map(lambda r, s=s: (s, r))
        for s, pattern in inputs.items()
    ]
    fanned = (tagged | "AllSplits" >> beam.Flatten()
              | "FanOut" >> beam.ParDo(_FanOut(label_delay_days)).with_outputs(*(k for k, _ in ENTITIES),
                                                                                main="by_tid"))
    streams = [fanned.by_tid]
    for kind, _ in ENTITIES:
        keyed = fanned[kind]
        lookback = B.lookback_s(kind, label_delay_days=label_delay_days)
        if lookback is None:
            blocked = keyed | f"Whole[{kind}]" >> beam.Map(lambda kv: ((kv[0], None), kv[1]))
        else:
            hot = (keyed
                   | f"Count[{kind}]" >> beam.combiners.Count.PerKey()
                   | f"Hot[{kind}]" >> beam.Filter(lambda kv: kv[1] > hot_key_events))
            blocked = keyed | f"Blocks[{kind}]" >> beam.FlatMap(_blocks, hot=beam.pvalue.AsDict(hot),
                                                                lookback=lookback)
        streams.append(blocked
                       | f"Group[{kind}]" >> beam.GroupByKey()
                       | f"Features[{kind}]" >> beam.ParDo(_Features(kind, label_delay_days)))
    written = (streams
               | "AllParts" >> beam.Flatten()
               | "ByTransaction" >> beam.GroupByKey()
               | "Join" >> beam.ParDo(_Join(splits)).with_outputs(*splits))
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
