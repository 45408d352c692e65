"""Bad input never takes the server down: every client mistake is a 4xx (gRPC: a client-error code) with a
message, never a 5xx, and the server keeps answering. Includes a seeded fuzzing run of generated requests.

Same target as the contract suite (local server, or TFSERVING_REST_URL / TFSERVING_GRPC_TARGET); the limits
this server adds (at most 10,000 rows per request, bounded tensor sizes) are checked on the local server only.
"""
from __future__ import annotations

import json
import random
import string
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import requests
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from fraud import features as F
from serving.client_grpc import GrpcClient
from serving.errors import ServingError
from serving.example import example_transaction, typed
from serving.tensors import MAX_BATCH_SIZE

TIMEOUT = 20
FUZZ_REST_REQUESTS = 1200
FUZZ_GRPC_REQUESTS = 300
CLIENT_ERROR_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                      grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE,
                      grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.RESOURCE_EXHAUSTED}


@pytest.fixture(scope="module")
def row(target) -> dict:
    """A valid instance for the served model (its inputs from the metadata)."""
    document = requests.get(target.model_url + "/metadata", timeout=TIMEOUT).json()
    inputs = sorted(document["metadata"]["signature_def"]["signature_def"][F.SERVING_SIGNATURE]["inputs"])
    return typed(example_transaction(inputs))


def send(target, suffix="", body=None, *, data=None, method="POST", session=None):
    if body is not None:
        data = json.dumps(body)
    return (session or requests).request(method, target.model_url + suffix, data=data, timeout=TIMEOUT,
                                         headers={"Content-Type": "application/json"})


def client_error(response, *, status=None) -> str:
    """The response is a 4xx (or the given status) with TF Serving's {"error": "<message>"} body."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    if status is not None:
        assert response.status_code == status, (response.status_code, response.text[:500])
    message = response.json().get("error")
    assert isinstance(message, str) and message, response.text[:500]
    return message


def assert_still_serving(target, row):
    assert requests.get(target.model_url, timeout=TIMEOUT).status_code == 200
    response = send(target, ":predict", {"instances": [row]})
    assert response.status_code == 200, response.text
    if target.local:
        assert target.local.server.alive()


def kind_of(key: str) -> str:
    return F.input_kind(key)


WRONG_VALUES = {  # values of the wrong JSON type for each input kind
    "float": ["12.5", True, None, {"x": 1}, [], [[1.0]], 1e39],
    "int": [1.5, "1780709400", True, None, 2 ** 70, [1, 2]],
    "string": [5, 2.5, True, None, {"b64": "!!not base64!!"}, {"b64": 5}, {"b64": "QQ==", "x": 1}, ["Lima"]],
}


# --------------------------------------------------------------------------------------------------
# The JSON codec on its own (fast: no server)
# --------------------------------------------------------------------------------------------------
def test_codec_rows_columns_b64_and_types():
    from serving import tensors

    dtypes = {"a": types_pb2.DT_FLOAT, "t": types_pb2.DT_INT64, "s": types_pb2.DT_STRING}
    doc = tensors.parse_json('{"instances": [{"a": 1, "t": 5, "s": {"b64": "TGltYQ=="}}, '
                             '{"a": NaN, "t": -1, "s": "\u00f1"}]}')
    parsed = tensors.parse_predict(doc, lambda signature: dtypes)
    assert parsed.format == tensors.ROW and parsed.signature_name == ""
    assert parsed.inputs["a"].dtype == np.float32 and np.isnan(parsed.inputs["a"][1])
    assert parsed.inputs["t"].tolist() == [5, -1] and parsed.inputs["t"].dtype == np.int64
    assert parsed.inputs["s"].tolist() == [b"Lima", "\u00f1".encode()]
    columnar = tensors.parse_predict({"inputs": [[1, 2], [3, 4]]}, lambda signature: {"x": types_pb2.DT_FLOAT})
    assert columnar.format == tensors.COLUMNAR and columnar.inputs["x"].shape == (2, 2)
    deep = 1.0
    for _ in range(tensors.MAX_RANK + 1):
        deep = [deep]
    for bad in ({"instances": [{"a": 16777217, "t": 1, "s": ""}]},  # not exactly representable as float32
                {"instances": [{"a": 1.0, "t": 1.5, "s": ""}]},  # int64 from a JSON float
                {"instances": [{"a": True, "t": 1, "s": ""}]},  # a bool is not a number here
                {"instances": [{"a": 1.0, "t": 1, "s": {"b64": "***"}}]},
                {"instances": [{"a": deep, "t": 1, "s": ""}]},
                {"instances": [{"a": 1.0, "t": 1, "s": ""}, {"a": [1.0], "t": 1, "s": ""}]}):
        with pytest.raises(ServingError) as info:
            tensors.parse_predict(bad, lambda signature: dtypes)
        assert info.value.code == "INVALID_ARGUMENT" and info.value.http_status == 400


def test_codec_responses_as_tf_serving_writes_them():
    from serving import tensors

    score = np.array([0.1, np.nan, np.inf], dtype=np.float32)
    assert tensors.dumps(tensors.predict_response({"p": score}, tensors.ROW)) == \
        b'{"predictions":[0.1,NaN,Infinity]}'  # shortest float32 text, not 0.10000000149011612
    two = tensors.predict_response({"p": score[:1], "c": np.array([[b"0", b"1"]], dtype=object)}, tensors.ROW)
    assert two == {"predictions": [{"c": ["0", "1"], "p": 0.1}]}
    assert tensors.predict_response({"p": score[:1]}, tensors.COLUMNAR) == {"outputs": [0.1]}
    raw = tensors.predict_response({"x_bytes": np.array([b"\xff"], dtype=object)}, tensors.COLUMNAR)
    assert raw == {"outputs": [{"b64": "/w=="}]}


def test_model_specific_names_come_from_fraud_features():
    """The server is generic; where TF Serving's API fixes a name, our model must use exactly that name."""
    from fraud import export
    from serving import servable

    assert F.SERVING_SIGNATURE == servable.DEFAULT_SIGNATURE  # requests without signature_name reach it
    assert F.CLASSIFY_INPUT == servable.CLASSIFY_INPUTS
    assert export.CLASSIFY_METHOD == servable.CLASSIFY_METHOD


