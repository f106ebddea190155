"""GKE's side of the Kubernetes stand-in: the google provider's GKE operators find their cluster
through GKE's ClusterManager and authenticate with a Google access token; both are answered here,
so everything from the cluster's endpoint on is the real operator and kubernetes-client code.

Patched (for the `with` block only):
- `ClusterManagerClient.get_cluster` (the GKE API call behind `GKEHook.get_cluster`): a `Cluster`
  whose endpoint is the stand-in (`127.0.0.1:<port>`) and whose `masterAuth.clusterCaCertificate`
  is its CA, as GKE answers. Unknown clusters (when `clusters` is given) are NotFound.
- `GKEClusterConnection._get_token`: the stand-in's bearer token instead of refreshing Google
  credentials (there is no metadata server or token endpoint offline).
- the environment: `AIRFLOW_CONN_<CONN_ID>` (anonymous credentials, the project) when it is not set,
  so the hooks can build their clients from the connection as a worker does.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from unittest import mock

try:  # tests/standins is a directory of top-level modules, or the `standins` package of tests/
    from .kubernetes_api import KubernetesStandin
except ImportError:
    from kubernetes_api import KubernetesStandin

PROJECT = "taxi-test"


@contextlib.contextmanager
def gke_pointed_at(
    api: KubernetesStandin,
    *,
    conn_id: str = "google_cloud_default",
    project: str = PROJECT,
    clusters: list[str] | None = None,
) -> Iterator[KubernetesStandin]:
    """GKE's cluster lookup and token answered by `api` (see the module's docstring)."""
    from airflow.providers.google.cloud.hooks.kubernetes_engine import GKEClusterConnection
    from google.api_core.exceptions import NotFound
    from google.cloud.container_v1 import ClusterManagerClient
    from google.cloud.container_v1.types import Cluster, MasterAuth, PrivateClusterConfig

    def get_cluster(client, request=None, *, name=None, project_id=None, zone=None, cluster_id=None, **kwargs):
        name = name or (request.name if hasattr(request, "name") else (request or {}).get("name"))
        api.cluster_lookups.append(name)
        cluster = name.rsplit("/", 1)[-1]
        if clusters is not None and cluster not in clusters:
            raise NotFound(f"Not found: {name}.")
        endpoint = f"127.0.0.1:{api.port}"
        return Cluster(
            name=cluster,
            endpoint=endpoint,
            status=Cluster.Status.RUNNING,
            location=name.split("/locations/")[1].split("/")[0] if "/locations/" in name else "",
            master_auth=MasterAuth(cluster_ca_certificate=api.ca_data),
            private_cluster_config=PrivateClusterConfig(private_endpoint=endpoint),
        )

    env_name = f"AIRFLOW_CONN_{conn_id.upper()}"
    env = (
        {}
        if env_name in os.environ
        else {
            env_name: json.dumps(
                {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True, "project": project}}
            )
        }
    )
    with (
        mock.patch.object(ClusterManagerClient, "get_cluster", get_cluster),
        mock.patch.object(GKEClusterConnection, "_get_token", staticmethod(lambda credentials: api.token)),
        mock.patch.dict(os.environ, env),
    ):
        yield api


@contextlib.contextmanager
def kubernetes_standin(
    runtime_python: str | None = None,
    *,
    conn_id: str = "google_cloud_default",
    project: str = PROJECT,
    clusters: list[str] | None = None,
    **options,
) -> Iterator[KubernetesStandin]:
    """A running stand-in cluster with the GKE operators pointed at it; its processes are killed on exit.
    `options`: KubernetesStandin's (extra_env, restart_backoff, namespaces, tf_config_hosts...)."""
    with (
        KubernetesStandin(runtime_python, **options) as api,
        gke_pointed_at(api, conn_id=conn_id, project=project, clusters=clusters),
    ):
        yield api
