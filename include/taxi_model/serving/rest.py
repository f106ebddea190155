"""The REST front end, on TF-Serving's paths (model_servers/http_rest_api_util.cc):

    GET  /v1/models/{name}[/versions/{v}|/labels/{label}]              version status
    GET  /v1/models/{name}[/versions/{v}|/labels/{label}]/metadata     signature_def
    POST /v1/models/{name}[/versions/{v}|/labels/{label}]:predict      instances or inputs (rest_json)
    POST /v1/models/{name}[/versions/{v}|/labels/{label}]:classify     examples (rest_examples), also :regress

HTTP/1.1 with keep-alive on the standard library's threading server (a thread per connection).
Errors answer `{"error": "..."}` with TF-Serving's HTTP status for the error's code.

Limits: at most `max_connections` connections are served at once; further ones wait in the listen
backlog until one ends (none is refused with a 5xx: a capacity refusal would be a 5xx no input caused).
A connection idle for `timeout_seconds` is closed, and a request must arrive whole within
`timeout_seconds` of its first byte, else it is answered 408 and closed (a slow trickle holds no
thread for longer); TF-Serving's --rest_api_timeout_in_ms. The model's run itself is not cut short.
"""

from __future__ import annotations

import io
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NoReturn
from urllib.parse import unquote, urlsplit

from google.protobuf import json_format
from grpc import StatusCode

from taxi_model.serving import rest_examples, rest_json
from taxi_model.serving.errors import ServingError, invalid_argument
from taxi_model.serving.inference import CLASSIFY_METHOD, REGRESS_METHOD
from taxi_model.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from taxi_model.serving.repository import MAX_VERSION
from taxi_model.serving.service import ModelService

_SPEC = r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
_PREDICTION_PATH = re.compile(_SPEC + r":(?P<method>classify|regress|predict)", re.IGNORECASE)
_STATUS_PATH = re.compile(r"/v1/models(?:" + _SPEC[len("/v1/models") :] + r")?(?P<metadata>/metadata)?", re.IGNORECASE)
_DRAIN_CHUNK = 1 << 20
_LINE_LIMIT = 1 << 16
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_HEX_DIGITS = re.compile(rb"[0-9A-Fa-f]+")
_LINGER_BYTES = 4 << 20  # what is read and dropped of a refused body before closing
_LINGER_SECONDS = 2.0
log = logging.getLogger("taxi_model.serving")


def _too_large(limit: int) -> ServingError:
    return ServingError(
        StatusCode.RESOURCE_EXHAUSTED,
        f"request body larger than the limit of {limit} bytes (--max_body_bytes)",
        http_status=413,
    )


class RequestTimeout(ServingError):
    def __init__(self, timeout_seconds: float):
        super().__init__(
            StatusCode.DEADLINE_EXCEEDED,
            f"request not received within {timeout_seconds * 1000:g} ms (--rest_api_timeout_in_ms)",
            http_status=408,
        )


class _DeadlineSocketIO(socket.SocketIO):
    """A connection's reads: up to `timeout_seconds` idle before a request's first byte, then the rest
    of the request within `timeout_seconds` of it (each recv's timeout is what is left)."""

    def __init__(self, sock: socket.socket, timeout_seconds: float):
        super().__init__(sock, "rb")
        self.timeout_seconds = timeout_seconds
        self.deadline: float | None = None  # None: waiting for a request's first byte

    def readinto(self, buffer) -> int:
        idle = self.deadline is None
        left = self.timeout_seconds if idle else self.deadline - time.monotonic()
        if left <= 0:
            raise RequestTimeout(self.timeout_seconds)
        self._sock.settimeout(left)
        try:
            received = super().readinto(buffer)
        except TimeoutError:
            if idle:
                raise  # an idle connection ends quietly
            raise RequestTimeout(self.timeout_seconds) from None
        finally:
            self._sock.settimeout(self.timeout_seconds)  # what writing the answer may take
        if received and idle:
            self.deadline = time.monotonic() + self.timeout_seconds
        return received


