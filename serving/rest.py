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

from aiohttp import web
from google.protobuf import json_format

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


def _proto_json(message) -> dict:
    return json_format.MessageToDict(message, including_default_value_fields=True, preserving_proto_field_name=True)


class RestApi:
    """The REST API as an aiohttp handler (`app.router.add_route("*", "/{tail:.*}", api.handle)`), on the event
    loop of serving.frontend; model calls go through its Runner."""

    def __init__(self, core, metrics: ServingMetrics, runner, prometheus_path: str | None = None):
        self.core = core
        self.metrics = metrics
        self.runner = runner
        self.prometheus_path = prometheus_path

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        path = _raw_path(request)
        if self.prometheus_path is not None and path == self.prometheus_path:
            if request.method != "GET":
                return web.Response(text=f"Unexpected method: {request.method}", status=400)
            return web.Response(body=self.metrics.exposition().encode(), headers={"Content-Type": CONTENT_TYPE})
        if not REST_PATH.fullmatch(path):
            return _json_error(404, f"Not found: {request.method} {path}")
        try:
            body = await request.read() if request.method == "POST" else b""
        except web.HTTPRequestEntityTooLarge:
            return _json_error(413, f"Request body larger than {MAX_BODY_BYTES} bytes")
        try:
            status, document = await self.process(request.method, path, body)
        except ServingError as exc:
            return _json_error(exc.http_status, exc.message)
        except Exception as exc:  # a bug on our side: report it, keep serving
            log.exception("Internal error on %s %s", request.method, path)
            return _json_error(500, f"Internal error: {type(exc).__name__}: {exc}")
        return web.Response(body=tensors.dumps(document), status=status, content_type=JSON)

    # ------------------------------------------------------------------------------------------
    async def process(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        malformed = errors.invalid(f"Malformed request: {method} {path}")
        if method == "POST":
            match = PREDICTION_PATH.fullmatch(path)
            if not match:
                raise malformed
            name, version, label, api = match.groups()
            return 200, await self._inference(api.lower(), unquote(name), _version(version), _label(label), body)
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

    async def _inference(self, api: str, name: str, version, label, body: bytes) -> dict:
        started = time.perf_counter()
        resolved = {}
        status = errors.OK
        try:
            return await self._run(api, name, version, label, body, resolved)
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

    async def _run(self, api: str, name: str, version, label, body: bytes, resolved: dict) -> dict:
        doc = tensors.parse_json(body)
        if api == "predict":
            def input_dtypes(signature_name: str) -> dict:
                servable = resolved["servable"] = self.core.servable(name, version, label)
                resolved["signature"] = servable.signature(signature_name, for_rest=True)
                return resolved["signature"].input_dtypes()

            request = tensors.parse_predict(doc, input_dtypes)
            servable = resolved["servable"]
            outputs, runtime_us = await self.runner.run(servable.prepare(resolved["signature"], request.inputs))
            self.metrics.runtime_latency.observe(runtime_us, model_name=name, API=api, runtime=RUNTIME_NAME,
                                                 model_version=servable.version)
            return tensors.predict_response(outputs, request.format)
        examples = tensors.parse_examples(doc, api)
        servable = resolved["servable"] = self.core.servable(name, version, label)
        signature = servable.signature(examples.signature_name, for_rest=True)
        self.metrics.request_example_counts.observe(len(examples.serialized), model=name)
        self.metrics.request_example_count_total.inc(len(examples.serialized), model=name)
        method = CLASSIFY_METHOD if api == "classify" else REGRESS_METHOD
        outputs, runtime_us = await self.runner.run(servable.prepare_examples(signature, examples.serialized, method))
        if api == "classify":
            document = tensors.classification_response(classification_result(outputs, len(examples.serialized)))
        else:
            document = tensors.regression_response(regression_result(outputs, len(examples.serialized)))
        self.metrics.runtime_latency.observe(runtime_us, model_name=name, API=api, runtime=RUNTIME_NAME,
                                             model_version=servable.version)
        return document


def _raw_path(request: web.Request) -> str:
    path = request.raw_path.split("?", 1)[0]
    if path.startswith(("http://", "https://")):  # absolute-form request target
        path = "/" + path.split("/", 3)[-1] if path.count("/") >= 3 else "/"
    return path


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    value = int(text) if len(text) <= 20 else _INT64_MAX + 1
    if value > _INT64_MAX:
        raise errors.invalid(f"Failed to convert version: {text} to numeric.")
    return value


def _label(text: str | None) -> str | None:
    return None if text is None else unquote(text)


def _json_error(status: int, message: str) -> web.Response:
    return web.Response(body=tensors.dumps({"error": message}), status=status, content_type=JSON)