# --------------------------------------------------------------------------------------------------
# Against the server
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_malformed_json(target):
    bodies = ["", "{", "[1, 2]", "null", '"instances"', '{"instances": ', "{'instances': []}", '{"instances": [}',
              "\xff\xfe not utf-8", '{"instances": [' * 5000, "1" * 5000, '{"instances": [NaN' + "]" * 3]
    for body in bodies:
        data = body.encode("latin-1") if "\xff" in body else body
        message = client_error(send(target, ":predict", data=data), status=400)
        assert message
    for body in ["", "{", "[]"]:
        client_error(send(target, ":classify", data=body), status=400)


@pytest.mark.slow
def test_wrong_types(target, row):
    for key in row:
        for value in WRONG_VALUES[kind_of(key)]:
            message = client_error(send(target, ":predict", {"instances": [{**row, key: value}]}), status=400)
            assert key in message or "b64" in message or "base64" in message or "shape" in message, message
    client_error(send(target, ":predict", {"signature_name": 7, "instances": [row]}), status=400)
    client_error(send(target, ":predict", {"instances": row}), status=400)  # not a list
    client_error(send(target, ":predict", {"instances": []}), status=400)
    client_error(send(target, ":predict", {"instances": [row, [1, 2]]}), status=400)  # mixed object / list
    client_error(send(target, ":predict", {"instances": [row], "inputs": {}}), status=400)


@pytest.mark.slow
def test_missing_and_extra_features(target, row):
    for key in row:
        partial = {k: v for k, v in row.items() if k != key}
        assert key in client_error(send(target, ":predict", {"instances": [partial]}), status=400)
        columns = {k: [v] for k, v in partial.items()}
        assert key in client_error(send(target, ":predict", {"inputs": columns}), status=400)
    assert "unexpected_feature" in client_error(
        send(target, ":predict", {"instances": [{**row, "unexpected_feature": 1.0}]}), status=400)
    ragged = {k: [v] * (2 if i == 0 else 3) for i, (k, v) in enumerate(row.items())}  # different batch sizes
    client_error(send(target, ":predict", {"inputs": ragged}))
    example = {k: v for k, v in row.items() if k != F.AMOUNT}  # the classify parser needs every feature
    client_error(send(target, ":classify", {"signature_name": F.CLASSIFY_SIGNATURE, "examples": [example]}))
    client_error(send(target, ":classify", {"signature_name": F.CLASSIFY_SIGNATURE, "examples": [{**row,
                                                                                                  F.CITY: None}]}))


