"""Metrics (TF-Serving's Prometheus page) and request logs (TF-Serving's PredictionLog records), on
TF-Serving's half_plus_two test SavedModel (y = 0.5 x + 2): no trained model needed."""

from __future__ import annotations

import http.client
import json
import logging
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from serving_test_support import publish_version
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    model_pb2,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import logging_config_pb2
from tf_serving_test_models import HALF_PLUS_TWO, VERSION

from taxi_model.serving import metrics, request_log
from taxi_model.serving.errors import ConfigError
from taxi_model.serving.inference import CLASSIFY_METHOD, REGRESS_METHOD
from taxi_model.serving.server import ModelServer, ServerOptions

# model: its logging_config's sampling rate (None: no logging_config)
SAMPLING_RATES = {"counted": None, "logged": 1.0, "sampled": 0.5, "never_logged": 0.0, "broken_disk": 1.0}
MAX_FILE_BYTES = 2000  # a few records a file: rotation within a few requests
SAMPLED_REQUESTS = 200


def _models_config(root: Path) -> str:
    entries = []
    for name, rate in SAMPLING_RATES.items():
        logging_config = ""
        if rate is not None:
            logging_config = (
                'logging_config { log_collector_config { type: "tfrecord" filename_prefix: "requests" } '
                f"sampling_config {{ sampling_rate: {rate} }} }}"
            )
        entries.append(f'config {{ name: "{name}" base_path: "{root / name}" {logging_config} }}')
    return "model_config_list { " + " ".join(entries) + " }\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    for name in SAMPLING_RATES:
        publish_version(HALF_PLUS_TWO / f"{VERSION:08d}", root / name, VERSION)
    (root / "models.config").write_text(_models_config(root))
    (root / request_log.LOG_DIR).mkdir()
    (root / request_log.LOG_DIR / "broken_disk").write_text("a file where its log folder should be")
    monitoring = root / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
    options = ServerOptions(
        serving_root=str(root),
        rest_port=0,
        grpc_port=0,
        poll_seconds=0,
        monitoring_config_file=str(monitoring),
        request_log_max_bytes=MAX_FILE_BYTES,
        request_log_seed=16,
    )
    with ModelServer(options) as running:
        yield running


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _http(server, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        connection.request(method, path, body=json.dumps(body) if body is not None else None)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _rest_predict(server, model: str, instances: list[float]) -> tuple[int, bytes]:
    return _http(server, "POST", f"/v1/models/{model}:predict", {"instances": instances})


def _grpc_predict(stub, model: str, values: list[float], input_name: str = "x"):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(values, dtype=tf.float32))
    return stub.Predict(request, timeout=30)


def _example(x: float) -> tf.train.Example:
    return tf.train.Example(features=tf.train.Features(feature={"x": tf.train.Feature(float_list={"value": [x]})}))


def _samples(server) -> dict[tuple[str, frozenset], float]:
    """(sample name, its labels): value, of the server's Prometheus page."""
    status, page = _http(server, "GET", metrics.PROMETHEUS_PATH)
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(page.decode())
        for sample in family.samples
    }


def _value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# -- metrics


