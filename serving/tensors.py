"""JSON <-> tensors exactly as TF Serving's REST API does it (tensorflow_serving/util/json_tensor.cc), and
TensorProto <-> numpy for gRPC.

Row format: {"signature_name": s, "instances": [...]} -> {"predictions": [...]}
Columnar:   {"signature_name": s, "inputs": {...} | value} -> {"outputs": {...} | value}
Classify / regress: {"signature_name": s, "context": {...}, "examples": [{...}]} -> {"results": [...]}

Error messages follow upstream's wording so that clients and their tests see the same text from either
server; every failure here is an INVALID_ARGUMENT (HTTP 400).
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import types_pb2

from serving.errors import invalid

MAX_BATCH_SIZE = 10_000  # rows (instances, examples, 0th dimension) per request; more -> 400
MAX_TENSOR_ELEMENTS = 10_000_000  # a gRPC TensorProto may not declare more elements than this
MAX_RANK = 16  # dimensions of one JSON value (numpy arrays stop at 32, the batch adds one)
MAX_ERROR_VALUE_CHARS = 200  # long JSON values are cut in error messages (upstream prints them whole)

ROW = "row"
COLUMNAR = "columnar"

SIGNATURE_KEY = "signature_name"
INSTANCES_KEY = "instances"
INPUTS_KEY = "inputs"
CONTEXT_KEY = "context"
EXAMPLES_KEY = "examples"
PREDICTIONS_KEY = "predictions"
OUTPUTS_KEY = "outputs"
RESULTS_KEY = "results"
B64_KEY = "b64"
BYTES_SUFFIX = "_bytes"  # string outputs with this name suffix are written as {"b64": ...}

_F32_MAX = float(np.finfo(np.float32).max)
_F64_MAX = float(np.finfo(np.float64).max)

# DataType enum -> (numpy dtype, upstream's DataTypeString)
_NUMPY = {
    types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64, types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT16: np.int16, types_pb2.DT_INT8: np.int8, types_pb2.DT_UINT8: np.uint8,
    types_pb2.DT_INT64: np.int64, types_pb2.DT_UINT32: np.uint32, types_pb2.DT_UINT64: np.uint64,
    types_pb2.DT_BOOL: np.bool_, types_pb2.DT_STRING: object,
}


def dtype_string(dtype: int) -> str:
    """DataTypeString(): DT_FLOAT -> "float", DT_INT64 -> "int64"."""
    try:
        return types_pb2.DataType.Name(dtype)[3:].lower()
    except ValueError:
        return f"unknown dtype {dtype}"


# ----------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------
def _reject_constant(token: str):
    raise ValueError(f"invalid constant {token}")


def parse_json(body: bytes | str) -> dict:
    """The request document: a JSON object. NaN / Infinity / -Infinity are accepted, as upstream does."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise invalid(f"JSON Parse error: Invalid encoding in string. at offset: {exc.start}")
    if not body.strip():
        raise invalid("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as exc:
        raise invalid(f"JSON Parse error: {exc.msg} at offset: {exc.pos}")
    except RecursionError:
        raise invalid("JSON Parse error: the document is nested too deeply")
    except ValueError as exc:  # e.g. an integer literal beyond Python's int-from-text digit limit
        raise invalid(f"JSON Parse error: {exc}")
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {value_to_string(doc)} Is not object")
    return doc


def value_to_string(value) -> str:
    try:
        text = json.dumps(value, allow_nan=True, ensure_ascii=False, separators=(",", ":"))
    except (ValueError, RecursionError):  # pragma: no cover - values come from json.loads
        text = repr(value)
    if len(text) > MAX_ERROR_VALUE_CHARS:
        text = text[:MAX_ERROR_VALUE_CHARS] + "...(truncated)"
    return text


def json_type(value) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _type_error(value, dtype: int):
    return invalid(f"JSON Value: {value_to_string(value)} Type: {json_type(value)} is not of expected type: "
                   f"{dtype_string(dtype)}")


def _lossy(value, target: str):
    return invalid(f"Cannot convert JSON value: {value_to_string(value)} to {target} without loss of precision.")


def is_b64_object(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(B64_KEY), str)


def decode_b64(value) -> bytes:
    if not is_b64_object(value):
        raise invalid(f"JSON Value: {value_to_string(value)} not formatted correctly for base64 data")
    text = value[B64_KEY]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid("Unable to base64 decode")


def _int_converter(dtype: int, low: int, high: int):
    def convert(value):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _type_error(value, dtype)
        return value
    return convert


def _float_converter(dtype: int, max_int: int, max_value: float, target: str):
    def convert(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(value, dtype)
        if isinstance(value, int):
            if abs(value) > max_int:
                raise _lossy(value, target)
            return float(value)
        if math.isfinite(value) and abs(value) > max_value:
            raise _lossy(value, target)
        return value
    return convert


def _bool_converter(value):
    if not isinstance(value, bool):
        raise _type_error(value, types_pb2.DT_BOOL)
    return value


def _string_converter(value):
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, dict):
        return decode_b64(value)
    raise _type_error(value, types_pb2.DT_STRING)


_CONVERTERS: dict[int, Callable] = {
    types_pb2.DT_FLOAT: _float_converter(types_pb2.DT_FLOAT, 2 ** 24 - 1, _F32_MAX, "float"),
    types_pb2.DT_DOUBLE: _float_converter(types_pb2.DT_DOUBLE, 2 ** 53 - 1, _F64_MAX, "double"),
    types_pb2.DT_INT32: _int_converter(types_pb2.DT_INT32, -2 ** 31, 2 ** 31 - 1),
    types_pb2.DT_INT16: _int_converter(types_pb2.DT_INT16, -2 ** 15, 2 ** 15 - 1),
    types_pb2.DT_INT8: _int_converter(types_pb2.DT_INT8, -2 ** 7, 2 ** 7 - 1),
    types_pb2.DT_UINT8: _int_converter(types_pb2.DT_UINT8, 0, 2 ** 8 - 1),
    types_pb2.DT_INT64: _int_converter(types_pb2.DT_INT64, -2 ** 63, 2 ** 63 - 1),
    types_pb2.DT_UINT32: _int_converter(types_pb2.DT_UINT32, 0, 2 ** 32 - 1),
    types_pb2.DT_UINT64: _int_converter(types_pb2.DT_UINT64, 0, 2 ** 64 - 1),
    types_pb2.DT_BOOL: _bool_converter,
    types_pb2.DT_STRING: _string_converter,
}


def _dense_shape(value) -> list[int]:
    """GetDenseTensorShape: the shape implied by following the first element of each nested list."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if len(shape) > MAX_RANK:
            raise invalid(f"JSON value is nested deeper than {MAX_RANK} levels")
        if not value:
            break
        value = value[0]
    return shape


def _fill(value, level: int, shape: list[int], convert, out: list) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid(f"JSON Value: {value_to_string(value)} found at incorrect level: {level + 1} in the JSON "
                          f"DOM. Expected at level: {rank}")
        out.append(convert(value))
        return
    if level >= rank:
        raise invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid(f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: "
                      f"{shape[level]}")
    for item in value:
        _fill(item, level + 1, shape, convert, out)


def json_to_values(value, dtype: int) -> tuple[list, list[int]]:
    """One JSON value (scalar or nested lists) -> (flat converted values, shape)."""
    convert = _CONVERTERS.get(dtype)
    if convert is None:
        raise invalid(f"Conversion of JSON Value: {value_to_string(value)} to type: {dtype_string(dtype)} "
                      f"is not supported")
    if not isinstance(value, list):  # the common case: one scalar per row
        return [convert(value)], []
    shape = _dense_shape(value)
    out: list = []
    _fill(value, 0, shape, convert, out)
    return out, shape


def to_array(values: list, shape: list[int], dtype: int) -> np.ndarray:
    np_dtype = _NUMPY[dtype]
    if np_dtype is object:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    return np.asarray(values, dtype=np_dtype).reshape(shape)


@dataclass
class PredictJson:
    signature_name: str  # "" when the request names none
    inputs: dict  # input name -> numpy array
    format: str  # ROW or COLUMNAR


def signature_name_of(doc: dict) -> str:
    if SIGNATURE_KEY not in doc:
        return ""
    name = doc[SIGNATURE_KEY]
    if not isinstance(name, str):
        raise invalid(f"JSON Value: {value_to_string(doc)} not formatted correctly. 'signature_name' key must be a "
                      "string value.")
    return name


def parse_predict(doc: dict, input_dtypes: Callable[[str], dict]) -> PredictJson:
    """FillPredictRequestFromJson. `input_dtypes(signature_name)` -> {input name: DataType}; it resolves the
    model (so an unknown model fails after a JSON error and before a format error, as upstream)."""
    signature_name = signature_name_of(doc)
    dtypes = input_dtypes(signature_name)
    if not dtypes:
        raise invalid(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    has_instances, has_inputs = INSTANCES_KEY in doc, INPUTS_KEY in doc
    if has_instances and has_inputs:
        raise invalid(f"JSON Value: {value_to_string(doc)} Not formatted correctly expecting only one of "
                      f"'{INPUTS_KEY}' or '{INSTANCES_KEY}' keys to exist ")
    if has_instances:
        instances = doc[INSTANCES_KEY]
        if not isinstance(instances, list):
            raise invalid(f"JSON Value: {value_to_string(doc)} Excepting '{INSTANCES_KEY}' to be an list/array")
        if not instances:
            raise invalid(f"JSON Value: {value_to_string(doc)} No values in '{INSTANCES_KEY}' array")
        return PredictJson(signature_name, _from_instances(instances, dtypes), ROW)
    if has_inputs:
        return PredictJson(signature_name, _from_inputs(doc[INPUTS_KEY], dtypes), COLUMNAR)
    raise invalid(f"Missing '{INPUTS_KEY}' or '{INSTANCES_KEY}' key")


def _check_batch(n: int) -> None:
    if n > MAX_BATCH_SIZE:
        raise invalid(f"Batch of {n} rows exceeds this server's maximum of {MAX_BATCH_SIZE} rows per request; "
                      "split the request")


def _from_instances(instances: list, dtypes: dict) -> dict:
    _check_batch(len(instances))
    first = instances[0]
    objects = isinstance(first, dict) and not is_b64_object(first)
    if not objects and len(dtypes) > 1:
        raise invalid("instances is a plain list, but expecting list of objects as multiple input tensors required "
                      "as per tensorinfo_map")
    names = set(dtypes)
    values: dict[str, list] = {}
    shapes: dict[str, list[int]] = {}

    def add(name, item, where: str):
        if name not in dtypes:
            raise invalid(f"Failed to process element: {where} of '{INSTANCES_KEY}' list. Error: INVALID_ARGUMENT: "
                          f"JSON object: does not have named input: {name}")
        try:
            flat, shape = json_to_values(item, dtypes[name])
        except Exception as exc:
            message = getattr(exc, "message", str(exc))
            raise invalid(f"Failed to process element: {where} of '{INSTANCES_KEY}' list. Error: "
                          f"INVALID_ARGUMENT: {message}")
        if name not in shapes:
            shapes[name] = shape
            values[name] = flat
        else:
            if len(flat) != _size(shapes[name]):
                raise invalid(f"Expecting tensor size: {_size(shapes[name])} but got: {len(flat)}")
            if shape != shapes[name]:
                raise invalid(f"Expecting shape {_shape_string(shapes[name])} but got: {_shape_string(shape)}")
            values[name].extend(flat)

    for index, element in enumerate(instances):
        if objects:
            if not isinstance(element, dict) or is_b64_object(element):
                raise invalid(f"Expecting object but got list at item {index} of input list")
            for name, item in element.items():
                add(name, item, f"{index} key: {name}")
            if set(element) != names:
                raise invalid(f"Failed to process element: {index} of '{INSTANCES_KEY}' list. JSON object: "
                              f"{value_to_string(element)} must only have keys: {','.join(sorted(names))}")
        else:
            if isinstance(element, dict) and not is_b64_object(element):
                raise invalid(f"Expecting value/list but got object at item {index} of input list")
            add(next(iter(dtypes)), element, str(index))
    return {name: to_array(values[name], [len(instances)] + shapes[name], dtypes[name]) for name in values}


def _from_inputs(value, dtypes: dict) -> dict:
    if not isinstance(value, dict) or is_b64_object(value):
        if len(dtypes) > 1:
            raise invalid("inputs is a plain value/list, but expecting an object as multiple input tensors "
                          "required as per tensorinfo_map")
        name, dtype = next(iter(dtypes.items()))
        return {name: _column(value, dtype)}
    out = {}
    for name, dtype in dtypes.items():  # extra keys are ignored, as upstream does
        if name not in value:
            raise invalid(f"Missing named input: {name} in '{INPUTS_KEY}' object.")
        out[name] = _column(value[name], dtype)
    return out


def _column(value, dtype: int) -> np.ndarray:
    if isinstance(value, list):
        _check_batch(len(value))
    flat, shape = json_to_values(value, dtype)
    return to_array(flat, shape, dtype)


def _size(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _shape_string(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


# ----------------------------------------------------------------------------------------------
# Classify / regress: JSON examples -> serialized tf.Example
# ----------------------------------------------------------------------------------------------
_KIND_NAMES = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64", None: "UNKNOWN"}
_F32_LOSSLESS_INT = 2 ** 24 - 1


def _add_feature_value(value, name: str, feature) -> None:
    def need(kind: str):
        current = feature.WhichOneof("kind")
        if current not in (None, kind):
            raise invalid(f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[current]}")

    if value is None or isinstance(value, list) or (isinstance(value, dict) and not is_b64_object(value)):
        raise invalid(f"Feature: {name} has element with unexpected JSON type: {json_type(value)}")
    if isinstance(value, bool):
        need("int64_list")
        feature.int64_list.value.append(1 if value else 0)
    elif isinstance(value, dict):
        need("bytes_list")
        feature.bytes_list.value.append(decode_b64(value))
    elif isinstance(value, str):
        need("bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, float):
        need("float_list")
        if math.isfinite(value) and abs(value) > _F32_MAX:
            raise _lossy(value, "float")
        feature.float_list.value.append(value)
    else:  # int
        need("int64_list")
        if value >= 2 ** 63:
            raise invalid(f"Feature: {name} has uint64 element. Only int64 is supported.")
        if value < -2 ** 63:
            raise _type_error(value, types_pb2.DT_INT64)
        feature.int64_list.value.append(value)


def example_from_json(value) -> example_pb2.Example:
    if not isinstance(value, dict):
        raise invalid(f"Example must be JSON object but got JSON {json_type(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        feature = feature_pb2.Feature()
        for item in (content if isinstance(content, list) else [content]):
            _add_feature_value(item, name, feature)
        example.features.feature[name].CopyFrom(feature)
    return example


@dataclass
class ExamplesJson:
    signature_name: str
    serialized: list  # one serialized tf.Example per row (context prepended, as upstream does)


def parse_examples(doc: dict, method: str) -> ExamplesJson:
    """FillClassificationRequestFromJson / FillRegressionRequestFromJson."""
    signature_name = signature_name_of(doc)
    context = b""
    if CONTEXT_KEY in doc:
        context = example_from_json(doc[CONTEXT_KEY]).SerializeToString()
    if EXAMPLES_KEY not in doc:
        raise invalid(f"JSON Value: {value_to_string(doc)} When method is {method}, key '{EXAMPLES_KEY}' is expected "
                      "and was not found")
    examples = doc[EXAMPLES_KEY]
    if not isinstance(examples, list):
        raise invalid(f"JSON Value: {value_to_string(doc)} Expecting '{EXAMPLES_KEY}' value to be an list/array")
    if not examples:
        raise invalid(f"JSON Value: {value_to_string(doc)} '{EXAMPLES_KEY}' value is an empty array")
    _check_batch(len(examples))
    # Concatenated serialized protos merge: the example's features override the context's.
    serialized = [context + example_from_json(e).SerializeToString() for e in examples]
    return ExamplesJson(signature_name, serialized)


def serialized_from_input(input_proto) -> list:
    """tensorflow.serving.Input (gRPC classify/regress) -> serialized examples (InputToSerializedExampleTensor)."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        out = [e.SerializeToString() for e in input_proto.example_list.examples]
    elif kind == "example_list_with_context":
        context = input_proto.example_list_with_context.context.SerializeToString()
        out = [context + e.SerializeToString() for e in input_proto.example_list_with_context.examples]
    else:
        out = []
    if not out:
        raise invalid("Input is empty.")
    _check_batch(len(out))
    return out


# ----------------------------------------------------------------------------------------------
# Responses
# ----------------------------------------------------------------------------------------------
def _float32_values(array: np.ndarray) -> list:
    # Shortest text that round-trips the float32 (numpy's str), not the float64 widening: 0.1, not
    # 0.10000000149011612. That is what upstream's WriteDecimal does.
    return [float(str(x)) for x in array.ravel()]


def _flat_values(array: np.ndarray, as_bytes: bool) -> list:
    if array.dtype == np.float32:
        return _float32_values(array)
    if array.dtype == object or array.dtype.kind == "S":
        if as_bytes:
            return [{B64_KEY: base64.b64encode(bytes(v)).decode("ascii")} for v in array.ravel()]
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.ravel()]
    return array.ravel().tolist()


