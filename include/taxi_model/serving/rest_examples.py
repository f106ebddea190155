"""TF-Serving's REST JSON for Classify and Regress (util/json_tensor.cc): request bodies to
tf.Examples, results to response bodies.

    {"signature_name": "...", "context": {feature: value, ...}, "examples": [{feature: value, ...}, ...]}
    classify -> {"results": [[[label, score], ...], ...]}      regress -> {"results": [value, ...]}

A feature's value is one value or a list of them, all of one kind: integers (and true/false, as
1/0) go to an int64_list, other numbers to a float_list, strings and {"b64": "..."} to a
bytes_list. The context, when there is one, is merged into every example.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from taxi_model.serving import rest_json
from taxi_model.serving.errors import invalid_argument

CONTEXT, EXAMPLES, RESULTS = "context", "examples", "results"
_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT64_MAX = (1 << 64) - 1
_KIND_NAMES = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64", None: "UNKNOWN"}


def _unexpected(name: str, value: Any):
    return invalid_argument(f"Feature: {name} has element with unexpected JSON type: {rest_json.json_type(value)}")


def _kind_and_value(name: str, value: Any) -> tuple[str, Any]:
    """The list a JSON value goes to, and the value as that list holds it (AddValueToFeature)."""
    if value is None or isinstance(value, list):
        raise _unexpected(name, value)
    if isinstance(value, bool):
        return "int64_list", int(value)
    if isinstance(value, dict):
        if not rest_json.is_b64(value):
            raise _unexpected(name, value)
        return "bytes_list", rest_json.b64_bytes(value)
    if isinstance(value, str):
        return "bytes_list", value.encode()
    if isinstance(value, int) and value >= _INT64[0]:
        if value <= _INT64[1]:
            return "int64_list", value
        if value <= _UINT64_MAX:
            raise invalid_argument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
    return "float_list", float(value)  # beyond 64 bits JSON parsers read integers as doubles


def _feature(name: str, content: Any) -> feature_pb2.Feature:
    feature = feature_pb2.Feature()
    for value in content if isinstance(content, list) else [content]:
        kind, converted = _kind_and_value(name, value)
        current = feature.WhichOneof("kind")
        if current not in (None, kind):
            raise invalid_argument(f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[current]}")
        getattr(feature, kind).value.append(converted)
    return feature


def example_from_json(value: Any) -> example_pb2.Example:
    """One JSON object as a tf.Example (MakeExampleFromJsonObject)."""
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {rest_json.json_type(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        example.features.feature[name].CopyFrom(_feature(name, content))
    return example


def request_input(document: Mapping) -> input_pb2.Input:
    """The examples (and context) of a Classify or Regress body (FillClassifyRegressRequestFromJson)."""
    request = input_pb2.Input()
    if CONTEXT in document:
        request.example_list_with_context.context.CopyFrom(example_from_json(document[CONTEXT]))
    if EXAMPLES not in document:
        raise invalid_argument(
            f"JSON Value: {rest_json.short_json(document)} When method is classify, key "
            f"'{EXAMPLES}' is expected and was not found"
        )
    examples = document[EXAMPLES]
    if not isinstance(examples, list):
        raise invalid_argument(
            f"JSON Value: {rest_json.short_json(document)} Expecting '{EXAMPLES}' value to be an list/array"
        )
    if not examples:
        raise invalid_argument(f"JSON Value: {rest_json.short_json(document)} '{EXAMPLES}' value is an empty array")
    target = request.example_list_with_context if CONTEXT in document else request.example_list
    target.examples.extend(example_from_json(value) for value in examples)
    return request


def _float32_values(values: list[float]) -> list:
    # Scores and values are float32: written as the shortest decimal that reads back as the same float32.
    return rest_json.json_values("", np.array(values, dtype=np.float32))


def classification_json(result: classification_pb2.ClassificationResult) -> dict:
    """MakeJsonFromClassificationResult: [label, score] per class, per example."""
    if not result.classifications:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    rows = []
    for classifications in result.classifications:
        scores = _float32_values([c.score for c in classifications.classes])
        rows.append([[c.label, score] for c, score in zip(classifications.classes, scores, strict=False)])
    return {RESULTS: rows}


def regression_json(result: regression_pb2.RegressionResult) -> dict:
    """MakeJsonFromRegressionResult: one value per example."""
    if not result.regressions:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    return {RESULTS: _float32_values([regression.value for regression in result.regressions])}
