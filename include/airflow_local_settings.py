"""Airflow's local settings hook (imported once by every Airflow process as it starts: `import airflow`).

On the gcp platform, the DAG files build their tasks from the google, Beam and Kubernetes
providers' operators, whose modules (and the client libraries under them: aiplatform, BigQuery,
pandas, kubernetes) take about 2 s to import. Airflow's dag-processor forks one process per DAG
file parse from its manager, and the task supervisor forks each task's process, so modules imported
here, once, are inherited by every parse and task instead of being imported again by each (Airflow's
own `parsing_pre_import_modules` does the same, for the `airflow.*` modules a DAG file names itself).
The local platform needs none of it: nothing is imported then.
"""

from __future__ import annotations

import importlib
import os

__all__: list[str] = []  # no cluster policies here

# What the gcp platform imports to build its tasks (taxi_pipeline.platforms.gcp) and to run
# them; tests/taxi_pipeline/test_platform_gcp.py checks that a parse needs nothing beyond these.
GCP_PLATFORM_MODULES = (
    "airflow.providers.apache.beam.operators.beam",
    "airflow.providers.google.cloud.sensors.bigquery",
    "airflow.providers.google.cloud.operators.bigquery",
    "airflow.providers.google.cloud.transfers.bigquery_to_gcs",
    "airflow.providers.google.cloud.transfers.gcs_to_bigquery",  # the batch scores into their table
    "airflow.providers.google.cloud.operators.vertex_ai.endpoint_service",
    "airflow.providers.google.cloud.hooks.vertex_ai.model_service",
    "kubernetes.client",
    "kubeflow.training",  # the TFJob's models (taxi_pipeline.k8s.tfjob)
    "taxi_pipeline.operators.gcp",
    "taxi_pipeline.operators.tfjob",
    "taxi_pipeline.operators.tf_serving",
)


def preimport_platform_modules() -> list[str]:
    if os.environ.get("TAXI_PLATFORM", "local") != "gcp":
        return []
    for module in GCP_PLATFORM_MODULES:
        importlib.import_module(module)
    return list(GCP_PLATFORM_MODULES)


preimport_platform_modules()
