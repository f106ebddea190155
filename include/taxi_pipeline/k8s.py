"""The gcp platform's Kubernetes objects, built as plain dicts (rendered to YAML for the operators).

- `tfjob()`: a Kubeflow TFJob (kubeflow.org/v1) of Worker replicas running a module of the runtime
  image; the training operator sets TF_CONFIG in each replica, and the trainer uses
  MultiWorkerMirroredStrategy when it names several workers (no PS: that strategy has none).
- `tf_serving_deployment()` / `tf_serving_service()`: tensorflow/serving reading the models.config
  of the GCS serving root (the same file the push writes), gRPC 8500 and REST 8501, ready when the
  champion model's status endpoint answers.

Every pod runs as a non-root user with a read-only root filesystem, no privilege escalation, no
capabilities and the runtime's default seccomp profile; the only writable path is an emptyDir /tmp.
`TFJOB_SCHEMA` is the TFJob CRD's spec as a JSON schema (the fields of kubeflow.org/v1 TFJobSpec,
ReplicaSpec and RunPolicy), for validating what we create; pod templates are validated as Pods
with kubernetes-validate in the tests.
"""
from __future__ import annotations

import hashlib
import re

RUNTIME_UID = 1000  # the `taxi` user of docker/runtime
SERVING_UID = 1000
TF_SERVING_GRPC_PORT = 8500
TF_SERVING_REST_PORT = 8501
SERVING_NAME = "taxi-serving"


def k8s_name(*parts: str, max_length: int = 63) -> str:
    """A DNS-1123 label from parts (lower case, dashes), shortened with a hash when too long."""
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    if len(name) > max_length:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = name[: max_length - 9].rstrip("-") + "-" + digest
    return name


def security_context(uid: int) -> dict:
    return {
        "runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _tmp_volume() -> tuple[list[dict], list[dict]]:
    return [{"name": "tmp", "emptyDir": {}}], [{"name": "tmp", "mountPath": "/tmp"}]


def runtime_pod_spec(*, image: str, module: str, arguments: list[str], service_account: str,
                     resources: dict, container_name: str = "tensorflow") -> dict:
    """A pod spec running `python -m <module> <arguments>` in the runtime image."""
    volumes, mounts = _tmp_volume()
    return {
        "serviceAccountName": service_account,
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUNTIME_UID, "fsGroup": RUNTIME_UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": container_name, "image": image, "imagePullPolicy": "IfNotPresent",
            "command": ["python", "-m", module], "args": [str(a) for a in arguments],
            "env": [{"name": "HOME", "value": "/tmp"}, {"name": "TF_USE_LEGACY_KERAS", "value": "1"}],
            "resources": resources, "securityContext": security_context(RUNTIME_UID), "volumeMounts": mounts,
        }],
        "volumes": volumes,
    }


TRAIN_RESOURCES = {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}}


def tfjob(*, name: str, namespace: str, image: str, arguments: list[str], service_account: str,
          workers: int | str, labels: dict[str, str], resources: dict = TRAIN_RESOURCES) -> dict:
    """A TFJob with `workers` Worker replicas (an int, or a template such as "{{ params.workers }}")."""
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "TFJob",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 2, "activeDeadlineSeconds": 6 * 3600},
            "tfReplicaSpecs": {
                "Worker": {
                    "replicas": workers,
                    "restartPolicy": "OnFailure",
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": runtime_pod_spec(image=image, module="taxi_model.trainer", arguments=arguments,
                                                 service_account=service_account, resources=resources),
                    },
                },
            },
        },
    }


SERVING_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}


def serving_labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": SERVING_NAME, "app.kubernetes.io/part-of": "taxi-mlops"}


def tf_serving_deployment(*, namespace: str, image: str, models_config: str, service_account: str,
                          ready_model: str, replicas: int = 2, resources: dict = SERVING_RESOURCES) -> dict:
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
                    "securityContext": {"runAsNonRoot": True, "runAsUser": SERVING_UID, "fsGroup": SERVING_UID,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "tf-serving", "image": image, "imagePullPolicy": "IfNotPresent",
                        "command": ["tensorflow_model_server"],
                        "args": [f"--port={TF_SERVING_GRPC_PORT}", f"--rest_api_port={TF_SERVING_REST_PORT}",
                                 f"--model_config_file={models_config}",
                                 "--model_config_file_poll_wait_seconds=60",
                                 "--allow_version_labels_for_unavailable_models=false"],
                        "ports": [{"name": "grpc", "containerPort": TF_SERVING_GRPC_PORT},
                                  {"name": "http", "containerPort": TF_SERVING_REST_PORT}],
                        "readinessProbe": {"httpGet": {"path": f"/v1/models/{ready_model}", "port": "http"},
                                           "initialDelaySeconds": 10, "periodSeconds": 10, "failureThreshold": 3},
                        "livenessProbe": {"tcpSocket": {"port": "grpc"}, "initialDelaySeconds": 30,
                                          "periodSeconds": 20},
                        "resources": resources,
                        "securityContext": security_context(SERVING_UID),
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
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
            "ports": [{"name": "grpc", "port": TF_SERVING_GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
                      {"name": "http", "port": TF_SERVING_REST_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


_REPLICA_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["template"],
    "properties": {
        "replicas": {"type": "integer", "minimum": 0},
        "restartPolicy": {"type": "string", "enum": ["Always", "OnFailure", "Never", "ExitCode"]},
        "template": {"type": "object", "required": ["spec"],
                     "properties": {"metadata": {"type": "object"}, "spec": {"type": "object"}}},
    },
}
TFJOB_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "kubeflow.org/v1"},
        "kind": {"const": "TFJob"},
        "metadata": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
            "namespace": {"type": "string"}, "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["tfReplicaSpecs"],
            "properties": {
                "enableDynamicWorker": {"type": "boolean"},
                "successPolicy": {"type": "string", "enum": ["", "AllWorkers"]},
                "runPolicy": {"type": "object", "additionalProperties": False, "properties": {
                    "activeDeadlineSeconds": {"type": "integer", "minimum": 0},
                    "backoffLimit": {"type": "integer", "minimum": 0},
                    "cleanPodPolicy": {"type": "string", "enum": ["All", "Running", "None"]},
                    "managedBy": {"type": "string"},
                    "schedulingPolicy": {"type": "object"},
                    "suspend": {"type": "boolean"},
                    "ttlSecondsAfterFinished": {"type": "integer"},
                }},
                "tfReplicaSpecs": {
                    "type": "object", "minProperties": 1, "additionalProperties": False,
                    "properties": {k: _REPLICA_SPEC for k in ("Chief", "Master", "PS", "Worker", "Evaluator")},
                },
            },
        },
    },
}
