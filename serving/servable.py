"""One loaded model version: its SavedModel signatures, called the way TF Serving calls them.

Inputs are checked against the signature (names, dtypes, shapes, equal batch sizes) before TensorFlow runs,
so a client mistake is an INVALID_ARGUMENT with a readable message rather than a graph error.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from fraud.errors import FraudError
from serving import errors
from serving.errors import ServingError, invalid
from serving.tensors import MAX_BATCH_SIZE, dtype_string, tf_error_message

DEFAULT_SIGNATURE = "serving_default"  # kDefaultServingSignatureDefKey
INIT_OP_SIGNATURE = "__saved_model_init_op"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
CLASSIFY_INPUTS = "inputs"  # kClassifyInputs / kRegressInputs
CLASSIFY_OUTPUT_CLASSES = "classes"
CLASSIFY_OUTPUT_SCORES = "scores"
REGRESS_OUTPUTS = "outputs"


class LoadError(FraudError):
    """A model version that cannot be loaded (unreadable or invalid SavedModel); the message names the file."""


@dataclass(frozen=True)
class InputSpec:
    dtype: int  # DataType enum
    shape: tuple  # None for unknown dims; () for scalars; None for unknown rank


@dataclass
class Signature:
    name: str
    method_name: str
    inputs: dict  # name -> InputSpec
    outputs: tuple  # output keys
    function: object  # the concrete function
    # The lean path (see `packed_function`): the same function over one [batch, n] tensor per input dtype.
    packed: object = None
    pack_groups: tuple = ()  # ((DataType enum, (input names...)), ...), in the packed function's argument order

    def input_dtypes(self) -> dict:
        return {name: spec.dtype for name, spec in self.inputs.items()}


PACK_MIN_INPUTS = 3  # below this, packing saves nothing


def packed_function(function, inputs: dict):
    """The signature's function behind one [batch, n] tensor per input dtype, or (None, ()) if it does not apply.

    Calling a concrete function costs Python time per argument (binding, conversion, flattening): for this
    project's 37-input serving_default, more than the model itself (measured in-process: 0.90 ms with 37 ready
    tensors, 0.42 ms packed into 3). The packed tf.function unstacks the columns inside the graph and calls the
    same concrete function there, so the outputs are the same numbers. Applies when every input is a vector
    ([batch]); other signatures keep the plain call.
    """
    if len(inputs) < PACK_MIN_INPUTS or any(spec.shape != (None,) for spec in inputs.values()):
        return None, ()
    groups: dict = {}
    for name in sorted(inputs):
        groups.setdefault(inputs[name].dtype, []).append(name)
    order = tuple((dtype, tuple(names)) for dtype, names in sorted(groups.items()))
    specs = [tf.TensorSpec([None, len(names)], tf.dtypes.as_dtype(dtype)) for dtype, names in order]

    def unpacked(*matrices):
        kwargs = {}
        for matrix, (_, names) in zip(matrices, order):
            kwargs.update(zip(names, tf.unstack(matrix, num=len(names), axis=1)))
        return function(**kwargs)

    return tf.function(unpacked, input_signature=specs).get_concrete_function(), order


def pack_arrays(signature: Signature, inputs: dict) -> list:
    """Validated per-input vectors -> one [batch, n] matrix per dtype group, in the packed function's order."""
    return [np.stack([inputs[name] for name in names], axis=1) for _, names in signature.pack_groups]


