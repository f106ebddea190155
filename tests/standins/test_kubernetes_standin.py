"""The gcp platform's pod tasks run their real operator code against the Kubernetes stand-in
(tests/standins/kubernetes_api.py, GKE's lookup in gke.py): RuntimePodOperator (check_export's,
with its command swapped for a tiny module) and TFJobTrainOperator (train's manifest from
taxi_pipeline.k8s, its container's command swapped for a small script). The kubernetes client
makes real HTTPS calls; each pod is a local process of the runtime venv's python."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
for path in (TESTS / "plugins", TESTS / "standins"):  # gcp_dag.py, and this directory's modules
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from gke import kubernetes_standin  # noqa: E402
from kubernetes_api import KubernetesStandin  # noqa: E402

from gcp_dag import task_run  # noqa: E402

START, END = datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 5, 2, tzinfo=UTC)
DAG = "taxi_daily_retrain"
CLUSTER = "projects/taxi-test/locations/us-central1/clusters/taxi-mlops"  # the gcp settings' defaults
PROBE = '''
"""Prints what a pod's process sees, then exits with argv[1]."""
import os, sys
print("probe argv", sys.argv[1:], flush=True)
print("probe home", os.environ["HOME"], "keras", os.environ["TF_USE_LEGACY_KERAS"], flush=True)
print("probe cwd", os.getcwd(), flush=True)
if sys.argv[1] != "0":
    print("probe: something went wrong", file=sys.stderr, flush=True)
sys.exit(int(sys.argv[1]))
'''


@pytest.fixture
def probe_dir(tmp_path) -> Path:
    (tmp_path / "standin_probe.py").write_text(PROBE)
    return tmp_path


@pytest.fixture
def cluster(probe_dir):
    # the node's PYTHONPATH: `python -m standin_probe` finds the probe module
    with kubernetes_standin(extra_env={"PYTHONPATH": str(probe_dir)}) as api:
        yield api
    assert not api.running_processes()


def _check_export(exit_code: int):
    """check_export as the gcp DAG renders it, running `python -m standin_probe <exit_code>`."""
    task, context = task_run(DAG, "standard.check_export", START, END)
    task.cmds, task.arguments = ["python", "-m", "standin_probe"], [str(exit_code)]
    return task, context


def test_a_runtime_pod_that_exits_0_succeeds_with_its_logs_in_the_task_log(cluster, capsys):
    task, context = _check_export(0)
    task.execute(context)

    namespace, name = task.namespace, task.name  # the gcp settings' namespace, RuntimePodOperator's name
    assert (namespace, name) == (context["ti"].xcoms["pod_namespace"], context["ti"].xcoms["pod_name"])
    assert namespace == "taxi-mlops" and name.startswith("taxi-daily-retrain-standard-check-export-")
    assert cluster.cluster_lookups == [CLUSTER]
    # the pod ran the container's command with the runtime venv's python, its env, a private dir
    [run] = cluster.commands
    assert run["argv"] == [cluster.runtime_python, "-m", "standin_probe", "0"]
    assert run["env"]["TF_USE_LEGACY_KERAS"] == "1"
    assert run["env"]["HOME"] != "/tmp" and run["env"]["HOME"].startswith(str(cluster.root))  # the emptyDir
    assert cluster.history[("Pod", namespace, name)] == ["Pending", "Running", "Succeeded"]
    # streamed into the task log (the kubelet's timestamps parsed off)
    logged = capsys.readouterr().out
    assert "[base] probe argv ['0']" in logged and "[base] probe home" in logged
    # deleted at the end (on_finish_action="delete_pod")
    assert ("Pod", namespace, name) in cluster.deleted
    assert cluster.wait_until(lambda: (namespace, name) not in cluster.pods)
    assert not cluster.unhandled
    body = cluster.created[0]["body"]
    assert body["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] is True
    assert body["metadata"]["labels"]["dag_id"] == DAG


def test_a_runtime_pod_that_exits_3_fails_the_task(cluster, capsys):
    from airflow.sdk.exceptions import AirflowException

    task, context = _check_export(3)
    with pytest.raises(AirflowException, match="returned a failure"):
        task.execute(context)

    assert cluster.history[("Pod", task.namespace, task.name)] == ["Pending", "Running", "Failed"]
    pod = cluster.created[0]["name"]
    assert "probe: something went wrong" in capsys.readouterr().out  # stderr is in the container's log too
    assert cluster.logs(task.namespace, pod).endswith("probe: something went wrong\n")
    patches = [path for method, path in cluster.requests if method == "PATCH"]
    assert patches  # labelled already_checked: a retry does not reattach to it
    assert cluster.wait_until(lambda: (task.namespace, task.name) not in cluster.pods)


WORKER = '''
"""A TFJob replica: prints its TF_CONFIG task, then exits 0, or 3 when its index is argv[1] (while
the other replicas wait to be stopped)."""
import json, os, sys, time
task = json.loads(os.environ["TF_CONFIG"])["task"]
print("worker", task["type"], task["index"], "of", os.environ["TF_CONFIG"], flush=True)
time.sleep(0.5)
if sys.argv[1:] and task["index"] == int(sys.argv[1]):
    print(f"worker {task['index']}: out of patience", file=sys.stderr, flush=True)
    sys.exit(3)