@pytest.mark.slow
def test_unknown_model_version_label(target, row):
    body = {"instances": [row]}
    versions = [int(s["version"]) for s in requests.get(target.model_url, timeout=TIMEOUT).json()
                ["model_version_status"]]
    base = f"{target.rest_url}/v1/models"
    assert "no_such_model" in client_error(requests.post(f"{base}/no_such_model:predict", data=json.dumps(body),
                                                         timeout=TIMEOUT), status=404)
    client_error(requests.get(f"{base}/no_such_model", timeout=TIMEOUT), status=404)
    client_error(requests.get(f"{base}/no_such_model/metadata", timeout=TIMEOUT), status=404)
    missing = max(versions) + 12345
    assert str(missing) in client_error(send(target, f"/versions/{missing}:predict", body), status=404)
    client_error(send(target, f"/versions/{missing}", method="GET"), status=404)
    client_error(send(target, f"/versions/{missing}/metadata", method="GET"), status=404)
    client_error(send(target, "/versions/" + "9" * 40 + ":predict", body), status=400)
    # TF Serving answers an unknown label with INVALID_ARGUMENT (400), not NOT_FOUND.
    assert "no_such_label" in client_error(send(target, "/labels/no_such_label:predict", body))
    client_error(send(target, "/labels/no_such_label", method="GET"))
    client_error(requests.get(f"{base}", timeout=TIMEOUT), status=400)  # no model name
    client_error(requests.put(target.model_url + ":predict", data="{}", timeout=TIMEOUT), status=400)


@pytest.mark.slow
def test_oversized_batch(target, row):
    if target.local is None:
        pytest.skip("the 10,000-row limit is this server's; TF Serving has none")
    message = client_error(send(target, ":predict", {"instances": [row] * (MAX_BATCH_SIZE + 1)}), status=400)
    assert str(MAX_BATCH_SIZE) in message
    columns = {k: [v] * (MAX_BATCH_SIZE + 1) for k, v in row.items()}
    client_error(send(target, ":predict", {"inputs": columns}), status=400)
    client_error(send(target, ":classify", {"signature_name": F.CLASSIFY_SIGNATURE,
                                            "examples": [row] * (MAX_BATCH_SIZE + 1)}), status=400)
    response = send(target, ":predict", {"instances": [row] * MAX_BATCH_SIZE})  # the limit itself is fine
    assert response.status_code == 200 and len(response.json()["predictions"]) == MAX_BATCH_SIZE
    client = GrpcClient(target.grpc_target, timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError) as info:
        client.predict([row] * (MAX_BATCH_SIZE + 1))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and str(MAX_BATCH_SIZE) in info.value.details()
    client.close()
    assert_still_serving(target, row)


