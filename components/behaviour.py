"""BehaviouralFeatures: adds fraud.behaviour's features to every example, as a Beam job.

Events of all splits are grouped by user, by device and by restaurant, each group is ordered by time and
walked through fraud.behaviour (the same functions as the online state), and the features are joined back
to the examples by transaction id. Splits are kept as they are: because every split goes into the same
groups, eval rows see the history of the train period before them, and nothing after them.
Grouping by entity (GroupByKey) keeps one entity's history in memory at a time, not the data set.

Nothing is lost silently: every example must get the features of each of its entities (else LostRows naming
the transaction and the entity), and after the job the rows written per split must equal the rows read (the
counts ExampleGen recorded), else LostRows naming the split.
"""
import os

import apache_beam as beam
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
_RUNNER_HINT = ("the Beam runner lost part of the data; re-run, and if it happens again use "
                "--beam-arg=--direct_running_mode=in_memory (or another runner)")


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
    example = tf.train.Example.FromString(record)

    def get(key, default):
        return X.value(example, key, default)

    return B.Event(
        transaction_id=get(F.TRANSACTION_ID, ""), time=int(get(F.EVENT_TIME, 0)), user_id=get(F.USER_ID, ""),
        amount_pen=B.amount_pen(float(get(F.AMOUNT, float("nan"))), get(F.CURRENCY, "")),
        city=get(F.CITY, ""), restaurant_id=get(F.RESTAURANT_ID, ""), device_id=get(F.DEVICE_ID, ""),
        label=int(get(F.LABEL, B.UNKNOWN_LABEL)))


def add_features(record: bytes, feats: dict) -> bytes:
    example = tf.train.Example.FromString(record)
    return X.set_floats(example, {name: feats[name] for name in F.BEHAVIOUR_FEATURES}).SerializeToString()


_ENTITY_OF = {name: kind for kind, names in (("user", F.USER_BEHAVIOUR_FEATURES),
                                               ("device", F.DEVICE_BEHAVIOUR_FEATURES),
                                               ("restaurant", F.RESTAURANT_BEHAVIOUR_FEATURES)) for name in names}


class _Join(beam.DoFn):
    def process(self, item):
        tid, grouped = item
        records, parts = grouped["example"], grouped["features"]
        if len(records) == 0:
            raise LostRows(f"features were computed for transaction {tid!r} but its example is missing: "
                           + _RUNNER_HINT)
        if len(records) != 1:
            raise DuplicateTransaction(f"transaction id {tid!r} appears {len(records)} times across splits")
        feats = {}
        for part in parts:
            feats.update(part)
        missing = [name for name in F.BEHAVIOUR_FEATURES if name not in feats]
        if missing:
            raise LostRows(f"transaction {tid!r} lacks {len(missing)} behavioural feature(s) after the join, e.g. "
                           f"{missing[:3]} (its {_ENTITY_OF[missing[0]]} features): " + _RUNNER_HINT)
        split, record = records[0]
        yield split, add_features(record, feats)


def build(p: beam.Pipeline, inputs: dict, output_dir: str, *, label_delay_days: int):
    """The Beam graph: `inputs` maps split name -> file pattern of gzipped tf.Example TFRecords; every split
    is written to <output_dir>/Split-<name>/ with the behavioural features added."""
    tagged = [
        p | f"Read[{s}]" >> beam.io.ReadFromTFRecord(pattern, compression_type=_GZIP)
        | f"Tag[{s}]" >> beam.Map(lambda r, s=s: (s, r))
        for s, pattern in inputs.items()
    ]
    records = tagged | "AllSplits" >> beam.Flatten()
    events = records | "ToEvent" >> beam.Map(lambda sr: (to_event(sr[1]), sr))
    by_tid = events | "KeyExample" >> beam.Map(lambda es: (es[0].transaction_id, es[1]))

    def per_entity(name, key_fn, fn):
        # A missing id ("", e.g. no device) is no entity: such events are not grouped together (one giant group
        # would be one huge Beam element, and not a history), each gets its cold-start features on its own.
        keyed = events | f"Key[{name}]" >> beam.Map(lambda es: (key_fn(es[0]), es[0]))
        grouped = (keyed
                   | f"Known[{name}]" >> beam.Filter(lambda kv: kv[0] != "")
                   | f"Group[{name}]" >> beam.GroupByKey()
                   | f"Features[{name}]" >> beam.FlatMap(lambda kv: fn(kv[1])))
        alone = (keyed
                 | f"Missing[{name}]" >> beam.Filter(lambda kv: kv[0] == "")
                 | f"ColdStart[{name}]" >> beam.FlatMap(lambda kv: fn([kv[1]])))
        return (grouped, alone) | f"Both[{name}]" >> beam.Flatten()

    user = per_entity("user", lambda e: e.user_id, B.user_features_for_entity)
    device = per_entity("device", lambda e: e.device_id, B.device_features_for_entity)
    restaurant = per_entity(
        "restaurant", lambda e: e.restaurant_id,
        lambda evs: B.restaurant_features_for_entity(evs, label_delay_days=label_delay_days))
    feats = (user, device, restaurant) | "AllFeatures" >> beam.Flatten()
    joined = {"example": by_tid, "features": feats} | "Join" >> beam.CoGroupByKey() | beam.ParDo(_Join())
    for s in inputs:
        written = beam.metrics.Metrics.counter(METRICS_NAMESPACE, _rows_written_counter(s))
        (joined
         | f"Only[{s}]" >> beam.Filter(lambda kv, s=s: kv[0] == s)
         | f"Record[{s}]" >> beam.Map(lambda kv, written=written: (written.inc(), kv[1])[1])
         | f"Write[{s}]" >> beam.io.WriteToTFRecord(
             os.path.join(F.split_dir(output_dir, s), F.EXAMPLES_FILE_PREFIX), file_name_suffix=".gz",
             compression_type=_GZIP))


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
