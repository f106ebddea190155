"""No input gives a 500: generated REST requests (paths, methods, JSON and raw bodies, framing) and gRPC
requests (dtypes, shapes, missing fields) thrown at one running server, on TF-Serving's test SavedModels.
Every answer must be a 2xx, or a 4xx with {"error": ...} (REST) or a gRPC code other than INTERNAL and
UNKNOWN, and the server must keep answering. Reproducible (derandomized) and bounded in count."""

from __future__ import annotations

import base64
import json
import math
import socket
import string
import tempfile
from pathlib import Path
from urllib.parse import quote

import grpc
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from serving_test_support import read_response, running_server, serve_from_config
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    model_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tf_serving_test_models import HALF_PLUS_THREE, HALF_PLUS_TWO, HALF_PLUS_TWO_TF2

MODELS = {"half_plus_two": HALF_PLUS_TWO, "half_plus_two_tf2": HALF_PLUS_TWO_TF2, "half_plus_three": HALF_PLUS_THREE}
SIGNATURES = ["serving_default", "classify_x_to_y", "regress_x_to_y", "regress_x2_to_y3", "classify_x2_to_y3", ""]
KEYS = ["instances", "inputs", "examples", "signature_name", "context", "x", "y", "b64"]
FAILURES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "hypothesis")  # its caches, not a .hypothesis/ in the repo


