"""Guarantee 7, no one gets in who shouldn't: no credential in the repository, the Airflow UI and
the model server listen on loopback by default, the model server refuses requests over its size
limit, and the images run as a non-root user. (The gcp platform's Kubernetes manifests, non-root
with a read-only root filesystem, are checked in tests/taxi_pipeline/test_platform_gcp.py; task
logs mask the alert webhook's secret: test_reliability_alerts.py and test_reliability_runs.py.)"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Formats of real credentials; none may appear anywhere in the repository, tests included.
CREDENTIALS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "service-account key": re.compile(r'"private_key_id"\s*:\s*"[0-9a-f]{20,}"'),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[0-9A-Za-z]{36}\b"),
    "Slack token": re.compile(r"\bxox[abposr]-[0-9A-Za-z-]{10,}"),
    "Slack webhook": re.compile(r"hooks\.slack\.com/services/T[0-9A-Z]{6,}/B[0-9A-Z]{6,}/[0-9A-Za-z]{20,}"),
}
# Outside the tests (whose fake secrets say so), no literal password or secret assigned in code or config.
ASSIGNED = re.compile(
    r"""(?i)\b(password|passwd|secret_key|jwt_secret|fernet_key|api_key|token)\b"""
    r"""[ \t]*[=:][ \t]*["']?[A-Za-z0-9+/_\-]{8,}"""
)

# Starts the model server and Airflow's api-server: outside `make check`.
pytestmark = pytest.mark.slow


def tracked_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [REPO / n for n in names if (REPO / n).is_file() and not n.endswith((".lock", ".png", ".svg", ".ico"))]


def test_no_credential_is_committed():
    found = []
    for path in tracked_files():
        text = path.read_text(errors="ignore")
        rel = path.relative_to(REPO).as_posix()
        found += [f"{rel}: {name}" for name, pattern in CREDENTIALS.items() if pattern.search(text)]
        if not rel.startswith("tests/"):
            found += [f"{rel}: {m.group(0)[:40]}" for m in ASSIGNED.finditer(text)]
    assert found == []


def test_airflow_has_no_baked_in_secret_and_its_ui_listens_on_loopback():
    cfg = (REPO / "airflow.cfg").read_text()
    assert not re.search(r"(?im)^\s*(secret_key|jwt_secret|fernet_key)\s*=", cfg)  # generated per install
    probe = "from airflow.configuration import conf; print(conf.get('api', 'host'))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__API__")}
    host = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert host.stdout.strip().splitlines()[-1] == "127.0.0.1"


def test_the_images_run_as_a_non_root_user():
    for dockerfile in sorted((REPO / "docker").glob("*/Dockerfile")):
        users = re.findall(r"(?m)^USER\s+(\S+)", dockerfile.read_text())
        assert users and users[-1] not in ("root", "0"), dockerfile


@pytest.fixture(scope="module")
def model_server(tmp_path_factory):
    """The local model server with its default host, free ports and a 4 KiB body limit."""
    runtime = os.environ.get("TAXI_RUNTIME_PYTHON") or str(REPO / ".venv-runtime" / "bin" / "python")
    root = tmp_path_factory.mktemp("serving")
    log = tmp_path_factory.mktemp("server") / "server.log"
    proc = subprocess.Popen(
        [
            runtime,
            "-m",
            "taxi_model.serving.server",
            "--serving_root",
            str(root),
            "--rest_port",
            "0",
            "--grpc_port",
            "0",
            "--max_body_bytes",
            "4096",
        ],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while not (match := re.search(r"REST on ([\d.]+):(\d+), gRPC on ([\d.]+):(\d+)", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield match
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_the_model_server_listens_on_loopback_by_default(model_server):
    assert model_server.group(1) == model_server.group(3) == "127.0.0.1"


@pytest.mark.parametrize("body, chunked", [(b"x" * 5000, False), (b"x" * 5000, True)])
def test_the_model_server_refuses_a_request_over_its_size_limit(model_server, body, chunked):
    connection = http.client.HTTPConnection("127.0.0.1", int(model_server.group(2)), timeout=30)
    try:
        if chunked:
            connection.request(
                "POST",
                "/v1/models/taxi:predict",
                body=iter([body[:2500], body[2500:]]),
                encode_chunked=True,
                headers={"Transfer-Encoding": "chunked"},
            )
        else:
            connection.request("POST", "/v1/models/taxi:predict", body=body)
        response = connection.getresponse()
        assert response.status == 413
        assert b"larger than the limit of 4096 bytes" in response.read()
    finally:
        connection.close()
