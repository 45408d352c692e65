"""TF Serving's gRPC API with the official protos (tensorflow-serving-api):
PredictionService (Predict, Classify, Regress, GetModelMetadata; MultiInference answers UNIMPLEMENTED)
and ModelService (GetModelStatus, HandleReloadConfigRequest)."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import grpc
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from serving import errors, tensor_proto, tensors
from serving.config import ConfigError, model_settings_from_proto
from serving.errors import ServingError
from serving.metrics import ENTRYPOINT_GRPC, RUNTIME_NAME
from serving.servable import (CLASSIFY_METHOD, REGRESS_METHOD, check_input_names, classification_result,
                              regression_result, signature_def_map)

log = logging.getLogger("serving")
SIGNATURE_DEF_FIELD = "signature_def"  # GetModelMetadataImpl::kSignatureDef


def check_inside(model, roots: tuple[Path, ...]) -> None:
    """ConfigError unless the model's base path (symbolic links resolved) is inside one of `roots`."""
    base = Path(os.path.realpath(model.base_path))
    if not any(base == root or root in base.parents for root in roots):
        raise ConfigError(f"model {model.name!r}: base path {model.base_path} is outside the allowed model roots "
                          f"({', '.join(map(str, roots))}); start the server with --model-root to allow another")


def _spec(model_spec):
    """ModelSpec -> (name, version or None, label or None)."""
    choice = model_spec.WhichOneof("version_choice")
    version = model_spec.version.value if choice == "version" else None
    label = model_spec.version_label if choice == "version_label" else None
    return model_spec.name, version, label


async def _abort(context, exc: ServingError):
    await context.abort(getattr(grpc.StatusCode, exc.code), exc.message)


