"""Batching (`--enable_batching`, `--batching_parameters_file`) on TF-Serving's half_plus_two test
SavedModel (y = 0.5 x + 2): concurrent requests are joined into fewer model calls with the same
answers, a lone request waits only its timeout, a bad request fails alone, oversize requests and a
full queue get TF-Serving's errors, and the parameters file is checked at the start."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tensorflow as tf
from serving_test_support import MAX_BATCH_SIZE, MAX_BODY_BYTES
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tf_serving_test_models import HALF_PLUS_TWO

from taxi_model.serving import server as server_module
from taxi_model.serving.batching import Batcher, BatchingParameters, parse_parameters
from taxi_model.serving.client import RestClient
from taxi_model.serving.errors import ConfigError, ServingError
from taxi_model.serving.inference import ModelVersion
from taxi_model.serving.server import ModelServer, ServerOptions

MAX_ROWS = 8  # the batching parameters' max_batch_size
PARAMETERS = f"""
max_batch_size {{ value: {MAX_ROWS} }}
batch_timeout_micros {{ value: 300000 }}
num_batch_threads {{ value: 1 }}
max_enqueued_batches {{ value: 100 }}
"""
PREDICT = "/v1/models/half_plus_two:predict"


@contextlib.contextmanager
def batching_server(tmp_path, parameters: str = PARAMETERS):
    (tmp_path / "batching.config").write_text(parameters)
    (tmp_path / "models.config").write_text(
        f'model_config_list {{ config {{ name: "half_plus_two" base_path: "{HALF_PLUS_TWO}" '
        'model_platform: "tensorflow" } }\n'
    )
    options = ServerOptions(
        serving_root=str(tmp_path),
        rest_port=0,
        grpc_port=0,
        poll_seconds=0,
        max_batch_size=MAX_BATCH_SIZE,
        max_body_bytes=MAX_BODY_BYTES,
        enable_batching=True,
        batching_parameters_file=str(tmp_path / "batching.config"),
    )
    with ModelServer(options) as running:
        yield running


@pytest.fixture
def model_calls(monkeypatch) -> list[int]:
    """The rows of each model call the server makes."""
    calls, run = [], ModelVersion._run

    def counted(signature, wanted, inputs):
        calls.append(len(next(iter(inputs.values()))))
        return run(signature, wanted, inputs)

    monkeypatch.setattr(ModelVersion, "_run", staticmethod(counted))
    return calls


def rest_predict(port: int, body: dict) -> tuple[int, dict]:
    connection = RestClient(port=port)
    try:
        return connection.request("POST", PREDICT, json.dumps(body).encode())
    finally:
        connection.close()


def grpc_predict(port: int, x: list[float]) -> list[float]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(x, np.float32).reshape(-1, 1)))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    return tf.make_ndarray(response.outputs["y"]).reshape(-1).tolist()


def test_concurrent_requests_are_joined_with_the_same_answers(tmp_path, model_calls):
    rows = [[1.0], [2.0, 3.0], [4.0, 5.0, 6.0], [7.0], [8.0, 9.0]]
    with batching_server(tmp_path) as server, ThreadPoolExecutor(2 * len(rows)) as pool:
        assert server.batcher.model_calls == 0  # the load's warm-up (its calls in model_calls) bypassed the batcher
        model_calls.clear()
        rest = [pool.submit(rest_predict, server.rest_port, {"instances": [[v] for v in x]}) for x in rows]
        over_grpc = [pool.submit(grpc_predict, server.grpc_port, x) for x in rows]
        answers = [future.result() for future in rest]
        expected = [[v / 2 + 2 for v in x] for x in rows]  # as unbatched: half_plus_two, row by row
        assert [status for status, _ in answers] == [200] * len(rows)
        assert [[y for (y,) in answer["predictions"]] for _, answer in answers] == expected
        assert [future.result() for future in over_grpc] == expected
    assert sum(model_calls) == 2 * sum(map(len, rows))
    assert max(model_calls) <= MAX_ROWS
    assert len(model_calls) < 2 * len(rows)  # joined: 18 rows need at least 3 calls of 8


def test_the_timeout_flushes_a_lone_request(tmp_path, model_calls):
    with batching_server(tmp_path) as server:
        model_calls.clear()  # the warm-up's
        started = time.monotonic()
        status, answer = rest_predict(server.rest_port, {"instances": [[3.0]]})
        elapsed = time.monotonic() - started
    assert (status, answer) == (200, {"predictions": [[3.5]]})
    assert 0.3 <= elapsed < 5  # waited batch_timeout_micros for company, then ran alone
    assert model_calls == [1]


def example(x: float | None) -> dict:
    """A serialized tf.Example with feature x as REST's b64, or bytes that are no tf.Example."""
    if x is None:
        return {"b64": base64.b64encode(b"not a proto").decode()}
    features = tf.train.Features(feature={"x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))})
    return {"b64": base64.b64encode(tf.train.Example(features=features).SerializeToString()).decode()}


def test_a_bad_request_in_a_batch_fails_alone(tmp_path, model_calls):
    values = [1.0, None, 3.0]  # None: an input the model's parse op refuses
    with batching_server(tmp_path) as server, ThreadPoolExecutor(len(values)) as pool:
        model_calls.clear()
        bodies = [{"signature_name": "classify_x_to_y", "instances": [example(x)]} for x in values]
        answers = list(pool.map(lambda body: rest_predict(server.rest_port, body), bodies))
    assert answers[0] == (200, {"predictions": [[2.5]]})
    assert answers[2] == (200, {"predictions": [[3.5]]})
    status, error = answers[1]
    assert status == 400 and "parse" in error["error"].lower()
    assert model_calls[0] == len(values)  # tried joined first, then each alone


def test_a_request_larger_than_max_batch_size_gets_tf_servings_error(tmp_path):
    too_many = [[float(i)] for i in range(MAX_ROWS + 1)]
    with batching_server(tmp_path) as server:
        status, answer = rest_predict(server.rest_port, {"instances": too_many})
        with pytest.raises(grpc.RpcError) as raised:
            grpc_predict(server.grpc_port, [x for (x,) in too_many])
    message = f"Task size {MAX_ROWS + 1} is larger than maximum input batch size {MAX_ROWS}"
    assert (status, answer) == (400, {"error": message})
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and raised.value.details() == message


def test_a_full_queue_is_unavailable():
    batcher = Batcher(BatchingParameters(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1))
    running, release = threading.Event(), threading.Event()

    def blocked(inputs):
        running.set()
        release.wait(10)
        return {"y": inputs["x"]}

    key, one_row = ("model", "signature", ()), {"x": np.zeros([1, 1], np.float32)}
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(batcher.run, key, one_row, blocked)
        assert running.wait(10)
        second = pool.submit(batcher.run, key, one_row, blocked)  # the one batch the queue may hold
        time.sleep(0.2)
        with pytest.raises(ServingError) as raised:
            batcher.run(key, one_row, blocked)
        release.set()
        assert first.result()["y"].shape == second.result()["y"].shape == (1, 1)
    batcher.stop()
    assert raised.value.http_status == 503
    assert raised.value.message == "The batch scheduling queue to which this task was submitted is full"


def test_the_parameters_file_parses():
    parameters = parse_parameters(PARAMETERS + "allowed_batch_sizes: 4 allowed_batch_sizes: 8")
    assert parameters == BatchingParameters(
        max_batch_size=8,
        batch_timeout_micros=300000,
        max_enqueued_batches=100,
        num_batch_threads=1,
        allowed_batch_sizes=(4, 8),
    )
    assert parse_parameters("") == BatchingParameters()  # TF-Serving's defaults


@pytest.mark.parametrize(
    ("parameters", "error"),
    [
        ("max_batch_size { value: }", "Invalid protobuf file"),
        ("max_batch_size: 8", "Invalid protobuf file"),  # a wrapper message, not a number
        (
            "max_batch_size { value: 8 } allowed_batch_sizes: 4",
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; expected 8",
        ),
        ("num_batch_threads { value: 0 }", "must be >= 1"),
    ],
)
def test_a_bad_parameters_file_stops_the_start(tmp_path, parameters, error):
    (tmp_path / "batching.config").write_text(parameters)
    with pytest.raises(SystemExit) as raised:
        server_module.main(
            ["--serving_root", str(tmp_path), "--rest_port", "0", "--grpc_port", "0", "--enable_batching"]
            + ["--batching_parameters_file", str(tmp_path / "batching.config")]
        )
    assert str(raised.value.code).startswith("Failed to start server. Error: ")
    assert error in str(raised.value.code)
    with pytest.raises(ConfigError):
        ModelServer(ServerOptions(str(tmp_path), enable_batching=True, batching_parameters_file="/no/such/file"))
