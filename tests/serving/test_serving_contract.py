"""TF Serving's contract (docs/tf-serving-contract.md) over REST and gRPC with the official client.

Runs against the local server (`fraudctl serve` on the pipeline's pushed model, two versions labelled
stable/canary by serving/models.config), or against any TF Serving named by TFSERVING_REST_URL /
TFSERVING_GRPC_TARGET (and TFSERVING_LABELS="stable,canary" if its config has labels), e.g.
`docker compose -f serving/docker-compose.yml up` where Docker exists.
"""
from __future__ import annotations

import base64
import json
import math

import grpc
import numpy as np
import pytest
import requests
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc)

from fraud import features as F
from serving.client_grpc import GrpcClient, input_arrays, to_example
from serving.example import example_transaction, typed
from tests.helpers import CURL_PRELUDE, readme_block

pytestmark = pytest.mark.slow
TIMEOUT = 10  # seconds, on every call
CLASSIFY_METHOD = "tensorflow/serving/classify"


@pytest.fixture(scope="module")
def local(target):
    if target.local is None:
        pytest.skip("needs the local server (a TFSERVING_REST_URL target is set)")
    return target.local


@pytest.fixture(scope="module")
def channel(target):
    if not target.grpc_target:
        pytest.skip("no gRPC target")
    ch = grpc.insecure_channel(target.grpc_target)
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


@pytest.fixture(scope="module")
def served_inputs(target) -> tuple:
    """The raw inputs of the served model's serving_default signature (from its metadata)."""
    document = requests.get(target.model_url + "/metadata", timeout=TIMEOUT).json()
    return tuple(sorted(document["metadata"]["signature_def"]["signature_def"][F.SERVING_SIGNATURE]["inputs"]))


@pytest.fixture
def transactions(served_inputs):
    def make(n=3):
        base = [example_transaction(served_inputs),
                example_transaction(served_inputs, **{F.AMOUNT: 4200.0, F.CITY: "Cusco", F.HOME_CITY: "Madrid",
                                                      F.CURRENCY: "USD", F.DEVICE_TYPE: "web", F.OS_VERSION: "web",
                                                      F.TRANSACTION_TYPE: "reservation_deposit"}),
                example_transaction(served_inputs, **{F.AMOUNT: 12.0, F.USER_AGE: float("nan"),
                                                      F.HOME_CITY: F.MISSING})]
        return [typed(row) for row in (base * n)[:n]]
    return make


def get(target, suffix="", **kw):
    return requests.get(target.model_url + suffix, timeout=TIMEOUT, **kw)


def post(target, suffix, body=None, data=None):
    if body is not None:  # json.dumps writes NaN as TF Serving reads it (requests' json= refuses NaN)
        data = json.dumps(body)
    return requests.post(target.model_url + suffix, data=data, timeout=TIMEOUT,
                         headers={"Content-Type": "application/json"})


def available_versions(target) -> list[int]:
    document = get(target).json()
    return sorted(int(s["version"]) for s in document["model_version_status"] if s["state"] == "AVAILABLE")


def assert_error(response, status):
    assert response.status_code == status, response.text
    document = response.json()
    assert set(document) == {"error"} and isinstance(document["error"], str) and document["error"]
    return document["error"]


# --------------------------------------------------------------------------------------------------
# REST: status and metadata
# --------------------------------------------------------------------------------------------------
def test_rest_model_status(target):
    response = get(target)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    statuses = response.json()["model_version_status"]
    available = [s for s in statuses if s["state"] == "AVAILABLE"]
    assert available, statuses
    for status in available:
        assert status["version"].isdigit()  # int64 in proto JSON: a string
        assert status["status"] == {"error_code": "OK", "error_message": ""}


