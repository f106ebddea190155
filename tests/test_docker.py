"""The images describe the same environments the local set-up installs (they are not built here)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_each_dockerfile_installs_exactly_the_lock_the_local_environment_uses():
    airflow = (REPO / "docker/airflow/Dockerfile").read_text()
    runtime = (REPO / "docker/runtime/Dockerfile").read_text()
    assert "COPY --chown=airflow:0 requirements.lock " in airflow
    assert "pip install --no-cache-dir -r /opt/taxi-mlops/requirements.lock" in airflow
    # the Airflow image launches the Beam pipelines with the runtime's interpreter, from the same lock
    assert (
        "COPY --chown=airflow:0 docker/runtime/requirements.lock /opt/taxi-mlops/runtime-requirements.lock" in airflow
    )
    # the runtime lock is installed as it is (TensorFlow's CPU build stands in for `tensorflow`)
    assert "runtime/bin/pip install --no-cache-dir --no-deps -r /opt/taxi-mlops/runtime-requirements.lock" in airflow
    assert "TAXI_RUNTIME_PYTHON=/opt/taxi-mlops/runtime/bin/python" in airflow
    assert "COPY docker/runtime/requirements.lock " in runtime
    assert "pip install --no-cache-dir --no-deps -r /opt/taxi-mlops/requirements.lock" in runtime
    makefile = (REPO / "Makefile").read_text()
    assert "-r requirements.lock" in makefile and "pip sync" in makefile
    assert "$(RUNTIME)/bin/python docker/runtime/requirements.lock" in makefile


def test_the_runtime_is_tensorflows_cpu_build_only():
    runtime_lock = (REPO / "docker/runtime/requirements.lock").read_text().splitlines()
    pins = {line.split("==")[0] for line in runtime_lock if "==" in line and not line.startswith("#")}
    assert "tensorflow-cpu" in pins and "tensorflow" not in pins


def test_the_base_images_match_the_pinned_airflow_and_beam():
    lock = (REPO / "requirements.lock").read_text().splitlines()
    runtime_lock = (REPO / "docker/runtime/requirements.lock").read_text().splitlines()
    airflow_version = next(pin.split("==")[1] for pin in lock if pin.startswith("apache-airflow=="))
    beam_version = next(pin.split("==")[1] for pin in runtime_lock if pin.startswith("apache-beam=="))
    assert f"FROM apache/airflow:{airflow_version}-python3.11" in (REPO / "docker/airflow/Dockerfile").read_text()
    assert f"FROM apache/beam_python3.11_sdk:{beam_version}" in (REPO / "docker/runtime/Dockerfile").read_text()