def bounded(max_examples: int):
    """Reproducible in CI (derandomized, no example database written into the repository)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = serve_from_config(tmp_path_factory.mktemp("properties"), MODELS)
    with running_server(root, poll_seconds=0) as running:
        yield running


def mostly(common: st.SearchStrategy, rare: st.SearchStrategy) -> st.SearchStrategy:
    """`common`, and one time in 8 `rare`: most examples get past the first checks to the model. (Rare on
    the 8th value: Hypothesis draws the simplest, 0, more often than its share.)"""
    return st.integers(0, 7).flatmap(lambda roll: rare if roll == 7 else common)


rarely = mostly(st.just(False), st.just(True))


# REST

some_text = st.text(max_size=10)
names = mostly(st.sampled_from(list(MODELS)), st.one_of(st.just(""), some_text))
versions = mostly(st.just("123"), st.one_of(st.integers(0, 2**64).map(str), st.just("9" * 5000), some_text))
floats = st.floats(width=32)
plausible_rows = st.one_of(st.lists(floats, max_size=4), st.lists(st.lists(floats, max_size=3), max_size=3))
b64_objects = st.one_of(
    st.binary(max_size=16).map(lambda data: {"b64": base64.b64encode(data).decode()}),
    some_text.map(lambda t: {"b64": t}),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), some_text, b64_objects),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), some_text), children, max_size=4),
    ),
    max_leaves=24,
)
documents = mostly(
    st.fixed_dictionaries(
        {},
        optional={
            "instances": mostly(plausible_rows, json_values),
            "inputs": mostly(st.one_of(plausible_rows, st.fixed_dictionaries({"x": plausible_rows})), json_values),
            "examples": mostly(st.lists(st.fixed_dictionaries({"x": floats}), max_size=3), json_values),
            "context": json_values,
            "signature_name": mostly(st.sampled_from(SIGNATURES), json_values),
        },
    ),
    json_values,
)
deeply_nested = st.tuples(st.integers(1, 3000), st.sampled_from([(b"[", b"]"), (b'{"x": ', b"}")])).map(
    lambda nesting: b'{"instances": ' + nesting[1][0] * nesting[0] + b"1" + nesting[1][1] * nesting[0] + b"}"
)
bodies = mostly(
    documents.map(lambda document: json.dumps(document).encode()), st.one_of(deeply_nested, st.binary(max_size=200))
)
other_methods = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]),
    st.text(string.ascii_letters, min_size=1, max_size=8),
)
extra_headers = mostly(
    st.just([]),
    st.lists(
        st.sampled_from([b"Connection: close", b"Expect: 100-continue", b"Content-Type: text/plain", b"X: \xff"]),
        max_size=2,
    ),
)


@st.composite
def request_lines(draw) -> str:
    """A method and path: mostly a POST of :predict, :classify or :regress or a GET of status or metadata."""
    if draw(rarely):
        return f"{draw(other_methods)} /{quote(draw(st.text(max_size=30)), safe='/:')}"
    path = "/v1/models/" + quote(draw(names), safe="")
    spec = draw(mostly(st.sampled_from(["", "/versions/"]), st.just("/labels/")))
    if spec:
        path += spec + quote(draw(versions if spec == "/versions/" else names), safe="")
    action = draw(mostly(st.sampled_from([":predict", ":classify", ":regress", "", "/metadata"]), st.just(":explain")))
    method = draw(mostly(st.just("POST" if action.startswith(":") else "GET"), other_methods))
    return f"{method} {path}{action}"


@st.composite
def framings(draw, body: bytes) -> tuple[list[bytes], bytes]:
    """The body's framing headers and the bytes sent: mostly right, else off by a little or malformed."""
    kind = draw(
        mostly(st.just("length"), st.sampled_from(["off by some", "bad length", "chunked", "bad chunked", "none"]))
    )
    if kind == "length":
        return [b"Content-Length: %d" % len(body)], body
    if kind == "off by some":
        return [b"Content-Length: %d" % (len(body) + draw(st.integers(-8, 8)))], body
    if kind == "bad length":
        lengths = draw(st.lists(st.text("0123456789+-x ,", max_size=25), min_size=1, max_size=2))
        return [b"Content-Length: " + length.encode() for length in lengths], body
    if kind == "none":
        return [], body
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
    chunks = [body[start:end] for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    sizes = [b"%x" % len(chunk) for chunk in chunks] + [b"0"]
    if kind == "bad chunked":
        sizes[draw(st.integers(0, len(sizes) - 1))] = draw(st.binary(max_size=6))
    framed = b"".join(size + b"\r\n" + chunk + b"\r\n" for size, chunk in zip(sizes, [*chunks, b""], strict=True))
    return [b"Transfer-Encoding: chunked"], framed


def exchange(server, request: bytes) -> list[tuple[int, bytes]]:
    """Sends the bytes, ends the sending side, and reads every answer until the server closes."""
    answers = []
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as sock:
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            reader = sock.makefile("rb")
            while answer := read_response(reader):
                answers.append(answer)
        except (ConnectionResetError, BrokenPipeError):  # it closed with our bytes unread: after its answers
            pass
    return answers


def assert_no_5xx(server, request: bytes) -> None:
    for status, body in exchange(server, request):
        if status == 100:  # Expect: 100-continue's interim answer
            continue
        event(f"HTTP {status}")  # what the examples reached (--hypothesis-show-statistics)
        assert 200 <= status < 500, (status, body[:300])
        answer = json.loads(body)
        assert status < 400 or "error" in answer, (status, answer)
    assert exchange(server, b"GET /v1/models/half_plus_two HTTP/1.1\r\n\r\n")[0][0] == 200  # still serving


@bounded(max_examples=1000)
@given(request_line=request_lines(), headers=extra_headers, framed=bodies.flatmap(framings))
def test_rest_requests_never_get_a_5xx(server, request_line, headers, framed):
    framing, body = framed
    head = [f"{request_line} HTTP/1.1".encode(), b"Host: x", *headers, *framing]
    assert_no_5xx(server, b"\r\n".join(head) + b"\r\n\r\n" + body)


@bounded(max_examples=300)
@given(
    start=st.sampled_from([b"", b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\n"]), data=st.binary(max_size=300)
)
def test_raw_bytes_never_get_a_5xx(server, start, data):
    assert_no_5xx(server, start + data)


# gRPC

int64s = st.integers(-(2**63), 2**63 - 1)
VALUES = {  # TensorProto's typed fields and values that fit them
    "float_val": st.floats(width=32),
    "double_val": st.floats(),
    "int_val": st.integers(-(2**31), 2**31 - 1),
    "int64_val": int64s,
    "bool_val": st.booleans(),
    "string_val": st.binary(max_size=12),
    "half_val": st.integers(-(2**31), 2**31 - 1),
    "scomplex_val": st.floats(width=32),
    "dcomplex_val": st.floats(),
    "uint32_val": st.integers(0, 2**32 - 1),
    "uint64_val": st.integers(0, 2**64 - 1),
}


@st.composite
def tensors(draw) -> tensor_pb2.TensorProto:
    """Mostly a float or string tensor whose values fill its small shape; else any dtype, shape and values."""
    dtype = draw(
        mostly(
            st.sampled_from([types_pb2.DT_FLOAT, types_pb2.DT_STRING]), st.integers(0, max(types_pb2.DataType.values()))
        )
    )
    small_shapes = st.one_of(st.sampled_from([[1], [2], [1, 1], [3, 1]]), st.lists(st.integers(0, 3), max_size=3))
    dims = draw(mostly(small_shapes, st.lists(st.sampled_from([-2, -1, 2**31, 2**62]), max_size=4)))
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    proto.tensor_shape.unknown_rank = draw(rarely)
    if draw(rarely):
        proto.tensor_content = draw(st.binary(max_size=64))
        return proto
    field = draw(
        mostly(st.just({types_pb2.DT_FLOAT: "float_val"}.get(dtype, "string_val")), st.sampled_from(list(VALUES)))
    )
    filled = math.prod(dims) if 0 <= math.prod(dims) <= 27 else 1
    count = draw(mostly(st.just(filled), st.integers(0, 8)))
    getattr(proto, field).extend(draw(st.lists(VALUES[field], min_size=count, max_size=count)))
    return proto


@st.composite
def model_specs(draw) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=draw(names), signature_name=draw(mostly(st.sampled_from(SIGNATURES), some_text)))
    choice = draw(mostly(st.sampled_from(["latest", "version"]), st.sampled_from(["any version", "label"])))
    if choice == "version":
        spec.version.value = 123
    elif choice == "any version":
        spec.version.value = draw(int64s)
    elif choice == "label":
        spec.version_label = draw(some_text)
    return spec


@st.composite
def examples(draw) -> example_pb2.Example:
    example = example_pb2.Example()
    for name in draw(st.lists(mostly(st.sampled_from(["x", "x2"]), some_text), max_size=3)):
        feature = example.features.feature[name]
        kind = draw(mostly(st.just("float_list"), st.sampled_from(["int64_list", "bytes_list"])))
        values = {"float_list": st.floats(width=32), "int64_list": int64s, "bytes_list": st.binary(max_size=8)}[kind]
        getattr(feature, kind).value.extend(draw(st.lists(values, max_size=4)))
    return example


@st.composite
def predict_requests(draw) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest(output_filter=draw(st.lists(st.sampled_from(["y", "nope"]), max_size=2)))
    if not draw(rarely):
        request.model_spec.CopyFrom(draw(model_specs()))
    for key in draw(mostly(st.just(["x"]), st.lists(st.one_of(st.just("inputs"), some_text), max_size=2))):
        request.inputs[key].CopyFrom(draw(tensors()))
    return request


@st.composite
def example_requests(draw, request_type):
    """A ClassificationRequest or RegressionRequest: examples, with or without a context, or no input."""
    request = request_type()
    if not draw(rarely):
        request.model_spec.CopyFrom(draw(model_specs()))
    kind = draw(st.sampled_from(["examples", "with context", "none"]))
    if kind == "examples":
        request.input.example_list.examples.extend(draw(st.lists(examples(), max_size=3)))
    elif kind == "with context":
        request.input.example_list_with_context.examples.extend(draw(st.lists(examples(), max_size=3)))
        request.input.example_list_with_context.context.CopyFrom(draw(examples()))
    return request


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


@bounded(max_examples=1000)
@given(
    request=st.one_of(
        predict_requests(),
        example_requests(classification_pb2.ClassificationRequest),
        example_requests(regression_pb2.RegressionRequest),
    )
)
def test_grpc_requests_never_get_internal_or_unknown(stub, request):
    call = {
        predict_pb2.PredictRequest: stub.Predict,
        classification_pb2.ClassificationRequest: stub.Classify,
        regression_pb2.RegressionRequest: stub.Regress,
    }[type(request)]
    try:
        call(request, timeout=30)
        event("OK")
    except grpc.RpcError as e:
        event(f"{e.code().name}: {e.details()[:30]}")
        assert e.code() not in FAILURES, (e.code(), e.details())
