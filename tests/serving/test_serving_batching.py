"""Server-side batching (`fraudctl serve --enable-batching --batching-parameters-file ...`) on the pipeline's model.

- batched answers equal the model's own answers for mixed request sizes, over REST (row and columnar) and gRPC
  (predict and classify), requests really are merged (the server's batching metrics say so);
- stable and canary in flight at once: every answer comes from the version it asked for;
- a malformed request inside a burst gets its own 400 while its neighbours succeed;
- a full queue answers 503 / UNAVAILABLE with TF Serving's message, and the server keeps serving;
- a version pushed while clients send requests (hot swap) loses no request.
The scheduler itself (merging, padding, separate queues, timeouts) is tested without a model in
tests/unit/test_batching.py.
"""
from __future__ import annotations

import re
import threading
import time

import grpc
import numpy as np
import pytest
import requests

from fraud import features as F
from serving.batching import QUEUE_FULL_MESSAGE
from serving.client_grpc import GrpcClient
from serving.client_rest import RestClient
from serving.example import example_transaction, typed
from serving.process import start_server
from serving.servable import read_signature_defs
from tests.serving.support import BATCHING_CONFIG, MONITORING_CONFIG, local_models_config, newest_version, \
    push_version

pytestmark = pytest.mark.slow
TIMEOUT = 20


@pytest.fixture(scope="module")
def model(small_run):
    """The pushed model, its raw inputs and its own answers (the in-process signature call)."""
    import tensorflow as tf

    version_dir = newest_version(small_run.model_base)
    names = sorted(read_signature_defs(version_dir)[F.SERVING_SIGNATURE].inputs)
    rng = np.random.default_rng(3)
    rows = []
    for i in range(24):
        row = typed(example_transaction(names))
        row[F.AMOUNT] = float(rng.choice([35.0, 180.0, 950.0, 4200.0]))
        row[F.CITY] = ["Lima", "Cusco", "Arequipa", "Piura"][i % 4]
        row["user_txn_count_1h"] = float(i % 5)
        row[F.EVENT_TIME] = int(row[F.EVENT_TIME]) + 3600 * i
        rows.append(row)
    signature = tf.saved_model.load(str(version_dir)).signatures[F.SERVING_SIGNATURE]
    from serving.client_grpc import input_arrays

    expected = signature(**{k: tf.constant(v) for k, v in input_arrays(rows).items()})[F.SCORE_OUTPUT].numpy()
    return {"dir": version_dir, "rows": rows, "expected": expected}


@pytest.fixture(scope="module")
def batching(model, tmp_path_factory):
    """A batching server over two versions (stable and canary labels) of the model."""
    work = tmp_path_factory.mktemp("batching")
    base = work / "models" / F.MODEL_NAME
    base.mkdir(parents=True)
    stable, canary = int(model["dir"].name), int(model["dir"].name) + 1
    push_version(model["dir"], base, stable)
    push_version(model["dir"], base, canary)
    config = local_models_config(base, stable, canary, work / "models.config")
    server = start_server(None, work / "server.log", model_config_file=config, monitoring_config_file=MONITORING_CONFIG,
                          extra_args=["--enable-batching", "--batching-parameters-file", str(BATCHING_CONFIG)])
    yield {"server": server, "stable": stable, "canary": canary}
    server.stop()


def _concurrently(n: int, fn) -> dict:
    results, barrier = {}, threading.Barrier(n)

    def one(i):
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # noqa: BLE001 - the test looks at every outcome
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT + 10)
    return results


