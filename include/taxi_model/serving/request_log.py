"""TF-Serving's request logging: served requests, sampled per model, as PredictionLog records in TFRecord files.

A model is logged when its entry in models.config has a logging_config (TF-Serving's; none: nothing is
logged, its default):

    config { name: "taxi" base_path: "taxi"
             logging_config { log_collector_config { type: "tfrecord" filename_prefix: "requests" }
                              sampling_config { sampling_rate: 0.1 } } }

Each Predict, Classify, Regress and MultiInference that succeeds (REST or gRPC) is kept with probability
sampling_rate, as a `tensorflow_serving.apis.prediction_log_pb2.PredictionLog`: the request, the response
and log_metadata (model_spec with the served version, sampling_config, saved_model_tags, timestamp_secs).
Records go to

    <serving_root>/logs/<model>/<prefix>-<UTC %Y%m%dT%H%M%S.%fZ>-<pid>.tfrecord

(prefix: the basename of filename_prefix, else "requests"; the collector type is not looked up: every
type is this TFRecord collector), a new file once one holds max_file_bytes or is max_file_seconds old.
A background thread builds and writes the records, so a request never waits on disk; a full queue drops
the record, and a write that fails is logged and counted (:tensorflow:serving:request_log_count), never
failing a request. Files are flushed whenever the queue empties, and closed on stop().
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import tensorflow as tf
from grpc import StatusCode
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)
from tensorflow_serving.config import logging_config_pb2

from taxi_model.serving.errors import ServingError
from taxi_model.serving.inference import CLASSIFY_METHOD, SERVE_TAG
from taxi_model.serving.metrics import ServingMetrics
from taxi_model.serving.tensor_proto import as_proto_field

LOG_DIR = "logs"  # under the serving root
DEFAULT_PREFIX = "requests"
MAX_FILE_BYTES = 64 << 20
MAX_FILE_SECONDS = 3600.0
MAX_QUEUED = 10_000  # records waiting for the writer; beyond that they are dropped
log = logging.getLogger("taxi_model.serving")

LogBuilder = Callable[[], prediction_log_pb2.PredictionLog]


def predict_log(
    spec: model_pb2.ModelSpec,
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    output_filter: Iterable[str] = (),
) -> prediction_log_pb2.PredictionLog:
    """A Predict as TF-Serving logs it, its tensors in the typed fields gRPC's Predict answers with."""
    request = predict_pb2.PredictRequest(model_spec=spec, output_filter=list(output_filter))
    for key, array in inputs.items():
        request.inputs[key].CopyFrom(as_proto_field(array))
    response = predict_pb2.PredictResponse(model_spec=spec)
    for key, array in outputs.items():
        response.outputs[key].CopyFrom(as_proto_field(array))
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request, response=response)
    )


def classify_or_regress_log(
    method_name: str, spec: model_pb2.ModelSpec, examples: input_pb2.Input, result
) -> prediction_log_pb2.PredictionLog:
    """A Classify (CLASSIFY_METHOD) or Regress with its ClassificationResult or RegressionResult."""
    if method_name == CLASSIFY_METHOD:
        return prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(
                request=classification_pb2.ClassificationRequest(model_spec=spec, input=examples),
                response=classification_pb2.ClassificationResponse(model_spec=spec, result=result),
            )
        )
    return prediction_log_pb2.PredictionLog(
        regress_log=prediction_log_pb2.RegressLog(
            request=regression_pb2.RegressionRequest(model_spec=spec, input=examples),
            response=regression_pb2.RegressionResponse(model_spec=spec, result=result),
        )
    )


def multi_inference_log(
    request: inference_pb2.MultiInferenceRequest, response: inference_pb2.MultiInferenceResponse
) -> prediction_log_pb2.PredictionLog:
    return prediction_log_pb2.PredictionLog(
        multi_inference_log=prediction_log_pb2.MultiInferenceLog(request=request, response=response)
    )


def _served_spec(prediction_log: prediction_log_pb2.PredictionLog) -> model_pb2.ModelSpec:
    """The model_spec of a log's response (for MultiInference, its first result's)."""
    kind = prediction_log.WhichOneof("log_type")
    response = getattr(prediction_log, kind).response
    if kind == "multi_inference_log":
        return response.results[0].model_spec if response.results else model_pb2.ModelSpec()
    return response.model_spec


@dataclasses.dataclass
class _OpenFile:
    writer: tf.io.TFRecordWriter
    path: str
    opened: float  # time.monotonic()
    size: int = 0


