"""Warm-up replay: TF Serving's `<version>/assets.extra/tf_serving_warmup_requests` (a TFRecord file of
`tensorflow.serving.PredictionLog`, at most 1000 records), read and replayed when a version loads
(--enable_model_warmup, default true), so the first real request does not pay for lazy initialisation.
The training side writes the file (fraud/warmup.py: synthetic rows only, never customer data).
"""
from __future__ import annotations

import time
from pathlib import Path

from fraud import features as F

MAX_WARMUP_RECORDS = F.MAX_WARMUP_RECORDS


def warmup_path(export_dir: str | Path) -> Path:
    return Path(export_dir) / F.WARMUP_FILE


def read_warmup_logs(export_dir: str | Path) -> list:
    """The PredictionLogs of a version dir ([] when it has no warm-up file)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = warmup_path(export_dir)
    if not path.is_file():
        return []
    logs = []
    for record in tf.data.TFRecordDataset(str(path)):
        if len(logs) >= MAX_WARMUP_RECORDS:
            raise ValueError(f"{path}: more than {MAX_WARMUP_RECORDS} warm-up records")
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        logs.append(log)
    return logs


def replay(servable, logs: list) -> float:
    """Run each warm-up record against a freshly loaded servable; raises on the first failure.
    Returns the wall time in microseconds."""
    from serving.servable import CLASSIFY_METHOD, REGRESS_METHOD
    from serving.tensor_proto import tensor_proto_to_array
    from serving.tensors import serialized_from_input

    started = time.perf_counter()
    for log in logs:
        kind = log.WhichOneof("log_type")
        if kind == "predict_log":
            request = log.predict_log.request
            signature = servable.signature(request.model_spec.signature_name)
            inputs = {k: tensor_proto_to_array(v, k) for k, v in request.inputs.items()}
            servable.run(signature, inputs, request.output_filter)
        elif kind in ("classify_log", "regress_log"):
            request = getattr(log, kind).request
            method = CLASSIFY_METHOD if kind == "classify_log" else REGRESS_METHOD
            signature = servable.signature(request.model_spec.signature_name)
            servable.run_examples(signature, serialized_from_input(request.input), method)
        else:
            raise ValueError(f"unsupported warm-up record type: {kind}")
    return (time.perf_counter() - started) * 1e6
