"""The client (Python API and CLI), and the server as a process: flags, log lines, SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
from model_test_data import runtime_env
from serving_test_support import publish_version

from taxi_model.serving import client


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_predict_rows_answers_what_the_saved_model_answers(server, eval_rows, saved_model_outputs, protocol):
    port = {"rest": server.rest_port, "grpc": server.grpc_port}[protocol]
    prediction = client.predict_rows(eval_rows, "taxi", protocol=protocol, port=port)
    np.testing.assert_array_equal(
        np.array(prediction.probabilities, np.float32),
        saved_model_outputs["serving_default"]["probabilities"].reshape(-1),
    )
    assert prediction.version == (1 if protocol == "grpc" else None)


def test_the_cli_prints_a_line_per_row(server, window_dir, eval_rows, saved_model_outputs, capsys):
    client.main(
        [
            "--csv",
            str(window_dir / "eval" / "part-*.csv"),
            "--rows",
            "3",
            "--port",
            str(server.rest_port),
            "--version",
            "1",
            "--wait",
            "10",
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# taxi over rest, 3 rows of ")
    assert lines[1].split() == ["unique_key", "fare", "tips", "big_tipper", "p(big", "tip)"]
    for line, row, probability in zip(
        lines[2:], eval_rows, saved_model_outputs["serving_default"]["probabilities"], strict=False
    ):
        key, fare, tips, actual, predicted = line.split()
        assert (key, fare, tips) == (row["unique_key"], row["fare"] or "-", row["tips"] or "-")
        assert int(actual) == int(row["fare"] != "" and float(row["tips"]) > 0.2 * float(row["fare"]))
        assert float(predicted) == pytest.approx(float(probability[0]), abs=5e-4)
    assert len(lines) == 5


def test_wait_until_available(server):
    assert client.wait_until_available("taxi", 5, port=server.rest_port) == 1
    assert client.wait_until_available("taxi", 5, protocol="grpc", port=server.grpc_port, version=1) == 1
    with pytest.raises(TimeoutError, match="model 'nope' is not AVAILABLE .* last answer: 404: Could not find any"):
        client.wait_until_available("nope", 0.5, port=server.rest_port)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_server_process_serves_logs_and_stops_on_sigterm(trained_model, tmp_path, window_dir):
    publish_version(trained_model["model"], tmp_path / "taxi_standard", 201601010000)
    rest_port, grpc_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taxi_model.serving.server",
            "--serving_root",
            str(tmp_path),
            "--rest_port",
            str(rest_port),
            "--grpc_port",
            str(grpc_port),
            "--poll_seconds",
            "0.5",
        ],
        env=runtime_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.wait_until_available("taxi_standard", 60, port=rest_port) == 201601010000
        rows = client.read_rows(str(window_dir / "eval" / "part-*.csv"), 2)
        assert client.predict_rows(rows, "taxi_standard", protocol="grpc", port=grpc_port).version == 201601010000
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert f"REST on 127.0.0.1:{rest_port}, gRPC on 127.0.0.1:{grpc_port}" in log
    assert f"loaded taxi_standard version 201601010000 from {tmp_path}/taxi_standard/201601010000" in log
    assert "unloaded taxi_standard version 201601010000" in log and "stopped" in log