class Call:
    """One validated request, ready to run: alone (`run`), or merged with others by the batch scheduler, which
    concatenates `model_inputs` of the calls sharing a `batch_key` and runs `execute` once on the result."""

    __slots__ = ("servable", "model_inputs", "execute", "wanted", "batch_key")

    def __init__(self, servable: "Servable", model_inputs: dict, execute, wanted: tuple, signature_name: str):
        self.servable = servable
        self.model_inputs = model_inputs  # name (or pack group index) -> array, first dimension = rows
        self.execute = execute  # merged model inputs -> (outputs, runtime_us)
        self.wanted = wanted
        batchable = (servable.scheduler is not None and model_inputs
                     and all(np.ndim(a) > 0 for a in model_inputs.values()))
        # Never mixed across models, versions, signatures or per-row shapes (packed inputs: keys 0..n-1).
        self.batch_key = ((servable.model_name, servable.version, signature_name,
                           tuple((k, model_inputs[k].shape[1:]) for k in sorted(model_inputs, key=str)))
                          if batchable else None)

    def run(self) -> tuple[dict, float]:
        """Blocking: through the batch scheduler when batching applies, else one model call."""
        if self.batch_key is not None:
            outputs, runtime_us = self.servable.scheduler.submit(self.batch_key, self.model_inputs, self.execute)
        else:
            outputs, runtime_us = self.execute(self.model_inputs)
        return self.select(outputs), runtime_us

    def select(self, outputs: dict) -> dict:
        return {key: outputs[key] for key in self.wanted}


def read_signature_defs(export_dir: str | Path) -> dict:
    """signature name -> SignatureDef, read from saved_model.pb (the 'serve' meta graph)."""
    path = Path(export_dir) / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the pure-Python protobuf only *warns* on some corrupt input
            saved_model.ParseFromString(path.read_bytes())
    except OSError as exc:
        raise LoadError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # DecodeError, or the warning turned error (its text is unhelpful)
        raise LoadError(f"{path} is not a valid SavedModel: it cannot be parsed") from exc
    if not saved_model.meta_graphs:
        raise LoadError(f"{path} is not a valid SavedModel: it holds no meta graph")
    for meta_graph in saved_model.meta_graphs:
        if not meta_graph.meta_info_def.tags or "serve" in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise LoadError(f"{path} has no meta graph tagged 'serve'")


