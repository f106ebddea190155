"""The model server: every model under a serving root, over TF-Serving's REST and gRPC APIs.

    python -m taxi_model.serving.server --serving_root DIR [--host 127.0.0.1 --rest_port 8501
        --grpc_port 8500 --poll_seconds 2 --max_batch_size 1000 --max_body_bytes 33554432
        --rest_api_timeout_in_ms 30000 --rest_api_max_connections 64 --grpc_max_threads 8]

Port 0 binds a free port (the log line says which). The ports are bound first (a taken one fails
at once) but answer only once the models are loaded, as TF-Serving's do. --poll_seconds 0 reads
the serving root once, at the start (TF-Serving's 0). A models.config that does not parse stops
the start (exit status 1, the parse error in the message). Logs one line per load and unload, and
stops cleanly on SIGTERM or SIGINT.

--enable_batching [--batching_parameters_file FILE] joins concurrent requests into model calls, as
TF-Serving's flags do (`batching.py`); a parameters file that does not parse stops the start too.

--monitoring_config_file FILE (a MonitoringConfig enabling Prometheus) serves the metrics page on the
REST port (`metrics.py`). A model whose models.config entry has a logging_config gets its requests
logged, sampled, under <serving_root>/logs/ (`request_log.py`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence

from taxi_model.serving import request_log, warmup
from taxi_model.serving.batching import Batcher, BatchingParameters, read_parameters
from taxi_model.serving.errors import ConfigError
from taxi_model.serving.grpc_services import GrpcServer
from taxi_model.serving.metrics import ServingMetrics, prometheus_path
from taxi_model.serving.repository import ModelRepository
from taxi_model.serving.rest import RestServer
from taxi_model.serving.service import ModelService

log = logging.getLogger("taxi_model.serving")


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    serving_root: str
    host: str = "127.0.0.1"
    rest_port: int = 8501
    grpc_port: int = 8500
    poll_seconds: float = 2.0
    max_batch_size: int = 1000  # rows per request
    max_body_bytes: int = 32 << 20  # REST body, and gRPC message
    enable_batching: bool = False
    batching_parameters_file: str = ""  # BatchingParameters text proto; empty: TF-Serving's defaults
    rest_api_timeout_in_ms: int = 30_000  # an idle connection's life, and a request's time to arrive
    rest_api_max_connections: int = 64  # served at once; more wait in the listen backlog
    grpc_max_threads: int = 8  # RPCs run at once; a few times more wait, beyond that RESOURCE_EXHAUSTED
    monitoring_config_file: str = ""  # MonitoringConfig text proto; empty: no metrics page (TF-Serving's default)
    request_log_max_bytes: int = request_log.MAX_FILE_BYTES  # a request log file's size before the next
    request_log_max_seconds: float = request_log.MAX_FILE_SECONDS  # and its age
    request_log_seed: int | None = None  # of the request logs' sampling; None: unseeded


class ModelServer:
    """start() loads the models and listens; stop() ends everything. Also a context manager."""

    def __init__(self, options: ServerOptions):
        self.options = options
        try:
            self.metrics_path = prometheus_path(options.monitoring_config_file)
        except (OSError, ValueError) as e:
            raise ConfigError(str(e)) from None
        self.metrics = ServingMetrics()
        self.repository = ModelRepository(
            options.serving_root, options.poll_seconds, self.metrics.counting_loads(warmup.load)
        )
        self.request_logs = request_log.RequestLogs(
            os.path.join(self.repository.serving_root, request_log.LOG_DIR),
            self.repository.logging_config,
            self.metrics,
            options.request_log_max_bytes,
            options.request_log_max_seconds,
            options.request_log_seed,
        )
        self.batcher = None
        if options.enable_batching:  # a bad parameters file stops the start (ConfigError), as TF-Serving's
            file = options.batching_parameters_file
            self.batcher = Batcher(read_parameters(file) if file else BatchingParameters())
        self._service = ModelService(
            self.repository, options.max_batch_size, self.batcher, metrics=self.metrics, request_logs=self.request_logs
        )
        self._rest: RestServer | None = None
        self._grpc: GrpcServer | None = None
        self._grpc_port: int | None = None  # reserved before the load, served after it

    @property
    def rest_port(self) -> int:
        return self._rest.port

    @property
    def grpc_port(self) -> int:
        return self._grpc.port if self._grpc else self._grpc_port

    def start(self) -> ModelServer:
        """Takes both ports (failing fast when one is taken), loads the serving root, then answers:
        a client never sees the server without its models (TF-Serving's readiness).

        REST's port is bound, not listening, during the load. gRPC listens as soon as it is bound,
        so its port is held by a plain bound socket (connections refused) and gRPC binds it after.
        """
        options = self.options
        self._rest = RestServer(
            options.host,
            options.rest_port,
            self._service,
            options.max_body_bytes,
            timeout_seconds=options.rest_api_timeout_in_ms / 1000,
            max_connections=options.rest_api_max_connections,
        )
        self._rest.metrics_path = self.metrics_path
        try:
            reservation = _reserve_port(options.host, options.grpc_port)
            try:
                self._grpc_port = reservation.getsockname()[1]
                self.repository.start()
            finally:
                reservation.close()
            self._grpc = GrpcServer(
                options.host, self._grpc_port, self._service, options.max_body_bytes, options.grpc_max_threads
            )
            self._grpc.start()
            self._rest.start()
        except BaseException:
            self.stop()
            raise
        log.info(
            "serving %s: REST on %s:%d, gRPC on %s:%d",
            self.repository.serving_root,
            options.host,
            self.rest_port,
            options.host,
            self.grpc_port,
        )
        return self

    def stop(self) -> None:
        if self._grpc:
            self._grpc.stop()
        if self._rest:
            self._rest.stop()
        self.repository.stop()
        self.request_logs.stop()  # after the front ends: the last requests' records are written
        if self.batcher:
            self.batcher.stop()
        log.info("stopped")

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, not listening: the port is ours and connections to it are refused.

    SO_REUSEADDR as the REST server's (a restart is not blocked by the last run's TIME_WAIT)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    reservation = socket.socket(family, kind, proto)
    try:
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reservation.bind(address)
    except OSError as e:
        reservation.close()
        raise OSError(e.errno, f"cannot bind gRPC to {host}:{port}: {e.strerror}") from None
    return reservation


def parse_args(argv: Sequence[str] | None = None) -> ServerOptions:
    defaults = ServerOptions(serving_root="")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serving_root", required=True, help="<root>/<model>/<version>/ SavedModels")
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--rest_port", type=int, default=defaults.rest_port)
    parser.add_argument("--grpc_port", type=int, default=defaults.grpc_port)
    parser.add_argument(
        "--poll_seconds",
        type=float,
        default=defaults.poll_seconds,
        help="how often the serving root and models.config are read; 0: once, at the start",
    )
    parser.add_argument("--max_batch_size", type=int, default=defaults.max_batch_size, help="most rows in one request")
    parser.add_argument(
        "--max_body_bytes", type=int, default=defaults.max_body_bytes, help="largest REST body and gRPC message"
    )
    parser.add_argument(
        "--rest_api_timeout_in_ms",
        type=int,
        default=defaults.rest_api_timeout_in_ms,
        help="a REST request must arrive whole within it of its first byte (else 408); also an idle connection's life",
    )
    parser.add_argument(
        "--rest_api_max_connections",
        type=int,
        default=defaults.rest_api_max_connections,
        help="REST connections served at once; more wait in the listen backlog",
    )
    parser.add_argument(
        "--grpc_max_threads", type=int, default=defaults.grpc_max_threads, help="gRPC requests run at once"
    )
    parser.add_argument("--enable_batching", action="store_true", help="join concurrent requests into batches")
    parser.add_argument("--batching_parameters_file", default="", help="a BatchingParameters text proto")
    parser.add_argument(
        "--monitoring_config_file",
        default="",
        help='a MonitoringConfig text proto: prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }',
    )
    return ServerOptions(**vars(parser.parse_args(argv)))


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = parse_args(argv)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        server = ModelServer(options).start()
    except ConfigError as e:
        sys.exit(f"Failed to start server. Error: {e}")  # TF-Serving's words; exit status 1
    try:
        stopping.wait()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
