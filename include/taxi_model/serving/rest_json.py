"""TF-Serving's REST JSON for Predict (util/json_tensor.cc): request bodies to input arrays, output
arrays to response bodies.

    row format       {"signature_name": "...", "instances": [row, ...]} -> {"predictions": [...]}
    columnar format  {"signature_name": "...", "inputs": value or {name: value}} -> {"outputs": ...}

A row is a value when the signature has one input, else an object with one key per input.
Binary strings are {"b64": "..."}; string outputs whose name ends in `_bytes` come back that way.
With one output the response holds its values directly, with several an object per row (row
format) or per output (columnar).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
import tensorflow as tf

from taxi_model.serving.errors import invalid_argument

ROW, COLUMNAR = "row", "columnar"
BYTES_SUFFIX = "_bytes"
MAX_RANK = 32  # nested lists deeper are refused, not read: numpy's limit (1.x), far above any signature's


def short_json(value: Any, limit: int = 120) -> str:
    """A JSON value for an error message, cut to `limit` characters."""
    try:
        text = json.dumps(value)
    except RecursionError:  # nested deeper than Python's stack: its type says enough
        text = f"<{json_type(value)} nested too deeply to print>"
    return text if len(text) <= limit else text[:limit] + "..."


def json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _is_named_row(value: Any) -> bool:
    return isinstance(value, dict) and not is_b64(value)


def parse_body(body: bytes, exact: bool = False) -> dict:
    """The JSON object of a request body. By orjson (C, ~4x faster than `json` on a 100-row body),
    unless `exact`; what orjson refuses (not UTF-8, NaN, infinities, malformed JSON) goes to `json`,
    which reads or refuses it as before, with the same messages. orjson reads an integer beyond 64
    bits as a float (json: an int): a float input takes either as the same value, any other input
    refuses both, and the caller parses `exact`ly to word the refusal as before."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    document = None
    if not exact:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    try:
        if document is None:
            document = json.loads(body)
    except json.JSONDecodeError as e:
        raise invalid_argument(f"JSON Parse error: {e.msg} at offset: {e.pos}") from None
    except RecursionError:  # what orjson refuses as nested too deeply (over 1024 levels)
        raise invalid_argument("JSON Parse error: The document is nested too deeply") from None
    except ValueError as e:  # not UTF-8
        raise invalid_argument(f"JSON Parse error: {e}") from None
    if not isinstance(document, dict):
        raise invalid_argument(f"JSON Value: {short_json(document)} Is not object")
    return document


def signature_name(document: Mapping) -> str:
    name = document.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {short_json(name)} not formatted correctly. 'signature_name' key must be a string value."
        )
    return name


def b64_bytes(value: dict) -> bytes:
    """The bytes of a {"b64": ...} value; a 400 when its text does not decode (or is not ASCII)."""
    try:
        return base64.b64decode(value["b64"], validate=True)
    except ValueError:  # binascii.Error, and non-ASCII text
        raise invalid_argument("Unable to base64 decode") from None


def _leaf(value: Any, dtype: tf.DType):
    if dtype == tf.string:
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, dict):
            if not is_b64(value):
                raise invalid_argument(f"JSON Value: {short_json(value)} not formatted correctly for base64 data")
            return b64_bytes(value)
    elif dtype == tf.bool:
        if isinstance(value, bool):
            return value
    elif dtype.is_integer:
        if isinstance(value, int) and not isinstance(value, bool) and dtype.min <= value <= dtype.max:
            return value
    elif dtype.is_floating:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    else:
        raise invalid_argument(f"Conversion of JSON Value: {short_json(value)} to type: {dtype.name} is not supported")
    raise invalid_argument(
        f"JSON Value: {short_json(value)} Type: {json_type(value)} is not of expected type: {dtype.name}"
    )


def _collect(value: Any, level: int, shape: list[int], dtype: tf.DType, leaves: list) -> None:
    if not isinstance(value, list):
        if level != len(shape):
            raise invalid_argument(
                f"JSON Value: {short_json(value)} found at incorrect level: {level + 1} in the JSON "
                f"DOM. Expected at level: {len(shape)}"
            )
        leaves.append(_leaf(value, dtype))
        return
    if level >= len(shape):
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: {shape[level]}"
        )
    for item in value:
        _collect(item, level + 1, shape, dtype, leaves)