def test_rest_status_of_one_version_and_label(target):
    versions = available_versions(target)
    for version in versions:
        statuses = get(target, f"/versions/{version}").json()["model_version_status"]
        assert [(s["version"], s["state"]) for s in statuses] == [(str(version), "AVAILABLE")]
    assert_error(get(target, f"/versions/{max(versions) + 1000}"), 404)
    for label in target.labels:
        statuses = get(target, f"/labels/{label}").json()["model_version_status"]
        assert len(statuses) == 1 and statuses[0]["state"] == "AVAILABLE"
        if target.local:
            assert int(statuses[0]["version"]) == target.local.labels[label]


def test_rest_metadata(target):
    versions = available_versions(target)
    document = get(target, "/metadata").json()
    assert document["model_spec"]["name"] == F.MODEL_NAME
    assert int(document["model_spec"]["version"]) == max(versions)  # no version asked: the latest
    signatures = document["metadata"]["signature_def"]["signature_def"]
    serving = signatures[F.SERVING_SIGNATURE]
    # Exactly the inputs fraud.features declares for one of its feature sets: no drift between the two.
    assert set(serving["inputs"]) in [set(F.model_inputs(fs)) for fs in F.FEATURE_SETS]
    assert set(serving["outputs"]) == {F.SCORE_OUTPUT}
    assert serving["inputs"][F.AMOUNT]["dtype"] == "DT_FLOAT"
    assert serving["inputs"][F.EVENT_TIME]["dtype"] == "DT_INT64"
    assert serving["inputs"][F.CITY]["dtype"] == "DT_STRING"
    assert signatures[F.CLASSIFY_SIGNATURE]["method_name"] == CLASSIFY_METHOD
    assert set(signatures[F.CLASSIFY_SIGNATURE]["inputs"]) == {F.CLASSIFY_INPUT}
    assert set(signatures[F.EXAMPLES_SIGNATURE]["inputs"]) == {F.EXAMPLES_INPUT}
    pinned = get(target, f"/versions/{min(versions)}/metadata").json()
    assert int(pinned["model_spec"]["version"]) == min(versions)


# --------------------------------------------------------------------------------------------------
# REST: predict (row, columnar), classify
# --------------------------------------------------------------------------------------------------
def test_rest_predict_row_format(target, transactions):
    rows = transactions(3)
    response = post(target, ":predict", {"signature_name": F.SERVING_SIGNATURE, "instances": rows})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    # One output: a flat list of values, one per instance (as TF Serving does).
    assert len(predictions) == 3 and all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in predictions)
    default = post(target, ":predict", {"instances": rows}).json()["predictions"]  # serving_default implied
    assert default == predictions


def test_rest_predict_columnar_format_matches_row_format(target, transactions):
    rows = transactions(3)
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    response = post(target, ":predict", {"signature_name": F.SERVING_SIGNATURE, "inputs": columns})
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    row = post(target, ":predict", {"instances": rows}).json()["predictions"]
    assert outputs == pytest.approx(row, rel=1e-6)


def test_rest_accepts_nan_infinity_and_b64(target, served_inputs):
    row = typed(example_transaction(served_inputs))
    special = {F.USER_AGE: "NaN", F.AMOUNT: "Infinity", F.CITY: '{"b64": "%s"}' % base64.b64encode(b"Lima").decode()}
    text = '{"instances": [{' + ", ".join(
        f'"{k}": {special[k] if k in special else json.dumps(v)}' for k, v in row.items()) + "}]}"
    response = post(target, ":predict", data=text)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1
    plain = dict(row, **{F.USER_AGE: float("nan"), F.AMOUNT: 185.0})
    b64 = dict(plain, **{F.CITY: {"b64": base64.b64encode(row[F.CITY].encode()).decode()}})
    both = post(target, ":predict", {"instances": [plain, b64]}).json()["predictions"]
    assert both[0] == pytest.approx(both[1])  # {"b64": ...} decodes to the same string


def test_rest_classify(target, transactions):
    rows = transactions(2)
    response = post(target, ":classify", {"signature_name": F.CLASSIFY_SIGNATURE, "examples": rows})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 2
    scores = post(target, ":predict", {"instances": rows}).json()["predictions"]
    for result, score in zip(results, scores):
        assert [label for label, _ in result] == ["0", "1"]
        assert result[0][1] + result[1][1] == pytest.approx(1.0, abs=1e-5)
        assert result[1][1] == pytest.approx(score, rel=1e-5, abs=1e-7)


