"""Warm-up requests: written into every exported model, replayed by the model server before a version goes live.

TF Serving reads `<version>/assets.extra/tf_serving_warmup_requests`, a TFRecord file of
`tensorflow.serving.PredictionLog` (at most 1000 records), and replays it when the version loads
(--enable_model_warmup, default true), so the first real request does not pay for lazy initialisation
(lookup tables, graph optimisation). The file is stored unencrypted next to the model: it holds
SYNTHETIC rows only, built here from the signature's input types and fraud.features, never customer data.
This module writes the file (training side, fraud.export); serving/warmup.py reads and replays it.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fraud import examples as X
from fraud import features as F

MAX_WARMUP_RECORDS = F.MAX_WARMUP_RECORDS
BATCH_SIZES = (1, 8)  # one single-row request (the common case) and a small batch
# 2026-06-05 20:30 Lima (a Friday dinner), in UTC seconds: any plausible time will do.
_SYNTHETIC_EVENT_TIME = 1780709400
_SYNTHETIC_AMOUNTS = (185.0, 42.5, 1250.0, math.nan, 9.9, 560.0, 76.0, 3100.0)
_SYNTHETIC_AGES = (41.0, math.nan, 29.0, 63.0, 35.0, 52.0, 24.0, 47.0)
_CITY_KEYS = (F.CITY, F.HOME_CITY)
_SYNTHETIC_TOKEN = "synthetic"  # not a value any vocabulary holds: exercises the out-of-vocabulary bucket


def synthetic_rows(input_dtypes: dict, n: int) -> dict:
    """{input name: numpy array of n synthetic values} for the signature's inputs (DataType enums)."""
    import tensorflow as tf

    cities = sorted(F.CITY_COORDS)
    rows = {}
    for key, dtype in input_dtypes.items():
        tf_dtype = tf.dtypes.as_dtype(dtype)
        if tf_dtype == tf.string:
            if key in _CITY_KEYS:
                values = [cities[(i * 3 + len(key)) % len(cities)] for i in range(n)]
            else:
                values = [(F.MISSING, _SYNTHETIC_TOKEN)[i % 2] for i in range(n)]
            rows[key] = np.array([v.encode() for v in values], dtype=object)
        elif tf_dtype.is_floating:
            source = _SYNTHETIC_AGES if key == F.USER_AGE else _SYNTHETIC_AMOUNTS
            rows[key] = np.array([source[i % len(source)] for i in range(n)], dtype=tf_dtype.as_numpy_dtype)
        elif tf_dtype.is_integer:
            rows[key] = np.array([_SYNTHETIC_EVENT_TIME + 3600 * i for i in range(n)], dtype=tf_dtype.as_numpy_dtype)
        elif tf_dtype == tf.bool:
            rows[key] = np.array([i % 2 == 0 for i in range(n)])
        else:
            raise ValueError(f"no synthetic value for input {key!r} of type {tf_dtype.name}")
    return rows


def _example(rows: dict, i: int):
    return X.encode({key: values[i] for key, values in rows.items()})


def build_warmup_logs(signature_defs: dict) -> list:
    """PredictionLogs for the signatures this model has: serving_default (predict) and classify."""
    import tensorflow as tf
    from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2

    raw = signature_defs[F.SERVING_SIGNATURE]
    dtypes = {key: info.dtype for key, info in raw.inputs.items()}
    logs = []
    for n in BATCH_SIZES:
        rows = synthetic_rows(dtypes, n)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = F.MODEL_NAME
        request.model_spec.signature_name = F.SERVING_SIGNATURE
        for key, values in rows.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(values))
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    if F.CLASSIFY_SIGNATURE in signature_defs:
        for n in BATCH_SIZES:
            rows = synthetic_rows(dtypes, n)
            request = classification_pb2.ClassificationRequest()
            request.model_spec.name = F.MODEL_NAME
            request.model_spec.signature_name = F.CLASSIFY_SIGNATURE
            request.input.example_list.examples.extend(_example(rows, i) for i in range(n))
            logs.append(prediction_log_pb2.PredictionLog(
                classify_log=prediction_log_pb2.ClassifyLog(request=request)))
    return logs


def write_warmup_requests(export_dir: str | Path, signature_defs: dict) -> Path:
    """Write assets.extra/tf_serving_warmup_requests into an exported SavedModel dir; returns its path.

    `signature_defs`: {name: SignatureDef} of the exported model (fraud.export.read_signature_defs)."""
    import tensorflow as tf

    logs = build_warmup_logs(signature_defs)
    if len(logs) > MAX_WARMUP_RECORDS:
        raise ValueError(f"{len(logs)} warm-up records; TF Serving reads at most {MAX_WARMUP_RECORDS}")
    path = Path(export_dir) / F.WARMUP_FILE
    tf.io.gfile.makedirs(str(path.parent))
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path
