"""TF-Serving's REST JSON rules, without a server."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tensorflow as tf

from taxi_model.serving import rest_json
from taxi_model.serving.errors import ServingError

TWO_INPUTS = {"a": tf.TensorSpec([None], tf.int64), "b": tf.TensorSpec([None, 2], tf.float32)}
EXAMPLES = {"examples": tf.TensorSpec([None], tf.string)}


def test_row_and_columnar_requests_give_the_same_arrays():
    rows, row_format = rest_json.request_inputs(
        {"instances": [{"a": 1, "b": [0.5, 1]}, {"a": 2, "b": [2, 3]}]}, TWO_INPUTS
    )
    columns, columnar_format = rest_json.request_inputs({"inputs": {"a": [1, 2], "b": [[0.5, 1], [2, 3]]}}, TWO_INPUTS)
    assert (row_format, columnar_format) == (rest_json.ROW, rest_json.COLUMNAR)
    for arrays in (rows, columns):
        np.testing.assert_array_equal(arrays["a"], np.array([1, 2], np.int64))
        np.testing.assert_array_equal(arrays["b"], np.array([[0.5, 1], [2, 3]], np.float32))
        assert arrays["b"].dtype == np.float32


def test_strings_and_b64():
    array = rest_json.to_array(["text", {"b64": "AAE="}], tf.string)
    assert array.tolist() == [b"text", b"\x00\x01"]


@pytest.mark.parametrize(
    "document, error",
    [
        (
            {"instances": [{"a": 1, "b": [0.5, 1]}, {"a": 2, "b": [2]}]},
            "Encountered list at unexpected size: 1 at level: 1",
        ),
        ({"instances": [{"a": 1}]}, "keys must be equal to: a,b"),
        ({"instances": [1, 2]}, "instances is a plain list, but expecting list of objects"),
        ({"instances": [{"a": True, "b": [0, 1]}]}, "JSON Value: true Type: True is not of expected type: int64"),
        ({"instances": []}, "No values in 'instances' array"),
        ({"inputs": {"a": [1]}}, "Missing named input: b in 'inputs' object."),
        ({"inputs": [1], "instances": [1]}, "expecting only one of 'inputs' or 'instances'"),
    ],
)
def test_malformed_inputs(document, error):
    with pytest.raises(ServingError, match=error):
        rest_json.request_inputs(document, TWO_INPUTS)


def test_responses_follow_tf_servings_rules():
    probabilities = np.array([[0.1], [0.25]], np.float32)
    keys = np.array([b"k1", b"k2"], dtype=object)
    # One output: its values; several: one object per row (row format) or per output (columnar).
    assert rest_json.response_body({"p": probabilities}, rest_json.ROW) == {"predictions": [[0.1], [0.25]]}
    assert rest_json.response_body({"p": probabilities}, rest_json.COLUMNAR) == {"outputs": [[0.1], [0.25]]}
    assert rest_json.response_body({"p": probabilities, "key_bytes": keys}, rest_json.ROW) == {
        "predictions": [{"p": [0.1], "key_bytes": {"b64": "azE="}}, {"p": [0.25], "key_bytes": {"b64": "azI="}}]
    }
    assert rest_json.response_body({"p": probabilities, "key": keys}, rest_json.COLUMNAR) == {
        "outputs": {"p": [[0.1], [0.25]], "key": ["k1", "k2"]}
    }
    assert json.dumps(rest_json.response_body({"p": np.array([np.float32(1 / 3)])}, rest_json.ROW)) == (
        '{"predictions": [0.33333334]}'
    )  # the shortest text that reads back as the same float32


def test_scalar_string_outputs_are_text_or_b64():
    outputs = {
        "text": np.array("café".encode(), dtype=object),
        "text_bytes": np.array(b"ab", dtype=object),
        "binary": np.array(b"\xff", dtype=object),
    }  # what ModelVersion.predict gives for scalar strings
    assert rest_json.response_body(outputs, rest_json.COLUMNAR) == {
        "outputs": {"text": "café", "text_bytes": {"b64": "YWI="}, "binary": {"b64": "/w=="}}
    }


def nested(depth: int, leaf) -> list:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


@pytest.mark.parametrize(
    "document, error",
    [
        ({"instances": nested(rest_json.MAX_RANK + 1, "")}, "Encountered list at unexpected level: 32"),
        ({"instances": nested(100_000, "")}, "Encountered list at unexpected level: 32"),
        (
            {"signature_name": nested(100_000, ""), "instances": [""]},
            "JSON Value: <Array nested too deeply to print> not formatted correctly. 'signature_name' key",
        ),
    ],
)
def test_deep_nesting_is_refused_as_a_bad_request(document, error):
    with pytest.raises(ServingError, match=re.escape(error)) as refused:
        rest_json.signature_name(document)
        rest_json.request_inputs(document, EXAMPLES)
    assert refused.value.http_status == 400


@pytest.mark.parametrize("depth", [1100, 100_000])
@pytest.mark.parametrize("exact", [False, True])
def test_a_body_nested_too_deeply_to_parse_is_a_parse_error(depth, exact):
    body = b'{"instances": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(ServingError, match="JSON Parse error: The document is nested too deeply"):
        rest_json.parse_body(body, exact=exact)


@pytest.mark.parametrize(
    "rows",
    [
        [{"examples": {"b64": "AAE="}}, {"examples": {"b64": ""}}, {"examples": {"b64": "YWJj"}}],  # the fast path
        [{"examples": {"b64": "AAE="}}, {"examples": "text"}],  # a plain string among them: the general path
    ],
)
def test_rows_of_b64_examples(rows):
    arrays, _ = rest_json.request_inputs({"instances": rows}, EXAMPLES)
    columns, _ = rest_json.request_inputs({"inputs": {"examples": [row["examples"] for row in rows]}}, EXAMPLES)
    expected = [b"\x00\x01", b"", b"abc"] if len(rows) == 3 else [b"\x00\x01", b"text"]
    for array in (arrays["examples"], columns["examples"]):
        assert array.dtype == object and array.tolist() == expected


@pytest.mark.parametrize(
    "rows, error",
    [
        ([{"examples": {"b64": "AAE"}}], "Unable to base64 decode"),  # bad padding
        ([{"examples": {"b64": "AA E="}}], "Unable to base64 decode"),  # not the alphabet
        ([{"examples": {"b64": "AAE="}}, {"examples": {"b64": 1}}], "not formatted correctly for base64 data"),
        ([{"examples": {"b64": "AAE="}}, {"other": {"b64": "AAE="}}], "does not have named input: other"),
        ([{"examples": {"b64": "AAE="}}, [1]], "Expecting object but got list at item 1"),
    ],
)
def test_malformed_b64_rows_get_the_general_paths_errors(rows, error):
    with pytest.raises(ServingError, match=error):
        rest_json.request_inputs({"instances": rows}, EXAMPLES)


def test_bodies_that_orjson_refuses_are_read_or_refused_as_json_does():
    assert rest_json.parse_body(b'{"inputs": [NaN, 1e999]}')["inputs"][0] != 0  # NaN and inf: json reads them
    assert rest_json.parse_body('{"inputs": [1]}'.encode("utf-16"))["inputs"] == [1]
    big = b'{"inputs": [123456789012345678901234567890]}'  # beyond 64 bits: orjson reads a float
    assert rest_json.parse_body(big, exact=True)["inputs"] == [123456789012345678901234567890]
    assert rest_json.parse_body(big)["inputs"] == [float(123456789012345678901234567890)]
    with pytest.raises(ServingError, match="JSON Parse error: Expecting value at offset: 11"):
        rest_json.parse_body(b'{"inputs": }')


@pytest.mark.parametrize(
    "outputs",
    [
        {"p": np.array([[0.1], [0.25], [1 / 3]], np.float32)},
        {"p": np.array([1, 2], np.int64)},
        {"p": np.array([True, False])},
        {"p": np.array([[1e-7, 3.4e38]], np.float64)},
        {"p": np.array([np.nan, np.inf], np.float32)},  # not finite: json's NaN and Infinity, as before
        {"p": np.array([0.5], np.float16)},
        {"p": np.array([[1, 2]], np.int32).T},  # not contiguous
        {"key_bytes": np.array([b"\x00"], dtype=object), "p": np.array([1.5], np.float32)},
    ],
)
@pytest.mark.parametrize("request_format", [rest_json.ROW, rest_json.COLUMNAR])
def test_response_bytes_are_the_response_body(outputs, request_format):
    body = rest_json.response_bytes(outputs, request_format)
    assert json.loads(body) == json.loads(rest_json.dumps(rest_json.response_body(outputs, request_format))) or (
        np.isnan(outputs["p"]).any()
    )
    assert json.loads(body).keys() == {"predictions" if request_format == rest_json.ROW else "outputs"}
    if "p" in outputs and outputs["p"].dtype == np.float32 and np.isnan(outputs["p"]).any():
        assert body == b'{"%s":[NaN,Infinity]}' % (b"predictions" if request_format == rest_json.ROW else b"outputs")
