"""Ingestion throughput (what FraudExampleGen does), stage by stage, at ~100k and ~700k rows.

    .venv/bin/python bench/ingest_bench.py [--rows 100000 700000]

Data: the generator's rows (one generated set, tiled with distinct transaction and card ids up to N rows), as
CSV files. Stages: read the CSV folder (fraud.ingest.read_csv_dir), standardise, split by time, encode the
tf.Examples, write the gzipped TFRecords. References measured in the same run on the same files:
- Arrow's CSV parser alone, untyped (a floor for reading);
- earlier implementations of the fast stages: pandas' CSV reader, tf.Example protos built in Python, tfx_bsl's
  C++ encoder.
Printed as rows/s per stage and the ratios; the target is >= 100k rows/s end to end.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from components.ingestion import _FLOAT_COLUMNS, _INT_COLUMNS, _STRING_COLUMNS, to_examples, write_sharded  # noqa: E402,E501
from fraud import features as F  # noqa: E402
from fraud import ingest  # noqa: E402
from fraud.synth import datagen  # noqa: E402


def tiled_csv(base: pd.DataFrame, rows: int, out: Path) -> Path:
    """`rows` rows: copies of `base` with distinct transaction and card ids, written as monthly-sized files."""
    out.mkdir(parents=True)
    copies = -(-rows // len(base))
    for k in range(copies):
        part = base.copy()
        part[F.TRANSACTION_ID] = part[F.TRANSACTION_ID] + f"-{k}"
        part[F.USER_ID] = part[F.USER_ID] + f"-{k}"
        if (k + 1) * len(base) > rows:
            part = part.head(rows - k * len(base))
        part.to_csv(out / f"transactions-{k:03d}.csv", index=False)
    return out


def old_encode(frame) -> list[bytes]:
    """The previous encoder: one tf.Example proto per row, built in Python."""
    import tensorflow as tf

    floats = {c: frame[c].to_numpy(np.float32) for c in _FLOAT_COLUMNS}
    ints = {c: frame[c].to_numpy(np.int64) for c in _INT_COLUMNS if c in frame.columns}
    strings = {c: [s.encode() for s in frame[c].astype(str)] for c in _STRING_COLUMNS}
    out = []
    for i in range(len(frame)):
        feats = {c: tf.train.Feature(float_list=tf.train.FloatList(value=[v[i]])) for c, v in floats.items()}
        feats.update({c: tf.train.Feature(int64_list=tf.train.Int64List(value=[v[i]])) for c, v in ints.items()})
        feats.update({c: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v[i]])) for c, v in strings.items()})
        out.append(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
    return out


def tfx_bsl_encode(frame) -> list[bytes]:
    """The encoder before this one: tfx_bsl's C++ RecordBatchToExamples, on two threads."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    from tfx_bsl.coders import example_coder

    columns = {**{c: pa.array(frame[c].to_numpy(np.float32)) for c in _FLOAT_COLUMNS},
               **{c: pa.array(frame[c].to_numpy(np.int64)) for c in _INT_COLUMNS if c in frame.columns},
               **{c: pa.array(frame[c].astype(str).tolist(), pa.string()).cast(pa.binary()) for c in _STRING_COLUMNS}}
    offsets = pa.array(np.arange(len(frame) + 1, dtype=np.int32))
    batch = pa.RecordBatch.from_arrays([pa.ListArray.from_arrays(offsets, v) for v in columns.values()], list(columns))
    chunks = [batch.slice(start, 65536) for start in range(0, len(frame), 65536)]
    with ThreadPoolExecutor(2) as pool:
        return [record for part in pool.map(example_coder.RecordBatchToExamples, chunks) for record in part]


def timed(fn, *args):
    began = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - began


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 700_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("generating...", flush=True)
        datagen.generate(str(tmp / "base"), days=60, users=4000, seed=3)
        base = ingest.read_csv_dir(tmp / "base")
        for rows in args.rows:
            data = tiled_csv(base, rows, tmp / f"csv-{rows}")
            from pyarrow import csv as pacsv

            _, arrow_s = timed(lambda: [pacsv.read_csv(p) for p in sorted(data.glob("*.csv"))])
            _, pandas_s = timed(lambda: pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[])
                                                   for p in sorted(data.glob("*.csv"))], ignore_index=True))
            raw, read_s = timed(ingest.read_csv_dir, data)
            standard, standardise_s = timed(lambda: ingest.standardise(raw, require_label=True))
            splits, split_s = timed(lambda: ingest.split_by_time(standard.frame, eval_days=7, valid_days=7))
            records, encode_s = timed(lambda: {n: to_examples(f) for n, f in splits.items()})
            sample = splits[F.SPLIT_TRAIN].head(50_000)
            _, old_encode_s = timed(old_encode, sample)
            old_encode_rate = len(sample) / old_encode_s
            _, tfx_bsl_s = timed(tfx_bsl_encode, splits[F.SPLIT_TRAIN])
            _, write_s = timed(lambda: [write_sharded(r, str(tmp / "out" / str(rows) / n)) for n, r in records.items()])
            total = read_s + standardise_s + split_s + encode_s + write_s
            print(f"\n{rows:,} rows ({len(list(data.glob('*.csv')))} CSV files)")
            for name, seconds in (("read CSV", read_s), ("standardise", standardise_s), ("split", split_s),
                                  ("encode tf.Examples", encode_s), ("write gzip TFRecords", write_s),
                                  ("total", total)):
                print(f"  {name:<22} {seconds:7.2f} s {rows / seconds:>12,.0f} rows/s")
            print(f"  reference: Arrow CSV parse alone {rows / arrow_s:,.0f} rows/s (read CSV at "
                  f"{arrow_s / read_s:.2f} of it); pandas' reader {rows / pandas_s:,.0f} rows/s "
                  f"(read CSV now {pandas_s / read_s:.1f}x faster)")
            print(f"  reference: protos built in Python {old_encode_rate:,.0f} rows/s on 50k rows (encode now "
                  f"{(rows / encode_s) / old_encode_rate:.1f}x faster)")
            tfx_bsl_rate = len(splits[F.SPLIT_TRAIN]) / tfx_bsl_s
            print(f"  reference: tfx_bsl's C++ encoder {tfx_bsl_rate:,.0f} rows/s on the train split (encode now "
                  f"{(rows / encode_s) / tfx_bsl_rate:.2f}x its speed)", flush=True)


if __name__ == "__main__":
    main()
