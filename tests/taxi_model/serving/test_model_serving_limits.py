"""No input makes the server spend more than its limits: a request's deadline, the cap on REST
connections, gRPC's message size, versions within int64 (on TF-Serving's half_plus_two, no training)."""

from __future__ import annotations

import json
import select
import socket
import time

import grpc
import pytest
from serving_test_support import MAX_BODY_BYTES, read_response, running_server, serve_from_config
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tf_serving_test_models import HALF_PLUS_TWO

TIMEOUT_MS = 1000
MAX_CONNECTIONS = 2
PREDICT = b'{"instances": [1.0, 2.0]}'
PREDICT_REQUEST = (
    b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(PREDICT) + PREDICT
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = serve_from_config(tmp_path_factory.mktemp("limits"), {"half_plus_two": HALF_PLUS_TWO})
    with running_server(
        root, poll_seconds=0, rest_api_timeout_in_ms=TIMEOUT_MS, rest_api_max_connections=MAX_CONNECTIONS
    ) as running:
        yield running


def connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)


def predict_answers(sock: socket.socket) -> int:
    """The status of a predict sent on the connection (a 200 with half_plus_two's answer)."""
    sock.sendall(PREDICT_REQUEST)
    status, body = read_response(sock.makefile("rb"))
    assert status != 200 or json.loads(body) == {"predictions": [2.5, 3.0]}
    return status


@pytest.mark.parametrize(
    "sent, trickled",
    [
        (b"", b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\n"),  # the head
        (b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n", b"{" + b" " * 99),  # body
    ],
    ids=["head", "body"],
)
def test_a_slow_trickle_is_answered_408_at_its_deadline(server, sent, trickled):
    with connect(server) as sock:
        sock.sendall(sent)
        start = time.monotonic()
        for byte in trickled:  # a byte every 50 ms, until the server answers
            if select.select([sock], [], [], 0.05)[0]:
                break
            sock.sendall(bytes([byte]))
        status, body = read_response(sock.makefile("rb"))
        elapsed = time.monotonic() - start
        assert status == 408 and "--rest_api_timeout_in_ms" in json.loads(body)["error"]
        assert TIMEOUT_MS / 1000 - 0.1 < elapsed < TIMEOUT_MS / 1000 + 1
        assert sock.recv(1) == b""  # and closed


def test_an_idle_connection_is_closed_after_the_timeout(server):
    with connect(server) as sock:
        start = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - start < TIMEOUT_MS / 1000 + 1


def test_connections_over_the_cap_wait_then_are_served(server):
    held = [connect(server) for _ in range(MAX_CONNECTIONS)]
    for sock in held:  # served: each holds a slot, idle, until closed
        assert predict_answers(sock) == 200
    with connect(server) as waiting:
        waiting.sendall(PREDICT_REQUEST)
        assert not select.select([waiting], [], [], 0.3)[0]  # in the backlog, not refused
        held[0].close()
        assert read_response(waiting.makefile("rb"))[0] == 200
    held[1].close()
    crowd = [connect(server) for _ in range(20)]  # many more than the cap: all served in turn
    assert [predict_answers(sock) for sock in crowd] == [200] * len(crowd)
    for sock in crowd:
        sock.close()


def test_a_5000_digit_version_is_a_400(server):
    with connect(server) as sock:
        sock.sendall(b"GET /v1/models/half_plus_two/versions/" + b"9" * 5000 + b" HTTP/1.1\r\n\r\n")
        status, body = read_response(sock.makefile("rb"))
        assert (status, json.loads(body)["error"][:26]) == (400, "Failed to convert version:")


def test_a_grpc_message_over_the_limit_is_resource_exhausted(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "half_plus_two"
        request.inputs["x"].dtype = types_pb2.DT_STRING
        request.inputs["x"].string_val.append(b" " * MAX_BODY_BYTES)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Predict(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        request.inputs["x"].Clear()
        request.inputs["x"].dtype = types_pb2.DT_FLOAT
        request.inputs["x"].tensor_shape.dim.add(size=1)
        request.inputs["x"].float_val.append(1.0)
        assert list(stub.Predict(request, timeout=10).outputs["y"].float_val) == [2.5]
