"""The gcp platform's Kubernetes objects, as plain dicts (rendered to YAML for the operators).

- `tfjob()`: a Kubeflow TFJob (kubeflow.org/v1) of Worker replicas running a module of the runtime
  image, built from the Kubeflow training SDK's models (kubeflow-training) and the kubernetes
  client's; the training operator sets TF_CONFIG in each replica, and the trainer uses
  MultiWorkerMirroredStrategy when it names several workers (no PS: that strategy has none).
- `tf_serving_deployment()` / `tf_serving_service()`: tensorflow/serving reading the models.config
  of the GCS serving root (the same file the push writes), gRPC 8500 and REST 8501, ready when the
  champion model's status endpoint answers.

Every pod runs as a non-root user with a read-only root filesystem, no privilege escalation, no
capabilities and the runtime's default seccomp profile; the only writable path is an emptyDir /tmp.
`check_tfjob()` reads a rendered manifest back into the SDK's TFJob model, for validating what we
create (pod templates are validated as Pods with kubernetes-validate in the tests).
"""

from __future__ import annotations

import hashlib
import re

RUNTIME_UID = 1000  # the `taxi` user of docker/runtime
SERVING_UID = 1000
TF_SERVING_GRPC_PORT = 8500
TF_SERVING_REST_PORT = 8501
SERVING_NAME = "taxi-serving"
# TF-Serving has no authentication: its NetworkPolicy admits only the project's own pods and the pods
# of namespaces labelled as its clients (label yours to call it)
SERVING_CLIENT_LABEL = "taxi-mlops/serving-client"
TMP_SIZE_LIMIT = "1Gi"  # the /tmp emptyDir of every pod: a runaway writer is evicted, not the node filled


def k8s_name(*parts: str, max_length: int = 63) -> str:
    """A DNS-1123 label from parts (lower case, dashes), shortened with a hash when too long."""
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    if len(name) > max_length:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = name[: max_length - 9].rstrip("-") + "-" + digest
    return name


def security_context(uid: int) -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _tmp_volume() -> tuple[list[dict], list[dict]]:
    return [{"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}}], [{"name": "tmp", "mountPath": "/tmp"}]


def runtime_pod_spec(
    *,
    image: str,
    module: str,
    arguments: list[str],
    service_account: str,
    resources: dict,
    container_name: str = "tensorflow",
):
    """A pod spec (kubernetes.client V1PodSpec) running `python -m <module> <arguments>` in the runtime image;
    its security contexts are `security_context(RUNTIME_UID)` and the pod's non-root, seccomp one."""
    from kubernetes.client import models as k8s

    return k8s.V1PodSpec(
        service_account_name=service_account,
        # no Kubernetes API token: the step talks to GCS (Workload Identity), never to the cluster
        automount_service_account_token=False,
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=RUNTIME_UID,
            fs_group=RUNTIME_UID,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        containers=[
            k8s.V1Container(
                name=container_name,
                image=image,
                image_pull_policy="IfNotPresent",
                command=["python", "-m", module],
                args=[str(a) for a in arguments],
                # a failed step's last log lines become its termination message: the task's error names them
                termination_message_policy="FallbackToLogsOnError",
                env=[k8s.V1EnvVar(name="HOME", value="/tmp"), k8s.V1EnvVar(name="TF_USE_LEGACY_KERAS", value="1")],
                resources=k8s.V1ResourceRequirements(
                    requests=resources.get("requests"), limits=resources.get("limits")
                ),
                security_context=k8s.V1SecurityContext(
                    run_as_non_root=True,
                    run_as_user=RUNTIME_UID,
                    run_as_group=RUNTIME_UID,
                    allow_privilege_escalation=False,
                    read_only_root_filesystem=True,
                    capabilities=k8s.V1Capabilities(drop=["ALL"]),
                    seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
                ),
                volume_mounts=[k8s.V1VolumeMount(name="tmp", mount_path="/tmp")],
            )
        ],
        volumes=[k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=TMP_SIZE_LIMIT))],
    )


TRAIN_RESOURCES = {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}}