def test_a_model_base_that_does_not_exist_is_an_error_not_a_server_answering_404(tmp_path):
    from tests.helpers import run_fraudctl

    missing = tmp_path / "does" / "not" / "exist"
    proc = run_fraudctl("serve", "--model-base", missing, "--rest-port", "0", "--grpc-port", "0", timeout=180)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"base path {missing} is not a directory" in proc.stderr and "Pusher" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_declared_tensors_and_unknown_keys_are_refused_before_anything_is_converted(target, row):
    """A TensorProto may declare a shape and hold no values (TensorFlow would fill it): 10,000,000 declared
    strings are refused from the declaration, and an unknown input key is named before its tensor is read."""
    if target.local is None:
        pytest.skip("this server's limits")
    client = GrpcClient(target.grpc_target, timeout=TIMEOUT)
    key = next(k for k in sorted(row) if kind_of(k) == "string")
    cases = [([10_000_000], "declares 10000000 rows"),
             ([1, 10_000_000], "declares 10000000 elements but the tensor holds 0 value(s)")]
    for dims, expected in cases:
        request = client.predict_request([row])
        request.inputs[key].CopyFrom(_tensor(types_pb2.DT_STRING, dims))
        with pytest.raises(grpc.RpcError) as info:
            client.prediction.Predict(request, timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and expected in info.value.details(), \
            info.value.details()
    request = client.predict_request([row])
    request.inputs["zz_unknown"].CopyFrom(_tensor(types_pb2.DT_INVALID, [1]))  # unreadable, and not an input
    with pytest.raises(grpc.RpcError) as info:
        client.prediction.Predict(request, timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Sent extra: {zz_unknown}" in info.value.details(), info.value.details()
    client.close()
    assert_still_serving(target, row)


# --------------------------------------------------------------------------------------------------
# Fuzzing
# --------------------------------------------------------------------------------------------------
def _random_json(rng: random.Random, depth: int = 0):
    choice = rng.randrange(9 if depth < 3 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, -1, 2 ** 31, 2 ** 63, -2 ** 64, rng.randint(-10 ** 6, 10 ** 6)])
    if choice == 3:
        return rng.choice([0.0, -0.0, 1e-320, 3.4e38, 1e300, float("nan"), float("inf"), rng.uniform(-1e4, 1e4)])
    if choice == 4:
        return "".join(rng.choice(string.printable + "ñáé€😀\u0000") for _ in range(rng.randrange(0, 20)))
    if choice == 5:
        return {"b64": rng.choice(["", "QQ==", "not*base64", "QUJD", "QUJ"])}
    if choice == 6:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if choice == 7:
        return {rng.choice(["a", "b64", F.AMOUNT, ""]): _random_json(rng, depth + 1) for _ in range(rng.randrange(0, 3))}
    return [[[rng.random()]]]


def _wrong_kind(rng: random.Random, kind: str):
    return rng.choice(WRONG_VALUES[kind][:-1] if kind == "float" else WRONG_VALUES[kind])


def generate_request(rng: random.Random, row: dict) -> tuple[str, str, bytes, bool]:
    """(method, url suffix, body, must_fail). Most mutations make the request invalid for sure."""
    keys = list(row)
    instances = [dict(row) for _ in range(rng.randrange(1, 4))]
    body: object = {"instances": instances}
    suffix, method, must_fail = ":predict", "POST", True
    mutation = rng.randrange(16)
    if mutation == 0:  # a value of the wrong type
        key = rng.choice(keys)
        rng.choice(instances)[key] = _wrong_kind(rng, kind_of(key))
    elif mutation == 1:  # a missing feature
        del rng.choice(instances)[rng.choice(keys)]
    elif mutation == 2:  # an unknown feature
        rng.choice(instances)["".join(rng.choices(string.ascii_lowercase, k=8))] = _random_json(rng)
    elif mutation == 3:  # an unknown signature
        body = {"signature_name": "sig_" + "".join(rng.choices(string.ascii_letters, k=6)), "instances": instances}
    elif mutation == 4:  # a broken structure
        body = rng.choice([{"instances": row}, {"instances": "x"}, {"instances": 3}, {"inputs": []},
                           {"instances": [[row]]}, {"instances": [row, 1]}, {"instances": instances, "inputs": {}},
                           {"instance": instances}, [], {"signature_name": None, "instances": instances}])
    elif mutation == 5:  # truncated JSON
        text = json.dumps(body)
        return method, suffix, text[:rng.randrange(0, len(text) - 1)].encode(), True
    elif mutation == 6:  # binary garbage
        return method, suffix, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))), True
    elif mutation == 7:  # a path that names nothing
        suffix = rng.choice([f"/versions/{rng.randrange(1, 10 ** 12)}:predict", "/labels/nope:predict",
                             ":predictx", ":Predict/", "/versions/-1:predict", "/labels/:predict",
                             "/versions/1/labels/x:predict", "%2F..%2F:predict", ":classify"])
        if suffix == ":classify":
            body = {"examples": [{**row, rng.choice(keys): None}]}
    elif mutation == 8:  # deep nesting for one value
        key = rng.choice(keys)
        value = row[key]
        for _ in range(rng.randrange(2, 60)):
            value = [value]
        rng.choice(instances)[key] = value
    elif mutation == 9:  # ragged columns
        columns = {k: [v] * rng.randrange(1, 4) for k, v in row.items()}
        columns[rng.choice(keys)] = [row[keys[0]]] * 5 + [None]
        body = {"inputs": columns}
    elif mutation == 10:  # classify with bad examples
        example = dict(row)
        key = rng.choice(keys)
        example[key] = rng.choice([None, [[1]], {"a": 1}, [1, "a"], 2 ** 64])
        body = {"signature_name": F.CLASSIFY_SIGNATURE, "examples": [example],
                **({"context": {"x": [None]}} if rng.random() < 0.3 else {})}
        suffix = ":classify"
    elif mutation == 11:  # a wrong HTTP method
        method = rng.choice(["GET", "PUT", "DELETE", "PATCH"])
    elif mutation == 12:  # random JSON anywhere
        body = {"instances": [_random_json(rng) for _ in range(rng.randrange(1, 3))]}
    else:  # plausible values: may well be valid (200), must not be a 5xx
        must_fail = False
        for instance in instances:
            for key in rng.sample(keys, rng.randrange(1, 4)):
                kind = kind_of(key)
                if kind == "string":
                    instance[key] = rng.choice(["", "Lima", "ñandú", "x" * 3000, "\u0000", "😀", "R999"])
                elif kind == "float":
                    instance[key] = rng.choice([0.0, -1.0, -5.0, float("nan"), float("inf"), -float("inf"), 1e-30,
                                                3e38])
                else:
                    instance[key] = rng.choice([0, -1, 2 ** 62, -2 ** 63, 1780709400])
        if rng.random() < 0.3:  # the same as columns
            body = {"inputs": {k: [i[k] for i in instances] for k in keys}}
    return method, suffix, json.dumps(body).encode(), must_fail


