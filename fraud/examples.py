"""tf.Example encoding and decoding: the one codec for rows <-> tf.Example, and TFX's Examples files.

Ingestion writes standardised rows with it, the behavioural component decodes and extends them, the
threshold selector and the report read splits back into frames, the warm-up writer builds its requests.
Every feature holds exactly one value (the examples are dense): float32, int64 or bytes.
"""
from __future__ import annotations

import glob
import os
import struct

import numpy as np
import tensorflow as tf

from fraud import features as F

GZIP = "GZIP"
# Examples files are written once and read a few times: gzip level 1, about twice zlib's default speed for ~30%
# larger files (ingestion and BehaviouralFeatures both write at it).
GZIP_LEVEL = 1
_PARSE_CHUNK = 16384
_ENCODE_CHUNK = 65536


def feature(value) -> tf.train.Feature:
    """One-value tf.train.Feature of a Python/numpy float, int, str or bytes."""
    if isinstance(value, (bytes, str)):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode() if isinstance(value, str)
                                                                     else value]))
    if isinstance(value, (bool, np.bool_)) or isinstance(value, (int, np.integer)):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))


def encode(row: dict) -> tf.train.Example:
    """A tf.Example of one row {name: value}."""
    return tf.train.Example(features=tf.train.Features(feature={k: feature(v) for k, v in row.items()}))


def encode_columns(floats: dict, ints: dict, strings: dict) -> list[bytes]:
    """Serialized tf.Examples of columns of equal length: {name: values} per kind, every column in every row.

    Encoded in C++ by tfx_bsl (an Arrow record batch of one-value lists -> tf.Examples), ~10x faster than building
    protos in Python; tests/unit/test_foundation.py checks it decodes to the same values as `encode`."""
    import pyarrow as pa
    from tfx_bsl.coders import example_coder

    columns = {**{c: pa.array(np.asarray(v, np.float32)) for c, v in floats.items()},
               **{c: pa.array(np.asarray(v, np.int64)) for c, v in ints.items()},
               **{c: _binary(v) for c, v in strings.items()}}
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns of different lengths: {sorted(lengths)}")
    rows = lengths.pop() if lengths else 0
    if rows == 0:
        return []
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32))
    batch = pa.RecordBatch.from_arrays([pa.ListArray.from_arrays(offsets, values) for values in columns.values()],
                                       list(columns))
    # The C++ encoder releases the GIL: slices encoded on every core, in order (1.8x on 2 cores).
    chunks = [batch.slice(start, _ENCODE_CHUNK) for start in range(0, rows, _ENCODE_CHUNK)]
    if len(chunks) == 1:
        return list(example_coder.RecordBatchToExamples(batch))
    from concurrent.futures import ThreadPoolExecutor

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)  # macOS
    with ThreadPoolExecutor(max(1, min(len(chunks), cores))) as pool:
        return [record for part in pool.map(example_coder.RecordBatchToExamples, chunks) for record in part]


def _binary(values):
    """Strings (UTF-8 encoded by Arrow, no Python loop) or bytes -> an Arrow binary array."""
    import pyarrow as pa

    try:
        return pa.array(values, pa.string()).cast(pa.binary())
    except (pa.ArrowTypeError, pa.ArrowInvalid):  # bytes values
        return pa.array(values, pa.binary())


def value(example: tf.train.Example, key: str, default=None):
    """The first value of a feature (bytes decoded to str), or `default` when absent or empty."""
    if key not in example.features.feature:
        return default
    f = example.features.feature[key]
    kind = f.WhichOneof("kind")
    values = getattr(f, kind).value if kind else []
    if not values:
        return default
    v = values[0]
    return v.decode() if isinstance(v, bytes) else v


def set_floats(example: tf.train.Example, values: dict) -> tf.train.Example:
    """Set one float feature per {name: value} (replacing any value it had)."""
    for name, v in values.items():
        example.features.feature[name].float_list.value[:] = [v]
    return example


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


