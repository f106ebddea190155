"""Serving benchmark (not a test): the model server against calling the SavedModel in-process.

    .venv-runtime/bin/python bench/serving.py [--model <SavedModel dir>] [--csv '<raw window CSV glob>']
        [--seconds 3] [--rows 1 100] [--clients 1 4] [--batching off on] [--breakdown]

Defaults: the newest version under $TAXI_HOME/serving/taxi and the newest eval split under
$TAXI_HOME/artifacts/ (TAXI_HOME defaults to .taxi/ in the repo), both written by `make run`.
Trains nothing. Starts the server (a separate process, as in production) on free ports of
127.0.0.1 with the model as its only version, and prints one table: for each batch size (rows
per request), path (in-process call, REST, gRPC) and number of concurrent clients, the latency
p50/p99 and the predictions per second, and the server's throughput over the in-process one.
Requests are encoded once per cell, so the table measures serving, not client-side encoding.
`--batching on` also runs a second server with TF-Serving's batching (`--enable_batching`, the
parameters of BATCHING_PARAMETERS) and measures its REST and gRPC as the paths "REST batching", "gRPC batching".

--breakdown also prints where a REST request's time goes at the largest --rows: each stage of the
server's own code timed alone in this process (parsing, decoding, the model call, the response),
and the round trip of the standard library's HTTP server and client carrying the same bytes and
doing nothing else, against the in-process call and what 0.7 of its throughput allows.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import glob
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))

import taxi_model  # noqa: E402,F401  (Keras 2 before TensorFlow)

# isort: split
import tensorflow as tf  # noqa: E402

from taxi_model.serving import client  # noqa: E402
from taxi_model.serving.repository import versions_on_disk  # noqa: E402

PROTOCOLS = ("REST", "gRPC")
SUFFIX = {"off": "", "on": " batching"}  # of the paths of a server without and with batching
# Four clients' 100-row requests fit one batch; the timeout is about one in-process call of 100 rows.
BATCHING_PARAMETERS = """
max_batch_size { value: 400 }
batch_timeout_micros { value: 1000 }
num_batch_threads { value: 2 }
max_enqueued_batches { value: 100 }
"""


def taxi_home() -> Path:
    return Path(os.environ.get("TAXI_HOME") or REPO / ".taxi")


def default_model() -> str:
    base = taxi_home() / "serving" / "taxi"
    versions = versions_on_disk(str(base))
    if not versions:
        sys.exit(f"no model version under {base}: run `make run` first, or pass --model <SavedModel dir>")
    return versions[max(versions)]


def default_csv() -> str:
    splits = glob.glob(str(taxi_home() / "artifacts" / "**" / "data" / "eval"), recursive=True)
    splits = [s for s in splits if glob.glob(f"{s}/part-*.csv")]
    if not splits:
        sys.exit(f"no eval split under {taxi_home() / 'artifacts'}: run `make run` first, or pass --csv <CSV glob>")
    return f"{max(splits, key=os.path.getmtime)}/part-*.csv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server_process(model_dir: str, batching: bool = False) -> Iterator[tuple[int, int]]:
    """The server, serving `model_dir` as taxi version 1 (batching its requests, or not); yields its
    REST and gRPC ports."""
    with tempfile.TemporaryDirectory(prefix="bench_serving_") as root:
        os.makedirs(f"{root}/taxi")
        os.symlink(os.path.abspath(model_dir), f"{root}/taxi/1")
        ports = free_port(), free_port()
        batching_flags = []
        if batching:
            Path(root, "batching.config").write_text(BATCHING_PARAMETERS)
            batching_flags = ["--enable_batching", "--batching_parameters_file", f"{root}/batching.config"]
        with open(f"{root}/server.log", "w") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "taxi_model.serving.server",
                    "--serving_root",
                    root,
                    "--rest_port",
                    str(ports[0]),
                    "--grpc_port",
                    str(ports[1]),
                    *batching_flags,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(REPO / "include"), "TF_CPP_MIN_LOG_LEVEL": "2"},
            )
        try:
            client.wait_until_available("taxi", 120, port=ports[0])
            yield ports
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_cell(make_call: Callable[[], Callable[[], None]], clients: int, seconds: float) -> tuple[list[float], float]:
    """Each client (a thread with its own connection) calls in a loop for `seconds`: latencies (ms)
    of all calls, and the wall time."""
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def loop() -> None:
        call = make_call()
        call()  # warm the connection
        own = []
        start.wait()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            call()
            own.append((time.perf_counter() - began) * 1000)
        with lock:
            latencies.extend(own)

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - began


# The standard library's HTTP stack alone: an HTTP/1.1 keep-alive server answering every POST with
# a canned body, written as the model server writes its answers (no Nagle, headers and body at once).
BARE_HTTP_SERVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
answer = open(sys.argv[2], "rb").read()
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def log_message(self, *args): pass
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self._headers_buffer.append(b"\r\n" + answer)
        self.flush_headers()
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def mean_ms(call: Callable[[], object], seconds: float) -> float:
    for _ in range(20):
        call()
    calls, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        call()
        calls += 1
    return (time.perf_counter() - began) / calls * 1000


def breakdown(model_dir: str, batch: list[bytes], seconds: float, rest_p50: float, in_process_p50: float) -> list:
    """Rows (stage, ms per request) of a REST request of `batch`, each stage of the server's code alone."""
    from taxi_model.serving import rest_json
    from taxi_model.serving.inference import ModelVersion

    version = ModelVersion.load("taxi", 1, model_dir)
    signature = version.signature("")
    body = client.RestClient.predict_body(batch)
    document = rest_json.parse_body(body)
    inputs, request_format = rest_json.request_inputs(document, signature.inputs)
    tensors = {name: tf.constant(array, dtype=signature.inputs[name].dtype) for name, array in inputs.items()}
    _, outputs = version.predict(signature.name, inputs)
    answer = rest_json.response_bytes(outputs, request_format)
    stages = [
        ("server: parse the JSON body", mean_ms(lambda: rest_json.parse_body(body), seconds)),
        (
            "server: decode the b64 rows into an array",
            mean_ms(lambda: rest_json.request_inputs(document, signature.inputs), seconds),
        ),
        (
            "server: checks, tensor, model call, outputs",
            mean_ms(lambda: version.predict(signature.name, inputs), seconds),
        ),
        ("  of which the model's graph alone", mean_ms(lambda: signature.call(tensors), seconds)),
        (
            "server: write the JSON response",
            mean_ms(lambda: rest_json.response_bytes(outputs, request_format), seconds),
        ),
    ]
    with tempfile.TemporaryDirectory(prefix="bench_http_") as tmp:
        Path(tmp, "answer.json").write_bytes(answer)
        port = free_port()
        bare = subprocess.Popen([sys.executable, "-c", BARE_HTTP_SERVER, str(port), f"{tmp}/answer.json"])
        try:
            deadline = time.monotonic() + 30
            while True:  # until it listens
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or bare.poll() is not None:
                        raise
                    time.sleep(0.05)
            rest = client.RestClient(port=port)
            stages.append(
                (
                    "HTTP round trip alone (stdlib server + client)",
                    mean_ms(lambda: rest.request("POST", "/", body), seconds),
                )
            )
        finally:
            bare.kill()
            bare.wait()
    total = sum(ms for name, ms in stages if not name.startswith(" "))
    return [
        *stages,
        ("sum of the stages", total),
        ("measured REST p50", rest_p50),
        ("in-process call p50 (the reference)", in_process_p50),
        ("a request's time at 0.7 of in-process throughput", in_process_p50 / 0.7),
    ]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="SavedModel dir (default: newest version under $TAXI_HOME/serving/taxi)")
    parser.add_argument("--csv", help="raw window CSV glob (default: newest eval split under $TAXI_HOME/artifacts)")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each cell")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 100], help="rows per request")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4], help="concurrent clients")
    parser.add_argument(
        "--batching", nargs="+", choices=list(SUFFIX), default=["off"], help="servers without and with batching"
    )
    parser.add_argument("--json", help="also write the cells to this JSON file (bench/run.py reads it)")
    parser.add_argument(
        "--breakdown", action="store_true", help="also print where a REST request's time goes, at the largest --rows"
    )
    args = parser.parse_args()
    model_dir, csv_pattern = args.model or default_model(), args.csv or default_csv()

    rows = client.read_rows(csv_pattern, max(args.rows))
    if len(rows) < max(args.rows):
        sys.exit(f"{csv_pattern} has {len(rows)} rows, fewer than {max(args.rows)}")
    examples = client.serialized_examples(rows)
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]

    paths = ["in-process"] + [protocol + SUFFIX[mode] for mode in args.batching for protocol in PROTOCOLS]
    with contextlib.ExitStack() as servers:
        ports_of = {  # "off"/"on": the REST and gRPC ports of that server
            mode: servers.enter_context(server_process(model_dir, batching=mode == "on")) for mode in args.batching
        }

        def callers(path: str, batch: list[bytes]) -> Callable[[], Callable[[], None]]:
            if path == "in-process":
                return lambda: lambda: serve(examples=tf.constant(batch))
            protocol, _, batching = path.partition(" ")
            rest_port, grpc_port = ports_of["on" if batching else "off"]
            if protocol == "REST":

                def make_rest():
                    rest, body = client.RestClient(port=rest_port), client.RestClient.predict_body(batch)
                    return lambda: rest.predict(batch, body=body)

                return make_rest

            def make_grpc():
                stub = client.GrpcClient(port=grpc_port)
                request = stub.predict_request(batch)
                return lambda: stub.predict(batch, request=request)

            return make_grpc

        results = {}
        for n in args.rows:
            for path in paths:
                for clients in args.clients:
                    latencies, elapsed = run_cell(callers(path, examples[:n]), clients, args.seconds)
                    results[n, path, clients] = (
                        percentile(latencies, 0.5),
                        percentile(latencies, 0.99),
                        len(latencies) * n / elapsed,
                    )

    print(
        f"serving benchmark, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}: {os.cpu_count()} cores "
        f"(nproc {len(os.sched_getaffinity(0))}), {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, TensorFlow {tf.__version__}"
    )
    print(f"model {model_dir}; rows of {csv_pattern}; {args.seconds:g} s per cell; server in its own process")
    if "on" in args.batching:
        print("batching parameters: " + " ".join(BATCHING_PARAMETERS.split()))
    header = (
        f"{'rows/req':>8} {'path':<13} {'clients':>7} {'p50 ms':>8} {'p99 ms':>8} {'pred/s':>10} {'vs in-proc':>10}"
    )
    print(header + "\n" + "-" * len(header))
    for (n, path, clients), (p50, p99, throughput) in results.items():
        ratio = throughput / results[n, "in-process", clients][2]
        print(f"{n:>8} {path:<13} {clients:>7} {p50:>8.2f} {p99:>8.2f} {throughput:>10.0f} {ratio:>10.2f}")
    stages = []
    if args.breakdown:
        n, clients = max(args.rows), min(args.clients)
        stages = breakdown(
            model_dir,
            examples[:n],
            args.seconds / 3,
            results[n, "REST", clients][0],
            results[n, "in-process", clients][0],
        )
        print(f"\nwhere a REST request of {n} rows goes (stages timed alone, means; one client)")
        print(f"{'stage':<52} {'ms':>6}\n{'-' * 59}")
        for name, ms in stages:
            print(f"{name:<52} {ms:>6.2f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "cells": [
                        {"rows": n, "path": path, "clients": clients, "p50": p50, "p99": p99, "throughput": throughput}
                        for (n, path, clients), (p50, p99, throughput) in results.items()
                    ],
                    "breakdown": [{"stage": name, "ms": ms} for name, ms in stages],
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
