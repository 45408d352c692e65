"""The asynchronous front end's pieces on their own: the request packing fast path and the Runner that hands
prepared calls to the batch scheduler and wakes the event loop."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2

from serving.batching import BatchingOptions, BatchScheduler
from serving.frontend import Runner
from serving.servable import Call, InputSpec, Signature, pack_arrays
from serving.tensor_proto import pack_protos, tensor_proto_to_array

GROUPS = ((types_pb2.DT_FLOAT, ("a", "c")), (types_pb2.DT_INT64, ("t",)), (types_pb2.DT_STRING, ("city", "kind")))


def _request(rows: int, **overrides) -> predict_pb2.PredictRequest:
    values = {"a": np.arange(rows, dtype=np.float32) + 0.5, "c": -np.arange(rows, dtype=np.float32),
              "t": np.arange(rows, dtype=np.int64) * 10**12, "city": np.array([f"lima-{i}".encode() for i in range(rows)],
                                                                             dtype=object),
              "kind": np.array([b"visa"] * rows, dtype=object)}
    values.update(overrides)
    request = predict_pb2.PredictRequest()
    for name, array in values.items():
        if array is None:
            continue
        proto = request.inputs[name]
        dtype = {np.dtype(np.float32): types_pb2.DT_FLOAT, np.dtype(np.int64): types_pb2.DT_INT64}.get(
            np.asarray(array).dtype, types_pb2.DT_STRING)
        proto.dtype = dtype
        proto.tensor_shape.dim.add(size=len(array))
        field = {types_pb2.DT_FLOAT: proto.float_val, types_pb2.DT_INT64: proto.int64_val,
                 types_pb2.DT_STRING: proto.string_val}[dtype]
        field.extend(list(array))
    return request


def _signature() -> Signature:
    inputs = {name: InputSpec(dtype, (None,)) for dtype, names in GROUPS for name in names}
    return Signature("serving_default", "tensorflow/serving/predict", inputs, ("score",), None, object(), GROUPS)


@pytest.mark.parametrize("rows", [1, 3, 64])
def test_packing_straight_from_protos_equals_the_general_path(rows):
    request = _request(rows)
    fast = pack_protos(GROUPS, request.inputs)
    general = pack_arrays(_signature(), {k: tensor_proto_to_array(p, k) for k, p in request.inputs.items()})
    assert fast is not None and len(fast) == len(general) == 3
    for got, want in zip(fast, general):
        assert got.shape == want.shape == (rows, want.shape[1]) and got.dtype == want.dtype
        assert got.tolist() == want.tolist()
    assert fast[0][:, 0].tolist() == [i + 0.5 for i in range(rows)]  # column order = the group's name order
    assert fast[2][-1].tolist() == [f"lima-{rows - 1}".encode(), b"visa"]


def test_anything_unusual_takes_the_general_path():
    assert pack_protos(GROUPS, _request(2, kind=None).inputs) is None  # an input missing
    assert pack_protos(GROUPS, _request(2, c=np.zeros(3, dtype=np.float32)).inputs) is None  # ragged batch
    wrong_dtype = _request(2)
    wrong_dtype.inputs["t"].dtype = types_pb2.DT_INT32
    assert pack_protos(GROUPS, wrong_dtype.inputs) is None
    content = _request(2)
    content.inputs["a"].CopyFrom(tf.make_tensor_proto(np.array([1.0, 2.0], dtype=np.float32)))  # tensor_content
    assert content.inputs["a"].tensor_content
    assert pack_protos(GROUPS, content.inputs) is None
    matrix = _request(2)
    matrix.inputs["a"].tensor_shape.dim.add(size=1)  # [2, 1]: not a vector
    assert pack_protos(GROUPS, matrix.inputs) is None
    extra = _request(2)
    extra.inputs["x"].CopyFrom(extra.inputs["a"])
    assert pack_protos(GROUPS, extra.inputs) is None


def _call(servable, value: float, rows: int = 1) -> Call:
    def model(merged):
        return {"score": merged["x"] * 2, "rows": np.full(len(merged["x"]), len(merged["x"]))}, 1.0
    return Call(servable, {"x": np.full(rows, value, dtype=np.float32)}, model, ("score", "rows"), "serving_default")


def test_the_runner_answers_every_caller_with_its_own_rows_through_batches():
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=16, num_batch_threads=1, max_enqueued_batches=100))
    servable = SimpleNamespace(scheduler=scheduler, model_name="m", version=1)

    async def main():
        runner = Runner(asyncio.get_running_loop(), ThreadPoolExecutor(2), scheduler)
        wakeups = 0
        drain = runner._drain

        def counting_drain():
            nonlocal wakeups
            wakeups += 1
            drain()
        runner._drain = counting_drain
        calls = [_call(servable, float(i), rows=1 + i % 3) for i in range(200)]
        results = await asyncio.gather(*(runner.run(c) for c in calls))
        return calls, results, wakeups

    try:
        calls, results, wakeups = asyncio.run(main())
    finally:
        scheduler.stop()
    for call, (outputs, _) in zip(calls, results):
        assert outputs["score"].tolist() == (call.model_inputs["x"] * 2).tolist()
    merged_sizes = [int(outputs["rows"][0]) for outputs, _ in results]
    assert max(merged_sizes) > 3, "concurrent callers must share batches"
    assert wakeups < len(calls), "one wake-up per batch, not per request"


def test_the_runner_without_batching_uses_the_thread_pool_and_passes_errors_on():
    servable = SimpleNamespace(scheduler=None, model_name="m", version=1)

    def failing(merged):
        raise ValueError("model failed")

    async def main():
        runner = Runner(asyncio.get_running_loop(), ThreadPoolExecutor(2))
        ok = await runner.run(_call(servable, 3.0))
        with pytest.raises(ValueError, match="model failed"):
            await runner.run(Call(servable, {"x": np.zeros(1)}, failing, ("score",), "s"))
        return ok

    outputs, runtime_us = asyncio.run(main())
    assert outputs["score"].tolist() == [6.0] and runtime_us == 1.0