def _b64_column(values: list) -> np.ndarray | None:
    """A list of {"b64": ...} values (serialized tf.Examples, the usual request) decoded in one
    pass, or None when one of them is anything else or does not decode: the general path then
    reads the list, and reports what is wrong with it."""
    texts = []
    for value in values:
        if type(value) is not dict or len(value) != 1:
            return None
        text = value.get("b64")
        if type(text) is not str:
            return None
        texts.append(text)
    try:
        # What base64.b64decode(text, validate=True) does, without its Python wrapper per value.
        decoded = [binascii.a2b_base64(text, strict_mode=True) for text in texts]
    except (binascii.Error, ValueError):
        return None
    array = np.empty(len(decoded), dtype=object)
    array[:] = decoded
    return array


def to_array(value: Any, dtype: tf.DType) -> np.ndarray:
    """A JSON value (scalar or rectangular nested lists) as an array of `dtype`; the shape comes
    from the first element at each level, as TF-Serving does."""
    if dtype == tf.string and type(value) is list and value and type(value[0]) is dict:
        array = _b64_column(value)
        if array is not None:
            return array
    shape, first = [], value
    while isinstance(first, list):
        shape.append(len(first))
        if len(shape) > MAX_RANK:
            raise invalid_argument(
                f"Encountered list at unexpected level: {MAX_RANK} (lists nested deeper than "
                f"{MAX_RANK} levels are not read)"
            )
        first = first[0] if first else None
    leaves: list = []
    _collect(value, 0, shape, dtype, leaves)
    with np.errstate(over="ignore"):  # beyond float32's range is +-inf, as TF-Serving reads it
        return np.array(leaves, dtype=object if dtype == tf.string else dtype.as_numpy_dtype).reshape(shape)


