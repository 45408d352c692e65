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
_ENCODE_CHUNK = 16384  # rows per encoding chunk (measured: 4k-64k within 20%, 16k best)


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

    Built as bytes by numpy, a column at a time: every row has the same layout (one map entry per feature, keys in
    name order), only the lengths of the int64 varints and the strings differ, so each part of a row is one
    vectorised write over all rows. About 1.6x tfx_bsl's C++ encoder (both on two threads) and 40x protos built
    in Python (bench/ingest_bench.py); tests/unit/test_foundation.py checks it parses to the same tf.Examples."""
    columns = {**{c: ("f", np.asarray(v, np.float32)) for c, v in floats.items()},
               **{c: ("i", np.asarray(v, np.int64)) for c, v in ints.items()},
               **{c: ("s", _binary(v)) for c, v in strings.items()}}
    lengths = {len(v) for _, v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns of different lengths: {sorted(lengths)}")
    rows = lengths.pop() if lengths else 0
    ordered = sorted(columns.items())

    def chunk(start: int) -> list[bytes]:
        stop = min(rows, start + _ENCODE_CHUNK)
        return _encode_rows({name: (kind, values[start:stop]) for name, (kind, values) in ordered}, stop - start)

    starts = range(0, rows, _ENCODE_CHUNK)
    if len(starts) < 4:
        return [record for start in starts for record in chunk(start)]
    from concurrent.futures import ThreadPoolExecutor

    # numpy lets go of the GIL while it copies: two chunks at a time on two cores
    with ThreadPoolExecutor(max(1, min(len(starts), cores()))) as pool:
        return [record for part in pool.map(chunk, starts) for record in part]


def cores() -> int:
    """The cores this process may run on (all of them where the OS cannot say, as on macOS)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _varint_length(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.uint64, copy=False)
    length = np.ones(len(values), np.int64)
    if len(values) and values.max() >= 128:
        for k in range(1, 10):
            length += values >= np.uint64(1 << (7 * k))
    return length


