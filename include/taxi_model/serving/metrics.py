"""The server's Prometheus metrics, in TF-Serving's names (servables/tensorflow/util.cc, core/request_logger.cc,
TensorFlow's cc/saved_model/loader.cc), served on the REST port at the path --monitoring_config_file names.

TF-Serving's exporter (util/prometheus_exporter.cc) turns "/" into ":" and writes counters under their own
name, without prometheus_client's `_total` suffix and `_created` series: the page here does the same, so
that a query or dashboard works unchanged against either server. (Its counters' TYPE line says
`untyped`: prometheus_client writes `counter` only beside a `_total` name.) Latencies are in
microseconds, in TF-Serving's buckets.

Each server has its own registry, so that several servers in one process (the tests) keep their counts apart.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import time
from collections.abc import Callable, Iterator

from google.protobuf import descriptor_pb2, message_factory, text_format
from grpc import StatusCode
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import Metric

from taxi_model.serving.errors import status_code_of

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # TF-Serving's PrometheusExporter::kPrometheusPath
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# monitoring::Buckets::Exponential(10, 1.8, 33): 10 us to ~20 minutes.
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33)) + (float("inf"),)
# TF-Serving's runtime label for a SavedModel run in a TF Session (its other is TFRT).
RUNTIME = "TF1"


@dataclasses.dataclass
class ServedRequest:
    """One request as the front ends and the service learn about it, counted when it ends."""

    entrypoint: str  # TF-Serving's label: "REST" or "GRPC"
    api: str = ""  # the call as the entrypoint names it: "Predict" (gRPC), "predict" (REST), ...
    model_name: str = ""
    version: int | None = None  # the served version once resolved, else the one asked for
    started: float = dataclasses.field(default_factory=time.perf_counter)


# The request the current thread serves: ModelService fills in the model and version it resolves.
_current: contextvars.ContextVar[ServedRequest | None] = contextvars.ContextVar("served_request", default=None)


def note_model(name: str, version: int | None = None) -> None:
    """Records on the current request (if any) which model, and version, it asked for or got."""
    request = _current.get()
    if request is not None:
        request.model_name = name
        if version is not None:
            request.version = version


class _TfServingNames:
    """The registry's metrics as TF-Serving's exporter names them: counters without `_total`, no `_created`."""

    def __init__(self, registry: CollectorRegistry):
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            kind = "unknown" if family.type == "counter" else family.type
            renamed = Metric(family.name, family.documentation, kind)
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                name = family.name if sample.name == family.name + "_total" else sample.name
                renamed.add_sample(name, sample.labels, sample.value)
            yield renamed


class ServingMetrics:
    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.request_count = Counter(
            ":tensorflow:serving:request_count",
            "The total number of requests.",
            ["model_name", "status"],
            registry=registry,
        )
        # TF-Serving's request_count has only model_name and status; this one says which version and API.
        self.request_count_by_api = Counter(
            ":taxi:serving:request_count",
            "The total number of requests, by model, version, API, entrypoint and status.",
            ["model_name", "version", "API", "entrypoint", "status"],
            registry=registry,
        )
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"],
            buckets=LATENCY_BUCKETS_US,
            registry=registry,
        )
        self.runtime_latency = Histogram(
            ":tensorflow:serving:runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ["model_name", "API", "runtime"],
            buckets=LATENCY_BUCKETS_US,
            registry=registry,
        )
        self.load_attempt_count = Counter(
            ":tensorflow:cc:saved_model:load_attempt_count",
            "The number of times a SavedModel was successfully loaded.",
            ["model_path", "status"],
            registry=registry,
        )
        self.load_latency = Counter(
            ":tensorflow:cc:saved_model:load_latency",
            "Latency in microseconds for SavedModels that were successfully loaded.",
            ["model_path"],
            registry=registry,
        )
        self.request_log_count = Counter(
            ":tensorflow:serving:request_log_count",
            "The total number of requests logged from the model server sliced down by model_name and status code.",
            ["model_name", "status_code"],
            registry=registry,
        )
        self._page = CollectorRegistry(auto_describe=False)
        self._page.register(_TfServingNames(registry))

    def page(self) -> bytes:
        """The Prometheus text page."""
        return generate_latest(self._page)

    # -- requests

    def begin(self, entrypoint: str, api: str = "") -> ServedRequest:
        request = ServedRequest(entrypoint, api)
        _current.set(request)
        return request

    def finish(self, request: ServedRequest, status: StatusCode) -> None:
        """Counts the request; its latency too when it succeeded (as TF-Serving: RecordRequestLatency on OK)."""
        _current.set(None)
        version = "" if request.version is None else str(request.version)
        self.request_count.labels(request.model_name, status.name).inc()
        by_api = self.request_count_by_api.labels(
            request.model_name, version, request.api, request.entrypoint, status.name
        )
        by_api.inc()
        if status == StatusCode.OK:
            elapsed_us = (time.perf_counter() - request.started) * 1e6
            self.request_latency.labels(request.model_name, request.api, request.entrypoint).observe(elapsed_us)

    @contextlib.contextmanager
    def runtime(self, model_name: str, api: str) -> Iterator[None]:
        """Times a model call (TF-Serving's runtime_latency, recorded when the call succeeds)."""
        started = time.perf_counter()
        yield
        self.runtime_latency.labels(model_name, api, RUNTIME).observe((time.perf_counter() - started) * 1e6)

    # -- loads

    def counting_loads(self, loader: Callable) -> Callable:
        """`loader` (name, version, path -> a loaded version), counting its attempts and successes' latency."""

        def load(name: str, version: int, path: str):
            started = time.perf_counter()
            try:
                loaded = loader(name, version, path)
            except Exception:
                self.load_attempt_count.labels(path, "fail").inc()
                raise
            self.load_attempt_count.labels(path, "success").inc()
            self.load_latency.labels(path).inc((time.perf_counter() - started) * 1e6)
            return loaded

        return load

    def logged(self, model_name: str, error: BaseException | None = None) -> None:
        """Counts a request log record written, or failed."""
        status = StatusCode.OK if error is None else status_code_of(error)
        self.request_log_count.labels(model_name, status.name).inc()


def _monitoring_config_class():
    """TF-Serving's MonitoringConfig message (config/monitoring_config.proto), which the tensorflow-serving-api
    package does not ship: built here from its two fields each."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto", package="tensorflow.serving", syntax="proto3"
    )
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_BOOL, label=1)
    prometheus.field.add(name="path", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING, label=1)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        type_name=".tensorflow.serving.PrometheusConfig",
        label=1,
    )
    return message_factory.GetMessages([proto])["tensorflow.serving.MonitoringConfig"]


def prometheus_path(monitoring_config_file: str) -> str | None:
    """The metrics path a MonitoringConfig text proto enables (`prometheus_config { enable: true path: ... }`;
    TF-Serving's default path when it names none), or None: no file, or Prometheus not enabled.
    Raises ValueError on a file that does not parse."""
    if not monitoring_config_file:
        return None
    with open(monitoring_config_file) as f:
        text = f.read()
    try:
        config = text_format.Parse(text, _monitoring_config_class()())
    except text_format.ParseError as e:
        raise ValueError(f"Invalid protobuf file: '{monitoring_config_file}': {e}") from None
    if not config.prometheus_config.enable:
        return None
    return config.prometheus_config.path or PROMETHEUS_PATH
