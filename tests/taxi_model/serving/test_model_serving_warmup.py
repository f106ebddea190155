"""TF-Serving's warmup file: the server replays the export's requests before a version is AVAILABLE,
and a broken file keeps the version from loading, as in TF-Serving."""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path

import pytest
import tensorflow as tf
from grpc import StatusCode
from serving_test_support import publish_version, running_server
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from taxi_model.serving import warmup
from taxi_model.serving.errors import ServingError
from taxi_model.serving.inference import ModelVersion


@pytest.fixture
def predict_calls(monkeypatch) -> list[tuple[str, int]]:
    """(signature, rows) of every ModelVersion.predict call from now on."""
    calls = []
    predict = ModelVersion.predict

    def counting(self, signature_name, inputs, *args, **kwargs):
        calls.append((signature_name or "serving_default", len(next(iter(inputs.values())))))
        return predict(self, signature_name, inputs, *args, **kwargs)

    monkeypatch.setattr(ModelVersion, "predict", counting)
    return calls


@pytest.fixture(scope="module")
def loaded(trained_model) -> ModelVersion:
    return ModelVersion.load("taxi", 1, str(trained_model["model"]))


def test_a_version_is_warmed_up_with_the_exports_requests(trained_model, predict_calls, caplog):
    """As the server loads it (warmup.load): the export's requests, not the default values."""
    with caplog.at_level(logging.INFO, logger="taxi_model.serving"):
        warmup.load("taxi", 7, str(trained_model["model"]))
    assert predict_calls == [
        ("serving_default", 1),
        ("serving_default", 10),
        ("serving_default", 100),
        ("classification", 10),
    ]
    assert "taxi version 7: replayed 4 warmup requests from " in caplog.text


def test_without_a_warmup_file_each_signature_runs_once_on_default_values(trained_model, tmp_path, predict_calls):
    model_dir = Path(shutil.copytree(trained_model["model"], tmp_path / "model"))
    Path(warmup.requests_path(str(model_dir))).unlink()
    version = warmup.load("taxi", 1, str(model_dir))
    assert sorted(predict_calls) == sorted((name, 1) for name in version.signatures)


def _warmup_file(model_dir: Path) -> Path:
    path = Path(warmup.requests_path(str(model_dir)))
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write_records(model_dir: Path, records: list[bytes]) -> None:
    with tf.io.TFRecordWriter(str(_warmup_file(model_dir))) as writer:
        for record in records:
            writer.write(record)


def _predict_log(signature_name: str) -> bytes:
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = signature_name
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([b""]))
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    ).SerializeToString()


def _not_tfrecord(model_dir: Path) -> None:
    _warmup_file(model_dir).write_bytes(b"this is not a TFRecord file")


_SESSION_RUN_LOG = prediction_log_pb2.PredictionLog(session_run_log=prediction_log_pb2.SessionRunLog())
BROKEN_FILES = {  # a broken warmup file: (its records, None for a file that is not TFRecord; status code; message)
    "not TFRecord": (None, StatusCode.DATA_LOSS, "Please verify your warmup data is in TFRecord format"),
    "not a PredictionLog": ([b"\xff\xff\xff"], StatusCode.INVALID_ARGUMENT, "Failed to parse warmup record: "),
    "too many records": (
        [b""] * (warmup.MAX_RECORDS + 1),
        StatusCode.INVALID_ARGUMENT,
        "Number of warmup records exceeds the maximum (1000)",
    ),
    "unsupported log": (
        [_SESSION_RUN_LOG.SerializeToString()],
        StatusCode.UNIMPLEMENTED,
        "Unsupported log_type for warmup: session_run_log",
    ),
    "failing request": (
        [_predict_log("no_such_signature")],
        StatusCode.INVALID_ARGUMENT,
        'Serving signature name: "no_such_signature" not found',
    ),
}


@pytest.mark.parametrize("kind", BROKEN_FILES)
def test_a_broken_warmup_file_fails_the_warmup_with_tf_servings_error(kind, loaded, tmp_path):
    records, code, message = BROKEN_FILES[kind]
    if records is None:
        _not_tfrecord(tmp_path)
    else:
        _write_records(tmp_path, records)
    version = copy.copy(loaded)
    version.path = str(tmp_path)
    with pytest.raises(ServingError) as raised:
        warmup.replay(version)
    assert raised.value.code == code and message in raised.value.message


def test_records_without_a_log_are_skipped_and_the_limit_is_1000(loaded, tmp_path):
    _write_records(tmp_path, [b""] * warmup.MAX_RECORDS)
    version = copy.copy(loaded)
    version.path = str(tmp_path)
    assert warmup.replay(version) == warmup.MAX_RECORDS


def test_the_server_does_not_serve_a_version_whose_warmup_file_is_broken(trained_model, tmp_path):
    root = tmp_path / "serving"
    publish_version(trained_model["model"], root / "taxi", 1)
    broken = publish_version(trained_model["model"], root / "broken", 1)
    _not_tfrecord(broken)
    with running_server(root) as server:
        assert server.repository.version_states("taxi")[0][1].state == "AVAILABLE"
        ((version, state),) = server.repository.version_states("broken")
        assert (version, state.state, state.error_code) == (1, "END", "DATA_LOSS")
        assert "Please verify your warmup data is in TFRecord format" in state.error_message
        with pytest.raises(ServingError):
            server.repository.resolve("broken")
