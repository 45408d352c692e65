"""TF Serving's REST API (model_servers/http_rest_api_handler.cc, http_rest_api_util.cc, http_server.cc).

Routes (paths are matched case-insensitively, as upstream's `(?i)` regexes):
  GET  /v1/models/{m}[/versions/{n}|/labels/{l}]            model status
  GET  /v1/models/{m}[/versions/{n}|/labels/{l}]/metadata   signature defs
  POST /v1/models/{m}[/versions/{n}|/labels/{l}]:predict|:classify|:regress
  GET  <prometheus path>   only when the monitoring config enables it (404 otherwise, as upstream)
Any other /v1/ request is "Malformed request" (400); other paths are 404. Errors are `{"error": "..."}`.
"""
from __future__ import annotations

import logging
import re
import time
from urllib.parse import unquote

from google.protobuf import json_format
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Request, Response

from serving import errors, tensors
from serving.errors import ServingError
from serving.metrics import CONTENT_TYPE, ENTRYPOINT_REST, RUNTIME_NAME, ServingMetrics
from serving.servable import (CLASSIFY_METHOD, REGRESS_METHOD, classification_result, regression_result,
                              signature_def_map)

log = logging.getLogger("serving")

MAX_BODY_BYTES = 64 * 1024 * 1024  # far above MAX_BATCH_SIZE rows; beyond this: 413
_VERSION_OR_LABEL = r"(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
PREDICTION_PATH = re.compile(r"(?i)/v1/models/([^/:]+)" + _VERSION_OR_LABEL + r":(classify|regress|predict)")
STATUS_PATH = re.compile(r"(?i)/v1/models(?:/([^/:]+))?" + _VERSION_OR_LABEL + r"(?:/(metadata))?")
REST_PATH = re.compile(r"(?i)/v1/.*")
JSON = "application/json"
_INT64_MAX = 2 ** 63 - 1


class _LimitedRequest(Request):
    max_content_length = MAX_BODY_BYTES


def _proto_json(message) -> dict:
    return json_format.MessageToDict(message, including_default_value_fields=True, preserving_proto_field_name=True)


