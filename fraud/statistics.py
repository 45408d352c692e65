"""TFDV statistics of one split of an Examples artifact, computed in this process a batch at a time.

TFX's StatisticsGen runs TFDV's GenerateStatistics on Beam, which reads, checks and decodes every record in Python
and then runs the generators on small batches: 149 s for a million rows on this 2-core machine, most of it per
record. Here the records are read in batches by tf.data, parsed in C++ by tf.io.parse_example into the same Arrow
columns tfx_bsl's decoder gives (a list per feature and row; the decoder itself takes about 45 us a record, parsing
about 5), and each batch goes through TFDV's own generators (`get_generators(in_memory=True)`), whose partial
results are merged batch by batch, so memory stays that of one batch however large the split. The output is the
same DatasetFeatureStatisticsList proto, with the same features and, for numbers, the same counts, means,
minimums and maximums (tests/unit/test_statistics.py compares it with TFDV's Beam path). One difference of
TFDV's own in-memory path: string features' top values and unique counts come from sketches (Misra-Gries, KMV).
They are exact while a feature has fewer distinct values than the sketch (about a thousand): every categorical
whose distribution the schema limits. Above that, counts of rare values and the number of distinct values are
estimates.

A batch whose records do not all hold every feature of the first record, each with one value, is decoded by
tfx_bsl's decoder instead: the result is the same, only slower. A feature that the first record lacks but later
records hold would not be parsed at all, so this path is for examples whose records all hold the same features
(the StatisticsGen executor uses it only for examples marked F.PROP_DENSE_EXAMPLES).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import tensorflow as tf

from fraud import examples as X

BATCH_ROWS = 65_536
_KINDS = {"float_list": (tf.float32, pa.float32()), "int64_list": (tf.int64, pa.int64()),
          "bytes_list": (tf.string, pa.large_binary())}


def _dense_spec(record: bytes) -> dict:
    """{feature: (its parse spec, its Arrow type)} of the features the record holds."""
    kinds = {name: feature.WhichOneof("kind") for name, feature in
             tf.train.Example.FromString(record).features.feature.items()}
    return {name: (tf.io.FixedLenFeature([], _KINDS[kind][0]), _KINDS[kind][1])
            for name, kind in kinds.items() if kind is not None}


def _as_record_batch(parsed: dict, arrow_types: dict, rows: int) -> pa.RecordBatch:
    offsets = pa.array(np.arange(rows + 1, dtype=np.int64))
    names = sorted(parsed)
    arrays = []
    for name in names:
        values = parsed[name]
        if arrow_types[name] == pa.large_binary():
            values = pa.array(values.tolist(), type=pa.large_binary())
        else:
            values = pa.array(values, type=arrow_types[name])
        arrays.append(pa.LargeListArray.from_arrays(offsets, values))
    return pa.RecordBatch.from_arrays(arrays, names)


def record_batches(files: list[str], rows: int = BATCH_ROWS):
    """The records of `files` (gzipped TFRecords of tf.Examples) as Arrow record batches of up to `rows` rows, in
    order, each column a list per row as tfx_bsl's ExamplesToRecordBatchDecoder gives it."""
    from tfx_bsl.coders import example_coder

    decoder, spec, arrow_types = None, None, None
    for batch in tf.data.TFRecordDataset(files, compression_type=X.GZIP).batch(rows):
        if spec is None:
            pairs = _dense_spec(batch[0].numpy())
            spec = {name: feature for name, (feature, _) in pairs.items()}
            arrow_types = {name: arrow for name, (_, arrow) in pairs.items()}
        try:
            parsed = tf.io.parse_example(batch, spec)
            yield _as_record_batch({k: v.numpy() for k, v in parsed.items()}, arrow_types, int(batch.shape[0]))
        except tf.errors.InvalidArgumentError:  # a record lacks a feature or holds several values: the general path
            decoder = decoder or example_coder.ExamplesToRecordBatchDecoder()
            yield decoder.DecodeBatch(batch.numpy().tolist())


def split_statistics(files: list[str], options=None, rows: int = BATCH_ROWS):
    """TFDV's DatasetFeatureStatisticsList of the records in `files`, with TFDV's in-memory generators for
    `options` (a tfdv.StatsOptions; its defaults when None), merged over batches of `rows` records."""
    import tensorflow_data_validation as tfdv
    from tensorflow_data_validation.statistics import stats_impl

    options = options or tfdv.StatsOptions()
    generators = stats_impl.get_generators(options, in_memory=True)
    accumulators = None
    for record_batch in record_batches(files, rows):
        partial = stats_impl.generate_partial_statistics_in_memory(record_batch, options, generators)
        accumulators = partial if accumulators is None else [
            generator.merge_accumulators([held, new]) for generator, held, new in zip(generators, accumulators, partial)]
    if accumulators is None:  # an empty split: the generators' output for no rows
        accumulators = [generator.create_accumulator() for generator in generators]
    return stats_impl.extract_statistics_output(accumulators, generators)