def test_rest_classify_with_context(target, transactions):
    row = transactions(1)[0]
    shared = {k: row[k] for k in (F.CURRENCY, F.CITY, F.RESTAURANT_ID)}
    own = {k: v for k, v in row.items() if k not in shared}
    with_context = post(target, ":classify", {"signature_name": F.CLASSIFY_SIGNATURE, "context": shared,
                                              "examples": [own, own]})
    assert with_context.status_code == 200, with_context.text
    plain = post(target, ":classify", {"signature_name": F.CLASSIFY_SIGNATURE, "examples": [row]}).json()
    assert with_context.json()["results"][0][1][1] == pytest.approx(plain["results"][0][1][1], rel=1e-5)


def test_rest_predict_by_version_and_label(target, transactions):
    rows = transactions(1)
    for version in available_versions(target):
        response = post(target, f"/versions/{version}:predict", {"instances": rows})
        assert response.status_code == 200, response.text
    for label in target.labels:
        response = post(target, f"/labels/{label}:predict", {"instances": rows})
        assert response.status_code == 200, response.text


# --------------------------------------------------------------------------------------------------
# REST: errors in TF Serving's format
# --------------------------------------------------------------------------------------------------
def test_rest_errors(target, transactions):
    rows = transactions(1)
    assert "JSON Parse error" in assert_error(post(target, ":predict", data="{not json"), 400)
    assert_error(requests.post(f"{target.rest_url}/v1/models/no_such_model:predict", json={"instances": rows},
                               timeout=TIMEOUT), 404)
    assert_error(requests.get(f"{target.rest_url}/v1/models/no_such_model", timeout=TIMEOUT), 404)
    assert_error(post(target, f"/versions/{max(available_versions(target)) + 1000}:predict", {"instances": rows}),
                 404)
    assert "not found in signature def" in assert_error(
        post(target, ":predict", {"signature_name": "nope", "instances": rows}), 400)
    assert "Missing 'inputs' or 'instances' key" in assert_error(post(target, ":predict", {"rows": rows}), 400)
    message = assert_error(post(target, ":predict", {"instances": [{**rows[0], F.AMOUNT: "a lot"}]}), 400)
    assert F.AMOUNT in message and "float" in message
    assert "Malformed request" in assert_error(get(target, ":predict"), 400)
    assert_error(post(target, ":classify", {"examples": rows}), 400)  # serving_default is not a classify signature
    assert_error(post(target, ":regress", {"signature_name": F.CLASSIFY_SIGNATURE, "examples": rows}), 400)


