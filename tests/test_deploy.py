"""The deployment files, checked offline: the official Helm chart's values (docker/helm/values.yaml)
run the project's image with the settings it relies on."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
import yaml

from taxi_pipeline.gcp_settings import DEFAULTS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load((REPO / "docker" / "helm" / "values.yaml").read_text())


def env_of(values: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in values["env"]}


def test_the_chart_runs_the_projects_airflow_image_at_the_locked_airflow_version(values):
    locked = re.search(r"^apache-airflow==(\S+)$", (REPO / "requirements.lock").read_text(), re.M).group(1)
    assert values["airflowVersion"] == locked
    assert values["images"]["airflow"]["repository"].endswith("/taxi-mlops/taxi-mlops-airflow")  # docker/README.md
    assert f"FROM apache/airflow:{locked}-" in (REPO / "docker" / "airflow" / "Dockerfile").read_text()


def test_celery_workers_a_triggerer_and_the_dags_in_the_image(values):
    assert values["executor"] == "CeleryExecutor" and values["workers"]["replicas"] >= 2
    assert values["triggerer"]["enabled"] and values["dagProcessor"]["enabled"]
    assert not values["dags"]["gitSync"]["enabled"]  # docker/airflow/Dockerfile copies dags/ in
    assert values["postgresql"]["enabled"] and values["redis"]["enabled"]


def test_every_airflow_cfg_setting_of_the_project_is_in_the_charts_config(values):
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "airflow.cfg")
    settings = {(section, key): value for section in cfg.sections() for key, value in cfg[section].items()}
    ours_here = {  # set by the README's commands elsewhere (the api's host and port are the chart's own)
        ("core", "executor"),
        ("api", "host"),
        ("api", "port"),
    }
    config = values["config"]
    missing = {
        (section, key): value
        for (section, key), value in settings.items()
        if (section, key) not in ours_here and str(config.get(section, {}).get(key)).lower() != value.lower()
    }
    assert not missing, f"airflow.cfg settings not in values.yaml's config: {missing}"
    assert values["executor"] == "CeleryExecutor"  # the executor is the chart's own top-level value


def test_the_chart_reads_its_own_airflow_cfg_and_the_gcp_platform_is_set(values):
    env = env_of(values)
    # docker/airflow/Dockerfile points AIRFLOW_CONFIG at the repo's file; the chart renders `config` elsewhere
    assert "AIRFLOW_CONFIG=/opt/taxi-mlops/airflow.cfg" in (REPO / "docker" / "airflow" / "Dockerfile").read_text()
    assert env["AIRFLOW_CONFIG"] == "/opt/airflow/airflow.cfg"
    assert env["TAXI_PLATFORM"] == "gcp"
    names = {name.removeprefix("TAXI_GCP_").lower() for name in env if name.startswith("TAXI_GCP_")}
    assert "project" in names and names <= set(DEFAULTS)  # only settings the gcp platform reads
    assert env["TAXI_GCP_RUNTIME_IMAGE"].split("/")[-1].startswith("taxi-mlops-runtime")


def test_no_secret_is_in_the_values(values):
    def secrets_in(node) -> list[str]:
        if isinstance(node, dict):
            found = [k for k, v in node.items() if k.lower() in SECRET_KEYS and v]
            return found + [f for v in node.values() for f in secrets_in(v)]
        return [f for v in node for f in secrets_in(v)] if isinstance(node, list) else []

    assert values["fernetKeySecretName"] and values["apiSecretKeySecretName"]  # created beforehand
    assert secrets_in(values) == []


SECRET_KEYS = {"password", "fernetkey", "apisecretkey", "webserversecretkey", "connection"}
