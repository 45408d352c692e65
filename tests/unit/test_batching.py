"""The batch scheduler (serving/batching.py) on a fake model: merging and splitting, the queue limit, padding,
timeouts, separate queues, and a failing request that never fails its neighbours."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from serving import errors
from serving.batching import BatchingOptions, BatchScheduler, merge_inputs, split_outputs
from serving.errors import ServingError


class FakeModel:
    """score = 2 * x, per row; records the batch sizes it saw; fails on a row holding -1 when merged."""

    def __init__(self, delay: float = 0.0):
        self.batches: list[int] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, inputs: dict):
        with self.lock:
            self.batches.append(len(inputs["x"]))
        time.sleep(self.delay)
        if np.any(inputs["x"] == -1):
            raise ServingError(errors.INVALID_ARGUMENT, "x may not be -1")
        return {"score": inputs["x"] * 2.0, "tag": np.array([b"t"] * len(inputs["x"]), dtype=object)}, 10.0


def _burst(scheduler, model, values, key="m/1/serving_default"):
    results, threads = {}, []

    def one(i, value):
        try:
            results[i] = scheduler.submit(key, {"x": np.array(value, dtype=np.float32)}, model)[0]
        except ServingError as exc:
            results[i] = exc

    for i, value in enumerate(values):
        threads.append(threading.Thread(target=one, args=(i, value)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return results


def test_concurrent_requests_are_merged_and_split_back_exactly():
    model = FakeModel(delay=0.02)
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=64, batch_timeout_micros=5000, num_batch_threads=1,
                                               max_enqueued_batches=100))
    try:
        values = [[float(i)] * (1 + i % 3) for i in range(30)]
        results = _burst(scheduler, model, values)
    finally:
        scheduler.stop()
    for i, value in enumerate(values):
        np.testing.assert_array_equal(results[i]["score"], np.array(value, np.float32) * 2)
        assert len(results[i]["tag"]) == len(value)
    assert sum(model.batches) == sum(len(v) for v in values)
    assert max(model.batches) > 3  # requests really were merged


def test_a_bad_request_in_a_burst_gets_its_own_error_and_the_others_succeed():
    model = FakeModel(delay=0.01)
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=64, batch_timeout_micros=20000, num_batch_threads=1))
    try:
        values = [[1.0], [2.0], [-1.0], [3.0, 4.0], [5.0]]
        results = _burst(scheduler, model, values)
    finally:
        scheduler.stop()
    assert isinstance(results[2], ServingError) and results[2].code == errors.INVALID_ARGUMENT
    for i in (0, 1, 3, 4):
        np.testing.assert_array_equal(results[i]["score"], np.array(values[i], np.float32) * 2)


def test_a_full_queue_answers_unavailable_instead_of_growing():
    model = FakeModel(delay=0.2)
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=1, batch_timeout_micros=0, num_batch_threads=1,
                                               max_enqueued_batches=2))
    try:
        results = _burst(scheduler, model, [[float(i)] for i in range(8)])
    finally:
        scheduler.stop()
    refused = [r for r in results.values() if isinstance(r, ServingError)]
    assert refused and all(r.code == errors.UNAVAILABLE and r.http_status == 503 for r in refused)
    assert "queue to which this task was submitted is full" in refused[0].message
    assert len(refused) + len(model.batches) == 8  # every request answered: served or refused


def test_padding_to_allowed_sizes_and_the_size_limit():
    model = FakeModel()
    options = BatchingOptions(max_batch_size=8, allowed_batch_sizes=(4, 8), num_batch_threads=1)
    scheduler = BatchScheduler(options)
    try:
        out, _ = scheduler.submit("k", {"x": np.array([1.0, 2.0, 3.0], np.float32)}, model)
        np.testing.assert_array_equal(out["score"], [2.0, 4.0, 6.0])  # padding rows dropped
        assert model.batches == [4]
        with pytest.raises(ServingError, match="Task size 9 is larger than maximum input batch size 8"):
            scheduler.submit("k", {"x": np.zeros(9, np.float32)}, model)
    finally:
        scheduler.stop()


def test_requests_of_different_queues_never_share_a_batch():
    seen = []

    def model_for(version):
        def run(inputs):
            seen.append((version, len(inputs["x"])))
            time.sleep(0.01)
            return {"score": inputs["x"] + version}, 1.0
        return run

    scheduler = BatchScheduler(BatchingOptions(max_batch_size=64, batch_timeout_micros=10000, num_batch_threads=2))
    results, threads = {}, []
    try:
        for i in range(20):
            version = 1 + i % 2

            def one(i=i, version=version):
                results[i] = scheduler.submit(f"m/{version}/sig", {"x": np.array([float(i)], np.float32)},
                                              model_for(version))[0]["score"][0]
            threads.append(threading.Thread(target=one))
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    finally:
        scheduler.stop()
    assert results == {i: float(i) + 1 + i % 2 for i in range(20)}
    assert sum(n for _, n in seen) == 20 and {v for v, _ in seen} == {1, 2}


def test_zero_timeout_runs_a_lone_request_at_once():
    model = FakeModel()
    scheduler = BatchScheduler(BatchingOptions(batch_timeout_micros=0, num_batch_threads=1))
    try:
        started = time.perf_counter()
        scheduler.submit("k", {"x": np.array([1.0], np.float32)}, model)
        assert time.perf_counter() - started < 0.5
    finally:
        scheduler.stop()


def test_merge_and_split_helpers():
    merged = merge_inputs([{"a": np.array([1, 2])}, {"a": np.array([3])}], padded_rows=4)
    np.testing.assert_array_equal(merged["a"], [1, 2, 3, 1])
    parts = split_outputs({"s": np.arange(4)}, [2, 1], padded_rows=4)
    assert [p["s"].tolist() for p in parts] == [[0, 1], [2]]
    with pytest.raises(ServingError, match="first dimension of 4"):
        split_outputs({"s": np.arange(3)}, [2, 1], padded_rows=4)


def test_enqueue_calls_back_from_the_batch_thread_for_asynchronous_front_ends():
    model = FakeModel()
    scheduler = BatchScheduler(BatchingOptions(num_batch_threads=1))
    done = threading.Event()
    seen = {}

    def callback(task):
        seen["thread"] = threading.current_thread().name
        seen["score"] = task.outputs["score"].tolist()
        done.set()

    try:
        task = scheduler.enqueue("k", {"x": np.array([1.0, 2.0], np.float32)}, model, callback)
        assert done.wait(5) and task.error is None
    finally:
        scheduler.stop()
    assert seen == {"thread": "batch-0", "score": [2.0, 4.0]}


def test_a_batch_closed_by_a_request_that_does_not_fit_runs_without_waiting_for_its_timeout():
    model = FakeModel()
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=4, batch_timeout_micros=5_000_000, num_batch_threads=1,
                                               max_enqueued_batches=1))
    results = {}
    try:
        waiting = threading.Thread(target=lambda: results.update(
            first=scheduler.submit("k", {"x": np.ones(3, np.float32)}, model)[0]))
        started = time.perf_counter()
        waiting.start()
        time.sleep(0.2)
        with pytest.raises(ServingError, match="queue to which this task was submitted is full"):
            scheduler.submit("k", {"x": np.ones(3, np.float32)}, model)  # does not fit; no room for another batch
        waiting.join(5)
        assert time.perf_counter() - started < 2.0 and results["first"]["score"].tolist() == [2.0, 2.0, 2.0]
    finally:
        scheduler.stop()