class FloatSuffix:
    """Appends one float feature per name to serialized tf.Examples, without parsing them.

    Protocol buffers define the concatenation of two serialized messages as their merge, and a map field merges
    entry by entry, the later entry winning on a repeated key. So `record + suffix(values)` is `record` with these
    features set (replaced if it had them), as `set_floats` would make it. The suffix is one Example message whose
    entries have a fixed layout: one struct.pack per row instead of a parse, a proto update and a serialization
    (tests/unit/test_behaviour_beam.py holds the two equal)."""

    def __init__(self, names):
        self.names = tuple(names)
        float_feature = b"\x12\x06\x0a\x04"  # Feature.float_list (field 2) holding FloatList.value = [4 bytes]
        prefixes = []
        for name in self.names:
            key = name.encode()
            entry_head = b"\x0a" + _varint(len(key)) + key + b"\x12\x08" + float_feature  # key, value: Feature
            prefixes.append(b"\x0a" + _varint(len(entry_head) + 4) + entry_head)  # Features.feature map entry
        body = sum(len(p) + 4 for p in prefixes)
        self._head = b"\x0a" + _varint(body)  # Example.features
        self._prefixes = prefixes
        self._struct = struct.Struct("<" + "".join(f"{len(p)}sf" for p in prefixes))

    def __call__(self, values) -> bytes:
        """The suffix for `values`, one per name, in order."""
        if len(values) != len(self.names):
            raise ValueError(f"{len(values)} values for {len(self.names)} features")
        return self._head + self._struct.pack(*[x for pair in zip(self._prefixes, values) for x in pair])

    def many(self, matrix) -> list[bytes]:
        """The suffixes of every row of a (rows x names) array, built as one byte matrix (the same bytes as
        __call__ per row; tests/unit/test_behaviour_beam.py holds them equal)."""
        matrix = np.asarray(matrix, dtype="<f4")
        if matrix.ndim != 2 or matrix.shape[1] != len(self.names):
            raise ValueError(f"{matrix.shape} values for {len(self.names)} features per row")
        template = np.frombuffer(self([0.0] * len(self.names)), np.uint8)
        rows = len(matrix)
        out = np.tile(template, (rows, 1))
        at = len(self._head)
        for i, prefix in enumerate(self._prefixes):
            at += len(prefix)
            out[:, at:at + 4] = np.ascontiguousarray(matrix[:, i]).view(np.uint8).reshape(rows, 4)
            at += 4
        width = len(template)
        buffer = out.tobytes()
        return [buffer[i:i + width] for i in range(0, rows * width, width)]


def split_files(examples_uri: str, split: str) -> list[str]:
    """The files of one split of an Examples artifact."""
    files = sorted(glob.glob(os.path.join(F.split_dir(examples_uri, split), "*")))
    if not files:
        raise FileNotFoundError(f"no examples for split {split!r} under {examples_uri}")
    return files


def read_records(files: list[str]) -> list[bytes]:
    """Every serialized tf.Example of gzipped TFRecord files, in order."""
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type=GZIP)]


def write_records(path: str, records) -> None:
    tf.io.gfile.makedirs(os.path.dirname(path))
    options = tf.io.TFRecordOptions(compression_type=GZIP, compression_level=GZIP_LEVEL)
    with tf.io.TFRecordWriter(path, options=options) as writer:
        for record in records:
            writer.write(record)


def decode_frame(serialized: list[bytes]):
    """A pandas frame of every feature of dense tf.Examples (strings decoded), one row per example."""
    import pandas as pd

    if not serialized:
        return pd.DataFrame()
    first = tf.train.Example.FromString(serialized[0]).features.feature
    spec, kinds = {}, {}
    for name, feat in first.items():
        kind = feat.WhichOneof("kind")
        dtype = {"float_list": tf.float32, "int64_list": tf.int64, "bytes_list": tf.string}[kind]
        spec[name], kinds[name] = tf.io.FixedLenFeature([], dtype), kind
    columns: dict = {}
    for start in range(0, len(serialized), _PARSE_CHUNK):
        parsed = tf.io.parse_example(tf.constant(serialized[start:start + _PARSE_CHUNK]), spec)
        for name, tensor in parsed.items():
            columns.setdefault(name, []).append(tensor.numpy())
    frame = pd.DataFrame({name: np.concatenate(parts) for name, parts in columns.items()})
    for name, kind in kinds.items():
        if kind == "bytes_list":
            frame[name] = frame[name].str.decode("utf-8")
    return frame


def read_split(examples_uri: str, split: str):
    """(serialized tf.Examples, pandas frame of every feature) of one split of an Examples artifact."""
    serialized = read_records(split_files(examples_uri, split))
    return serialized, decode_frame(serialized)