# --------------------------------------------------------------------------------------------------
# gRPC with the official tensorflow-serving-api client
# --------------------------------------------------------------------------------------------------
def test_grpc_model_status(target, model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = F.MODEL_NAME
    response = model_stub.GetModelStatus(request, timeout=TIMEOUT)
    available = [s.version for s in response.model_version_status
                 if s.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE]
    assert sorted(available) == available_versions(target)
    for label in target.labels:
        request.model_spec.version_label = label
        response = model_stub.GetModelStatus(request, timeout=TIMEOUT)
        assert len(response.model_version_status) == 1


def test_grpc_metadata(target, stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = F.MODEL_NAME
    response = stub.GetModelMetadata(request, timeout=TIMEOUT)
    assert response.model_spec.name == F.MODEL_NAME
    assert response.model_spec.version.value == max(available_versions(target))
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    assert set(signatures.signature_def[F.SERVING_SIGNATURE].inputs) in [set(F.model_inputs(fs))
                                                                          for fs in F.FEATURE_SETS]
    assert signatures.signature_def[F.CLASSIFY_SIGNATURE].method_name == CLASSIFY_METHOD


def test_grpc_predict_matches_rest(target, stub, transactions):
    import tensorflow as tf

    rows = transactions(3)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = F.MODEL_NAME
    request.model_spec.signature_name = F.SERVING_SIGNATURE
    for key, values in input_arrays(rows).items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(values))
    response = stub.Predict(request, timeout=TIMEOUT)
    assert response.model_spec.name == F.MODEL_NAME
    assert response.model_spec.signature_name == F.SERVING_SIGNATURE
    assert response.model_spec.version.value == max(available_versions(target))
    scores = tf.make_ndarray(response.outputs[F.SCORE_OUTPUT])
    assert scores.shape == (3,) and scores.dtype == np.float32
    rest = post(target, ":predict", {"instances": rows}).json()["predictions"]
    np.testing.assert_allclose(scores, rest, rtol=1e-6)


def test_grpc_classify(stub, transactions):
    rows = transactions(2)
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = F.MODEL_NAME
    request.model_spec.signature_name = F.CLASSIFY_SIGNATURE
    request.input.example_list.examples.extend(to_example(r) for r in rows)
    response = stub.Classify(request, timeout=TIMEOUT)
    assert len(response.result.classifications) == 2
    for item in response.result.classifications:
        assert [c.label for c in item.classes] == ["0", "1"]
        assert sum(c.score for c in item.classes) == pytest.approx(1.0, abs=1e-5)


def test_grpc_version_label_and_errors(target, transactions):
    rows = transactions(1)
    for label in target.labels:
        client = GrpcClient(target.grpc_target, label=label, timeout=TIMEOUT)
        scores, version = client.predict(rows)
        assert scores.shape == (1,)
        if target.local:
            assert version == target.local.labels[label]
        client.close()
    versions = available_versions(target)
    for kwargs, code in (({"model_name": "no_such_model"}, grpc.StatusCode.NOT_FOUND),
                         ({"version": max(versions) + 1000}, grpc.StatusCode.NOT_FOUND),
                         ({"label": "no_such_label"}, grpc.StatusCode.INVALID_ARGUMENT)):
        client = GrpcClient(target.grpc_target, timeout=TIMEOUT, **kwargs)
        with pytest.raises(grpc.RpcError) as info:
            client.predict(rows)
        assert info.value.code() == code and info.value.details()
        client.close()
    client = GrpcClient(target.grpc_target, timeout=TIMEOUT)
    request = client.predict_request(rows)
    request.inputs[F.AMOUNT].CopyFrom(__import__("tensorflow").make_tensor_proto(["not a number"]))
    with pytest.raises(grpc.RpcError) as info:
        client.prediction.Predict(request, timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    request = client.predict_request(rows)
    request.model_spec.signature_name = "nope"
    with pytest.raises(grpc.RpcError) as info:
        client.prediction.Predict(request, timeout=TIMEOUT)
    assert info.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
    client.close()


# --------------------------------------------------------------------------------------------------
# Local server only: same numbers as the SavedModel in-process, labels as configured, warm-up
# --------------------------------------------------------------------------------------------------
def test_scores_equal_the_savedmodel_called_in_process(target, local, transactions):
    import tensorflow as tf

    rows = transactions(3)
    version = local.labels["stable"]
    signature = tf.saved_model.load(str(local.base / str(version))).signatures[F.SERVING_SIGNATURE]
    expected = signature(**{k: tf.constant(v) for k, v in input_arrays(rows).items()})[F.SCORE_OUTPUT].numpy()
    rest = post(target, "/labels/stable:predict", {"instances": rows}).json()["predictions"]
    np.testing.assert_allclose(rest, expected, rtol=1e-6)
    assert all(not math.isnan(x) for x in rest)


def test_versions_serve_under_their_labels(target, local, transactions):
    statuses = {int(s["version"]): s["state"] for s in get(target).json()["model_version_status"]}
    assert statuses == {v: "AVAILABLE" for v in local.versions}
    client = GrpcClient(target.grpc_target, timeout=TIMEOUT)
    _, version = client.predict(transactions(1))
    client.close()
    assert version == max(local.versions)  # no label: the highest version (the canary)


def test_trainer_writes_synthetic_warmup_and_server_replays_it(small_run, local):
    from serving import warmup
    from serving.servable import read_signature_defs

    version_dir = small_run.versions()[-1]
    logs = warmup.read_warmup_logs(version_dir)
    assert 0 < len(logs) <= warmup.MAX_WARMUP_RECORDS
    assert {log.WhichOneof("log_type") for log in logs} == {"predict_log", "classify_log"}
    import tensorflow as tf

    for log in logs:
        if log.WhichOneof("log_type") == "predict_log":
            request = log.predict_log.request
            assert request.model_spec.name == F.MODEL_NAME
            assert set(request.inputs) == set(read_signature_defs(version_dir)[F.SERVING_SIGNATURE].inputs)
            assert not set(request.inputs) & set(F.PASSTHROUGH_STRING_COLUMNS + (F.LABEL,))  # no ids, no label
            cities = tf.make_ndarray(request.inputs[F.CITY])
            assert {c.decode() for c in cities} <= set(F.CITY_COORDS)
    text = local.server.log()
    for version in local.versions:
        assert f"Successfully loaded servable version {{name: {F.MODEL_NAME} version: {version}}}" in text
    assert text.count("Finished reading warmup data") >= len(local.versions)


# --------------------------------------------------------------------------------------------------
# The README's request and serving commands, as written (only the ports are this test server's)
# --------------------------------------------------------------------------------------------------
def test_the_readmes_rest_request_is_answered(target):
    body = json.loads(readme_block("A REST client of TF Serving sends every raw input", "json"))
    response = requests.post(target.model_url + ":predict", json=body, timeout=TIMEOUT)
    assert response.status_code == 200, response.text[:1000]
    (score,) = response.json()["predictions"]
    score = score[F.SCORE_OUTPUT] if isinstance(score, dict) else score
    assert 0.0 <= score <= 1.0


def test_the_readmes_serving_commands_run_as_written(local, target):
    import subprocess
    import sys

    from tests.helpers import REPO, require_system_tool

    require_system_tool("curl", "curl")
    rest = target.rest_url.removeprefix("http://")
    lines = [line for line in readme_block("`serving/README.md` covers requests", "bash").splitlines() if line]
    assert len(lines) == 3
    for line in lines:
        command = (line.replace("localhost:8501", rest).replace("localhost:8500", target.grpc_target)
                   .replace(".venv/bin/python", sys.executable))
        proc = subprocess.run(command, shell=True, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (line, proc.stdout[-1000:], proc.stderr[-1000:])
        assert "AVAILABLE" in proc.stdout, (line, proc.stdout[-1000:])


def test_the_serving_readmes_requests_run_as_written(local, target, tmp_path):
    """serving/README.md's curl and Python blocks, line for line, against the local server started with the
    labelled config `fraudctl serve-config` writes (only host ports and the model base are substituted)."""
    import os
    import subprocess
    import sys

    from tests.helpers import REPO, require_system_tool

    require_system_tool("curl", "curl")
    script = readme_block("### curl", "bash", "serving/README.md") + \
        readme_block("### Python", "bash", "serving/README.md")
    script = (script.replace("localhost:8501", target.rest_url.removeprefix("http://"))
              .replace("localhost:8500", target.grpc_target).replace(".venv/bin/python", sys.executable)
              .replace(f"runs/srv/serving/{F.MODEL_NAME}", str(local.base)))
    # every curl must succeed (HTTP < 400) and the script stops at the first failing line
    proc = subprocess.run(["bash", "-c", CURL_PRELUDE + script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
    out = proc.stdout
    for expected in ('"AVAILABLE"', '"predictions"', '"outputs"', '"results"', '"signature_def"', F.SCORE_OUTPUT):
        assert expected in out, expected
    assert ":tensorflow:serving:request_count" in out  # the Prometheus endpoint answered