class RequestLogs:
    """The request logs of a server: log() on request threads, the writing in a thread of its own."""

    def __init__(
        self,
        log_root: str,
        logging_config: Callable[[str], logging_config_pb2.LoggingConfig | None],
        metrics: ServingMetrics,
        max_file_bytes: int = MAX_FILE_BYTES,
        max_file_seconds: float = MAX_FILE_SECONDS,
        seed: int | None = None,
    ):
        self.log_root = log_root
        self._logging_config = logging_config
        self._metrics = metrics
        self._max_file_bytes = max_file_bytes
        self._max_file_seconds = max_file_seconds
        self._random = random.Random(seed)
        self._queue: queue.Queue = queue.Queue(MAX_QUEUED)
        self._files: dict[str, _OpenFile] = {}  # by model; the writer thread's alone
        self._failing: set[str] = set()  # models whose last write failed (logged once until one succeeds)
        self._thread = threading.Thread(target=self._write_loop, name="request-log-writer", daemon=True)
        self._thread.start()

    def log(self, model_name: str, build: LogBuilder) -> None:
        """Samples a served request of `model_name`; `build` makes its PredictionLog, in the writer thread."""
        config = self._logging_config(model_name)
        if config is None:
            return
        rate = config.sampling_config.sampling_rate
        if rate <= 0 or self._random.random() >= rate:
            return
        try:
            self._queue.put_nowait((model_name, config, time.time(), build))
        except queue.Full:
            self._metrics.logged(model_name, ServingError(StatusCode.RESOURCE_EXHAUSTED, "request log queue full"))

    def flush(self) -> None:
        """Returns once every record logged so far is written (or failed) and the files are flushed."""
        self._queue.join()

    def stop(self) -> None:
        """Writes what is queued and closes the files; once (a server's stop() may run twice)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    # -- the writer thread

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    break
                self._write(*item)
                if self._queue.empty():
                    self._flush_files()
            finally:
                self._queue.task_done()
        for model_name in list(self._files):
            self._close(model_name)

    def _write(
        self, model_name: str, config: logging_config_pb2.LoggingConfig, timestamp: float, build: LogBuilder
    ) -> None:
        try:
            prediction_log = build()
            metadata = prediction_log.log_metadata
            metadata.model_spec.CopyFrom(_served_spec(prediction_log))
            metadata.sampling_config.CopyFrom(config.sampling_config)
            metadata.saved_model_tags.append(SERVE_TAG)
            metadata.timestamp_secs = int(timestamp)
            record = prediction_log.SerializeToString()
            open_file = self._file(model_name, config)
            open_file.writer.write(record)
            open_file.size += len(record) + 16  # TFRecord framing: length, and two CRCs
        except Exception as e:  # a full or broken disk must not stop the writer (nor fail a request)
            self._metrics.logged(model_name, e)
            if model_name not in self._failing:
                log.error("request log of %s: cannot write to %s: %s", model_name, self.log_root, e)
            self._failing.add(model_name)
            self._close(model_name)
            return
        self._metrics.logged(model_name)
        if model_name in self._failing:
            self._failing.discard(model_name)
            log.info("request log of %s: writing again", model_name)

    def _file(self, model_name: str, config: logging_config_pb2.LoggingConfig) -> _OpenFile:
        """The model's current file, a new one once it is full or old."""
        open_file = self._files.get(model_name)
        if open_file and (
            open_file.size >= self._max_file_bytes or time.monotonic() - open_file.opened >= self._max_file_seconds
        ):
            self._close(model_name)
            open_file = None
        if open_file is None:
            prefix = os.path.basename(config.log_collector_config.filename_prefix) or DEFAULT_PREFIX
            directory = os.path.join(self.log_root, model_name)
            tf.io.gfile.makedirs(directory)
            path = os.path.join(directory, f"{prefix}-{self._utc_stamp(directory, prefix)}-{os.getpid()}.tfrecord")
            open_file = self._files[model_name] = _OpenFile(tf.io.TFRecordWriter(path), path, time.monotonic())
        return open_file

    @staticmethod
    def _utc_stamp(directory: str, prefix: str) -> str:
        """Now, in UTC to the microsecond: a name not taken yet (two files of one microsecond differ by one)."""
        now = datetime.datetime.now(datetime.UTC)
        while True:
            stamp = now.strftime("%Y%m%dT%H%M%S.%fZ")
            if not tf.io.gfile.exists(os.path.join(directory, f"{prefix}-{stamp}-{os.getpid()}.tfrecord")):
                return stamp
            now += datetime.timedelta(microseconds=1)

    def _flush_files(self) -> None:
        for model_name, open_file in list(self._files.items()):
            try:
                open_file.writer.flush()
            except Exception as e:
                log.error("request log of %s: cannot flush %s: %s", model_name, open_file.path, e)
                self._close(model_name)

    def _close(self, model_name: str) -> None:
        open_file = self._files.pop(model_name, None)
        if open_file is None:
            return
        try:
            open_file.writer.close()
        except Exception as e:
            log.error("request log of %s: cannot close %s: %s", model_name, open_file.path, e)