def tfjob(
    *,
    name: str,
    namespace: str,
    image: str,
    arguments: list[str],
    service_account: str,
    workers: int | str,
    labels: dict[str, str],
    resources: dict = TRAIN_RESOURCES,
) -> dict:
    """A TFJob with `workers` Worker replicas (an int, or a template such as "{{ params.workers }}",
    which the model keeps as it is: the caller makes it a bare number in the YAML), as a plain dict."""
    from kubeflow.training import ApiClient
    from kubeflow.training import models as kf
    from kubernetes.client import models as k8s

    job = kf.KubeflowOrgV1TFJob(
        api_version="kubeflow.org/v1",
        kind="TFJob",
        metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, labels=labels),
        spec=kf.KubeflowOrgV1TFJobSpec(
            run_policy=kf.KubeflowOrgV1RunPolicy(
                clean_pod_policy="Running", backoff_limit=2, active_deadline_seconds=6 * 3600
            ),
            tf_replica_specs={
                "Worker": kf.KubeflowOrgV1ReplicaSpec(
                    # ExitCode: a replica killed by a signal (preempted, OOM-killed) is restarted; one that
                    # failed on its own fails the job at once and its pod is kept, so the task's error
                    # names the replica and its last line (OnFailure restarted it in place until the
                    # backoff limit, then the training operator deleted every pod before failing)
                    replicas=workers,
                    restart_policy="ExitCode",
                    template=k8s.V1PodTemplateSpec(
                        metadata=k8s.V1ObjectMeta(labels=labels),
                        spec=runtime_pod_spec(
                            image=image,
                            module="taxi_model.trainer",
                            arguments=arguments,
                            service_account=service_account,
                            resources=resources,
                        ),
                    ),
                ),
            },
        ),
    )
    return ApiClient().sanitize_for_serialization(job)


WORKERS_TEMPLATE = "{{ params.workers }}"


def tfjob_yaml(manifest: dict) -> str:
    """The manifest as the operator's YAML (JSON is YAML, and leaves the templates' quotes alone),
    with a templated replica count (`WORKERS_TEMPLATE`) unquoted: it renders as an integer."""
    import json

    quoted = json.dumps(WORKERS_TEMPLATE)
    return json.dumps(manifest, indent=1).replace(f'"replicas": {quoted}', f'"replicas": {WORKERS_TEMPLATE}')


# What the SDK's models document but leave unchecked (their setters take any string): the TFJob
# CRD's replica types, and its replicas' restart and clean-pod policies.
TFJOB_REPLICA_TYPES = ("Chief", "Master", "PS", "Worker", "Evaluator")
RESTART_POLICIES = ("Always", "OnFailure", "Never", "ExitCode")
CLEAN_POD_POLICIES = ("All", "Running", "None")


def check_tfjob(manifest: dict):
    """The SDK's KubeflowOrgV1TFJob read from a rendered manifest (a dict), as its ApiClient reads a
    TFJob from the API server, with client-side validation (required fields: spec.runPolicy,
    spec.tfReplicaSpecs, a pod's containers, a container's name...). Raises ValueError when a field
    is missing, has the wrong type, is unknown to the models (it does not survive the round trip
    back to a dict), or is not one of the CRD's replica types, restart or clean-pod policies."""
    import json
    from types import SimpleNamespace

    from kubernetes.client import Configuration

    api = _tfjob_api_client()
    if not (api.configuration.client_side_validation and Configuration.get_default_copy().client_side_validation):
        raise ValueError("client-side validation is off (Kubeflow training SDK or kubernetes client)")
    if (manifest.get("apiVersion"), manifest.get("kind")) != ("kubeflow.org/v1", "TFJob"):
        raise ValueError(f"not a kubeflow.org/v1 TFJob: {manifest.get('apiVersion')} {manifest.get('kind')}")
    try:
        job = api.deserialize(SimpleNamespace(data=json.dumps(manifest)), "KubeflowOrgV1TFJob")
    except (TypeError, ValueError) as error:
        raise ValueError(f"not a TFJob: {error}") from error
    changed = _differences(manifest, api.sanitize_for_serialization(job))
    if changed:
        raise ValueError(f"fields the TFJob models drop or change: {'; '.join(changed)}")
    for policy, allowed in (
        ((job.spec.run_policy.clean_pod_policy,), CLEAN_POD_POLICIES),
        ([r.restart_policy for r in job.spec.tf_replica_specs.values()], RESTART_POLICIES),
    ):
        for value in policy:
            if value is not None and value not in allowed:
                raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
    for replica_type, replica in job.spec.tf_replica_specs.items():
        if replica_type not in TFJOB_REPLICA_TYPES:
            raise ValueError(f"{replica_type!r} is not a TFJob replica type ({', '.join(TFJOB_REPLICA_TYPES)})")
        if replica.template is None or replica.template.spec is None:
            raise ValueError(f"replica {replica_type} has no pod template")
        if replica.replicas is not None and replica.replicas < 0:
            raise ValueError(f"replica {replica_type}: replicas {replica.replicas!r} is not a count")
    return job