def test_requests_are_counted_by_model_version_api_entrypoint_and_status(server, stub):
    before = _samples(server)
    assert _rest_predict(server, "counted", [1.0, 2.0])[0] == 200
    assert _rest_predict(server, "counted", ["not a number"])[0] == 400
    assert _http(server, "GET", "/v1/models/counted")[0] == 200
    _grpc_predict(stub, "counted", [1.0])
    with pytest.raises(grpc.RpcError) as refused:
        _grpc_predict(stub, "counted", [1.0], input_name="y")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = _samples(server)

    def added(name: str, **labels) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    count = ":tensorflow:serving:request_count"
    assert added(count, model_name="counted", status="OK") == 3
    assert added(count, model_name="counted", status="INVALID_ARGUMENT") == 2
    by_api = ":taxi:serving:request_count"
    version = str(VERSION)
    assert added(by_api, model_name="counted", version=version, API="predict", entrypoint="REST", status="OK") == 1
    assert added(by_api, model_name="counted", version=version, API="Predict", entrypoint="GRPC", status="OK") == 1
    assert added(by_api, model_name="counted", version="", API="get_model_status", entrypoint="REST", status="OK") == 1
    assert (
        added(
            by_api, model_name="counted", version=version, API="Predict", entrypoint="GRPC", status="INVALID_ARGUMENT"
        )
        == 1
    )
    # Latencies of the requests that succeeded only, as TF-Serving records them.
    latency = ":tensorflow:serving:request_latency_count"
    assert added(latency, model_name="counted", API="predict", entrypoint="REST") == 1
    assert added(latency, model_name="counted", API="Predict", entrypoint="GRPC") == 1
    assert added(":tensorflow:serving:runtime_latency_count", model_name="counted", API="Predict", runtime="TF1") == 2


def test_the_page_has_tf_servings_names_histograms_and_load_state(server):
    status, page = _http(server, "GET", metrics.PROMETHEUS_PATH)
    text = page.decode()
    assert "_total" not in text and "_created" not in text  # TF-Serving's exporter writes neither
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text
    assert ':tensorflow:serving:request_latency_bucket{API="predict",entrypoint="REST",le="+Inf",model_name=' in text
    samples = _samples(server)
    model_path = str(Path(server.repository.serving_root) / "counted" / str(VERSION))
    assert (
        _value(samples, ":tensorflow:cc:saved_model:load_attempt_count", model_path=model_path, status="success") == 1
    )
    assert _value(samples, ":tensorflow:cc:saved_model:load_latency", model_path=model_path) > 0


def test_metrics_are_off_unless_a_monitoring_config_enables_them(tmp_path):
    assert ServerOptions(serving_root="").monitoring_config_file == ""
    assert metrics.prometheus_path("") is None
    config = tmp_path / "monitoring.config"
    config.write_text("prometheus_config { enable: false }")
    assert metrics.prometheus_path(str(config)) is None
    config.write_text("prometheus_config { enable: true }")
    assert metrics.prometheus_path(str(config)) == metrics.PROMETHEUS_PATH
    config.write_text("prometheus_config { enabled: true }")
    with pytest.raises(ConfigError, match="Invalid protobuf file"):
        ModelServer(ServerOptions(serving_root=str(tmp_path), monitoring_config_file=str(config)))


# -- request logs


def _records(server, model: str) -> list[prediction_log_pb2.PredictionLog]:
    """The records logged of `model` so far, oldest first, read as a monitor reads them."""
    server.request_logs.flush()
    files = sorted((Path(server.request_logs.log_root) / model).glob("requests-*.tfrecord"))
    return [
        prediction_log_pb2.PredictionLog.FromString(record)
        for path in files
        for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()
    ]