@pytest.mark.slow
def test_fuzzing_rest(target, row):
    rng = random.Random(20260601)
    cases = [generate_request(rng, row) for _ in range(FUZZ_REST_REQUESTS)]
    problems: list[str] = []
    counts = {"2xx": 0, "4xx": 0}
    lock = threading.Lock()
    local = threading.local()

    def run(case):
        method, suffix, body, must_fail = case
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        response = send(target, suffix, data=body, method=method, session=session)
        problem = None
        if response.status_code >= 500:
            problem = f"{response.status_code} for {method} {suffix} {body[:300]!r}: {response.text[:300]}"
        elif response.status_code != 200:
            try:
                message = response.json().get("error")
            except ValueError:
                message = None
            if not (isinstance(message, str) and message):
                problem = f"no error message: {response.status_code} {response.text[:200]}"
        elif must_fail:
            problem = f"accepted a bad request: {method} {suffix} {body[:300]!r}"
        elif suffix == ":predict":  # NaN, +-Infinity, 3e38, -1 among the values: still a probability
            document = response.json()
            if "predictions" in document:  # row format
                scores = [p[F.SCORE_OUTPUT] if isinstance(p, dict) else p for p in document["predictions"]]
            else:  # columnar format
                outputs = document["outputs"]
                scores = outputs[F.SCORE_OUTPUT] if isinstance(outputs, dict) else outputs
            if not all(isinstance(x, float) and 0.0 <= x <= 1.0 for x in scores):
                problem = f"a 200 without a probability: {scores} for {body[:300]!r}"
        with lock:
            counts["2xx" if response.status_code < 300 else "4xx"] += 1
            if problem:
                problems.append(problem)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(run, cases))
    assert not problems, f"{len(problems)} bad answers, e.g.:\n" + "\n".join(problems[:10])
    assert counts["4xx"] >= 0.8 * FUZZ_REST_REQUESTS and counts["2xx"] > 0, counts
    assert_still_serving(target, row)


def _tensor(dtype, dims, **values) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]), **values)


