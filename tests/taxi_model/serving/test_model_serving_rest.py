"""The REST API against TF-Serving's contract: paths, formats, b64, errors, keep-alive."""

from __future__ import annotations

import base64
import http.client
import json
import socket

import numpy as np
import pytest
from serving_test_support import MAX_BATCH_SIZE, MAX_BODY_BYTES, running_server

from taxi_model.serving.client import RestClient


def b64(example: bytes) -> dict:
    return {"b64": base64.b64encode(example).decode()}


def post(rest, path: str, document) -> tuple[int, dict]:
    return rest.request("POST", path, json.dumps(document).encode())


def test_status_is_tf_servings(rest):
    assert rest.request("GET", "/v1/models/taxi") == (
        200,
        {
            "model_version_status": [
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            ]
        },
    )
    assert rest.request("GET", "/v1/models/taxi/versions/1")[1]["model_version_status"][0]["version"] == "1"


def test_metadata_holds_the_signature_defs(rest):
    status, metadata = rest.request("GET", "/v1/models/taxi/metadata")
    assert status == 200
    assert metadata["model_spec"] == {"name": "taxi", "version": "1", "signature_name": ""}
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    serving = signatures["serving_default"]
    assert serving["method_name"] == "tensorflow/serving/predict"
    assert serving["inputs"]["examples"]["dtype"] == "DT_STRING"
    assert serving["inputs"]["examples"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
    assert serving["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"
    assert "transform_features" in signatures


@pytest.mark.parametrize("path", ["/v1/models/taxi:predict", "/v1/models/taxi/versions/1:predict"])
def test_row_format_answers_what_the_saved_model_answers(rest, examples, saved_model_outputs, path):
    status, answer = post(rest, path, {"instances": [b64(e) for e in examples]})
    assert status == 200
    # One output: the values themselves, one per row; float32 survives JSON exactly.
    np.testing.assert_array_equal(
        np.array(answer["predictions"], np.float32), saved_model_outputs["serving_default"]["probabilities"]
    )


def test_named_rows_and_the_columnar_format_agree(rest, examples, saved_model_outputs):
    expected = saved_model_outputs["serving_default"]["probabilities"]
    status, named = post(rest, "/v1/models/taxi:predict", {"instances": [{"examples": b64(e)} for e in examples]})
    assert status == 200
    np.testing.assert_array_equal(np.array(named["predictions"], np.float32), expected)
    status, columnar = post(
        rest,
        "/v1/models/taxi:predict",
        {"signature_name": "serving_default", "inputs": {"examples": [b64(e) for e in examples]}},
    )
    assert status == 200 and set(columnar) == {"outputs"}
    np.testing.assert_array_equal(np.array(columnar["outputs"], np.float32), expected)


def test_several_outputs_come_as_one_object_per_row(rest, examples, eval_rows, saved_model_outputs):
    status, answer = post(
        rest,
        "/v1/models/taxi:predict",
        {"signature_name": "transform_features", "instances": [b64(e) for e in examples[:3]]},
    )
    assert status == 200
    transformed = saved_model_outputs["transform_features"]
    for i, row in enumerate(answer["predictions"]):
        assert set(row) == set(transformed)
        assert row["unique_key"] == eval_rows[i]["unique_key"]  # a string output, as text
        assert np.float32(row["fare_xf"]) == transformed["fare_xf"][i]
        assert row["payment_type_xf"] == transformed["payment_type_xf"][i]


def test_keep_alive_serves_many_requests_on_one_connection(rest, examples):
    body = {"instances": [b64(examples[0])]}
    post(rest, "/v1/models/taxi:predict", body)
    connection = rest._connection.sock
    for _ in range(20):
        assert post(rest, "/v1/models/taxi:predict", body)[0] == 200
    assert rest._connection.sock is connection


BAD_REQUESTS = [  # (method, path, body, HTTP status, start of the error)
    ("POST", "/v1/models/taxi:predict", b'{"instances": [', 400, "JSON Parse error"),
    ("POST", "/v1/models/taxi:predict", b"[1, 2]", 400, "JSON Value: [1, 2] Is not object"),
    ("POST", "/v1/models/taxi:predict", b"{}", 400, "Missing 'inputs' or 'instances' key"),
    ("POST", "/v1/models/nope:predict", b'{"instances": [""]}', 404, "Servable not found for request: Latest(nope)"),
    (
        "POST",
        "/v1/models/taxi/versions/7:predict",
        b'{"instances": [""]}',
        404,
        "Servable not found for request: Specific(taxi, 7)",
    ),
    (
        "POST",
        "/v1/models/taxi/labels/nope:predict",
        b'{"instances": [""]}',
        400,
        "Unrecognized servable version label: nope",
    ),
    (
        "POST",
        "/v1/models/taxi:predict",
        b'{"instances": [{"rows": ""}]}',
        400,
        "Failed to process element: 0 key: rows of 'instances' list. Error: JSON object: does not have named input",
    ),
    ("POST", "/v1/models/taxi:predict", b'{"inputs": {"rows": [""]}}', 400, "Missing named input: examples"),
    (
        "POST",
        "/v1/models/taxi:predict",
        b'{"instances": [1.5]}',
        400,
        "JSON Value: 1.5 Type: Number is not of expected type: string",
    ),
    (
        "POST",
        "/v1/models/taxi:predict",
        b'{"instances": [123456789012345678901234567890]}',
        400,
        "JSON Value: 123456789012345678901234567890 Type: Number is not of expected type: string",
    ),
    ("POST", "/v1/models/taxi:predict", b'{"instances": [{"b64": "%%%"}]}', 400, "Unable to base64 decode"),
    (
        "POST",
        "/v1/models/taxi:predict",
        b'{"instances": [{"examples": {"b64": "AA"}}]}',
        400,
        "Unable to base64 decode",
    ),
    # Any shape goes to the model, as in TF-Serving; the model's own op refuses this one.
    (
        "POST",
        "/v1/models/taxi:predict",
        b'{"instances": [["", ""]]}',
        400,
        "Expected serialized to be a scalar or vector, got shape: [1,2]",
    ),
    ("POST", "/v1/models/taxi:predict", b'{"instances": ["not an example"]}', 400, "Could not parse example input"),
    (
        "POST",
        "/v1/models/taxi:predict",
        b'{"signature_name": "nope", "instances": [""]}',
        400,
        'Serving signature name: "nope" not found in signature def',
    ),
    (
        "POST",
        "/v1/models/taxi:predict",
        json.dumps({"instances": [""] * (MAX_BATCH_SIZE + 1)}).encode(),
        400,
        f"Task size {MAX_BATCH_SIZE + 1} is larger than maximum input batch size {MAX_BATCH_SIZE}",
    ),
    ("POST", "/v1/models/taxi:predict", b" " * (MAX_BODY_BYTES + 1), 413, "request body larger than the limit"),
    # serving_default takes `examples`: Classify and Regress need an input named `inputs`.
    (
        "POST",
        "/v1/models/taxi:classify",
        b'{"examples": [{}]}',
        400,
        'No classification inputs found in SignatureDef: inputs {\n  key: "examples"',
    ),
    (
        "POST",
        "/v1/models/taxi:regress",
        b'{"examples": [{}]}',
        400,
        'No regression inputs found in SignatureDef: inputs {\n  key: "examples"',
    ),
    ("POST", "/v1/models/taxi:explain", b"{}", 400, "Malformed request: POST /v1/models/taxi:explain"),
    (
        "POST",
        "/v1/models/taxi:predict",
        b'{"instances": ' + b"[" * 5000 + b'""' + b"]" * 5000 + b"}",
        400,
        "JSON Parse error: The document is nested too deeply",
    ),
    (
        "POST",
        "/v1/models/taxi:predict",
        b'{"instances": ' + b"[" * 900 + b'""' + b"]" * 900 + b"}",
        400,
        "Encountered list at unexpected level: 32",
    ),
    (
        "POST",
        "/v1/models/taxi:predict",
        b'{"instances": [{"examples": ' + b'{"a": ' * 900 + b"1" + b"}" * 900 + b"}]}",
        400,
        "JSON Value: ",
    ),
    (
        "POST",
        "/v1/models/taxi/versions/" + "9" * 5000 + ":predict",
        b'{"instances": [""]}',
        400,
        "Failed to convert version: 999",
    ),
    ("GET", "/v1/models/taxi/versions/" + "9" * 5000, None, 400, "Failed to convert version: 999"),
    (
        "GET",
        "/v1/models/taxi/versions/9223372036854775808",
        None,
        400,
        "Failed to convert version: 9223372036854775808 to numeric.",
    ),  # int64's largest + 1
    ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    ("GET", "/v1/models/taxi/versions/7", None, 404, "Could not find version 7 of model taxi"),
    ("GET", "/v1/models", None, 400, "Missing model name in request."),
    ("DELETE", "/v1/models/taxi", None, 400, "Malformed request: DELETE /v1/models/taxi"),
]


@pytest.mark.parametrize(
    "method, path, body, http_status, error",
    BAD_REQUESTS,
    ids=[f"{m} {p[:60]} {e[:30]}" for m, p, _, _, e in BAD_REQUESTS],
)
def test_bad_requests_get_tf_serving_errors_and_the_server_keeps_serving(
    rest, examples, method, path, body, http_status, error
):
    status, answer = rest.request(method, path, body)
    assert (status, answer["error"][: len(error)]) == (http_status, error)
    assert post(rest, "/v1/models/taxi:predict", {"instances": [b64(examples[0])]})[0] == 200  # same connection


def test_a_chunked_body_is_read(server, examples, saved_model_outputs):
    body = json.dumps({"instances": [b64(e) for e in examples]}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    connection.request(
        "POST",
        "/v1/models/taxi:predict",
        body=iter([body[:100], body[100:]]),
        headers={"Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    response = connection.getresponse()
    assert response.status == 200
    np.testing.assert_array_equal(
        np.array(json.loads(response.read())["predictions"], np.float32),
        saved_model_outputs["serving_default"]["probabilities"],
    )
    connection.close()


def raw_exchange(port: int, head: bytes, body: bytes = b"") -> tuple[int, dict, bool]:
    """Sends a request's head and body on a raw socket; returns the status, the JSON answer and whether
    the server then closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        try:
            sock.sendall(body)
        except (BrokenPipeError, ConnectionResetError):  # the server refused the body and closed
            pass
        reader = sock.makefile("rb")
        status = int(reader.readline().split()[1])
        headers = {}
        while line := reader.readline().strip():
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        answer = json.loads(reader.read(int(headers["content-length"])))
        try:
            closed = reader.read(1) == b""
        except ConnectionResetError:
            closed = True
        return status, answer, closed


PREDICT_HEAD = b"POST /v1/models/taxi:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
BAD_FRAMINGS = [  # (headers, body, HTTP status, start of the error)
    (b"Content-Length: -1\r\n", b" " * (MAX_BODY_BYTES * 4), 400, "bad Content-Length: -1"),
    (b"Content-Length: +5\r\n", b"{}   ", 400, "bad Content-Length: +5"),
    (b"Content-Length: 0x10\r\n", b"{}", 400, "bad Content-Length: 0x10"),
    (b"Content-Length: 1_0\r\n", b"{}", 400, "bad Content-Length: 1_0"),
    (b"Content-Length: 2\r\nContent-Length: 3\r\n", b"{} ", 400, "bad Content-Length"),
    (b"Content-Length: " + b"9" * 5000 + b"\r\n", b" " * 1000, 413, "request body larger than the limit"),
    (b"Content-Length: %d\r\n" % (40 << 20), b" " * (MAX_BODY_BYTES + 1), 413, "request body larger than the limit"),
    (b"Transfer-Encoding: chunked\r\n", b"-1\r\n" + b" " * (MAX_BODY_BYTES * 4), 400, "malformed chunk size"),
    (b"Transfer-Encoding: chunked\r\n", b"0x10\r\n" + b" " * 16 + b"\r\n0\r\n\r\n", 400, "malformed chunk size"),
    (b"Transfer-Encoding: chunked\r\n", b"zz\r\n{}\r\n0\r\n\r\n", 400, "malformed chunk size"),
    (b"Transfer-Encoding: chunked\r\n", b"2\r\n{}XX0\r\n\r\n", 400, "malformed chunked request body"),
    (
        b"Transfer-Encoding: chunked\r\n",
        b"%x\r\n" % (MAX_BODY_BYTES + 1) + b" " * (MAX_BODY_BYTES + 1),
        413,
        "request body larger than the limit",
    ),
    (
        b"Transfer-Encoding: chunked\r\n",
        (b"%x\r\n" % (MAX_BODY_BYTES // 2) + b" " * (MAX_BODY_BYTES // 2) + b"\r\n") * 3,
        413,
        "request body larger than the limit",
    ),  # each chunk within the limit, the body not
    (b"Transfer-Encoding: chunked\r\n", b"1" + b";x" * (1 << 16) + b"\r\n", 400, "malformed chunked request body"),
    (b"Transfer-Encoding: gzip\r\n", b"{}", 400, "unsupported Transfer-Encoding: gzip"),
]


@pytest.mark.parametrize(
    "headers, body, http_status, error", BAD_FRAMINGS, ids=[f"{h[:40]!r} {b[:12]!r}" for h, b, _, _ in BAD_FRAMINGS]
)
def test_bad_framing_is_refused_and_closes_the_connection(server, rest, examples, headers, body, http_status, error):
    status, answer, closed = raw_exchange(server.rest_port, PREDICT_HEAD + headers + b"\r\n", body)
    assert (status, answer["error"][: len(error)], closed) == (http_status, error, True)
    assert post(rest, "/v1/models/taxi:predict", {"instances": [b64(examples[0])]})[0] == 200


def test_a_strictly_framed_body_keeps_the_connection(server, examples):
    body = json.dumps({"instances": [b64(examples[0])]}).encode()
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as sock:
        reader = sock.makefile("rb")
        for head in (b"Content-Length: 000%d\r\n" % len(body), b"Transfer-Encoding: chunked\r\n"):
            framed = (
                body if b"Content-Length" in head else b"%X;ext=1\r\n" % len(body) + body + b"\r\n0\r\nA: b\r\n\r\n"
            )
            sock.sendall(PREDICT_HEAD + head + b"\r\n" + framed)
            assert reader.readline().split()[1] == b"200"
            length = 0
            while line := reader.readline().strip():
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            assert "predictions" in json.loads(reader.read(length))


@pytest.fixture(scope="module")
def scalar_outputs_server(tmp_path_factory):
    """Serves `scalars` version 1: a model whose outputs are scalar strings (text, and not UTF-8)."""
    import tensorflow as tf

    class Scalars(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, x):
            return {"text": tf.constant("café"), "text_bytes": tf.constant("café"), "binary": tf.constant(b"\xff\x00")}

    root = tmp_path_factory.mktemp("scalars")
    module = Scalars()
    tf.saved_model.save(module, str(root / "scalars" / "1"), signatures={"serving_default": module.serve})
    with running_server(root) as running:
        yield running


def test_scalar_string_outputs_are_json_text_or_b64(scalar_outputs_server):
    rest = RestClient(port=scalar_outputs_server.rest_port)
    text_b64 = base64.b64encode("café".encode()).decode()
    assert post(rest, "/v1/models/scalars:predict", {"inputs": {"x": ["a"]}}) == (
        200,
        {"outputs": {"text": "café", "text_bytes": {"b64": text_b64}, "binary": {"b64": "/wA="}}},
    )
    status, answer = post(rest, "/v1/models/scalars:predict", {"instances": ["a"]})  # scalars have no rows
    assert status == 400 and "has no shape information" in answer["error"]
    rest.close()