if sys.argv[1:]:
    time.sleep(60)
'''


def _train(probe_dir: Path, fail_index: int | None = None, **replica_changes):
    """train as the gcp DAG renders it, its container running `python -m standin_worker`."""
    (probe_dir / "standin_worker.py").write_text(WORKER)
    task, context = task_run(DAG, "standard.train", START, END)
    body = json.loads(task.yaml_conf)
    worker = body["spec"]["tfReplicaSpecs"]["Worker"]
    container = worker["template"]["spec"]["containers"][0]
    container["command"] = ["python", "-m", "standin_worker"]
    container["args"] = [] if fail_index is None else [str(fail_index)]
    container.update(replica_changes.pop("container", {}))
    worker.update(replica_changes)
    task.yaml_conf = json.dumps(body)
    task.poke_interval = 0.2
    return task, context, body["metadata"]["namespace"], body["metadata"]["name"]


def test_a_tfjob_runs_its_workers_as_pods_and_succeeds(cluster, probe_dir):
    task, context, namespace, name = _train(probe_dir)
    assert task.execute(context) == {"name": name, "namespace": namespace}

    [created] = [c for c in cluster.created if c["kind"] == "TFJob"]
    assert created["body"]["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] == 2  # the rendered template
    runs = {r["pod"]: r for r in cluster.commands}
    assert sorted(runs) == [f"{name}-worker-0", f"{name}-worker-1"]
    for index in (0, 1):
        run = runs[f"{name}-worker-{index}"]
        assert run["argv"] == [cluster.runtime_python, "-m", "standin_worker"]
        tf_config = json.loads(run["env"]["TF_CONFIG"])
        assert tf_config["task"] == {"type": "worker", "index": index}
        assert len(tf_config["cluster"]["worker"]) == 2
    pods = {c["name"]: c["body"]["metadata"]["labels"] for c in cluster.created if c["kind"] == "Pod"}
    labels = pods[f"{name}-worker-0"]
    assert labels["training.kubeflow.org/job-name"] == name
    assert labels["training.kubeflow.org/replica-type"] == "worker"
    assert labels["training.kubeflow.org/replica-index"] == "0"
    assert labels["training.kubeflow.org/job-role"] == "master" and labels["taxi-branch"] == "standard"
    conditions = cluster.history[("TFJob", namespace, name)]
    assert conditions[0] == "Created" and "Running" in conditions and conditions[-1] == "Succeeded"
    # deleted at the end, with its pods
    assert ("TFJob", namespace, name) in cluster.deleted
    assert cluster.wait_until(lambda: not cluster.tfjobs and not cluster.pods)
    assert not cluster.unhandled


def test_why_the_manifest_does_not_restart_on_failure(cluster, probe_dir):
    """restartPolicy OnFailure (taxi_pipeline.k8s used it): the worker restarts in place until the
    restarts reach backoffLimit (2); then the training operator deletes every pod of the job and
    fails it, and the error cannot say which replica failed or why."""
    from airflow.sdk.exceptions import AirflowException

    task, context, namespace, name = _train(probe_dir, fail_index=1, restartPolicy="OnFailure")
    with pytest.raises(AirflowException, match="has failed because it has reached the specified backoff limit"):
        task.execute(context)

    failing = [r for r in cluster.commands if r["pod"] == f"{name}-worker-1"]
    assert len(failing) >= 2  # the first run and the restarts (a third starts if its back-off ends first)
    assert cluster.history[("TFJob", namespace, name)][-1] == "Failed"
    assert cluster.wait_until(lambda: not cluster.tfjobs and not cluster.pods)


def test_a_failing_worker_is_named_with_its_reason(cluster, probe_dir):
    """The manifest's restartPolicy ExitCode (exit 3 is not retryable) and the log tail as the
    termination message: the pod fails, the job fails, and the error names the replica, its exit and
    its last log line."""
    from airflow.sdk.exceptions import AirflowException

    task, context, namespace, name = _train(probe_dir, fail_index=1)
    container = json.loads(task.yaml_conf)["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    with pytest.raises(AirflowException) as failure:
        task.execute(context)

    message = str(failure.value)
    assert f"TFJob {namespace}/{name} has failed because 1 Worker replica(s) failed." in message
    assert "failing replica: " in message and "Worker-1: Error (exit 3): worker 1: out of patience" in message
    assert len([r for r in cluster.commands if r["pod"] == f"{name}-worker-1"]) == 1
    assert cluster.wait_until(lambda: not cluster.tfjobs and not cluster.pods)  # worker 0 stopped


def test_a_retry_waits_on_the_tfjob_of_an_earlier_try(cluster, probe_dir):
    from kubernetes import client
    from structlog.testing import capture_logs

    task, context, namespace, name = _train(probe_dir)
    client.CustomObjectsApi(cluster.api_client()).create_namespaced_custom_object(
        "kubeflow.org", "v1", namespace, "tfjobs", json.loads(task.yaml_conf)
    )
    with capture_logs() as logs:
        assert task.execute(context) == {"name": name, "namespace": namespace}

    # the operator's one create answers 409 (AlreadyExists), and it reattaches to the earlier try's job
    posts = [path for method, path in cluster.requests if method == "POST" and path.endswith("/tfjobs")]
    assert len(posts) == 2  # the earlier try's and this try's
    assert f"TFJob {namespace}/{name} exists (an earlier try created it): reattaching" in [e["event"] for e in logs]
    assert len(cluster.commands) == 2  # one pod per worker: the earlier try's job, waited on
    assert cluster.history[("TFJob", namespace, name)][-1] == "Succeeded"


def test_the_api_answers_the_kubernetes_client_as_a_cluster_does():
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from process_state import alive

    def pod(name, command, restart="Never", labels=None):
        return client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, labels=labels),
            spec=client.V1PodSpec(
                restart_policy=restart, containers=[client.V1Container(name="main", image="busybox:1", command=command)]
            ),
        )

    with KubernetesStandin(restart_backoff=0.05) as api:
        v1 = client.CoreV1Api(api.api_client())
        with pytest.raises(ApiException) as unauthorized:
            client.CoreV1Api(api.api_client(token="wrong")).list_namespaced_pod("ns")
        assert unauthorized.value.status == 401

        script = "import sys, time\nfor i in range(3): print('line', i, flush=True); time.sleep(0.1)\nsys.exit(2)"
        v1.create_namespaced_pod("ns", pod("counter", ["python", "-c", script], labels={"app": "a", "tier": "x"}))
        with pytest.raises(ApiException) as conflict:
            v1.create_namespaced_pod("ns", pod("counter", ["true"]))
        assert (conflict.value.status, json.loads(conflict.value.body)["reason"]) == (409, "AlreadyExists")
        assert api.wait_until(lambda: api.pods[("ns", "counter")].containers[0].runs)
        stream = v1.read_namespaced_pod_log("counter", "ns", follow=True, timestamps=True, _preload_content=False)
        lines = b"".join(stream.stream()).decode().splitlines()
        assert [line.split(" ", 1)[1] for line in lines] == ["line 0", "line 1", "line 2"]
        assert lines[0].split(" ", 1)[0].endswith("Z")  # RFC 3339 with nanoseconds, as the kubelet's
        state = v1.read_namespaced_pod_status("counter", "ns").status.container_statuses[0].state
        assert (state.terminated.exit_code, state.terminated.reason) == (2, "Error")
        # (_preload_content=False: kubernetes client 36 returns str(bytes) of a log it preloads)
        assert v1.read_namespaced_pod_log("counter", "ns", tail_lines=1, _preload_content=False).data == b"line 2\n"

        # OnFailure: restarted in place; the last run's failure is lastState, its log is `previous`
        v1.create_namespaced_pod(
            "ns",
            pod(
                "flaky", ["python", "-c", "print('run'); raise SystemExit(1)"], restart="OnFailure", labels={"app": "b"}
            ),
        )
        assert api.wait_until(lambda: api.pods[("ns", "flaky")].containers[0].restart_count >= 2)
        status = v1.read_namespaced_pod("flaky", "ns").status
        assert status.phase == "Running" and status.container_statuses[0].last_state.terminated.exit_code == 1
        assert v1.read_namespaced_pod_log("flaky", "ns", previous=True, _preload_content=False).data == b"run\n"

        selected = v1.list_namespaced_pod("ns", label_selector="app in (a,b),tier notin (y),!airflow-worker")
        assert sorted(p.metadata.name for p in selected.items) == ["counter", "flaky"]
        assert [p.metadata.name for p in v1.list_namespaced_pod("ns", label_selector="tier").items] == ["counter"]
        events = v1.list_namespaced_event("ns", field_selector="involvedObject.name=counter").items
        assert [e.reason for e in events][:4] == ["Scheduled", "Pulled", "Created", "Started"]

        v1.create_namespaced_pod("ns", pod("sleeper", ["sleep", "60"]))
        assert api.wait_until(lambda: api.running_processes() and api.pods[("ns", "sleeper")].containers[0].runs)
        [sleeper] = [r["pid"] for r in api.commands if r["pod"] == "sleeper"]
        v1.delete_namespaced_pod("sleeper", "ns")  # graceful: SIGTERM, and listed until it has ended
        assert api.wait_until(lambda: ("ns", "sleeper") not in api.pods)
        assert not alive(sleeper)
        with pytest.raises(ApiException) as missing:
            v1.read_namespaced_pod("sleeper", "ns")
        assert missing.value.status == 404

        v1.create_namespaced_pod("ns", pod("left-running", ["sleep", "60"]))
        assert api.wait_until(lambda: [r for r in api.commands if r["pod"] == "left-running"])
        [left] = [r["pid"] for r in api.commands if r["pod"] == "left-running"]
    assert not alive(left)  # stopping the stand-in kills what still runs
    assert not api.unhandled


def test_a_tfjob_with_a_chief_succeeds_when_its_chief_does():
    """The training operator's rules through the API: Chief + Workers, TF_CONFIG, the CRD's types."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from taxi_pipeline.k8s import tfjob

    job = tfjob(
        name="chief-job",
        namespace="ns",
        image="runtime:1",
        arguments=[],
        service_account="sa",
        workers=1,
        labels={"app": "t"},
    )
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    container = worker["template"]["spec"]["containers"][0]
    container["command"], container["args"] = ["python", "-c", "import time; time.sleep(30)"], []
    chief = json.loads(json.dumps(worker))
    chief["template"]["spec"]["containers"][0]["command"] = ["python", "-c", "print('chief done')"]
    job["spec"]["tfReplicaSpecs"]["Chief"] = chief
    with KubernetesStandin(controller_interval=0.05) as api:
        tfjobs = client.CustomObjectsApi(api.api_client())
        unrendered = json.loads(json.dumps(job))
        unrendered["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] = "{{ params.workers }}"
        with pytest.raises(ApiException) as invalid:
            tfjobs.create_namespaced_custom_object("kubeflow.org", "v1", "ns", "tfjobs", unrendered)
        assert invalid.value.status == 422 and "must be of type integer" in invalid.value.body

        tfjobs.create_namespaced_custom_object("kubeflow.org", "v1", "ns", "tfjobs", job)
        with pytest.raises(ApiException) as conflict:
            tfjobs.create_namespaced_custom_object("kubeflow.org", "v1", "ns", "tfjobs", job)
        assert conflict.value.status == 409
        assert api.wait_until(lambda: api.history.get(("TFJob", "ns", "chief-job"), [])[-1:] == ["Succeeded"])
        status = tfjobs.get_namespaced_custom_object("kubeflow.org", "v1", "ns", "tfjobs", "chief-job")["status"]
        assert status["conditions"][-1]["message"] == "TFJob ns/chief-job successfully completed."
        assert status["replicaStatuses"]["Chief"] == {"succeeded": 1}
        runs = {r["pod"]: json.loads(r["env"]["TF_CONFIG"]) for r in api.commands}
        assert runs["chief-job-chief-0"]["task"] == {"type": "chief", "index": 0}
        assert sorted(runs["chief-job-worker-0"]["cluster"]) == ["chief", "worker"]
        # cleanPodPolicy Running: the worker still running is deleted once the job has succeeded
        assert api.wait_until(lambda: ("ns", "chief-job-worker-0") not in api.pods)
        assert ("ns", "chief-job-chief-0") in api.pods
