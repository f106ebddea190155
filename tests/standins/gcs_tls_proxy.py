"""GCS for TensorFlow's own filesystem, offline: an HTTPS CONNECT proxy in front of the GCS emulator.

Why: TF's C++ GCS filesystem (tf.io.gfile, SavedModel, TFRecord on gs://) has its endpoints
hard-coded (https://www.googleapis.com, https://storage.googleapis.com) and ignores
STORAGE_EMULATOR_HOST. Its curl honours `https_proxy` and `CURL_CA_BUNDLE`, so this proxy accepts
CONNECT to those two hosts only, terminates the TLS with a self-signed certificate made at start
(in a temporary directory; no key is kept) and forwards each request to the emulator. It also
smooths three emulator gaps TF trips on: chunked request bodies (decoded), empty media uploads of
directory markers (sent as the equivalent multipart upload) and the bucket's `storageLayout`
(answered here: a flat bucket). `GcsTlsProxy.env()` is what a runtime process needs.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

HOSTS = ("www.googleapis.com", "storage.googleapis.com")
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade", "host"}
BOUNDARY = "tfgcsproxyboundary"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for the GCS hosts (its own CA: CURL_CA_BUNDLE names it) and its key."""
    cert, key = directory / "gcs-cert.pem", directory / "gcs-key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={HOSTS[0]}",
            "-addext",
            "subjectAltName=" + ",".join(f"DNS:{h}" for h in HOSTS),
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, fmt, *args):
        self.server.requests.append(fmt % args)

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms delayed-ACK stalls

    def do_CONNECT(self):
        if self.path not in {f"{h}:443" for h in HOSTS}:
            self.send_error(403, f"only {HOSTS}")
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        self.connection = self.server.tls.wrap_socket(self.connection, server_side=True)
        self.rfile = self.connection.makefile("rb")
        self.wfile = self.connection.makefile("wb", 0)  # unbuffered: "100 Continue" goes out at once
        self.close_connection = False  # serve the requests inside the tunnel

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # curl's PUT: decode it
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _answer(self, status: int, data: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    def _forward(self):
        emulator = self.server.emulator_port
        path = self.path
        if path.startswith(("http://", "https://")):
            path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
        body = self._body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        if self.command == "POST" and not body and "uploadType=media" in path:
            # a directory marker ("dir/"): the emulator fails on an empty media upload
            name = parse_qs(urlsplit(path).query)["name"][0]
            path = path.replace("uploadType=media", "uploadType=multipart")
            body = (
                f"--{BOUNDARY}\r\nContent-Type: application/json\r\n\r\n{json.dumps({'name': name})}\r\n"
                f"--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\n\r\n\r\n--{BOUNDARY}--\r\n"
            ).encode()
            headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            headers["Content-Type"] = f"multipart/related; boundary={BOUNDARY}"
        if self.command == "GET" and path.split("?")[0].endswith("/storageLayout"):
            bucket = path.split("/b/", 1)[1].split("/", 1)[0]
            self._answer(
                200,
                json.dumps(
                    {
                        "kind": "storage#storageLayout",
                        "bucket": bucket,
                        "location": "US",
                        "locationType": "multi-region",
                    }
                ).encode(),
                [("Content-Type", "application/json")],
            )
            return
        headers["Host"] = f"127.0.0.1:{emulator}"
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection("127.0.0.1", emulator, timeout=120)
        try:
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.request(self.command, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        out = []
        for k, v in resp.getheaders():
            if k.lower() == "location":  # a resumable upload's session: back through the tunnel
                v = v.replace(f"http://127.0.0.1:{emulator}", f"https://{HOSTS[0]}")
            if k.lower() not in HOP and k.lower() != "content-length":
                out.append((k, v))
        self._answer(resp.status, data, out)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    tls: ssl.SSLContext
    emulator_port: int
    requests: list[str]


class GcsTlsProxy:
    """The proxy on a loopback port, forwarding to the emulator at `emulator_port` (a context manager)."""

    def __init__(self, emulator_port: int):
        self.emulator_port = emulator_port
        self.dir = Path(tempfile.mkdtemp(prefix="gcs_tls_proxy_"))
        self.cert, key = self_signed(self.dir)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._server.tls.load_cert_chain(self.cert, key)
        self._server.emulator_port, self._server.requests = emulator_port, []
        self.port = self._server.server_address[1]
        self.thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="gcs-tls-proxy", daemon=True
        )

    @property
    def requests(self) -> list[str]:
        return self._server.requests

    def env(self) -> dict[str, str]:
        """The environment that sends TF's GCS requests here (and nothing else: loopback is direct)."""
        proxy = f"http://127.0.0.1:{self.port}"
        return {
            "https_proxy": proxy,
            "HTTPS_PROXY": proxy,
            "no_proxy": "127.0.0.1,localhost",
            "NO_PROXY": "127.0.0.1,localhost",
            "CURL_CA_BUNDLE": str(self.cert),
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "unused",  # TF's GCS auth: no metadata server offline
            "NO_GCE_CHECK": "true",
        }

    def __enter__(self) -> GcsTlsProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)
