"""TFJobSensor / TFJobTrainOperator against a fake cluster (the GKE hook's custom-object and core
clients): the decision from the TFJob's conditions, the failing replica's reason, the deletion."""

from __future__ import annotations

import json

import pytest
from airflow.sdk.exceptions import AirflowException
from kubernetes.client.exceptions import ApiException

from taxi_pipeline.operators.tfjob import TFJobSensor, TFJobTrainOperator


def _job(*conditions: tuple[str, str, str]) -> dict:
    return {
        "status": {"conditions": [{"type": t, "status": "True", "reason": r, "message": m} for t, r, m in conditions]}
    }


CREATED = ("Created", "TFJobCreated", "TFJob j is created.")
RUNNING = ("Running", "TFJobRunning", "TFJob j is running.")


class FakeCluster:
    """The hook: `custom_object_client`, `core_v1_client`, `api_client` are this object."""

    def __init__(self, states: list[dict], pods: list[dict] = ()):
        self.states, self.pods, self.calls = list(states), list(pods), []
        self.custom_object_client = self.core_v1_client = self.api_client = self

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("get", namespace, name))
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, propagation_policy=None):
        self.calls.append(("delete", namespace, name))
        if ("deleted", name) in self.calls:
            raise ApiException(status=404)
        self.calls.append(("deleted", name))

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.calls.append(("create", namespace, body["metadata"]["name"]))
        if any(c[0] == "create" for c in self.calls[:-1]):
            raise ApiException(status=409)

    def list_namespaced_pod(self, namespace, label_selector):
        self.calls.append(("pods", namespace, label_selector))
        return type("Pods", (), {"items": self.pods})

    def sanitize_for_serialization(self, obj):
        return obj


def _pod(replica: str, index: int, terminated: dict | None, phase: str = "Running") -> dict:
    state = {"terminated": terminated} if terminated else {"running": {}}
    return {
        "metadata": {
            "labels": {"training.kubeflow.org/replica-type": replica, "training.kubeflow.org/replica-index": str(index)}
        },
        "status": {"phase": phase, "containerStatuses": [{"name": "tensorflow", "state": state}]},
    }


def _sensor(monkeypatch, cluster, **kwargs) -> TFJobSensor:
    monkeypatch.setattr(TFJobSensor, "hook", cluster)
    return TFJobSensor(
        task_id="wait",
        job_name="j",
        namespace="ns",
        location="us-central1",
        cluster_name="c",
        project_id="p",
        poke_interval=0,
        **kwargs,
    )


def test_the_sensor_waits_while_running_and_succeeds_on_succeeded(monkeypatch):
    running = _sensor(monkeypatch, FakeCluster([_job()]))
    assert running.poke({}) is False  # no condition yet
    assert _sensor(monkeypatch, FakeCluster([_job(CREATED, RUNNING)])).poke({}) is False
    done = _job(CREATED, RUNNING, ("Succeeded", "TFJobSucceeded", "TFJob j successfully completed."))
    assert _sensor(monkeypatch, FakeCluster([done])).poke({}) is True
    # a condition that is no longer true does not count
    stale = {"status": {"conditions": [{"type": "Failed", "status": "False"}, {"type": "Running", "status": "True"}]}}
    assert _sensor(monkeypatch, FakeCluster([stale])).poke({}) is False


def test_a_failed_job_fails_with_the_failing_replicas_reason(monkeypatch):
    failed = _job(CREATED, RUNNING, ("Failed", "TFJobFailed", "TFJob j has failed because 1 Worker replica(s) failed."))
    pods = [
        _pod("worker", 0, None),
        _pod("worker", 1, {"exitCode": 137, "reason": "OOMKilled", "message": "loading\nout of memory"}, "Failed"),
    ]
    cluster = FakeCluster([failed], pods)
    with pytest.raises(AirflowException) as error:
        _sensor(monkeypatch, cluster).poke({})
    message = str(error.value)
    assert "TFJob ns/j failed: TFJobFailed: TFJob j has failed because 1 Worker replica(s) failed." in message
    assert "failing replica: Worker-1: OOMKilled (exit 137): out of memory" in message
    assert "Worker-0" not in message
    assert ("pods", "ns", "training.kubeflow.org/job-name=j") in cluster.calls


def test_the_sensor_deletes_the_job_when_it_ends_either_way(monkeypatch):
    done = _job(CREATED, ("Succeeded", "TFJobSucceeded", "done"))
    cluster = FakeCluster([_job(CREATED, RUNNING), done])
    _sensor(monkeypatch, cluster).execute({})
    assert [c[0] for c in cluster.calls] == ["get", "get", "delete", "deleted"]

    failed = FakeCluster([_job(("Failed", "TFJobFailed", "x"))])
    with pytest.raises(AirflowException):
        _sensor(monkeypatch, failed).execute({})
    assert ("delete", "ns", "j") in failed.calls
    kept = FakeCluster([done])
    _sensor(monkeypatch, kept, delete_on_finish=False).execute({})
    assert not any(c[0] == "delete" for c in kept.calls)


def _train(monkeypatch, cluster) -> TFJobTrainOperator:
    monkeypatch.setattr(TFJobTrainOperator, "hook", cluster)
    manifest = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "TFJob",
        "metadata": {"name": "j", "namespace": "ns"},
        "spec": {"tfReplicaSpecs": {"Worker": {"replicas": 2}}},
    }
    op = TFJobTrainOperator(
        task_id="train",
        yaml_conf=json.dumps(manifest),
        location="us-central1",
        cluster_name="c",
        project_id="p",
        poke_interval=0,
    )
    monkeypatch.setattr(
        op,
        "_create_objects",
        lambda objects: [
            cluster.create_namespaced_custom_object("kubeflow.org", "v1", o["metadata"]["namespace"], "tfjobs", o)
            for o in objects
        ],
    )
    return op


def test_train_creates_waits_and_deletes_and_a_retry_reattaches(monkeypatch):
    done = _job(CREATED, ("Succeeded", "TFJobSucceeded", "done"))
    cluster = FakeCluster([_job(CREATED, RUNNING), done])
    assert _train(monkeypatch, cluster).execute({}) == {"name": "j", "namespace": "ns"}
    assert [c[0] for c in cluster.calls] == ["create", "get", "get", "delete", "deleted"]

    # a retry whose job exists (409 from the API): no second job, it waits on the first one
    cluster.states = [done]
    cluster.calls = [c for c in cluster.calls if c[0] == "create"]
    assert _train(monkeypatch, cluster).execute({}) == {"name": "j", "namespace": "ns"}
    assert [c[0] for c in cluster.calls] == ["create", "create", "get", "delete", "deleted"]