class _Timed:
    """Records request_count / request_latency for one gRPC call, as util.cc's Record* functions do."""

    def __init__(self, metrics, model_name: str, api: str):
        self.metrics, self.model_name, self.api = metrics, model_name, api
        self.version = None
        self.status = errors.OK
        self.started = time.perf_counter()

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, ServingError):
            self.status = exc.code
        elif exc is not None:
            self.status = errors.INTERNAL
        self.metrics.record_request(model_name=self.model_name, api=self.api, entrypoint=ENTRYPOINT_GRPC,
                                    status=self.status, latency_us=(time.perf_counter() - self.started) * 1e6,
                                    model_version=self.version)
        return False


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Asynchronous servicer (grpc.aio): requests are handled on the event loop, model calls through
    serving.frontend.Runner."""

    def __init__(self, core, metrics, runner):
        self.core = core
        self.metrics = metrics
        self.runner = runner

    async def _guard(self, context, coroutine):
        try:
            return await coroutine
        except ServingError as exc:
            await _abort(context, exc)
        except Exception as exc:  # a bug on our side: report it, keep serving
            if isinstance(exc, grpc.aio.AbortError):
                raise
            log.exception("Internal error in a gRPC call")
            await context.abort(grpc.StatusCode.INTERNAL, f"Internal error: {type(exc).__name__}: {exc}")

    async def Predict(self, request, context):
        return await self._guard(context, self._predict(request))

    async def _predict(self, request):
        name, version, label = _spec(request.model_spec)
        with _Timed(self.metrics, name, "Predict") as timed:
            servable = self.core.servable(name, version, label)
            timed.version = servable.version
            signature = servable.signature(request.model_spec.signature_name)
            packed = (tensor_proto.pack_protos(signature.pack_groups, request.inputs)
                      if signature.packed is not None else None)
            if packed is None:
                check_input_names(signature, request.inputs)  # before converting anything
                inputs = {key: tensor_proto.tensor_proto_to_array(proto, key)
                          for key, proto in request.inputs.items()}
            else:
                inputs = None
            call = servable.prepare(signature, inputs, request.output_filter, packed=packed)
            outputs, runtime_us = await self.runner.run(call)
            self.metrics.runtime_latency.observe(runtime_us, model_name=name, API="Predict", runtime=RUNTIME_NAME,
                                                 model_version=servable.version)
            response = predict_pb2.PredictResponse()
            self._fill_spec(response.model_spec, servable, signature.name)
            for key, array in outputs.items():
                response.outputs[key].CopyFrom(tensor_proto.array_to_tensor_proto(array))
            return response

    async def Classify(self, request, context):
        return await self._guard(context, self._examples(request, "Classify"))

    async def Regress(self, request, context):
        return await self._guard(context, self._examples(request, "Regress"))

    async def _examples(self, request, api: str):
        name, version, label = _spec(request.model_spec)
        with _Timed(self.metrics, name, api) as timed:
            servable = self.core.servable(name, version, label)
            timed.version = servable.version
            signature = servable.signature(request.model_spec.signature_name)
            serialized = tensors.serialized_from_input(request.input)
            self.metrics.request_example_counts.observe(len(serialized), model=name)
            self.metrics.request_example_count_total.inc(len(serialized), model=name)
            method = CLASSIFY_METHOD if api == "Classify" else REGRESS_METHOD
            outputs, runtime_us = await self.runner.run(servable.prepare_examples(signature, serialized, method))
            self.metrics.runtime_latency.observe(runtime_us, model_name=name, API=api, runtime=RUNTIME_NAME,
                                                 model_version=servable.version)
            if api == "Classify":
                response = classification_pb2.ClassificationResponse(
                    result=classification_result(outputs, len(serialized)))
            else:
                response = regression_pb2.RegressionResponse(result=regression_result(outputs, len(serialized)))
            self._fill_spec(response.model_spec, servable, signature.name)
            return response

    async def MultiInference(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not implemented by this server")

    async def GetModelMetadata(self, request, context):
        return await self._guard(context, self._metadata(request))

    async def _metadata(self, request):
        if not request.metadata_field:
            raise errors.invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise errors.invalid(f"Metadata field {field} is not supported")
        name, version, label = _spec(request.model_spec)
        servable = self.core.servable(name, version, label)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = name
        response.model_spec.version.value = servable.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_def_map(servable))
        return response

    @staticmethod
    def _fill_spec(spec, servable, signature_name: str) -> None:
        spec.name = servable.model_name
        spec.version.value = servable.version
        spec.signature_name = signature_name


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus, and HandleReloadConfigRequest only when the server was started with
    --enable-reload-config (it needs no credentials: any caller could load or unload models), and then only for
    base paths inside the allowed model roots."""

    def __init__(self, core, runner, *, reload_roots: tuple[Path, ...] | None = None):
        self.core = core
        self.runner = runner
        self.reload_roots = reload_roots  # None: reloading is disabled

    async def GetModelStatus(self, request, context):
        try:
            if not request.HasField("model_spec"):
                raise errors.invalid("Missing ModelSpec")
            name, version, label = _spec(request.model_spec)
            response = get_model_status_pb2.GetModelStatusResponse()
            for number, state in self.core.status(name, version, label):
                item = response.model_version_status.add(version=number, state=state.state)
                item.status.error_code = errors.CODES[state.error_code][0]
                item.status.error_message = state.error_message
            return response
        except ServingError as exc:
            await _abort(context, exc)

    async def HandleReloadConfigRequest(self, request, context):
        response = model_management_pb2.ReloadConfigResponse()
        if self.reload_roots is None:
            response.status.error_code = errors.CODES[errors.FAILED_PRECONDITION][0]
            response.status.error_message = (
                "HandleReloadConfigRequest is disabled on this server: it takes no credentials, so any caller "
                "could load a model from anywhere or unload the served one. Change --model-config-file (with "
                "--model-config-poll-seconds), or start the server with --enable-reload-config")
            return response
        try:
            models = model_settings_from_proto(request.config)
            for model in models:
                check_inside(model, self.reload_roots)
        except ConfigError as exc:
            response.status.error_code = errors.CODES[errors.INVALID_ARGUMENT][0]
            response.status.error_message = str(exc)
            return response
        # Loading models blocks: off the event loop. Like TF Serving, answer once the config has been acted upon.
        await self.runner.blocking(self._reload, models)
        return response

    def _reload(self, models) -> None:
        self.core.apply(models)
        self.core.poll()