class RestApi:
    """A WSGI application; run it with any threaded WSGI server (server.py uses werkzeug's)."""

    def __init__(self, core, metrics: ServingMetrics, prometheus_path: str | None = None):
        self.core = core
        self.metrics = metrics
        self.prometheus_path = prometheus_path

    def __call__(self, environ, start_response):
        request = _LimitedRequest(environ)
        response = self.handle(request)
        return response(environ, start_response)

    def handle(self, request: Request) -> Response:
        path = _raw_path(request)
        if self.prometheus_path is not None and path == self.prometheus_path:
            if request.method != "GET":
                return Response(f"Unexpected method: {request.method}", 400, content_type="text/plain")
            return Response(self.metrics.exposition(), 200, content_type=CONTENT_TYPE)
        if not REST_PATH.fullmatch(path):
            return _json_error(404, f"Not found: {request.method} {path}")
        try:
            body = request.get_data(cache=False) if request.method == "POST" else b""
        except RequestEntityTooLarge:
            return _json_error(413, f"Request body larger than {MAX_BODY_BYTES} bytes")
        try:
            status, document = self.process(request.method, path, body)
        except ServingError as exc:
            return _json_error(exc.http_status, exc.message)
        except Exception as exc:  # a bug on our side: report it, keep serving
            log.exception("Internal error on %s %s", request.method, path)
            return _json_error(500, f"Internal error: {type(exc).__name__}: {exc}")
        return Response(tensors.dumps(document), status, content_type=JSON)

    # ------------------------------------------------------------------------------------------
    def process(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        malformed = errors.invalid(f"Malformed request: {method} {path}")
        if method == "POST":
            match = PREDICTION_PATH.fullmatch(path)
            if not match:
                raise malformed
            name, version, label, api = match.groups()
            return 200, self._inference(api.lower(), unquote(name), _version(version), _label(label), body)
        if method == "GET":
            match = STATUS_PATH.fullmatch(path)
            if not match:
                raise malformed
            name, version, label, metadata = match.groups()
            if not name:
                raise errors.invalid("Missing model name in request.")
            name, version, label = unquote(name), _version(version), _label(label)
            if metadata:
                return 200, self._metadata(name, version, label)
            return 200, self._status(name, version, label)
        raise malformed

    def _status(self, name, version, label) -> dict:
        from tensorflow_serving.apis import get_model_status_pb2

        response = get_model_status_pb2.GetModelStatusResponse()
        for number, state in self.core.status(name, version, label):
            item = response.model_version_status.add(version=number, state=state.state)
            item.status.error_code = errors.CODES[state.error_code][0]
            item.status.error_message = state.error_message
        return _proto_json(response)

    def _metadata(self, name, version, label) -> dict:
        from tensorflow_serving.apis import model_pb2

        servable = self.core.servable(name, version, label)
        spec = model_pb2.ModelSpec(name=name)
        spec.version.value = servable.version
        return {"model_spec": _proto_json(spec), "metadata": {"signature_def": _proto_json(signature_def_map(servable))}}

    def _inference(self, api: str, name: str, version, label, body: bytes) -> dict:
        started = time.perf_counter()
        resolved = {}
        status = errors.OK
        try:
            return self._run(api, name, version, label, body, resolved)
        except ServingError as exc:
            status = exc.code
            raise
        except Exception:
            status = errors.INTERNAL
            raise
        finally:
            servable = resolved.get("servable")
            self.metrics.record_request(model_name=name, api=api, entrypoint=ENTRYPOINT_REST, status=status,
                                        latency_us=(time.perf_counter() - started) * 1e6,
                                        model_version=servable.version if servable else None)

    def _run(self, api: str, name: str, version, label, body: bytes, resolved: dict) -> dict:
        doc = tensors.parse_json(body)
        if api == "predict":
            def input_dtypes(signature_name: str) -> dict:
                servable = resolved["servable"] = self.core.servable(name, version, label)
                resolved["signature"] = servable.signature(signature_name, for_rest=True)
                return resolved["signature"].input_dtypes()

            request = tensors.parse_predict(doc, input_dtypes)
            servable = resolved["servable"]
            outputs, runtime_us = servable.run(resolved["signature"], request.inputs)
            self.metrics.runtime_latency.observe(runtime_us, model_name=name, API=api, runtime=RUNTIME_NAME,
                                                 model_version=servable.version)
            return tensors.predict_response(outputs, request.format)
        examples = tensors.parse_examples(doc, api)
        servable = resolved["servable"] = self.core.servable(name, version, label)
        signature = servable.signature(examples.signature_name, for_rest=True)
        self.metrics.request_example_counts.observe(len(examples.serialized), model=name)
        self.metrics.request_example_count_total.inc(len(examples.serialized), model=name)
        if api == "classify":
            outputs, runtime_us = servable.run_examples(signature, examples.serialized, CLASSIFY_METHOD)
            result = classification_result(outputs, len(examples.serialized))
            document = tensors.classification_response(result)
        else:
            outputs, runtime_us = servable.run_examples(signature, examples.serialized, REGRESS_METHOD)
            document = tensors.regression_response(regression_result(outputs, len(examples.serialized)))
        self.metrics.runtime_latency.observe(runtime_us, model_name=name, API=api, runtime=RUNTIME_NAME,
                                             model_version=servable.version)
        return document


def _raw_path(request: Request) -> str:
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if raw:
        path = raw.split("?", 1)[0]
        if path.startswith(("http://", "https://")):  # absolute-form request target
            path = "/" + path.split("/", 3)[-1] if path.count("/") >= 3 else "/"
        return path
    return request.path


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    value = int(text) if len(text) <= 20 else _INT64_MAX + 1
    if value > _INT64_MAX:
        raise errors.invalid(f"Failed to convert version: {text} to numeric.")
    return value


def _label(text: str | None) -> str | None:
    return None if text is None else unquote(text)


def _json_error(status: int, message: str) -> Response:
    return Response(tensors.dumps({"error": message}), status, content_type=JSON)