class Servable:
    def __init__(self, model_name: str, version: int, path: str, loaded, signature_defs: dict, scheduler=None):
        self.model_name = model_name
        self.version = version
        self.path = path
        self.scheduler = scheduler  # serving.batching.BatchScheduler with --enable_batching, else None
        self._loaded = loaded  # keeps variables and tables alive as long as the servable is referenced
        self.signature_defs = signature_defs  # for GetModelMetadata: exactly what is in the SavedModel
        self.signatures: dict[str, Signature] = {}
        for name, function in loaded.signatures.items():
            _, kwargs = function.structured_input_signature
            inputs = {key: InputSpec(spec.dtype.as_datatype_enum,
                                     None if spec.shape.rank is None else tuple(spec.shape.as_list()))
                      for key, spec in kwargs.items()}
            method = signature_defs[name].method_name if name in signature_defs else PREDICT_METHOD
            packed, groups = packed_function(function, inputs)
            self.signatures[name] = Signature(name, method, inputs, tuple(function.structured_outputs), function,
                                              packed, groups)

    @classmethod
    def load(cls, model_name: str, version: int, path: str | Path, scheduler=None) -> "Servable":
        signature_defs = read_signature_defs(path)
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as exc:
            raise LoadError(f"cannot load the SavedModel in {path}: {tf_error_message(str(exc))}") from exc
        return cls(model_name, version, str(path), loaded, signature_defs, scheduler)

    # ------------------------------------------------------------------------------------------
    def signature(self, name: str, *, for_rest: bool = False) -> Signature:
        name = name or DEFAULT_SIGNATURE
        found = self.signatures.get(name)
        if found is None:
            if for_rest:  # HttpRestApiHandler::GetInfoMap
                raise invalid(f"Serving signature name: \"{name}\" not found in signature def")
            raise ServingError(errors.FAILED_PRECONDITION, f"Serving signature key \"{name}\" not found.")
        return found

    def run(self, signature: Signature, inputs: dict, output_filter=()) -> tuple[dict, float]:
        """Predict: {input: array} -> ({output: array}, runtime in microseconds). Blocks until the model ran."""
        return self.prepare(signature, inputs, output_filter).run()

    def prepare(self, signature: Signature, inputs: dict, output_filter=(), packed: list | None = None) -> "Call":
        """Validate a Predict request and get it ready to run (`Call.run()` blocks; asynchronous front ends hand
        `Call.batch_key`/`Call.model_inputs`/`Call.execute` to the batch scheduler or a thread). `packed`: the
        inputs already packed per dtype (serving.tensor_proto.pack_protos), validated by the caller."""
        wanted = tuple(output_filter) or signature.outputs
        for key in wanted:
            if key not in signature.outputs:
                raise invalid(f"output tensor alias not found in signature: {key} Outputs expected to be in the "
                              f"set {{{','.join(sorted(signature.outputs))}}}.")
        if packed is None:
            self._check_inputs(signature, inputs)
            if signature.packed is not None:
                packed = pack_arrays(signature, inputs)
        if packed is not None:
            model_inputs = {i: matrix for i, matrix in enumerate(packed)}
            return Call(self, model_inputs, lambda merged: self._call_packed(signature, merged), wanted, signature.name)
        return Call(self, inputs, lambda merged: self._call(signature, merged), wanted, signature.name)

    def run_examples(self, signature: Signature, serialized: list, method: str) -> tuple[dict, float]:
        """Classify / regress over serialized tf.Examples (the signature takes one string tensor). Blocks."""
        return self.prepare_examples(signature, serialized, method).run()

    def prepare_examples(self, signature: Signature, serialized: list, method: str) -> "Call":
        if signature.method_name != method:
            kind = "classification" if method == CLASSIFY_METHOD else "regression"
            raise invalid(f"Expected {kind} signature method_name to be {method}. Was: {signature.method_name}")
        if CLASSIFY_INPUTS not in signature.inputs or len(signature.inputs) != 1:
            raise invalid(f"Expected one input Tensor named {CLASSIFY_INPUTS!r} in signature {signature.name!r}")
        inputs = {CLASSIFY_INPUTS: np.array(serialized, dtype=object)}
        return Call(self, inputs, lambda merged: self._call(signature, merged), signature.outputs, signature.name)

    def _call_packed(self, signature: Signature, matrices: dict) -> tuple[dict, float]:
        started = time.perf_counter()
        try:
            tensors_ = [tf.constant(matrices[i], dtype=tf.dtypes.as_dtype(dtype))
                        for i, (dtype, _) in enumerate(signature.pack_groups)]
            outputs = {key: value.numpy() for key, value in signature.packed(*tensors_).items()}
        except tf.errors.OpError as exc:
            code = errors.NAME_BY_NUMBER.get(exc.error_code, errors.UNKNOWN)
            raise ServingError(code, tf_error_message(exc.message)) from exc
        return outputs, (time.perf_counter() - started) * 1e6

    def _call(self, signature: Signature, arrays: dict) -> tuple[dict, float]:
        """One model call on numpy inputs; returns numpy outputs and the call's time in microseconds."""
        started = time.perf_counter()
        try:
            outputs = signature.function(**{name: tf.constant(array, dtype=tf.dtypes.as_dtype(
                signature.inputs[name].dtype)) for name, array in arrays.items()})
            outputs = {key: value.numpy() for key, value in outputs.items()}
        except tf.errors.OpError as exc:
            code = errors.NAME_BY_NUMBER.get(exc.error_code, errors.UNKNOWN)
            raise ServingError(code, tf_error_message(exc.message)) from exc
        except (TypeError, ValueError) as exc:  # binding the inputs failed: a client error
            raise invalid(tf_error_message(str(exc))) from exc
        return outputs, (time.perf_counter() - started) * 1e6

    def forget_batches(self) -> None:
        """Drop this version's idle batch queues (called when the version is unloaded)."""
        if self.scheduler is not None:
            self.scheduler.forget(lambda key: key[0] == self.model_name and key[1] == self.version)

    @staticmethod
    def _check_inputs(signature: Signature, inputs: dict) -> None:
        check_input_names(signature, inputs)
        batch = None
        for name in sorted(inputs):
            array, spec = inputs[name], signature.inputs[name]
            if _dtype_enum(array) != spec.dtype:
                raise invalid(f"Expects arg {name} to be {dtype_string(spec.dtype)} but "
                              f"{dtype_string(_dtype_enum(array))} is provided")
            if spec.shape is not None:
                if array.ndim != len(spec.shape) or any(
                        want is not None and want != got for want, got in zip(spec.shape, array.shape)):
                    raise invalid(f"Input {name} has shape {_shape(array.shape)} but the signature expects "
                                  f"{_shape(spec.shape)}")
            if array.ndim > 0:
                if array.shape[0] > MAX_BATCH_SIZE:
                    raise invalid(f"Batch of {array.shape[0]} rows exceeds this server's maximum of {MAX_BATCH_SIZE} "
                                  "rows per request; split the request")
                if batch is not None and array.shape[0] != batch[1]:
                    raise invalid(f"Input tensors must have equal 0th-dimension size: {batch[0]} has {batch[1]}, "
                                  f"{name} has {array.shape[0]}")
                batch = batch or (name, array.shape[0])