def _row_inputs(instances: Any, specs: Mapping[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise invalid_argument("Excepting 'instances' to be an list/array")
    if not instances:
        raise invalid_argument("No values in 'instances' array")
    names = sorted(specs)
    if len(names) == 1 and names[0] != "b64":
        # The usual request, [{name: value}, ...] for a one-input signature, read in one pass; a
        # row of another form and the general path below finds it and says what is wrong.
        name = names[0]
        column = [row[name] for row in instances if type(row) is dict and len(row) == 1 and name in row]
        if len(column) == len(instances):
            return {name: to_array(column, specs[name].dtype)}
    if not _is_named_row(instances[0]):
        if len(names) > 1:
            raise invalid_argument(
                "instances is a plain list, but expecting list of objects as multiple input "
                "tensors required as per tensorinfo_map"
            )
        for i, row in enumerate(instances):
            if _is_named_row(row):
                raise invalid_argument(f"Expecting value/list but got object at item {i} of input list")
        return {names[0]: to_array(instances, specs[names[0]].dtype)}
    columns: dict[str, list] = {name: [] for name in names}
    for i, row in enumerate(instances):
        if not _is_named_row(row):
            raise invalid_argument(f"Expecting object but got list at item {i} of input list")
        for key, value in row.items():
            if key not in columns:
                raise invalid_argument(
                    f"Failed to process element: {i} key: {key} of 'instances' list. Error: "
                    f"JSON object: does not have named input: {key}"
                )
            columns[key].append(value)
        if len(row) != len(names):
            raise invalid_argument(
                f"Failed to process element: {i} of 'instances' list. JSON object: "
                f"{short_json(row)} keys must be equal to: {','.join(names)}"
            )
    return {name: to_array(column, specs[name].dtype) for name, column in columns.items()}


def _columnar_inputs(inputs: Any, specs: Mapping[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    names = sorted(specs)
    if not _is_named_row(inputs):
        if len(names) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        return {names[0]: to_array(inputs, specs[names[0]].dtype)}
    for name in names:
        if name not in inputs:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
    for key in inputs:
        if key not in specs:
            raise invalid_argument(f"JSON object: does not have named input: {key}")
    return {name: to_array(inputs[name], specs[name].dtype) for name in names}


def request_inputs(document: Mapping, specs: Mapping[str, tf.TensorSpec]) -> tuple[dict[str, np.ndarray], str]:
    """The input arrays of a Predict body for a signature's inputs, and the body's format."""
    if "instances" in document and "inputs" in document:
        raise invalid_argument("Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist")
    if "instances" in document:
        return _row_inputs(document["instances"], specs), ROW
    if "inputs" in document:
        return _columnar_inputs(document["inputs"], specs), COLUMNAR
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def json_values(name: str, array: np.ndarray) -> Any:
    if array.dtype == object or array.dtype.kind == "S":
        as_b64 = name.endswith(BYTES_SUFFIX)

        def text(value: bytes):
            if not as_b64:
                try:
                    return value.decode()
                except UnicodeDecodeError:  # JSON strings cannot hold it: b64 rather than garbage
                    pass
            return {"b64": base64.b64encode(value).decode()}

        return np.frompyfunc(text, 1, 1)(array).tolist() if array.ndim else text(array.item())
    if array.dtype.kind == "f" and array.dtype.itemsize < 8:
        # The shortest decimal that reads back as the same float32 (0.1, not 0.10000000149011612):
        # orjson writes float32 arrays so (and ~10x faster than numpy's str); NaN and infinities,
        # which it writes as null, take numpy's way.
        if array.dtype == np.float32 and array.ndim and np.isfinite(array).all():
            return orjson.loads(orjson.dumps(array, option=orjson.OPT_SERIALIZE_NUMPY))
        return array.astype(str).astype(np.float64).tolist()
    return array.tolist()


def dumps(payload: Any) -> bytes:
    """A response body: compact JSON, by orjson; by `json` if the payload has what orjson would write
    differently from it (NaN and infinities, which orjson writes as null; integers beyond 64 bits)."""
    try:
        data = orjson.dumps(payload)
    except TypeError:
        data = b"null"
    if b"null" in data:
        data = json.dumps(payload, separators=(",", ":")).encode()
    return data


def _row_batch_size(outputs: Mapping[str, np.ndarray]) -> int:
    """The outputs' common first dimension, which the row format needs (MakeRowFormatJsonFromTensors)."""
    batch_size = None
    for name, array in outputs.items():
        if not array.ndim:
            raise invalid_argument(f"Tensor name: {name} has no shape information (a scalar: use the columnar format)")
        if batch_size is not None and array.shape[0] != batch_size:
            raise invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch_size}"
            )
        batch_size = array.shape[0]
    return batch_size


def response_body(outputs: Mapping[str, np.ndarray], request_format: str) -> dict:
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    for array in outputs.values():
        if array.dtype.kind not in "biufSUO":  # complex numbers (and others): no JSON value for them
            raise invalid_argument(f"Failed to write JSON value for tensor type: {array.dtype.name}")
    if request_format == COLUMNAR:
        values = {name: json_values(name, array) for name, array in outputs.items()}
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    batch_size = _row_batch_size(outputs)
    values = {name: json_values(name, array) for name, array in outputs.items()}
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    return {"predictions": [{name: rows[i] for name, rows in values.items()} for i in range(batch_size)]}


_NUMPY_AS_JSON = {
    np.dtype(t)
    for t in (
        np.float32,
        np.float64,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.uint8,
        np.uint16,
        np.uint32,
        np.uint64,
        np.bool_,
    )
}


def response_bytes(outputs: Mapping[str, np.ndarray], request_format: str) -> bytes:
    """`dumps(response_body(outputs, request_format))`; one numeric output (the usual answer) is
    written by orjson straight from its array, without Python lists in between."""
    if len(outputs) == 1:
        ((name, array),) = outputs.items()
        if (
            array.dtype in _NUMPY_AS_JSON
            and array.ndim
            and array.flags.c_contiguous
            and (array.dtype.kind != "f" or np.isfinite(array).all())
        ):
            key = b'{"outputs":' if request_format == COLUMNAR else b'{"predictions":'
            return key + orjson.dumps(array, option=orjson.OPT_SERIALIZE_NUMPY) + b"}"
    return dumps(response_body(outputs, request_format))