def _tfjob_api_client():
    """The SDK's ApiClient, reading the kubernetes client's `dict[str, str]` types too: kubeflow-training
    1.9.3 parses only the older `dict(str, str)` notation of its own models, while the kubernetes 36
    models it builds on (V1ObjectMeta's labels, V1ResourceRequirements' limits...) use the new one."""
    from kubeflow.training import ApiClient

    class TFJobApiClient(ApiClient):
        def _ApiClient__deserialize(self, data, klass):  # the SDK's private ApiClient.__deserialize
            if isinstance(klass, str) and klass.startswith("dict[") and klass.endswith("]"):
                klass = f"dict({klass[5:-1]})"
            return super()._ApiClient__deserialize(data, klass)

    return TFJobApiClient()


def _differences(expected, actual, path: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        return [
            d
            for k in sorted(set(expected) | set(actual), key=str)
            for d in _differences(expected.get(k, "<missing>"), actual.get(k, "<missing>"), f"{path}.{k}")
        ]
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [
            d
            for i, (e, a) in enumerate(zip(expected, actual, strict=False))
            for d in _differences(e, a, f"{path}[{i}]")
        ]
    return (
        [] if expected == actual and type(expected) is type(actual) else [f"{path or '.'}: {expected!r} -> {actual!r}"]
    )


SERVING_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}


def serving_labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": SERVING_NAME, "app.kubernetes.io/part-of": "taxi-mlops"}


def tf_serving_deployment(
    *,
    namespace: str,
    image: str,
    models_config: str,
    service_account: str,
    ready_model: str,
    replicas: int = 2,
    resources: dict = SERVING_RESOURCES,
) -> dict:
    """tensorflow/serving with the serving root's models.config (polled: new versions and labels
    are picked up without a restart); ready once `ready_model` answers its status endpoint."""
    volumes, mounts = _tmp_volume()
    labels = serving_labels()
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": SERVING_NAME, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": service_account,
                    "automountServiceAccountToken": False,  # it reads GCS (Workload Identity), not the cluster
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": SERVING_UID,
                        "fsGroup": SERVING_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "tf-serving",
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["tensorflow_model_server"],
                            "args": [
                                f"--port={TF_SERVING_GRPC_PORT}",
                                f"--rest_api_port={TF_SERVING_REST_PORT}",
                                f"--model_config_file={models_config}",
                                "--model_config_file_poll_wait_seconds=60",
                                "--allow_version_labels_for_unavailable_models=false",
                            ],
                            "ports": [
                                {"name": "grpc", "containerPort": TF_SERVING_GRPC_PORT},
                                {"name": "http", "containerPort": TF_SERVING_REST_PORT},
                            ],
                            "readinessProbe": {
                                "httpGet": {"path": f"/v1/models/{ready_model}", "port": "http"},
                                "initialDelaySeconds": 10,
                                "periodSeconds": 10,
                                "failureThreshold": 3,
                            },
                            "livenessProbe": {
                                "tcpSocket": {"port": "grpc"},
                                "initialDelaySeconds": 30,
                                "periodSeconds": 20,
                            },
                            "resources": resources,
                            "securityContext": security_context(SERVING_UID),
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }


def tf_serving_network_policy(*, namespace: str) -> dict:
    """Who may reach TF-Serving's ports: the project's own pods in its namespace, and pods of the
    namespaces labelled `taxi-mlops/serving-client: "true"`; nobody else in the cluster."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": SERVING_NAME, "namespace": namespace, "labels": serving_labels()},
        "spec": {
            "podSelector": {"matchLabels": serving_labels()},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "taxi-mlops"}}},
                        {"namespaceSelector": {"matchLabels": {SERVING_CLIENT_LABEL: "true"}}},
                    ],
                    "ports": [
                        {"protocol": "TCP", "port": TF_SERVING_GRPC_PORT},
                        {"protocol": "TCP", "port": TF_SERVING_REST_PORT},
                    ],
                }
            ],
        },
    }


def tf_serving_service(*, namespace: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SERVING_NAME, "namespace": namespace, "labels": serving_labels()},
        "spec": {
            "type": "ClusterIP",
            "selector": serving_labels(),
            "ports": [
                {"name": "grpc", "port": TF_SERVING_GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
                {"name": "http", "port": TF_SERVING_REST_PORT, "targetPort": "http", "protocol": "TCP"},
            ],
        },
    }