def _version(digits: str) -> int:
    """A version of the path: an int64, as TF-Serving reads it (int() of 4,300 digits or more raises)."""
    significant = digits.lstrip("0") or "0"
    if len(significant) > len(str(MAX_VERSION)) or int(significant) > MAX_VERSION:
        raise invalid_argument(f"Failed to convert version: {digits} to numeric.")
    return int(significant)


def _proto_json(message) -> dict:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # small responses leave at once, not after a delayed ACK
    server_version = "taxi-model-server"
    server: RestServer

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # read through the deadline instead
        self._reader = _DeadlineSocketIO(self.connection, self.server.timeout_seconds)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        self._reader.deadline = None  # the next request's deadline starts at its first byte
        self.requestline, self.request_version, self.command, self.path = "", "HTTP/1.1", "", ""  # until parsed
        try:
            super().handle_one_request()
        except RequestTimeout as e:  # in the request line or headers
            self.send_error(e.http_status, e.message)

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":  # its answer would have no status line or headers
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 requests are not served")
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's refusals (a bad request line, headers too large, an unknown method or
        HTTP version) as TF-Serving's JSON errors; a request it cannot read is a 400, never a 5xx."""
        if code == HTTPStatus.NOT_IMPLEMENTED:  # an unknown method, as TF-Serving answers it
            message = f"Malformed request: {self.command} {self.path}"
        if code >= 500:  # also an unknown HTTP version
            code = HTTPStatus.BAD_REQUEST
        if self.request_version == "HTTP/0.9":  # what a line that does not parse is taken for
            self.request_version = "HTTP/1.0"
        self.close_connection = True
        self._send(code, rest_json.dumps({"error": message or HTTPStatus(code).phrase}))

    def do_GET(self) -> None:
        if self.server.metrics_path and urlsplit(self.path).path == self.server.metrics_path:
            self.close_connection |= "Content-Length" in self.headers or "Transfer-Encoding" in self.headers  # unread
            self._send(200, self.server.service.metrics.page(), METRICS_CONTENT_TYPE)
            return
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def do_PUT(self) -> None:
        self._answer(self._malformed)

    do_DELETE = do_PATCH = do_PUT  # "Malformed request", as TF-Serving answers them

    def log_message(self, format: str, *args) -> None:
        if log.isEnabledFor(logging.DEBUG):  # every request calls this
            log.debug("%s %s", self.address_string(), format % args)

    def _answer(self, route: Callable[[str, bytes], dict | bytes]) -> None:
        self._linger = 0
        metrics = self.server.service.metrics
        self._served = metrics.begin("REST")  # the route names its API and model
        code = StatusCode.INTERNAL
        try:
            body = self._read_body()
            status, payload = 200, route(urlsplit(self.path).path, body)
            code = StatusCode.OK
        except ServingError as e:
            code = e.code
            status, payload = e.http_status, {"error": e.message}
            self.close_connection |= isinstance(e, RequestTimeout)  # the rest of the body is unread
        except (TimeoutError, ConnectionError):  # the client went quiet or away mid-body
            self.close_connection = True
            return
        except Exception as e:  # a bug answers 500; the server keeps serving
            log.exception("%s %s failed", self.command, self.path)
            status, payload = 500, {"error": f"{type(e).__name__}: {e}"}
        metrics.finish(self._served, code)
        data = payload if isinstance(payload, bytes) else rest_json.dumps(payload)
        if self._send(status, data) and self._linger:
            self._linger_close()

    def _send(self, status: int, data: bytes, content_type: str = "application/json") -> bool:
        """Answers `data` (JSON unless said otherwise); False when the client has left."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if self.request_version != "HTTP/0.9" and hasattr(self, "_headers_buffer"):
                # The headers and the body in one write (end_headers() then write() is two sends,
                # two segments with TCP_NODELAY, ~0.1 ms more per request).
                self._headers_buffer.append(b"\r\n")
                self._headers_buffer.append(data)
                self.flush_headers()
            else:
                self.end_headers()
                self.wfile.write(data)
        except (TimeoutError, ConnectionError):  # the client left (or stopped reading) before its answer
            self.close_connection = True
            return False
        return True

    def _read_body(self) -> bytes:
        """The request's body, framed strictly: Content-Length is digits only, a chunk size hex digits only.
        A malformed framing answers 400, a body over the limit 413; either closes the connection."""
        limit = self.server.max_body_bytes
        if "Transfer-Encoding" in self.headers:
            if self.headers.get("Transfer-Encoding", "").strip(" \t").lower() != "chunked":
                self._framing_error(
                    invalid_argument(f"unsupported Transfer-Encoding: {self.headers.get('Transfer-Encoding')}")
                )
            return self._read_chunks(limit)
        values = {value.strip(" \t") for value in self.headers.get_all("Content-Length") or ()}
        if not values:
            return b""
        digits = values.pop()
        if values or not _DIGITS.fullmatch(digits):
            self._framing_error(invalid_argument(f"bad Content-Length: {self.headers.get('Content-Length')}"))
        significant = digits.lstrip("0")
        if len(significant) > len(str(limit)) or int(significant or "0") > limit:
            self._framing_error(_too_large(limit), drain=int(significant) if len(significant) < 19 else None)
        length = int(significant or "0")
        body = self.rfile.read(length) if length else b""
        if len(body) < length:  # the client closed mid-body
            raise ConnectionResetError("request body cut short")
        return body

    def _read_chunks(self, limit: int) -> bytes:
        """A chunked body. Its framing (size lines, CRLFs, trailers) may take as many bytes as the limit
        beside the body's own."""
        body = bytearray()
        framing = limit
        while True:
            line = self._framing_line(framing)
            framing -= len(line)
            size_field = line.split(b";", 1)[0].strip(b" \t\r\n")
            if not _HEX_DIGITS.fullmatch(size_field):
                self._framing_error(invalid_argument(f"malformed chunk size: {size_field[:40]!r}"))
            size = int(size_field, 16)
            if size == 0:
                while True:  # trailers, up to the empty line
                    line = self._framing_line(framing)
                    framing -= len(line)
                    if not line.strip():
                        return bytes(body)
            if size > limit - len(body):
                self._framing_error(_too_large(limit), drain=None)
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                raise ConnectionResetError("request body cut short")
            body += chunk
            end = self.rfile.readline(3)
            framing -= len(end)
            if end not in (b"\r\n", b"\n"):
                if not end:
                    raise ConnectionResetError("request body cut short")
                self._framing_error(invalid_argument("malformed chunked request body: a chunk not ended by CRLF"))

    def _framing_line(self, budget: int) -> bytes:
        """A line of a chunked body's framing: within _LINE_LIMIT and what is left of the framing's budget."""
        line = self.rfile.readline(min(_LINE_LIMIT, max(budget, 0)) + 1)
        if not line:
            raise ConnectionResetError("request body cut short")
        if not line.endswith(b"\n") or len(line) > budget:
            self._framing_error(invalid_argument("malformed chunked request body: framing line too long"))
        return line

    def _framing_error(self, error: ServingError, drain: int | None = None) -> NoReturn:
        """Answers `error` and closes: the rest of the body is unread. Before closing, up to
        _LINGER_BYTES of what the client still sends (`drain` bytes, if known) are read and dropped for
        up to _LINGER_SECONDS, so that the client reads the answer rather than a reset."""
        self.close_connection = True
        self._linger = _LINGER_BYTES if drain is None else min(drain, _LINGER_BYTES)
        raise error

    def _linger_close(self) -> None:
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self._reader.deadline = time.monotonic() + _LINGER_SECONDS
            left = self._linger
            while left > 0:
                # Beyond what rfile buffered: read1 reads at most one recv.
                chunk = self.rfile.read1(min(left, _DRAIN_CHUNK))
                if not chunk:
                    break
                left -= len(chunk)
        except (OSError, RequestTimeout):
            pass

    def _malformed(self, path: str, body: bytes = b"") -> NoReturn:
        raise invalid_argument(f"Malformed request: {self.command} {path}")

    def _spec(self, match: re.Match) -> dict:
        name = unquote(match["name"]) if match["name"] else ""
        self._served.model_name = name
        if not name:
            raise invalid_argument("Missing model name in request.")
        return {
            "name": name,
            "version": _version(match["version"]) if match["version"] else None,
            "label": unquote(match["label"]) if match["label"] else None,
        }

    def _get(self, path: str, body: bytes) -> dict:
        match = _STATUS_PATH.fullmatch(path)
        if not match:
            self._malformed(path)
        self._served.api = "get_model_metadata" if match["metadata"] else "get_model_status"
        spec = self._spec(match)
        service = self.server.service
        if match["metadata"]:
            model_spec, signature_def_map = service.metadata(**spec)
            return {
                "model_spec": _proto_json(model_spec),
                "metadata": {"signature_def": _proto_json(signature_def_map)},
            }
        return _proto_json(service.status(**spec))

    def _post(self, path: str, body: bytes) -> dict | bytes:
        match = _PREDICTION_PATH.fullmatch(path)
        if not match:
            self._malformed(path)
        method = self._served.api = match["method"].lower()  # TF-Serving's API label: predict, classify, regress
        spec = self._spec(match)
        if method != "predict":
            return self._classify_or_regress(CLASSIFY_METHOD if method == "classify" else REGRESS_METHOD, spec, body)
        try:
            model, signature, inputs, request_format = self._request(spec, rest_json.parse_body(body))
        except ServingError:
            # The fast parser reads integers beyond 64 bits as floats: the same request is refused
            # either way, and `json`'s reading gives the message that quotes them as they were sent.
            model, signature, inputs, request_format = self._request(spec, rest_json.parse_body(body, exact=True))
        _, outputs = self.server.service.predict(model, signature.name, inputs)
        return rest_json.response_bytes(outputs, request_format)

    def _request(self, spec: dict, document: dict) -> tuple:
        """The version, signature, input arrays and format a Predict body asks for."""
        model = self.server.service.resolve(**spec)
        signature = model.signature(rest_json.signature_name(document))
        inputs, request_format = rest_json.request_inputs(document, signature.inputs)
        return model, signature, inputs, request_format

    def _classify_or_regress(self, method_name: str, spec: dict, body: bytes) -> dict:
        """As TF-Serving's handler: the body is read into tf.Examples before the version is looked up."""
        document = rest_json.parse_body(body)
        signature_name = rest_json.signature_name(document)
        examples = rest_examples.request_input(document)
        service = self.server.service
        result = service.classify_or_regress(service.resolve(**spec), method_name, signature_name, examples)
        if method_name == CLASSIFY_METHOD:
            return rest_examples.classification_json(result)
        return rest_examples.regression_json(result)


class RestServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # connections waiting for a free slot (the listen backlog)
    metrics_path: str | None = None  # where GET answers the Prometheus page (--monitoring_config_file)

    def __init__(
        self,
        host: str,
        port: int,
        service: ModelService,
        max_body_bytes: int,
        timeout_seconds: float = 30.0,
        max_connections: int = 64,
    ):
        self.service = service
        self.max_body_bytes = max_body_bytes
        self.timeout_seconds = timeout_seconds
        self._free_slots = threading.BoundedSemaphore(max_connections)
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        super().__init__((host, port), _Handler, bind_and_activate=False)
        try:
            self.server_bind()  # the port is taken now; connections are refused until start()
        except BaseException:
            self.server_close()
            raise

    @property
    def port(self) -> int:
        return self.server_address[1]

    def get_request(self):
        """Accepts a connection once one of the max_connections slots is free: until then it waits in
        the backlog."""
        while not self._free_slots.acquire(timeout=0.1):
            if self._stopping.is_set():
                raise OSError("stopping")  # serve_forever() skips it and sees the shutdown
        try:
            return super().get_request()
        except BaseException:
            self._free_slots.release()
            raise

    def process_request(self, request, client_address):
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def handle_error(self, request, client_address):
        # Requests' errors are answered by the handler; what gets here is a connection's end.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)
        self._free_slots.release()  # once per accepted connection

    def start(self) -> None:
        self.server_activate()  # listen
        self._thread = threading.Thread(target=self.serve_forever, name="rest-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops accepting, then ends the open (keep-alive) connections: their threads wake and exit."""
        self._stopping.set()
        if self._thread:  # shutdown() waits for serve_forever() to end: it must have begun
            self.shutdown()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server_close()
        if self._thread:
            self._thread.join()
