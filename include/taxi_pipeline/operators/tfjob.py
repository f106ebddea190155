"""Kubeflow TFJobs on GKE: create one from a rendered manifest, wait on its conditions, delete it.

- `TFJobSensor` waits on a TFJob's conditions (kubeflow.org/v1 status): succeeds on `Succeeded`,
  fails on `Failed` with the failing replica's reason (its container's terminated reason, exit
  code and message, e.g. `Worker-1: OOMKilled (exit 137)`), and deletes the job when it ends.
- `TFJobTrainOperator` is the gcp platform's `train`: the provider's GKECreateCustomResourceOperator
  creates the TFJob (a retry whose job already exists reattaches to it instead of failing with a
  conflict), then it waits as TFJobSensor does and deletes the job at the end.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from airflow.providers.google.cloud.operators.kubernetes_engine import (
    GKECreateCustomResourceOperator,
    GKEOperatorMixin,
)
from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowException

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "tfjobs"
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"


def failing_replica_reasons(pods: list[dict]) -> list[str]:
    """One line per failed container of a TFJob's pods: `<type>-<index>: <reason> (exit N): <message>`."""
    lines = []
    for pod in pods:
        labels = pod.get("metadata", {}).get("labels", {})
        replica = f"{labels.get(REPLICA_TYPE_LABEL, '?').capitalize()}-{labels.get(REPLICA_INDEX_LABEL, '?')}"
        for status in pod.get("status", {}).get("containerStatuses") or []:
            state = status.get("state", {}) or {}
            last = status.get("lastState", {}) or {}
            terminated = state.get("terminated") or last.get("terminated")
            if terminated and terminated.get("exitCode", 0) != 0:
                message = (terminated.get("message") or "").strip().splitlines()
                lines.append(
                    f"{replica}: {terminated.get('reason') or 'Error'} (exit {terminated.get('exitCode')})"
                    + (f": {message[-1]}" if message else "")
                )
        if pod.get("status", {}).get("phase") == "Failed" and not any(line.startswith(replica) for line in lines):
            lines.append(
                f"{replica}: {pod['status'].get('reason') or 'Failed'}: {pod['status'].get('message', '')}".rstrip(": ")
            )
    return lines


def tfjob_outcome(job: dict) -> tuple[str, str]:
    """("succeeded" | "failed" | "running", what its last condition says) from a TFJob object."""
    conditions = [c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    by_type = {c["type"]: c for c in conditions}
    for state, kind in (("failed", "Failed"), ("succeeded", "Succeeded")):
        if kind in by_type:
            c = by_type[kind]
            return state, f"{c.get('reason', kind)}: {c.get('message', '')}".rstrip(": ")
    last = conditions[-1] if conditions else {"type": "Pending", "message": "no condition yet"}
    return "running", f"{last['type']}: {last.get('message', '')}".rstrip(": ")


class _TFJobClient:
    """What TFJobSensor and TFJobTrainOperator ask the cluster (through the GKE hook)."""

    def _get_job(self, name: str, namespace: str) -> dict:
        return self.hook.custom_object_client.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def _pods(self, name: str, namespace: str) -> list[dict]:
        pods = self.hook.core_v1_client.list_namespaced_pod(namespace, label_selector=f"{JOB_NAME_LABEL}={name}")
        return [self.hook.api_client.sanitize_for_serialization(p) for p in pods.items]

    def _check(self, name: str, namespace: str) -> bool:
        state, message = tfjob_outcome(self._get_job(name, namespace))
        self.log.info("TFJob %s/%s: %s", namespace, name, message)
        if state == "failed":
            reasons = failing_replica_reasons(self._pods(name, namespace))
            raise AirflowException(
                f"TFJob {namespace}/{name} failed: {message}"
                + (f"; failing replica: {'; '.join(reasons)}" if reasons else "")
            )
        return state == "succeeded"

    def _delete(self, name: str, namespace: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.hook.custom_object_client.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Foreground"
            )
            self.log.info("Deleted TFJob %s/%s", namespace, name)
        except ApiException as error:
            if error.status != 404:
                raise


class TFJobSensor(GKEOperatorMixin, _TFJobClient, BaseSensorOperator):
    """Waits until the TFJob `job_name` succeeds; fails with the failing replica's reason; deletes it at the end."""

    template_fields: Sequence[str] = tuple({"job_name", "namespace", *GKEOperatorMixin.template_fields})
    ui_color = "#fff3e0"

    def __init__(
        self,
        *,
        job_name: str,
        namespace: str,
        location: str,
        cluster_name: str,
        project_id: str,
        gcp_conn_id: str = "google_cloud_default",
        delete_on_finish: bool = True,
        use_internal_ip: bool = False,
        use_dns_endpoint: bool = False,
        impersonation_chain=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.job_name, self.namespace, self.delete_on_finish = job_name, namespace, delete_on_finish
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

    def poke(self, context) -> bool:
        return self._check(self.job_name, self.namespace)

    def execute(self, context) -> Any:
        try:
            return super().execute(context)
        finally:
            if self.delete_on_finish:
                self._delete(self.job_name, self.namespace)


class TFJobTrainOperator(_TFJobClient, GKECreateCustomResourceOperator):
    """Creates the TFJob of `yaml_conf` (reattaching if it exists), waits for it, deletes it at the end."""

    ui_color = "#fff3e0"

    def __init__(self, *, poke_interval: float = 30, timeout: float = 6 * 3600, **kwargs):
        kwargs.setdefault("custom_resource_definition", True)
        super().__init__(**kwargs)
        self.poke_interval, self.wait_timeout = poke_interval, timeout

    def execute(self, context) -> dict:
        import yaml
        from kubernetes.client.exceptions import ApiException

        self._validate_yaml_conf()
        body = yaml.safe_load(self.yaml_conf)
        name, namespace = body["metadata"]["name"], body["metadata"].get("namespace") or self.get_namespace()
        try:
            # the create itself, not the provider's execute: its retry re-reads a one-shot YAML generator
            # (a retried create sends nothing and logs success), and it retries the 409 that means "an
            # earlier try created it", so this reattaching branch was never reached
            self.create_custom_from_yaml_object(body)
            self.log.info(
                "Created TFJob %s/%s with %s Worker replicas",
                namespace,
                name,
                body["spec"]["tfReplicaSpecs"]["Worker"]["replicas"],
            )
        except ApiException as error:
            if error.status != 409:
                raise
            self.log.info("TFJob %s/%s exists (an earlier try created it): reattaching", namespace, name)
        try:
            deadline = time.monotonic() + self.wait_timeout
            while not self._check(name, namespace):
                if time.monotonic() > deadline:
                    raise AirflowException(f"TFJob {namespace}/{name} did not finish in {self.wait_timeout:.0f}s")
                time.sleep(self.poke_interval)
            return {"name": name, "namespace": namespace}
        finally:
            self._delete(name, namespace)
