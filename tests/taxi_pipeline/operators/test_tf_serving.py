"""TFServingDeployOperator against a fake Kubernetes API: creates what is absent, patches what is
present (a re-run changes nothing else), waits for the rollout, fails clearly when it never completes."""

from __future__ import annotations

import copy

import pytest
from airflow.sdk.exceptions import AirflowException
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from taxi_pipeline.operators.tf_serving import TFServingDeployOperator

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "taxi-serving", "namespace": "ns"},
    "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "serving", "image": "tf:1"}]}}},
}
SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "taxi-serving", "namespace": "ns"},
    "spec": {"ports": [{"port": 8500}, {"port": 8501}]},
}


class FakeApi:
    """Deployments and Services by (kind, namespace, name); a Deployment becomes ready `ready_after` reads later."""

    def __init__(self, ready_after: int = 1):
        self.objects, self.calls, self.ready_after = {}, [], ready_after

    def sanitize_for_serialization(self, obj):
        return obj

    def _read(self, kind, name, namespace):
        self.calls.append(("read", kind))
        key = (kind, namespace, name)
        if key not in self.objects:
            raise ApiException(status=404)
        obj = self.objects[key]
        if kind == "deployment":
            obj["metadata"]["generation"] = obj["metadata"].get("generation", 1)
            reads = obj.setdefault("_reads", 0) + 1
            obj["_reads"] = reads
            n = obj["spec"]["replicas"] if reads > self.ready_after else 0
            obj["status"] = {
                "observedGeneration": obj["metadata"]["generation"],
                "updatedReplicas": n,
                "readyReplicas": n,
                "availableReplicas": n,
            }
        return obj

    def _create(self, kind, namespace, body):
        self.calls.append(("create", kind))
        self.objects[(kind, namespace, body["metadata"]["name"])] = copy.deepcopy(body)

    def _patch(self, kind, name, namespace, body):
        self.calls.append(("patch", kind))
        current = self.objects[(kind, namespace, name)]
        current["spec"] = {**current["spec"], **copy.deepcopy(body["spec"])}  # merge: filled-in fields stay
        current["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        current["_reads"] = 0

    def read_namespaced_deployment(self, name, namespace):
        return self._read("deployment", name, namespace)

    def create_namespaced_deployment(self, namespace, body):
        self._create("deployment", namespace, body)

    def patch_namespaced_deployment(self, name, namespace, body):
        self._patch("deployment", name, namespace, body)

    def read_namespaced_service(self, name, namespace):
        return self._read("service", name, namespace)

    def create_namespaced_service(self, namespace, body):
        self._create("service", namespace, body)
        self.objects[("service", namespace, body["metadata"]["name"])]["spec"]["clusterIP"] = "10.0.0.7"

    def patch_namespaced_service(self, name, namespace, body):
        self._patch("service", name, namespace, body)

    def read_namespaced_network_policy(self, name, namespace):
        return self._read("network_policy", name, namespace)

    def create_namespaced_network_policy(self, namespace, body):
        self._create("network_policy", namespace, body)

    def patch_namespaced_network_policy(self, name, namespace, body):
        self._patch("network_policy", name, namespace, body)


@pytest.fixture
def api(monkeypatch):
    fake = FakeApi()
    monkeypatch.setattr(TFServingDeployOperator, "hook", type("Hook", (), {"get_conn": lambda self: fake})())
    monkeypatch.setattr(client, "AppsV1Api", lambda api_client: fake)
    monkeypatch.setattr(client, "CoreV1Api", lambda api_client: fake)
    monkeypatch.setattr(client, "NetworkingV1Api", lambda api_client: fake)
    return fake


def _operator(deployment=DEPLOYMENT, **kwargs) -> TFServingDeployOperator:
    return TFServingDeployOperator(
        task_id="apply",
        deployment=copy.deepcopy(deployment),
        service=copy.deepcopy(SERVICE),
        namespace="ns",
        location="us-central1",
        cluster_name="c",
        project_id="p",
        poll_interval=0,
        **kwargs,
    )


def test_creates_what_is_absent_then_patches_it_idempotently(api):
    assert _operator().execute({}) == {"deployment": "created", "service": "created"}
    assert ("create", "deployment") in api.calls and ("create", "service") in api.calls
    first = copy.deepcopy({k: {**v, "_reads": None, "status": None} for k, v in api.objects.items()})

    api.calls.clear()
    assert _operator().execute({}) == {"deployment": "patched", "service": "patched"}
    assert not any(c[0] == "create" for c in api.calls)
    again = {k: {**v, "_reads": None, "status": None} for k, v in api.objects.items()}
    for key in first:  # the same objects: same spec, the Service's clusterIP kept
        assert again[key]["spec"] == first[key]["spec"]
    assert api.objects[("service", "ns", "taxi-serving")]["spec"]["clusterIP"] == "10.0.0.7"


def test_the_network_policy_is_applied_first_and_patched_idempotently(api):
    from taxi_pipeline.k8s import tf_serving_network_policy

    policy = tf_serving_network_policy(namespace="ns")
    assert _operator(network_policy=policy).execute({}) == {
        "network_policy": "created",
        "deployment": "created",
        "service": "created",
    }
    creates = [kind for verb, kind in api.calls if verb == "create"]
    assert creates[0] == "network_policy"  # before the pods can start
    assert _operator(network_policy=policy).execute({})["network_policy"] == "patched"
    assert api.objects[("network_policy", "ns", "taxi-serving")]["spec"] == policy["spec"]


def test_a_changed_manifest_is_patched_in_and_rolled_out(api):
    _operator().execute({})
    changed = copy.deepcopy(DEPLOYMENT)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "tf:2"
    assert _operator(changed).execute({})["deployment"] == "patched"
    deployment = api.objects[("deployment", "ns", "taxi-serving")]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "tf:2"
    assert deployment["status"]["readyReplicas"] == 2 and deployment["metadata"]["generation"] == 2


def test_a_rollout_that_never_completes_fails_clearly(api):
    api.ready_after = 10**6
    with pytest.raises(AirflowException, match=r"not rolled out after 0s \(0/2 updated, 0/2 ready"):
        _operator(rollout_timeout=0).execute({})


def test_other_api_errors_are_not_taken_for_absence(api, monkeypatch):
    def forbidden(name, namespace):
        raise ApiException(status=403)

    monkeypatch.setattr(api, "read_namespaced_deployment", forbidden)
    with pytest.raises(ApiException):
        _operator().execute({})
    assert not any(c[0] == "create" for c in api.calls)