def _nest(flat: list, shape: tuple) -> object:
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def _json_value(name: str, array: np.ndarray):
    as_bytes = array.dtype == object and name.endswith(BYTES_SUFFIX)
    return _nest(_flat_values(array, as_bytes), array.shape)


def predict_response(outputs: dict, fmt: str) -> dict:
    if not outputs:
        raise invalid("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if fmt == COLUMNAR:
        if len(names) == 1:
            return {OUTPUTS_KEY: _json_value(names[0], outputs[names[0]])}
        return {OUTPUTS_KEY: {name: _json_value(name, outputs[name]) for name in names}}
    batch = None
    for name in names:
        array = outputs[name]
        if array.ndim == 0:
            raise invalid(f"Tensor name: {name} has no shape information ")
        if array.shape[0] < 1:
            raise invalid(f"Tensor name: {name} has invalid batch size: {array.shape[0]}")
        if batch is not None and array.shape[0] != batch:
            raise invalid(f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch}")
        batch = array.shape[0]
    rows = {name: _json_value(name, outputs[name]) for name in names}
    if len(names) == 1:
        return {PREDICTIONS_KEY: rows[names[0]]}
    return {PREDICTIONS_KEY: [{name: rows[name][i] for name in names} for i in range(batch)]}


def classification_response(result) -> dict:
    """ClassificationResult -> {"results": [[[label, score], ...], ...]}."""
    if not result.classifications:
        raise invalid("Cannot convert empty ClassificationResults to JSON")
    return {RESULTS_KEY: [[[c.label, float(str(np.float32(c.score)))] for c in item.classes]
                          for item in result.classifications]}


def regression_response(result) -> dict:
    if not result.regressions:
        raise invalid("Cannot convert empty RegressionResults to JSON")
    return {RESULTS_KEY: [float(str(np.float32(r.value))) for r in result.regressions]}


def dumps(document: dict) -> bytes:
    return json.dumps(document, allow_nan=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


_TF_NOISE = re.compile(r"^Graph execution error:\s*(Detected at node .*?\n<stack traces unavailable>\n)?", re.S)
_TF_TAIL = re.compile(r"\s*\[\[\{\{node .*$|\s*\[Op:[^\]]*\]\s*$", re.S)


def tf_error_message(message: str) -> str:
    """The useful line of a TensorFlow runtime error, without node traces."""
    text = _TF_NOISE.sub("", message.strip())
    text = _TF_TAIL.sub("", text).strip()
    return text or message.strip()
