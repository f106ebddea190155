"""Apply (create or patch) the tensorflow/serving Deployment and Service on GKE, idempotently.

Re-running it changes nothing that is already as described: an existing object is patched with
the manifest (a strategic merge, so fields Kubernetes fills in, such as the Service's clusterIP,
stay), a missing one is created. It then waits until the Deployment's rollout is complete (every
replica updated and ready: the readiness probe asks TF-Serving for the champion model's status).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from airflow.providers.google.cloud.operators.kubernetes_engine import GKEOperatorMixin
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException


def rollout_complete(deployment: dict) -> tuple[bool, str]:
    """Is a Deployment object (as the API returns it, camelCase) fully rolled out? And how far it is."""
    spec, status = deployment.get("spec", {}), deployment.get("status", {}) or {}
    want = spec.get("replicas", 1)
    generation_seen = status.get("observedGeneration", 0) >= deployment.get("metadata", {}).get("generation", 0)
    updated, ready = status.get("updatedReplicas") or 0, status.get("readyReplicas") or 0
    available = status.get("availableReplicas") or 0
    done = generation_seen and updated == want and ready == want and available == want
    return done, f"{updated}/{want} updated, {ready}/{want} ready, {available}/{want} available"


class TFServingDeployOperator(GKEOperatorMixin, BaseOperator):
    """Creates or patches `network_policy` (if given: before the pods can start), `deployment` and
    `service` (dicts, templated) in `namespace`; waits for the rollout."""

    template_fields: Sequence[str] = tuple(
        {"deployment", "service", "network_policy", "namespace", *GKEOperatorMixin.template_fields}
    )
    template_fields_renderers = {"deployment": "json", "service": "json", "network_policy": "json"}
    ui_color = "#e8f5e9"

    def __init__(
        self,
        *,
        deployment: dict,
        service: dict,
        namespace: str,
        location: str,
        cluster_name: str,
        network_policy: dict | None = None,
        project_id: str,
        gcp_conn_id: str = "google_cloud_default",
        rollout_timeout: float = 600,
        poll_interval: float = 10,
        use_internal_ip: bool = False,
        use_dns_endpoint: bool = False,
        impersonation_chain=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.deployment, self.service, self.namespace = deployment, service, namespace
        self.network_policy = network_policy
        self.location, self.cluster_name, self.project_id, self.gcp_conn_id = (
            location,
            cluster_name,
            project_id,
            gcp_conn_id,
        )
        self.use_internal_ip, self.use_dns_endpoint, self.impersonation_chain = (
            use_internal_ip,
            use_dns_endpoint,
            impersonation_chain,
        )
        self.rollout_timeout, self.poll_interval = rollout_timeout, poll_interval

    def _apply(self, read, create, patch, body: dict) -> str:
        from kubernetes.client.exceptions import ApiException

        name = body["metadata"]["name"]
        try:
            read(name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            create(self.namespace, body)
            return "created"
        patch(name, self.namespace, body)
        return "patched"

    def execute(self, context) -> dict:
        from kubernetes import client

        api = self.hook.get_conn()
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        done = {}
        if self.network_policy:  # first: the pods are never reachable by everyone, not even while they start
            networking = client.NetworkingV1Api(api)
            done["network_policy"] = self._apply(
                networking.read_namespaced_network_policy,
                networking.create_namespaced_network_policy,
                networking.patch_namespaced_network_policy,
                self.network_policy,
            )
        done |= {
            "deployment": self._apply(
                apps.read_namespaced_deployment,
                apps.create_namespaced_deployment,
                apps.patch_namespaced_deployment,
                self.deployment,
            ),
            "service": self._apply(
                core.read_namespaced_service,
                core.create_namespaced_service,
                core.patch_namespaced_service,
                self.service,
            ),
        }
        name = self.deployment["metadata"]["name"]
        self.log.info("Deployment %s/%s %s, Service %s", self.namespace, name, done["deployment"], done["service"])
        deadline = time.monotonic() + self.rollout_timeout
        while True:
            current = api.sanitize_for_serialization(apps.read_namespaced_deployment(name, self.namespace))
            complete, progress = rollout_complete(current)
            self.log.info("Rollout of %s: %s", name, progress)
            if complete:
                return done
            if time.monotonic() > deadline:
                raise AirflowException(
                    f"Deployment {self.namespace}/{name} not rolled out after {self.rollout_timeout:.0f}s "
                    f"({progress}); "
                    "its pods' readiness probe asks TF-Serving for the model's status: see the pods' events and logs"
                )
            time.sleep(self.poll_interval)
