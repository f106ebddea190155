"""The model server: every model under a serving root, over TF-Serving's REST and gRPC APIs.

    python -m taxi_model.serving.server --serving_root DIR [--host 127.0.0.1 --rest_port 8501
        --grpc_port 8500 --poll_seconds 2 --max_batch_size 1000 --max_body_bytes 33554432]

Port 0 binds a free port (the log line says which). The ports are bound first (a taken one fails
at once) but answer only once the models are loaded, as TF-Serving's do. --poll_seconds 0 reads
the serving root once, at the start (TF-Serving's 0). A models.config that does not parse stops
the start (exit status 1, the parse error in the message). Logs one line per load and unload, and
stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import socket
import sys
import threading
from collections.abc import Sequence

from taxi_model.serving.grpc_services import GrpcServer
from taxi_model.serving.repository import ConfigError, ModelRepository
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


class ModelServer:
    """start() loads the models and listens; stop() ends everything. Also a context manager."""

    def __init__(self, options: ServerOptions):
        self.options = options
        self.repository = ModelRepository(options.serving_root, options.poll_seconds)
        self._service = ModelService(self.repository, options.max_batch_size)
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
        self._rest = RestServer(options.host, options.rest_port, self._service, options.max_body_bytes)
        try:
            reservation = _reserve_port(options.host, options.grpc_port)
            try:
                self._grpc_port = reservation.getsockname()[1]
                self.repository.start()
            finally:
                reservation.close()
            self._grpc = GrpcServer(options.host, self._grpc_port, self._service, options.max_body_bytes)
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