def _metric(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def test_batched_answers_equal_the_models_for_mixed_sizes_and_formats(model, batching):
    server = batching["server"]
    rows, expected = model["rows"], model["expected"]
    spans = [(0, 1), (1, 4), (4, 12), (12, 13), (13, 24)]  # 1, 3, 8, 1, 11 rows
    rest = RestClient(server.rest_url, timeout=TIMEOUT)
    grpc_client = GrpcClient(server.grpc_target, timeout=TIMEOUT)
    before = requests.get(server.rest_url + "/monitoring/prometheus/metrics", timeout=TIMEOUT).text

    def call(i):
        a, b = spans[i % len(spans)]
        kind = i % 4
        if kind == 0:
            got = rest.predict(rows[a:b])
        elif kind == 1:
            got = rest.predict_columns({k: [r[k] for r in rows[a:b]] for k in rows[0]})
        elif kind == 2:
            got = list(grpc_client.predict(rows[a:b])[0])
        else:
            got = [c["1"] for c in grpc_client.classify(rows[a:b])]
        return a, b, np.asarray(got, dtype=np.float64).reshape(-1)

    results = _concurrently(40, call)
    for i, outcome in results.items():
        assert not isinstance(outcome, Exception), f"request {i}: {outcome!r}"
        a, b, got = outcome
        np.testing.assert_allclose(got, expected[a:b], rtol=1e-5, atol=1e-7, err_msg=f"request {i} rows {a}:{b}")
    after = requests.get(server.rest_url + "/monitoring/prometheus/metrics", timeout=TIMEOUT).text
    runs = _metric(after, ":tensorflow:serving:batching_session:wrapped_run_count") - \
        _metric(before, ":tensorflow:serving:batching_session:wrapped_run_count")
    assert 0 < runs < 40, f"{runs} model calls for 40 concurrent requests: nothing was merged"
    assert ":tensorflow:serving:batching_session:queuing_latency_bucket" in after


def test_stable_and_canary_in_flight_at_once_answer_from_their_own_version(model, batching):
    server = batching["server"]
    clients = {label: GrpcClient(server.grpc_target, label=label, timeout=TIMEOUT) for label in ("stable", "canary")}

    def call(i):
        label = ("stable", "canary")[i % 2]
        scores, version = clients[label].predict(model["rows"][i % 5: i % 5 + 2])
        return label, version, scores

    for i, (label, version, scores) in _concurrently(40, call).items():
        assert version == batching[label], f"request {i} for {label} answered by version {version}"
        np.testing.assert_allclose(scores, model["expected"][i % 5: i % 5 + 2], rtol=1e-5, atol=1e-7)


def test_a_bad_request_in_a_burst_gets_its_own_400_and_the_others_succeed(model, batching):
    server = batching["server"]
    url = f"{server.rest_url}/v1/models/{F.MODEL_NAME}:predict"
    good = {"instances": model["rows"][:2]}
    bad_row = dict(model["rows"][0])
    bad_row[F.AMOUNT] = "a lot"  # a string where the signature takes a float

    def call(i):
        response = requests.post(url, json={"instances": [bad_row]} if i == 7 else good, timeout=TIMEOUT)
        return response.status_code, response.json()

    results = _concurrently(24, call)
    assert results[7][0] == 400 and "error" in results[7][1]
    for i, (status, body) in results.items():
        if i != 7:
            assert status == 200, body
            np.testing.assert_allclose(body["predictions"], model["expected"][:2], rtol=1e-5, atol=1e-7)


def test_a_full_queue_answers_unavailable_and_the_server_keeps_serving(model, tmp_path):
    """One enqueued batch at most, and a 2 s timeout: a 40-row request waits in the open batch; a second one does
    not fit in it, and opening another batch would exceed the queue, so it is refused at once (UNAVAILABLE) and
    the first batch runs. Deterministic: no race with the batch thread."""
    config = tmp_path / "tiny_queue.config"
    config.write_text("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 2000000 }\n"
                      "max_enqueued_batches { value: 1 }\nnum_batch_threads { value: 1 }\n")
    server = start_server(model["dir"].parent, tmp_path / "server.log",
                          extra_args=["--enable-batching", "--batching-parameters-file", str(config)])
    rows = (model["rows"] * 2)[:40]
    expected = np.concatenate([model["expected"], model["expected"]])[:40]
    try:
        url = f"{server.rest_url}/v1/models/{F.MODEL_NAME}:predict"
        for api in ("REST", "gRPC"):
            first: dict = {}

            def wait_in_open_batch():
                if api == "REST":
                    first["scores"] = requests.post(url, json={"instances": rows}, timeout=TIMEOUT).json()["predictions"]
                else:
                    first["scores"] = list(GrpcClient(server.grpc_target, timeout=TIMEOUT).predict(rows)[0])

            waiting = threading.Thread(target=wait_in_open_batch)
            started = time.monotonic()
            waiting.start()
            time.sleep(0.5)  # the first request is in the open batch, which waits for its 2 s timeout
            if api == "REST":
                refused = requests.post(url, json={"instances": rows}, timeout=TIMEOUT)
                assert refused.status_code == 503 and QUEUE_FULL_MESSAGE in refused.json()["error"]
            else:
                with pytest.raises(grpc.RpcError) as info:
                    GrpcClient(server.grpc_target, timeout=TIMEOUT).predict(rows)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE and QUEUE_FULL_MESSAGE in info.value.details()
            waiting.join(TIMEOUT)
            assert time.monotonic() - started < 1.8  # the refused request closed the batch: it ran at once
            np.testing.assert_allclose(first["scores"], expected, rtol=1e-5, atol=1e-7)
        small = requests.post(url, json={"instances": rows[:1]}, timeout=TIMEOUT)  # still serving
        assert small.status_code == 200
    finally:
        server.stop()


def test_hot_swap_with_batching_loses_no_request(model, tmp_path):
    base = tmp_path / "models" / F.MODEL_NAME
    base.mkdir(parents=True)
    first = int(model["dir"].name)
    push_version(model["dir"], base, first)
    server = start_server(base, tmp_path / "server.log", poll_seconds=0.2,
                          extra_args=["--enable-batching", "--batching-parameters-file", str(BATCHING_CONFIG)])
    failures, versions, stop = [], [], threading.Event()

    def loop():
        client = GrpcClient(server.grpc_target, timeout=TIMEOUT)
        while not stop.is_set():
            try:
                versions.append(client.predict(model["rows"][:1])[1])
            except grpc.RpcError as exc:
                failures.append(f"{exc.code().name}: {exc.details()}")

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(6)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while first not in versions and time.monotonic() < deadline:
            time.sleep(0.1)
        push_version(model["dir"], base, first + 1)
        while (not versions or versions[-1] != first + 1) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(TIMEOUT + 5)
        server.stop()
    assert failures == [], failures[:5]
    assert versions[-1] == first + 1 and first in versions and len(versions) > 50
