"""TF-Serving's warmup requests: replayed on a version before it becomes AVAILABLE.

    <SavedModel>/assets.extra/tf_serving_warmup_requests   a TFRecord file of PredictionLog records

The format and limits are TF-Serving's (servables/tensorflow/saved_model_warmup_util.cc): at most
MAX_RECORDS records, each a predict, classify, regress or multi-inference log whose request is run
once on the version (the model name and version of its model_spec are ignored). The export writes
the file (taxi_model.serving_contract); the local server replays it (ModelVersion.warm_up), as
TF-Serving in production does with the same file. As there, a file that is not TFRecord, a record
that is not a PredictionLog, too many records, a log type that cannot be replayed or a request that
fails make the version fail to load.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator

import tensorflow as tf
from google.protobuf.message import DecodeError
from grpc import StatusCode
from tensorflow_serving.apis import prediction_log_pb2

from taxi_model.serving import classify_regress
from taxi_model.serving.errors import ServingError, from_tf_error_code, invalid_argument
from taxi_model.serving.inference import CLASSIFY_METHOD, REGRESS_METHOD, ModelVersion

ASSETS_EXTRA = "assets.extra"
REQUESTS_FILE = "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF-Serving's WarmupConsts::kMaxNumRecords
log = logging.getLogger("taxi_model.serving")


def requests_path(model_dir: str) -> str:
    return os.path.join(model_dir, ASSETS_EXTRA, REQUESTS_FILE)


def write(model_dir: str, logs: Iterable[prediction_log_pb2.PredictionLog]) -> str:
    """Writes the warmup file of the SavedModel in `model_dir`; its bytes depend only on `logs`."""
    logs = list(logs)
    if len(logs) > MAX_RECORDS:
        raise ValueError(f"{len(logs)} warmup records: TF-Serving refuses more than {MAX_RECORDS}")
    path = requests_path(model_dir)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for prediction_log in logs:
            writer.write(prediction_log.SerializeToString(deterministic=True))
    return path


def read(path: str) -> Iterator[prediction_log_pb2.PredictionLog]:
    """The records of a warmup file, one at a time; ServingError (TF-Serving's message) on a bad one."""
    try:
        for count, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator(), start=1):
            if count > MAX_RECORDS:
                raise invalid_argument(f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}")
            prediction_log = prediction_log_pb2.PredictionLog()
            try:
                prediction_log.ParseFromString(record)
            except DecodeError:
                raise invalid_argument(f"Failed to parse warmup record: {record[:100]!r} from {path}") from None
            yield prediction_log
    except tf.errors.DataLossError as e:
        raise ServingError(
            StatusCode.DATA_LOSS, f"{e.message}. Please verify your warmup data is in TFRecord format."
        ) from None
    except tf.errors.OpError as e:
        raise from_tf_error_code(e.error_code, e.message) from None


def _run(model: ModelVersion, prediction_log: prediction_log_pb2.PredictionLog) -> None:
    """Runs a record's request on the version, as TF-Serving's RunWarmupRequest does."""
    kind = prediction_log.WhichOneof("log_type")
    if kind == "predict_log":
        request = prediction_log.predict_log.request
        inputs = {key: tf.make_ndarray(tensor) for key, tensor in request.inputs.items()}
        model.predict(request.model_spec.signature_name, inputs, list(request.output_filter))
    elif kind in ("classify_log", "regress_log"):
        request = getattr(prediction_log, kind).request
        method = CLASSIFY_METHOD if kind == "classify_log" else REGRESS_METHOD
        classify_regress.run(model, method, request.model_spec.signature_name, request.input)
    elif kind == "multi_inference_log":
        classify_regress.multi_inference(model, prediction_log.multi_inference_log.request)
    elif kind is not None:  # a record without a log is skipped, as TF-Serving skips it
        raise ServingError(StatusCode.UNIMPLEMENTED, f"Unsupported log_type for warmup: {kind}")


def load(name: str, version: int, path: str) -> ModelVersion:
    """A version as the server loads it: its SavedModel's warmup requests replayed before it is
    AVAILABLE (a broken file fails the load, as in TF-Serving), or, without a file, each signature
    run once on default values."""
    model = ModelVersion.load(name, version, path, warm_up=False)
    if replay(model) is None:
        model.warm_up()
    return model


def replay(model: ModelVersion) -> int | None:
    """Runs the warmup requests of a loaded version (a ModelVersion): their number, or None when its
    SavedModel has no warmup file."""
    path = requests_path(model.path)
    if not tf.io.gfile.exists(path):
        return None
    started, count = time.monotonic(), 0
    for prediction_log in read(path):
        _run(model, prediction_log)
        count += 1
    log.info(
        "%s version %d: replayed %d warmup requests from %s (%.2f s)",
        model.name,
        model.version,
        count,
        path,
        time.monotonic() - started,
    )
    return count