def test_each_served_request_is_logged_with_its_request_and_response(server, stub):
    assert _rest_predict(server, "logged", [1.0, 2.0])[0] == 200
    _grpc_predict(stub, "logged", [4.0])
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name, classify.model_spec.signature_name = "logged", "classify_x_to_y"
    classify.input.example_list.examples.add().CopyFrom(_example(2.0))
    stub.Classify(classify, timeout=30)
    status, _ = _http(
        server, "POST", "/v1/models/logged:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    )
    assert status == 200
    multi = inference_pb2.MultiInferenceRequest()
    multi.input.example_list.examples.add().CopyFrom(_example(2.0))
    for signature_name, method_name in (("regress_x_to_y", REGRESS_METHOD), ("classify_x_to_y", CLASSIFY_METHOD)):
        task = multi.tasks.add(method_name=method_name)
        task.model_spec.name, task.model_spec.signature_name = "logged", signature_name
    stub.MultiInference(multi, timeout=30)
    assert _rest_predict(server, "logged", ["not a number"])[0] == 400  # a failed request is not logged

    records = _records(server, "logged")
    assert [record.WhichOneof("log_type") for record in records] == [
        "predict_log",
        "predict_log",
        "classify_log",
        "regress_log",
        "multi_inference_log",
    ]
    rest_predict = records[0].predict_log
    assert tf.make_ndarray(rest_predict.request.inputs["x"]).tolist() == [1.0, 2.0]
    assert tf.make_ndarray(rest_predict.response.outputs["y"]).tolist() == [2.5, 3.0]
    assert tf.make_ndarray(records[1].predict_log.response.outputs["y"]).tolist() == [4.0]
    assert records[2].classify_log.response.result.classifications[0].classes[0].score == 3.0
    assert records[2].classify_log.request.input == classify.input
    assert [r.value for r in records[3].regress_log.response.result.regressions] == [3.0]
    assert records[4].multi_inference_log.request == multi
    for record in records:
        metadata = record.log_metadata
        assert (metadata.model_spec.name, metadata.model_spec.version.value) == ("logged", VERSION)
        assert metadata.sampling_config.sampling_rate == 1.0
        assert list(metadata.saved_model_tags) == ["serve"]
        assert metadata.timestamp_secs > 0
    assert records[0].log_metadata.model_spec.signature_name == "serving_default"


def test_requests_are_sampled_at_the_models_rate(server):
    for _ in range(SAMPLED_REQUESTS):
        assert _rest_predict(server, "sampled", [1.0])[0] == 200
        assert _rest_predict(server, "never_logged", [1.0])[0] == 200
        assert _rest_predict(server, "counted", [1.0])[0] == 200  # no logging_config: TF-Serving's default
    assert 0.35 * SAMPLED_REQUESTS < len(_records(server, "sampled")) < 0.65 * SAMPLED_REQUESTS
    log_root = Path(server.request_logs.log_root)
    assert not (log_root / "never_logged").exists()
    assert not (log_root / "counted").exists()


def test_files_are_rotated_by_size(server):
    for _ in range(20):
        assert _rest_predict(server, "logged", [1.0])[0] == 200
    server.request_logs.flush()
    files = sorted((Path(server.request_logs.log_root) / "logged").glob("requests-*.tfrecord"))
    assert len(files) >= 2
    assert all(path.stat().st_size < 2 * MAX_FILE_BYTES for path in files[:-1])


def test_files_are_rotated_by_age(tmp_path):
    config = logging_config_pb2.LoggingConfig()
    config.sampling_config.sampling_rate = 1.0
    spec = model_pb2.ModelSpec(name="model")
    logs = request_log.RequestLogs(
        str(tmp_path), lambda model_name: config, metrics.ServingMetrics(), max_file_seconds=0
    )
    try:
        for _ in range(3):
            logs.log("model", lambda: request_log.predict_log(spec, {"x": np.array([1.0])}, {"y": np.array([2.5])}))
        logs.flush()
    finally:
        logs.stop()
    assert len(list((tmp_path / "model").glob("requests-*-*.tfrecord"))) == 3


def test_a_failing_disk_fails_no_request(server, stub, caplog):
    with caplog.at_level(logging.ERROR, logger="taxi_model.serving"):
        assert _rest_predict(server, "broken_disk", [1.0])[0] == 200
        assert _grpc_predict(stub, "broken_disk", [1.0]).outputs["y"].float_val == [2.5]
        server.request_logs.flush()
    assert "request log of broken_disk: cannot write" in caplog.text
    samples = _samples(server)
    failed = sum(
        value
        for (name, labels), value in samples.items()
        if name == ":tensorflow:serving:request_log_count" and ("model_name", "broken_disk") in labels
    )
    assert failed == 2
    assert _value(samples, ":tensorflow:serving:request_log_count", model_name="broken_disk", status_code="OK") == 0
