"""TF-Serving's REST JSON rules, without a server."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from taxi_model.serving import rest_json
from taxi_model.serving.errors import ServingError

TWO_INPUTS = {"a": tf.TensorSpec([None], tf.int64), "b": tf.TensorSpec([None, 2], tf.float32)}


def test_row_and_columnar_requests_give_the_same_arrays():
    rows, row_format = rest_json.request_inputs({"instances": [{"a": 1, "b": [0.5, 1]}, {"a": 2, "b": [2, 3]}]},
                                                TWO_INPUTS)
    columns, columnar_format = rest_json.request_inputs({"inputs": {"a": [1, 2], "b": [[0.5, 1], [2, 3]]}},
                                                        TWO_INPUTS)
    assert (row_format, columnar_format) == (rest_json.ROW, rest_json.COLUMNAR)
    for arrays in (rows, columns):
        np.testing.assert_array_equal(arrays["a"], np.array([1, 2], np.int64))
        np.testing.assert_array_equal(arrays["b"], np.array([[0.5, 1], [2, 3]], np.float32))
        assert arrays["b"].dtype == np.float32


def test_strings_and_b64():
    array = rest_json.to_array(["text", {"b64": "AAE="}], tf.string)
    assert array.tolist() == [b"text", b"\x00\x01"]


@pytest.mark.parametrize("document, error", [
    ({"instances": [{"a": 1, "b": [0.5, 1]}, {"a": 2, "b": [2]}]},
     "Encountered list at unexpected size: 1 at level: 1"),
    ({"instances": [{"a": 1}]}, "keys must be equal to: a,b"),
    ({"instances": [1, 2]}, "instances is a plain list, but expecting list of objects"),
    ({"instances": [{"a": True, "b": [0, 1]}]}, "JSON Value: true Type: True is not of expected type: int64"),
    ({"instances": []}, "No values in 'instances' array"),
    ({"inputs": {"a": [1]}}, "Missing named input: b in 'inputs' object."),
    ({"inputs": [1], "instances": [1]}, "expecting only one of 'inputs' or 'instances'"),
])
def test_malformed_inputs(document, error):
    with pytest.raises(ServingError, match=error):
        rest_json.request_inputs(document, TWO_INPUTS)


def test_responses_follow_tf_servings_rules():
    probabilities = np.array([[0.1], [0.25]], np.float32)
    keys = np.array([b"k1", b"k2"], dtype=object)
    # One output: its values; several: one object per row (row format) or per output (columnar).
    assert rest_json.response_body({"p": probabilities}, rest_json.ROW) == {"predictions": [[0.1], [0.25]]}
    assert rest_json.response_body({"p": probabilities}, rest_json.COLUMNAR) == {"outputs": [[0.1], [0.25]]}
    assert rest_json.response_body({"p": probabilities, "key_bytes": keys}, rest_json.ROW) == {"predictions": [
        {"p": [0.1], "key_bytes": {"b64": "azE="}}, {"p": [0.25], "key_bytes": {"b64": "azI="}}]}
    assert rest_json.response_body({"p": probabilities, "key": keys}, rest_json.COLUMNAR) == {
        "outputs": {"p": [[0.1], [0.25]], "key": ["k1", "k2"]}}
    assert json.dumps(rest_json.response_body({"p": np.array([np.float32(1 / 3)])}, rest_json.ROW)) == (
        '{"predictions": [0.33333334]}')  # the shortest text that reads back as the same float32