def check_input_names(signature: Signature, names) -> None:
    """The request's input names are the signature's (TF Serving's message); called before any tensor is read, so
    an unknown key is never converted."""
    expected, sent = set(signature.inputs), set(names)
    if expected != sent:
        raise invalid(
            f"input size does not match signature: {len(sent)}!={len(expected)} len({{{','.join(sorted(sent))}}})"
            f" != len({{{','.join(sorted(expected))}}}). Sent extra: {{{','.join(sorted(sent - expected))}}}. "
            f"Missing but required: {{{','.join(sorted(expected - sent))}}}.")


def _dtype_enum(array: np.ndarray) -> int:
    if array.dtype == object or array.dtype.kind in "SU":
        return tf.string.as_datatype_enum
    return tf.dtypes.as_dtype(array.dtype).as_datatype_enum


def _shape(shape) -> str:
    return "[" + ",".join("-1" if d is None else str(d) for d in shape) + "]"


def signature_def_map(servable: Servable):
    """GetModelMetadata's `signature_def` value: a SignatureDefMap of the SavedModel's signatures."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    out = get_model_metadata_pb2.SignatureDefMap()
    for name, definition in servable.signature_defs.items():
        out.signature_def[name].CopyFrom(definition)
    return out


def classification_result(outputs: dict, batch: int):
    """A classify signature's outputs -> tensorflow.serving.ClassificationResult (as TF Serving's classifier)."""
    from tensorflow_serving.apis import classification_pb2

    classes = outputs.get(CLASSIFY_OUTPUT_CLASSES)
    scores = outputs.get(CLASSIFY_OUTPUT_SCORES)
    if classes is None and scores is None:
        raise errors.invalid(f"Expected classification signature outputs {CLASSIFY_OUTPUT_CLASSES!r} and/or "
                             f"{CLASSIFY_OUTPUT_SCORES!r}")
    for name, array in ((CLASSIFY_OUTPUT_CLASSES, classes), (CLASSIFY_OUTPUT_SCORES, scores)):
        if array is not None and (array.ndim != 2 or array.shape[0] != batch):
            raise errors.invalid(f"Expected Tensor shape: [{batch} K] but got {list(array.shape)} for output {name}")
    k = (classes if classes is not None else scores).shape[1]
    result = classification_pb2.ClassificationResult()
    for i in range(batch):
        item = result.classifications.add()
        for j in range(k):
            label = classes[i, j].decode("utf-8", "replace") if classes is not None else ""
            item.classes.add(label=label, score=float(scores[i, j]) if scores is not None else 0.0)
    return result


def regression_result(outputs: dict, batch: int):
    """A regress signature's `outputs` -> tensorflow.serving.RegressionResult."""
    from tensorflow_serving.apis import regression_pb2

    values = outputs.get(REGRESS_OUTPUTS)
    if values is None:
        raise errors.invalid(f"Expected regression signature output {REGRESS_OUTPUTS!r}")
    values = np.asarray(values).reshape(-1)
    if values.shape[0] != batch:
        raise errors.invalid(f"Expected output Tensor shape to be [{batch}] but got {list(values.shape)}")
    result = regression_pb2.RegressionResult()
    for value in values:
        result.regressions.add(value=float(value))
    return result
