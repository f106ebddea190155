"""include/airflow_local_settings.py: on gcp, Airflow's start-up imports the platform's provider
modules once, so the dag-processor's forked parses inherit them; on local it imports nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DAGS = sorted((Path(__file__).resolve().parents[1] / "dags").glob("*.py"))
# The client libraries and provider modules of the gcp platform (Airflow's providers manager imports
# each provider's package and get_provider_info at start-up on any platform: those are not counted).
HEAVY_PREFIXES = (
    "google.cloud.",
    "google.api_core",
    "kubernetes.",
    "kubernetes_asyncio",
    "pandas",
    "airflow.providers.google.cloud",
    "airflow.providers.apache.beam.operators",
    "airflow.providers.cncf.kubernetes.operators",
    "airflow.providers.cncf.kubernetes.hooks",
    "kubeflow",
    "taxi_pipeline.operators.gcp",
    "taxi_pipeline.operators.tfjob",
    "taxi_pipeline.operators.tf_serving",
)

PROBE = r"""
import json, runpy, sys
import airflow  # Airflow's start-up: runs airflow_local_settings, as in the dag-processor's manager
started = set(sys.modules)
for path in sys.argv[2:]:
    runpy.run_path(path, run_name="probe")
heavy = tuple(sys.argv[1].split(","))
print(json.dumps({"at_start": sorted(m for m in started if m.startswith(heavy)),
                  "during_parse": sorted(m for m in set(sys.modules) - started if m.startswith(heavy))}))
"""


def probe(platform: str) -> dict:
    env = {**os.environ, "TAXI_PLATFORM": platform, "TAXI_GCP_PROJECT": "taxi-test"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(HEAVY_PREFIXES), *map(str, DAGS)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # imports every provider
def test_on_gcp_the_start_up_imports_every_provider_module_a_parse_needs():
    result = probe("gcp")
    assert "airflow.providers.google.cloud.sensors.bigquery" in result["at_start"]
    assert "taxi_pipeline.operators.gcp" in result["at_start"]
    assert result["during_parse"] == []  # the list in airflow_local_settings is complete


def test_on_local_the_start_up_imports_none_of_them():
    result = probe("local")
    assert result["at_start"] == []
    assert result["during_parse"] == []  # and neither does parsing the local DAGs