def _varint_bytes(values: np.ndarray, length: np.ndarray) -> np.ndarray:
    """(rows, longest) bytes of the varints of `values`; a row's bytes beyond its length are unused."""
    values = values.astype(np.uint64, copy=False)
    width = int(length.max()) if len(length) else 1
    out = np.empty((len(values), width), np.uint8)
    for k in range(width):
        out[:, k] = ((values >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8) | (
            (length > k + 1).astype(np.uint8) << 7)
    return out


# The padded matrix of one chunk stays below this many bytes; chunks holding a very long string are halved.
_PADDED_BYTES = 1 << 26


def _encode_rows(columns: dict, rows: int) -> list[bytes]:
    """One chunk. Every row has the same parts in the same order, so each part gets a column range of a padded
    (rows, width) byte matrix, as wide as its longest value, and is written there for all rows by one slice
    assignment; a mask of the bytes each row uses then packs the rows back to back."""
    longest = sum(int(np.diff(_binary_buffers(v)[1]).max()) for kind, v in columns.values() if kind == "s")
    if rows > 1 and rows * (longest + 32 * len(columns)) > _PADDED_BYTES:  # a very long string: halve the chunk
        half = rows // 2
        return (_encode_rows({n: (k, v[:half]) for n, (k, v) in columns.items()}, half)
                + _encode_rows({n: (k, v[half:]) for n, (k, v) in columns.items()}, rows - half))
    parts = [None]  # Example.features: tag and length, known once the entries are
    entries = np.zeros(rows, np.int64)

    def varint(values):
        length = _varint_length(values)
        parts.append((_varint_bytes(values, length), length))
        return length

    for name, (kind, values) in columns.items():
        key = name.encode()
        key_part = b"\x0a" + _varint(len(key)) + key + b"\x12"  # MapEntry.key, then MapEntry.value's tag
        if kind == "f":  # Feature.float_list (tag 2), packed FloatList.value (tag 1): a fixed 14 + key bytes
            body = len(key_part) + 1 + 8
            parts.append((b"\x0a" + _varint(body) + key_part + b"\x08\x12\x06\x0a\x04", None))
            parts.append((values.astype("<f4").view(np.uint8).reshape(rows, 4), None))
            entries += 1 + len(_varint(body)) + body
            continue
        if kind == "i":  # Feature.int64_list (tag 3), packed Int64List.value: varints of the two's complement
            payload = values.view(np.uint64)
            value_length = _varint_length(payload)
            tag = b"\x1a"
        else:  # Feature.bytes_list (tag 1), BytesList.value (tag 1)
            data, offsets = _binary_buffers(values)
            value_length = np.diff(offsets)
            tag = b"\x0a"
        list_length = 1 + _varint_length(value_length) + value_length
        feature_length = 1 + _varint_length(list_length) + list_length
        body = len(key_part) + _varint_length(feature_length) + feature_length
        parts.append((b"\x0a", None))
        varint(body)
        parts.append((key_part, None))
        varint(feature_length)
        parts.append((tag, None))
        varint(list_length)
        parts.append((b"\x0a", None))
        varint(value_length)
        if kind == "i":
            parts.append((_varint_bytes(payload, value_length), value_length))
        else:
            parts.append((_padded(data, offsets), value_length))
        entries += 1 + _varint_length(body) + body
    head = _varint_length(entries)
    parts[0] = (np.concatenate([np.full((rows, 1), 0x0A, np.uint8), _varint_bytes(entries, head)], axis=1),
                head + 1)

    merged: list = []
    for payload, used in parts:  # adjacent constants as one write
        if isinstance(payload, bytes) and merged and isinstance(merged[-1][0], bytes):
            merged[-1] = (merged[-1][0] + payload, None)
        else:
            merged.append((payload, used))
    width = sum(len(p) if isinstance(p, bytes) else p.shape[1] for p, _ in merged)
    matrix = np.empty((rows, width), np.uint8)
    mask = np.ones((rows, width), bool)
    at = 0
    for payload, used in merged:
        if isinstance(payload, bytes):
            matrix[:, at:at + len(payload)] = np.frombuffer(payload, np.uint8)
            at += len(payload)
            continue
        w = payload.shape[1]
        matrix[:, at:at + w] = payload
        if used is not None:
            mask[:, at:at + w] = np.arange(w) < used[:, None]
        at += w
    blob = matrix[mask].tobytes()
    ends = np.cumsum(1 + head + entries).tolist()
    return [blob[a:b] for a, b in zip([0] + ends[:-1], ends)]


def _padded(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Variable-length byte strings -> (rows, longest) bytes, each row's string first."""
    length = np.diff(offsets)
    width = max(1, int(length.max()) if len(length) else 1)
    out = np.zeros(len(length) * width, np.uint8)
    out[np.repeat(np.arange(len(length)) * width - offsets[:-1], length) + np.arange(offsets[-1])] = data
    return out.reshape(len(length), width)


def _binary_buffers(array) -> tuple[np.ndarray, np.ndarray]:
    """An Arrow large_binary array -> (its bytes, offsets from 0), without copying the bytes."""
    offsets = np.frombuffer(array.buffers()[1], np.int64)[array.offset:array.offset + len(array) + 1]
    data = np.frombuffer(array.buffers()[2], np.uint8) if array.buffers()[2] is not None else np.zeros(0, np.uint8)
    return data[offsets[0]:offsets[-1]], offsets - offsets[0]


def _binary(values):
    """Strings (UTF-8 encoded by Arrow, no Python loop) or bytes -> one Arrow large_binary array (64-bit offsets:
    a column may hold more than 2 GiB)."""
    import pyarrow as pa

    try:
        try:
            array = pa.array(values, pa.large_string())
        except pa.ArrowNotImplementedError:  # numpy's fixed-width str arrays
            array = pa.array(values, pa.string()).cast(pa.large_string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        try:  # bytes values
            return pa.array(values, pa.large_binary())
        except (pa.ArrowTypeError, pa.ArrowInvalid):  # anything else: its str(), as pandas' astype(str) gives
            array = pa.array([str(v) for v in values], pa.large_string())
    if array.null_count:  # None: its str(), as above
        array = pa.array([str(v) for v in values], pa.large_string())
    return array.cast(pa.large_binary())


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


_READ_BATCH = 8192


def read_records(files: list[str]) -> list[bytes]:
    """Every serialized tf.Example of gzipped TFRecord files, in order. Read in batches: one eager tensor per
    record cost ~58 us (51 s for 872,635 records), one per 8,192 records brings that to 4 s."""
    out: list[bytes] = []
    for batch in tf.data.TFRecordDataset(files, compression_type=GZIP).batch(_READ_BATCH):
        out.extend(batch.numpy().tolist())
    return out


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


def read_columns(examples_uri: str, split: str, names) -> dict[str, np.ndarray]:
    """The named features of one split as arrays (strings decoded to object arrays), parsed in batches straight
    from the files: no list of serialized examples is held (a million-row split is read without it)."""
    files = split_files(examples_uri, split)
    first = next(iter(tf.data.TFRecordDataset(files[:1], compression_type=GZIP)), None)
    if first is None:
        return {name: np.zeros(0) for name in names}
    features = tf.train.Example.FromString(first.numpy()).features.feature
    missing = [name for name in names if name not in features]
    if missing:
        raise KeyError(f"split {split!r} of {examples_uri} has no feature(s) {', '.join(missing)}")
    dtypes = {"float_list": tf.float32, "int64_list": tf.int64, "bytes_list": tf.string}
    spec = {name: tf.io.FixedLenFeature([], dtypes[features[name].WhichOneof("kind")]) for name in names}
    batches = (tf.data.TFRecordDataset(files, compression_type=GZIP).batch(_PARSE_CHUNK)
               .map(lambda batch: tf.io.parse_example(batch, spec), num_parallel_calls=2))
    parts: dict = {name: [] for name in names}
    for parsed in batches:
        for name, tensor in parsed.items():
            parts[name].append(tensor.numpy())
    out = {}
    for name in names:
        values = np.concatenate(parts[name]) if parts[name] else np.zeros(0)
        if spec[name].dtype == tf.string:
            values = np.array([v.decode("utf-8") for v in values.tolist()], dtype=object)
        out[name] = values
    return out


def read_split(examples_uri: str, split: str):
    """(serialized tf.Examples, pandas frame of every feature) of one split of an Examples artifact."""
    serialized = read_records(split_files(examples_uri, split))
    return serialized, decode_frame(serialized)