@pytest.mark.slow
def test_fuzzing_grpc(target, row):
    import tensorflow as tf

    if not target.grpc_target:
        pytest.skip("no gRPC target")
    rng = random.Random(7)
    client = GrpcClient(target.grpc_target, timeout=TIMEOUT)
    keys = list(row)
    oversize_ok = target.local is not None  # shapes beyond this server's limits
    bad_tensors = [
        lambda: tf.make_tensor_proto(np.array([["x"]], dtype=object)),
        lambda: tf.make_tensor_proto(np.array([1.5], dtype=np.float64)),
        lambda: tf.make_tensor_proto(np.array([[1]], dtype=np.int64)),
        lambda: tf.make_tensor_proto(np.array(1.0, dtype=np.float32)),
        lambda: _tensor(types_pb2.DT_FLOAT, [3], tensor_content=b"\x00" * 5),
        lambda: _tensor(types_pb2.DT_INVALID, [1]),
        lambda: _tensor(types_pb2.DT_STRING, [5], string_val=[b"a", b"b", b"c"]),
        lambda: _tensor(types_pb2.DT_FLOAT, [-1], float_val=[1.0]),
        lambda: _tensor(types_pb2.DT_RESOURCE, [1]),
        lambda: _tensor(types_pb2.DT_FLOAT, [2, 0]),
    ] + ([lambda: _tensor(types_pb2.DT_FLOAT, [10 ** 9], float_val=[1.0]),
          lambda: _tensor(types_pb2.DT_STRING, [10 ** 12])] if oversize_ok else [])
    problems = []
    for i in range(FUZZ_GRPC_REQUESTS):
        request = client.predict_request([row] * rng.randrange(1, 3))
        mutation = rng.randrange(6)
        if mutation == 0:
            request.inputs[rng.choice(keys)].CopyFrom(rng.choice(bad_tensors)())
        elif mutation == 1:
            del request.inputs[rng.choice(keys)]
        elif mutation == 2:
            request.inputs["extra_" + str(i)].CopyFrom(tf.make_tensor_proto([1.0]))
        elif mutation == 3:
            request.model_spec.signature_name = rng.choice(["nope", F.CLASSIFY_SIGNATURE, F.EXAMPLES_SIGNATURE])
        elif mutation == 4:
            request.model_spec.name = rng.choice(["", "nope", F.MODEL_NAME.upper()])
        else:
            request.model_spec.version_label = rng.choice(["", "nope"])
            request.output_filter.append(rng.choice(["nope", F.SCORE_OUTPUT]))
        try:
            client.prediction.Predict(request, timeout=TIMEOUT)
            problems.append(f"accepted: mutation {mutation}: {request}"[:1000])
        except grpc.RpcError as exc:
            if exc.code() not in CLIENT_ERROR_CODES or not exc.details():
                problems.append(f"mutation {mutation}: {exc.code().name}: {exc.details()}")
    client.close()
    assert not problems, "\n".join(problems[:10])
    assert_still_serving(target, row)


@pytest.mark.slow
def test_rest_connections_are_bounded_and_silent_ones_closed(small_run, tmp_path, row):
    """Idle or slow-sending clients cannot hold the REST port: past --rest-max-connections a connection gets a
    503 with the reason; one that sends no complete request within --rest-idle-timeout-seconds is closed."""
    import socket
    import time

    from serving.process import start_server

    server = start_server(small_run.model_base, tmp_path / "server.log",
                          extra_args=["--rest-max-connections", "3", "--rest-idle-timeout-seconds", "2"])
    try:
        silent = [socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) for _ in range(3)]
        silent[0].sendall(b"POST /v1/models/x:predict HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as extra:
            answer = extra.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503") and b"too many connections" in answer, answer
        began = time.monotonic()
        for sock in silent:
            assert sock.recv(4096) == b""  # closed by the server: the idle timeout
            sock.close()
        assert time.monotonic() - began < 8
        url = f"{server.rest_url}/v1/models/{F.MODEL_NAME}:predict"
        response = requests.post(url, json={"instances": [row]}, timeout=TIMEOUT)
        assert response.status_code == 200  # the slots are free again
    finally:
        server.stop()
