"""A stand-in of a Kubernetes cluster for the gcp platform's pod tasks, offline: an API server on a
loopback port (HTTPS with its own CA, bearer-token auth, as GKE's), a kubelet that runs each pod's
containers as local processes, and Kubeflow's training operator for TFJobs (kubeflow.org/v1).

Why: the real operators (cncf.kubernetes' pod operator, the GKE ones, TFJobTrainOperator) then run
their own code and the real kubernetes client's HTTP calls; only the cluster is simulated.

- API: pods (create, get, status, list by label and field selector, strategic/merge/JSON patch,
  delete, log with follow/timestamps/sinceSeconds/tailLines/previous), events (list), namespaces
  (get), /version, and tfjobs (create, get, status, list, delete; 409 on a name that exists).
  Anything else answers 404 and is kept in `unhandled`.
- Kubelet: a container runs `command + args` ($(VAR) expanded) with `python`/`python3` mapped to
  `runtime_python`, its env (plus `extra_env`, the node's additions) in a private working dir per
  pod; emptyDir volumes are directories of it, and an env value naming an emptyDir mount path
  (HOME=/tmp) names that directory (TMPDIR too for /tmp). Phases go Pending -> Running ->
  Succeeded/Failed; container states as the kubelet reports them (terminated exitCode, reason
  Completed/Error/StartError, message with terminationMessagePolicy FallbackToLogsOnError; a signal
  N is exit 128+N). restartPolicy OnFailure/Always restart in place (restartCount, lastState,
  CrashLoopBackOff with a short `restart_backoff`). A deletion is graceful: SIGTERM, then SIGKILL
  after min(grace period, `max_grace`); the pod is listed until its processes are gone.
- Training operator: a TFJob's replicas (Chief/Master/PS/Worker/Evaluator x replicas) become pods
  `<job>-<type>-<index>` with the training.kubeflow.org labels, TF_CONFIG when distributed (the
  cluster's addresses are 127.0.0.1 ports unless `tf_config_hosts="service"`), the replica's
  restart policy; conditions Created/Running/Restarting/Succeeded/Failed with the operator's
  reasons and messages; backoffLimit counts restarts, activeDeadlineSeconds, cleanPodPolicy.
  Deleting a TFJob deletes its pods (Foreground: the job is listed until they are gone).
- Deployments (apps/v1) and Services (v1): create, get, list, patch (merge, strategic merge as a
  merge of maps, JSON patch), delete; 409 on a name that exists; a Service gets a clusterIP. A
  Deployment's pods are NOT run (its image, e.g. tensorflow/serving's model server, is not a
  command of the runtime venv): its status reports the rollout of each generation complete at
  once (observedGeneration, updated/ready/available replicas = spec.replicas), so the apply and
  the rollout wait of the real operator run, but not the server or its readiness probe.

`KubernetesStandin` records what was asked: `created` (kind, namespace, name, body), `commands`
(each container run: argv, env, cwd), `deleted`, `requests`. `stop()` kills every process left.
"""

from __future__ import annotations

import atexit
import base64
import copy
import datetime as dt
import http.server
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parents[2]
TOKEN = "standin-bearer-token"
TFJOB_PATH = "/apis/kubeflow.org/v1"
APPS_PATH = "/apis/apps/v1"
OBJECT_KINDS = {
    "Deployment": ("apps/v1", "deployments"),
    "Service": ("v1", "services"),
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies"),
}
NETWORKING_PATH = "/apis/networking.k8s.io/v1"
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"
OPERATOR_NAME_LABEL = "training.kubeflow.org/operator-name"
JOB_ROLE_LABEL = "training.kubeflow.org/job-role"
TF_REPLICA_TYPES = ("Chief", "Evaluator", "Master", "PS", "Worker")  # the operator's order
TF_DEFAULT_PORT = 2222
RETRYABLE_EXIT_CODES = (130, 137, 138, 143)  # the training operator's IsRetryableExitCode
TERMINATION_LOG_LINES, TERMINATION_LOG_BYTES = 80, 2048  # the kubelet's FallbackToLogsOnError tail
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def default_runtime_python() -> str:
    return os.environ.get("TAXI_RUNTIME_PYTHON") or str(REPO / ".venv-runtime" / "bin" / "python")


def _time(at: float | None = None) -> str:
    """metav1.Time: RFC 3339, seconds."""
    return dt.datetime.fromtimestamp(time.time() if at is None else at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _log_time(at: float) -> str:
    """A log line's timestamp as the kubelet writes it (RFC 3339 with nanoseconds)."""
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiError(Exception):
    """An API error, answered as a metav1.Status."""

    REASONS = {
        400: "BadRequest",
        401: "Unauthorized",
        404: "NotFound",
        405: "MethodNotAllowed",
        409: "AlreadyExists",
        415: "UnsupportedMediaType",
        422: "Invalid",
    }

    def __init__(self, code: int, message: str, reason: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.reason, self.details = code, message, reason or self.REASONS.get(code), details

    def status(self) -> dict:
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            status["details"] = self.details
        return status


def _flag(query: dict, key: str) -> bool:
    """A boolean query parameter (the python client sends True/False, kubectl true/false)."""
    return query.get(key, "").lower() in ("true", "1")


def _not_found(resource: str, name: str) -> ApiError:
    return ApiError(404, f'{resource} "{name}" not found', details={"name": name, "kind": resource.split(".")[0]})


# --- selectors ---------------------------------------------------------------------------------


def _split_requirements(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p.strip() for p in parts + [current] if p.strip()]


_REQUIREMENT = re.compile(
    r"^(?P<neg>!)?\s*(?P<key>[A-Za-z0-9_./-]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9_.-]*)"
    r"|\s+(?P<set>in|notin)\s*\((?P<values>[^)]*)\))?$"
)


def label_selector(text: str | None) -> Callable[[dict], bool]:
    """A predicate on labels for a label selector (=, ==, !=, in, notin, exists, !exists)."""
    tests = []
    for requirement in _split_requirements(text or ""):
        m = _REQUIREMENT.match(requirement)
        if not m or (m["neg"] and (m["op"] or m["set"])):
            raise ApiError(400, f"unable to parse requirement: {requirement!r}")
        key, op, value = m["key"], m["op"], m["value"]
        if m["neg"]:
            tests.append(lambda labels, k=key: k not in labels)
        elif op in ("=", "=="):
            tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif op == "!=":
            tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif m["set"]:
            values = {v.strip() for v in m["values"].split(",")}
            if m["set"] == "in":
                tests.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                tests.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        else:
            tests.append(lambda labels, k=key: k in labels)
    return lambda labels: all(t(labels or {}) for t in tests)


def field_selector(text: str | None) -> Callable[[dict], bool]:
    """A predicate on an object for a field selector (dotted paths, =, ==, !=)."""
    tests = []
    for requirement in _split_requirements(text or ""):
        m = re.match(r"^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$", requirement)
        if not m:
            raise ApiError(400, f"invalid field selector: {requirement!r}")
        path, op, value = m.groups()

        def test(obj, path=path, op=op, value=value):
            current: Any = obj
            for part in path.split("."):
                current = current.get(part) if isinstance(current, dict) else None
            return (str(current if current is not None else "") == value) == (op != "!=")

        tests.append(test)
    return lambda obj: all(t(obj) for t in tests)


# --- patches -----------------------------------------------------------------------------------


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 merge patch (a strategic merge patch of maps and scalars is the same)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _json_patch(target: dict, operations: list[dict]) -> dict:
    """RFC 6902 add/replace/remove/test on object paths (~1 and ~0 unescaped)."""
    result = copy.deepcopy(target)
    for op in operations:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        parent = result
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                parent[index : index + (op["op"] == "replace")] = [op["value"]]
            else:
                parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif op["op"] == "test":
            if (parent[int(last)] if isinstance(parent, list) else parent.get(last)) != op.get("value"):
                raise ApiError(422, f"the test operation on {op['path']} failed")
        else:
            raise ApiError(400, f"JSON patch operation {op['op']!r} is not supported by the stand-in")
    return result


# --- TLS ---------------------------------------------------------------------------------------


def _certificates(directory: Path) -> tuple[bytes, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (CA PEM, cert file, key file)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes stand-in CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = directory / "apiserver.crt", directory / "apiserver.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca.public_bytes(serialization.Encoding.PEM), cert_file, key_file


# --- the kubelet -------------------------------------------------------------------------------


class _Run:
    """One run of a container: its process and the log lines it wrote (time, bytes)."""

    def __init__(self):
        self.lines: list[tuple[float, bytes]] = []
        self.done = False
        self.proc: subprocess.Popen | None = None


class _Container:
    def __init__(self, spec: dict):
        self.spec, self.name = spec, spec["name"]
        self.runs: list[_Run] = []
        self.state: dict = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict = {}
        self.restart_count = 0
        self.final = False  # terminated for good
        self.container_id = f"containerd://{uuid.uuid4().hex}"

    def status(self) -> dict:
        running = "running" in self.state
        return {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": f"{self.spec.get('image', '')}@sha256:{'0' * 64}",
            "containerID": self.container_id,
            "state": copy.deepcopy(self.state),
            "lastState": copy.deepcopy(self.last_state),
            "ready": running,
            "started": running,
            "restartCount": self.restart_count,
        }

    def exit_code(self) -> int | None:
        return self.state.get("terminated", {}).get("exitCode")


class _Pod:
    """A pod on the stand-in's node: its object and the kubelet's work on it."""

    def __init__(self, api: KubernetesStandin, obj: dict):
        self.api, self.obj = api, obj
        self.namespace, self.name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        spec = obj["spec"]
        self.init_containers = [_Container(c) for c in spec.get("initContainers") or []]
        self.containers = [_Container(c) for c in spec["containers"]]
        self.deleting = False
        self.finished = False  # the kubelet is done with it (every container terminated for good)
        self.deleted = threading.Event()  # set once removed from the API
        self.wake = threading.Event()  # interrupts restart back-offs
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.name[:40]}-", dir=api.root))
        self.thread = threading.Thread(target=self._kubelet, name=f"kubelet-{self.name}", daemon=True)

    # status, under the API's lock
    def refresh(self) -> None:
        status = self.obj["status"]
        init_ok = all(c.final and c.exit_code() == 0 for c in self.init_containers)
        init_failed = any(c.final and c.exit_code() != 0 for c in self.init_containers)
        started = any("waiting" not in c.state or c.runs for c in self.containers)
        if init_failed:
            phase = "Failed"
        elif not init_ok or not started:
            phase = "Pending"
        elif all(c.final for c in self.containers):
            phase = "Succeeded" if all(c.exit_code() == 0 for c in self.containers) else "Failed"
        else:
            phase = "Running"
        ready = phase == "Running" and all("running" in c.state for c in self.containers)
        now = _time()
        conditions = {c["type"]: c for c in status.get("conditions", [])}

        def condition(kind: str, true: bool, reason: str | None = None):
            old = conditions.get(kind)
            value = "True" if true else "False"
            if old and old["status"] == value:
                return old
            return {
                "type": kind,
                "status": value,
                "lastProbeTime": None,
                "lastTransitionTime": now,
                **({"reason": reason} if reason and not true else {}),
            }

        not_ready = "PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"
        phases = self.api.history.setdefault(("Pod", self.namespace, self.name), [])
        if not phases or phases[-1] != phase:
            phases.append(phase)
        status.update(
            {
                "phase": phase,
                "conditions": [
                    condition("PodReadyToStartContainers", True),
                    condition("Initialized", init_ok),
                    condition("Ready", ready, not_ready),
                    condition("ContainersReady", ready, not_ready),
                    condition("PodScheduled", True),
                ],
                "containerStatuses": [c.status() for c in self.containers],
            }
        )
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        self.api._touch(self.obj)
        self.api.changed.notify_all()

    def _kubelet(self) -> None:
        api = self.api
        with api.lock:
            api._event(
                self.obj,
                "Scheduled",
                f"Successfully assigned {self.namespace}/{self.name} to {api.node}",
                component="default-scheduler",
            )
        for container in self.init_containers:
            self._run_container(container)
            if container.exit_code() != 0:
                break
        else:
            threads = [threading.Thread(target=self._run_container, args=(c,), daemon=True) for c in self.containers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        with api.lock:
            for container in self.init_containers + self.containers:  # never started (an init container failed)
                container.final = True
            self.refresh()
            self.finished = True
            if self.deleting:
                api._remove_pod(self)

    def _run_container(self, container: _Container) -> None:
        api = self.api
        backoff = api.restart_backoff
        while True:
            with api.lock:
                if self.deleting:
                    container.final = True
                    self.refresh()
                    return
                run = _Run()
                container.runs.append(run)
                argv, env, cwd = self._command(container)
                started = time.time()
                try:  # under the lock: a deletion either comes before (no run) or signals this process
                    run.proc = subprocess.Popen(
                        argv,
                        cwd=cwd,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                except OSError as error:
                    exit_code, reason, message = (
                        128,
                        "StartError",
                        (
                            f"failed to create containerd task: failed to start container {container.name!r}: exec: "
                            f'"{argv[0]}": {error.strerror}'
                        ),
                    )
                api.commands.append(
                    {
                        "namespace": self.namespace,
                        "pod": self.name,
                        "container": container.name,
                        "argv": list(argv),
                        "env": dict(env),
                        "cwd": cwd,
                        "pid": run.proc.pid if run.proc else None,
                    }
                )
            if run.proc is not None:
                with api.lock:
                    container.state = {"running": {"startedAt": _time(started)}}
                    image = container.spec.get("image", "")
                    field = f"spec.containers{{{container.name}}}"
                    api._event(self.obj, "Pulled", f'Container image "{image}" already present on machine', field)
                    api._event(self.obj, "Created", f"Created container {container.name}", field)
                    api._event(self.obj, "Started", f"Started container {container.name}", field)
                    self.refresh()
                for line in iter(run.proc.stdout.readline, b""):
                    with api.changed:
                        run.lines.append((time.time(), line))
                        api.changed.notify_all()
                run.proc.stdout.close()
                returncode = run.proc.wait()
                exit_code = 128 - returncode if returncode < 0 else returncode
                reason, message = ("Completed" if exit_code == 0 else "Error"), None
                policy = container.spec.get("terminationMessagePolicy", "File")
                if exit_code != 0 and policy == "FallbackToLogsOnError":
                    tail = b"".join(line for _, line in run.lines[-TERMINATION_LOG_LINES:])[-TERMINATION_LOG_BYTES:]
                    message = tail.decode("utf-8", "replace")
            with api.lock:
                terminated = {
                    "exitCode": exit_code,
                    "reason": reason,
                    "startedAt": _time(started),
                    "finishedAt": _time(),
                    "containerID": container.container_id,
                }
                if message:
                    terminated["message"] = message
                restart_policy = self.obj["spec"].get("restartPolicy", "Always")
                restart = not self.deleting and (
                    restart_policy == "Always"
                    and container in self.containers
                    or restart_policy in ("OnFailure", "Always")
                    and exit_code != 0
                )
                if restart:
                    container.restart_count += 1
                    container.last_state = {"terminated": terminated}
                    uid = self.obj["metadata"]["uid"]
                    container.state = {
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": (
                                f"back-off {backoff:g}s restarting failed container={container.name} "
                                f"pod={self.name}_{self.namespace}({uid})"
                            ),
                        }
                    }
                    api._event(
                        self.obj,
                        "BackOff",
                        "Back-off restarting failed container",
                        f"spec.containers{{{container.name}}}",
                        kind="Warning",
                    )
                else:
                    container.state = {"terminated": terminated}
                    container.final = True
                run.done = True  # after the status: a log follower that ends sees the terminated state
                self.refresh()
            if not restart:
                return
            self.wake.wait(backoff)
            backoff = min(backoff * 2, api.restart_backoff * 32)

    def _command(self, container: _Container) -> tuple[list[str], dict[str, str], str]:
        """The process of a container: argv, environment, working dir (the API's lock is held)."""
        api, spec, pod_spec = self.api, container.spec, self.obj["spec"]
        volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
        mounts = {}
        for mount in spec.get("volumeMounts") or []:
            volume = volumes.get(mount["name"], {})
            if "emptyDir" in volume:
                path = self.dir / "volumes" / mount["name"]
                path.mkdir(parents=True, exist_ok=True)
                mounts[mount["mountPath"].rstrip("/") or "/"] = str(path)
        work = self.dir / "work"
        work.mkdir(exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOSTNAME": self.name,
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(api.port),
        }
        if "/tmp" in mounts:
            env["TMPDIR"] = mounts["/tmp"]
        env.update(api.extra_env)
        for var in spec.get("env") or []:
            if "valueFrom" in var:
                value = self._field_ref(var["valueFrom"])
            else:
                value = _expand(var.get("value", ""), env)
            env[var["name"]] = mounts.get(value.rstrip("/") or "/", value) if value.startswith("/") else value
        argv = [_expand(part, env) for part in (spec.get("command") or []) + (spec.get("args") or [])]
        if argv[0] in api.interpreters:
            argv[0] = api.interpreters[argv[0]]
        elif "/" not in argv[0]:
            argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]
        return argv, env, str(work)

    def _field_ref(self, source: dict) -> str:
        path = source["fieldRef"]["fieldPath"]
        meta = self.obj["metadata"]
        m = re.match(r"metadata\.(labels|annotations)\['(.+)'\]$", path)
        if m:
            return (meta.get(m[1]) or {}).get(m[2], "")
        values = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": self.api.node,
            "spec.serviceAccountName": self.obj["spec"].get("serviceAccountName", ""),
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
        }
        return values.get(path, "")

    def kill(self, grace: float) -> None:
        """SIGTERM the pod's process groups, SIGKILL after `grace` seconds; at once when `grace` is 0
        (the group even if its leader has ended: what it started goes too). The API's lock is held."""
        self.deleting = True
        self.wake.set()
        for container in self.init_containers + self.containers:
            for run in container.runs:
                if run.proc and grace <= 0:
                    _signal(run.proc, signal.SIGKILL, even_if_ended=True)
                elif run.proc and run.proc.poll() is None:
                    _signal(run.proc, signal.SIGTERM)
                    timer = threading.Timer(grace, _signal, (run.proc, signal.SIGKILL))
                    timer.daemon = True
                    timer.start()


def _signal(proc: subprocess.Popen, sig: int, even_if_ended: bool = False) -> None:
    if even_if_ended or proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion ($$ is a literal $; an unknown variable is left as it is)."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), text
    )


# --- the training operator ---------------------------------------------------------------------


class _TFJob:
    """A TFJob and the training operator's reconcile loop for it."""

    def __init__(self, api: KubernetesStandin, obj: dict):
        self.api, self.obj = api, obj
        self.namespace, self.name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        self.deleting = False
        self.cleaned = False
        self.ports: dict[tuple[str, int], int] = {}
        self.thread = threading.Thread(target=self._loop, name=f"tfjob-{self.name}", daemon=True)

    def replicas(self) -> dict[str, dict]:
        return self.obj["spec"]["tfReplicaSpecs"]

    def _loop(self) -> None:
        api = self.api
        while not api.stopping.is_set():
            with api.lock:
                if self.api.tfjobs.get((self.namespace, self.name)) is not self:
                    return
                if self.deleting:
                    if not self._pods():
                        del api.tfjobs[(self.namespace, self.name)]
                        api.changed.notify_all()
                        return
                else:
                    self._reconcile()
            api.stopping.wait(api.controller_interval)

    def _pods(self, rtype: str | None = None) -> list[_Pod]:
        """The job's pods: its labels and its controller reference (not those of an earlier job of the name)."""
        uid = self.obj["metadata"]["uid"]
        return [
            p
            for p in self.api.pods.values()
            if p.namespace == self.namespace
            and (p.obj["metadata"].get("labels") or {}).get(JOB_NAME_LABEL) == self.name
            and any(o.get("uid") == uid for o in p.obj["metadata"].get("ownerReferences") or [])
            and (rtype is None or p.obj["metadata"]["labels"].get(REPLICA_TYPE_LABEL) == rtype.lower())
        ]

    def _condition(self, kind: str, reason: str, message: str) -> None:
        """commonutil.UpdateJobConditions: Running and Restarting replace each other; Succeeded or
        Failed turn Running False."""
        status = self.obj.setdefault("status", {})
        conditions = status.setdefault("conditions", [])
        now = _time()
        for c in conditions:
            if (c["type"], c["status"], c.get("reason"), c.get("message")) == (kind, "True", reason, message):
                return
        kept = []
        for c in conditions:
            if c["type"] == kind or {kind, c["type"]} == {"Running", "Restarting"}:
                continue
            if kind in ("Succeeded", "Failed") and c["type"] == "Running" and c["status"] == "True":
                c = {**c, "status": "False", "lastUpdateTime": now, "lastTransitionTime": now}
            kept.append(c)
        status["conditions"] = kept + [
            {
                "type": kind,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastUpdateTime": now,
                "lastTransitionTime": now,
            }
        ]
        self.api.history.setdefault(("TFJob", self.namespace, self.name), []).append(kind)

    def _finished(self) -> bool:
        return any(
            c["type"] in ("Succeeded", "Failed") and c["status"] == "True"
            for c in self.obj.get("status", {}).get("conditions", [])
        )

    def _reconcile(self) -> None:
        api, spec = self.api, self.obj["spec"]
        run_policy = spec.get("runPolicy") or {}
        status = self.obj.setdefault("status", {})
        before = json.dumps(status, sort_keys=True)
        if self._finished():
            if not self.cleaned:  # CleanUpResources with cleanPodPolicy (default None)
                policy = run_policy.get("cleanPodPolicy") or "None"
                for pod in self._pods():
                    if policy == "All" or policy == "Running" and pod.obj["status"]["phase"] in ("Running", "Pending"):
                        api._delete_pod(pod, None)
                self.cleaned = True
            return
        status.setdefault("startTime", _time())
        pods = self._pods()
        backoff_limit = run_policy.get("backoffLimit")
        failure = None
        if backoff_limit is not None:
            restarts = sum(
                c.restart_count
                for p in pods
                if p.obj["status"]["phase"] == "Running"
                for c in p.containers + p.init_containers
                if self.replicas()[_replica_type(p)].get("restartPolicy", "Never") != "Never"
            )
            if restarts > 0 if backoff_limit == 0 else restarts >= backoff_limit:
                failure = f"Job {self.name} has failed because it has reached the specified backoff limit"
        deadline = run_policy.get("activeDeadlineSeconds")
        if failure is None and deadline is not None and time.time() - self._started() >= deadline:
            failure = f"Job {self.name} has failed because it was active longer than specified deadline"
        if failure:
            status.setdefault("completionTime", _time())
            for pod in pods:  # the job is not finished yet: cleanPodPolicy does not apply
                api._delete_pod(pod, None)
            self._condition("Failed", "TFJobFailed", failure)
            self._event("TFJobFailed", failure)
            self.cleaned = True
            self._touch(before)
            return
        counts: dict[str, dict[str, int]] = {}
        for rtype in TF_REPLICA_TYPES:
            replica = self.replicas().get(rtype)
            if replica is None:
                continue
            count = counts[rtype] = {"active": 0, "succeeded": 0, "failed": 0}
            by_index = {p.obj["metadata"]["labels"].get(REPLICA_INDEX_LABEL): p for p in self._pods(rtype)}
            for index in range(int(replica.get("replicas", 1))):
                pod = by_index.get(str(index))
                if pod is None:
                    self._create_pod(rtype, index)
                    continue
                phase = pod.obj["status"]["phase"]
                exit_code = next((c.exit_code() for c in pod.containers if c.name == "tensorflow"), None)
                policy = replica.get("restartPolicy", "Never")
                retryable = policy in ("OnFailure", "Always") or (
                    policy == "ExitCode" and exit_code in RETRYABLE_EXIT_CODES
                )
                if phase == "Failed" and not pod.deleting and retryable:
                    api._delete_pod(pod, None)
                    message = f"TFJob {self.name} is restarting because {rtype} replica(s) failed."
                    self._condition("Restarting", "TFJobRestarting", message)
                    self._event("TFJobRestarting", message, kind="Warning")
                key = {"Running": "active", "Succeeded": "succeeded", "Failed": "failed"}.get(phase)
                if key:
                    count[key] += 1
        status["replicaStatuses"] = {rtype: {k: v for k, v in c.items() if v} for rtype, c in counts.items()}
        self._update_status(counts)
        self._touch(before)

    def _started(self) -> float:
        started = self.obj["status"]["startTime"]
        return dt.datetime.strptime(started, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()

    def _update_status(self, counts: dict[str, dict[str, int]]) -> None:
        """The TFJob reconciler's UpdateJobStatus."""
        replicas, status = self.replicas(), self.obj["status"]
        has_chief = "Chief" in replicas or "Master" in replicas
        success_policy = self.obj["spec"].get("successPolicy") or ""
        worker0 = next(
            (p for p in self._pods("Worker") if p.obj["metadata"]["labels"].get(REPLICA_INDEX_LABEL) == "0"), None
        )
        worker0_completed = (
            "Worker" not in replicas
            or worker0 is not None
            and (
                worker0.obj["status"]["phase"] == "Succeeded"
                and next((c.exit_code() for c in worker0.containers if c.name == "tensorflow"), None) == 0
            )
        )
        running_message = f"TFJob {self.namespace}/{self.name} is running."
        done_message = f"TFJob {self.namespace}/{self.name} successfully completed."
        restarting = any(c["type"] == "Restarting" and c["status"] == "True" for c in status.get("conditions", []))
        for rtype in TF_REPLICA_TYPES:
            if rtype not in counts:
                continue
            count = counts[rtype]
            expected = int(replicas[rtype].get("replicas", 1)) - count["succeeded"]
            succeeded = False
            if has_chief:
                if rtype in ("Chief", "Master"):
                    if count["active"] > 0:
                        self._condition("Running", "TFJobRunning", running_message)
                    succeeded = expected == 0
            elif rtype == "Worker":
                if expected == 0 or worker0_completed and success_policy != "AllWorkers":
                    succeeded = True
                elif count["active"] > 0:
                    self._condition("Running", "TFJobRunning", running_message)
            if succeeded:
                status.setdefault("completionTime", _time())
                self._condition("Succeeded", "TFJobSucceeded", done_message)
                self._event("TFJobSucceeded", done_message)
            if count["failed"] > 0 and not restarting:
                message = (
                    f"TFJob {self.namespace}/{self.name} has failed because {count['failed']} {rtype} "
                    "replica(s) failed."
                )
                status.setdefault("completionTime", _time())
                self._condition("Failed", "TFJobFailed", message)
                self._event("TFJobFailed", message)

    def _touch(self, before: str) -> None:
        if json.dumps(self.obj.get("status", {}), sort_keys=True) != before:
            self.obj["status"]["lastReconcileTime"] = _time()
            self.api._touch(self.obj)
            self.api.changed.notify_all()

    def _event(self, reason: str, message: str, kind: str = "Normal") -> None:
        self.api._event(self.obj, reason, message, component="tfjob-controller", kind=kind)

    def _create_pod(self, rtype: str, index: int) -> None:
        """The operator's createNewPod: labels, TF_CONFIG, the replica's restart policy, owner reference."""
        api, replica = self.api, self.replicas()[rtype]
        rt = rtype.lower()
        name = f"{self.name}-{rt}-{index}"
        if (self.namespace, name) in api.pods:  # the pod of a restart is still terminating
            return
        template = copy.deepcopy(replica.get("template") or {})
        meta = template.get("metadata") or {}
        labels = {
            **(meta.get("labels") or {}),
            OPERATOR_NAME_LABEL: "tfjob-controller",
            JOB_NAME_LABEL: self.name,
            REPLICA_TYPE_LABEL: rt,
            REPLICA_INDEX_LABEL: str(index),
        }
        if rtype in ("Chief", "Master") or (
            rtype == "Worker" and index == 0 and not ("Chief" in self.replicas() or "Master" in self.replicas())
        ):
            labels[JOB_ROLE_LABEL] = "master"
        spec = template.get("spec") or {}
        policy = replica.get("restartPolicy", "Never")
        spec["restartPolicy"] = "Never" if policy == "ExitCode" else policy
        tf_config = self._tf_config(rt, index)
        for container in spec.get("containers", []):
            if container.get("name") == "tensorflow":
                if not any(p.get("name") == "tfjob-port" for p in container.get("ports") or []):
                    container.setdefault("ports", []).append({"name": "tfjob-port", "containerPort": TF_DEFAULT_PORT})
                if tf_config:
                    container.setdefault("env", []).append({"name": "TF_CONFIG", "value": tf_config})
        meta = {
            **meta,
            "name": name,
            "namespace": self.namespace,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "kubeflow.org/v1",
                    "kind": "TFJob",
                    "name": self.name,
                    "uid": self.obj["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
        try:
            api._create_pod(self.namespace, {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
        except ApiError as error:
            self._event("FailedCreatePod", f"Error creating: {error.message}", kind="Warning")
            return
        self._event("SuccessfulCreatePod", f"Created pod: {name}")

    def _tf_config(self, rt: str, index: int) -> str | None:
        """genTFConfigJSONStr; none for a job of one replica (isDistributed)."""
        replicas = self.replicas()
        if sum(int(r.get("replicas", 1)) for r in replicas.values()) == 1:
            return None
        cluster = {}
        for rtype, replica in replicas.items():
            if rtype == "Evaluator":
                continue
            port = TF_DEFAULT_PORT
            for c in (replica.get("template") or {}).get("spec", {}).get("containers", []):
                if c.get("name") == "tensorflow":
                    port = next(
                        (p["containerPort"] for p in c.get("ports") or [] if p.get("name") == "tfjob-port"), port
                    )
            addresses = []
            for i in range(int(replica.get("replicas", 1))):
                if self.api.tf_config_hosts == "service":
                    addresses.append(f"{self.name}-{rtype.lower()}-{i}.{self.namespace}.svc:{port}")
                else:
                    local = self.ports.setdefault((rtype.lower(), i), _free_port())
                    addresses.append(f"127.0.0.1:{local}")
            cluster[rtype.lower()] = addresses
        return json.dumps({"cluster": cluster, "task": {"type": rt, "index": index}, "environment": "cloud"})


def _replica_type(pod: _Pod) -> str:
    rt = pod.obj["metadata"]["labels"].get(REPLICA_TYPE_LABEL, "")
    return next((t for t in TF_REPLICA_TYPES if t.lower() == rt), rt)


# --- the API server ----------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args):  # the records are the standin's, not stderr's
        pass

    def _handle(self) -> None:
        api = self.server.standin
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        with api.lock:
            api.requests.append((self.command, self.path))
        try:
            if api.token and self.headers.get("Authorization") != f"Bearer {api.token}":
                raise ApiError(401, "Unauthorized")
            body = json.loads(raw) if raw else None
            result = api.dispatch(self.command, url.path, query, body, self.headers.get("Content-Type", ""))
        except ApiError as error:
            return self._json(error.code, error.status())
        except json.JSONDecodeError as error:
            return self._json(400, ApiError(400, f"invalid JSON: {error}").status())
        if callable(result):  # a log stream
            return self._stream(result)
        code, payload = result
        self._json(code, payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def _json(self, code: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, chunks: Callable[[], Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for data in chunks():
                if data:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    standin: KubernetesStandin


class KubernetesStandin:
    """The stand-in cluster (see the module's docstring). A context manager: started on entry,
    stopped (every process killed, its files removed unless `keep_dirs`) on exit."""

    def __init__(
        self,
        runtime_python: str | None = None,
        *,
        extra_env: dict[str, str] | None = None,
        token: str | None = TOKEN,
        tls: bool = True,
        namespaces: list[str] | None = None,
        restart_backoff: float = 0.2,
        max_grace: float = 2.0,
        controller_interval: float = 0.1,
        tf_config_hosts: str = "local",
        keep_dirs: bool = False,
    ):
        self.runtime_python = runtime_python or default_runtime_python()
        self.interpreters = {"python": self.runtime_python, "python3": self.runtime_python}
        self.extra_env = dict(extra_env or {})
        self.token, self.tls, self.namespaces = token, tls, namespaces
        self.restart_backoff, self.max_grace, self.controller_interval = restart_backoff, max_grace, controller_interval
        self.tf_config_hosts, self.keep_dirs = tf_config_hosts, keep_dirs
        self.node = "standin-node"
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.stopping = threading.Event()
        self.pods: dict[tuple[str, str], _Pod] = {}
        self.tfjobs: dict[tuple[str, str], _TFJob] = {}
        self.objects: dict[tuple[str, str, str], dict] = {}  # (kind, namespace, name): Deployments, Services
        self.events: list[dict] = []
        self.created: list[dict] = []  # {"kind", "namespace", "name", "body"} as sent (a TFJob's pods too)
        self.commands: list[dict] = []  # one per container run: {"namespace", "pod", "container", "argv", ...}
        self.deleted: list[tuple[str, str, str]] = []  # (kind, namespace, name) of each deletion asked
        self.requests: list[tuple[str, str]] = []
        self.history: dict[tuple[str, str, str], list[str]] = {}  # (kind, ns, name): pod phases, TFJob conditions
        self.unhandled: list[tuple[str, str]] = []
        self.cluster_lookups: list[str] = []  # GKE cluster names asked (gke.py fills it)
        self._all_pods: list[_Pod] = []  # every pod created, deleted ones too (their logs, their processes)
        self._version = 1000
        self.root = Path(tempfile.mkdtemp(prefix="k8s_standin_"))
        self.ca_pem = b""
        self.port = 0
        self._server: _Server | None = None

    # lifecycle
    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_data(self) -> str:
        """The CA as GKE gives it (clusters.get's masterAuth.clusterCaCertificate): base64 of the PEM."""
        return base64.b64encode(self.ca_pem).decode()

    def start(self) -> KubernetesStandin:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.standin = self
        self.port = self._server.server_address[1]
        if self.tls:
            self.ca_pem, cert, key = _certificates(self.root)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="k8s-standin", daemon=True
        ).start()
        atexit.register(self._kill_all)  # an interpreter that exits without stop() leaves no process either
        return self

    def _kill_all(self) -> list[_Pod]:
        with self.lock:
            pods = list(self._all_pods)
            for pod in pods:
                pod.kill(0)
        return pods

    def stop(self) -> None:
        self.stopping.set()
        for pod in self._kill_all():
            pod.thread.join(timeout=5)
        atexit.unregister(self._kill_all)
        with self.changed:
            self.changed.notify_all()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        if not self.keep_dirs:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> KubernetesStandin:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def api_client(self, token: str | None = None):
        """A kubernetes client ApiClient for the stand-in (CA and bearer token configured)."""
        from kubernetes import client

        configuration = client.Configuration(
            host=self.url, api_key={"BearerToken": token or self.token or ""}, api_key_prefix={"BearerToken": "Bearer"}
        )
        if self.tls:
            ca = self.root / "ca.crt"
            ca.write_bytes(self.ca_pem)
            configuration.ssl_ca_cert = str(ca)
        return client.ApiClient(configuration)

    # what the tests read
    def pod(self, namespace: str, name: str) -> dict | None:
        with self.lock:
            pod = self.pods.get((namespace, name))
            return copy.deepcopy(pod.obj) if pod else None

    def tfjob(self, namespace: str, name: str) -> dict | None:
        with self.lock:
            job = self.tfjobs.get((namespace, name))
            return copy.deepcopy(job.obj) if job else None

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        """Every line a pod's container wrote, all its runs (also after the pod was deleted)."""
        with self.lock:
            runs = [
                r
                for p in self._all_pods
                if (p.namespace, p.name) == (namespace, pod)
                for c in p.init_containers + p.containers
                if container in (None, c.name)
                for r in c.runs
            ]
            return b"".join(line for r in runs for _, line in r.lines).decode("utf-8", "replace")

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10) -> bool:
        """Wait for the cluster's state to satisfy `predicate` (called with the lock held)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 0.2))
        return True

    def running_processes(self) -> list[int]:
        with self.lock:
            return [
                r.proc.pid
                for p in self._all_pods
                for c in p.init_containers + p.containers
                for r in c.runs
                if r.proc and r.proc.poll() is None
            ]

    # internals (the lock is held)
    def _touch(self, obj: dict) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)

    def _event(
        self,
        obj: dict,
        reason: str,
        message: str,
        field: str | None = None,
        *,
        component: str = "kubelet",
        kind: str = "Normal",
    ) -> None:
        meta = obj["metadata"]
        self._version += 1
        now = _time()
        self.events.append(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
                    "namespace": meta["namespace"],
                    "uid": str(uuid.uuid4()),
                    "resourceVersion": str(self._version),
                    "creationTimestamp": now,
                },
                "involvedObject": {
                    "apiVersion": obj.get("apiVersion", "v1"),
                    "kind": obj.get("kind", "Pod"),
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta["uid"],
                    **({"fieldPath": field} if field else {}),
                },
                "reason": reason,
                "message": message,
                "type": kind,
                "count": 1,
                "source": {"component": component, **({"host": self.node} if component == "kubelet" else {})},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "reportingComponent": component,
                "reportingInstance": self.node if component == "kubelet" else "",
            }
        )

    def _check_namespace(self, namespace: str) -> None:
        if self.namespaces is not None and namespace not in self.namespaces:
            raise ApiError(
                404, f'namespaces "{namespace}" not found', details={"name": namespace, "kind": "namespaces"}
            )

    def _new_meta(self, meta: dict, namespace: str) -> dict:
        name = meta.get("name") or (
            meta.get("generateName", "") + uuid.uuid4().hex[:5] if meta.get("generateName") else None
        )
        if not name:
            raise ApiError(422, "metadata.name: Required value: name or generateName is required")
        return {
            **meta,
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "creationTimestamp": _time(),
            "resourceVersion": str(self._version),
        }

    def _create_pod(self, namespace: str, body: dict) -> dict:
        """The API server's pod creation: validation, defaults, then the kubelet starts it."""
        self._check_namespace(namespace)
        if (body or {}).get("kind", "Pod") != "Pod":
            raise ApiError(400, f"the kind of the object is {body.get('kind')!r}, not Pod")
        meta = body.get("metadata") or {}
        if meta.get("namespace") not in (None, namespace):
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the request")
        meta = self._new_meta(meta, namespace)
        name = meta["name"]
        if len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
            raise ApiError(
                422,
                f'Pod "{name}" is invalid: metadata.name: Invalid value: "{name}": a lowercase RFC '
                "1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
            )
        for value in (meta.get("labels") or {}).values():
            if (
                not isinstance(value, str)
                or len(value) > 63
                or value
                and not re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", value)
            ):
                raise ApiError(422, f'Pod "{name}" is invalid: metadata.labels: Invalid value: "{value}"')
        if (namespace, name) in self.pods:
            raise ApiError(409, f'pods "{name}" already exists', details={"name": name, "kind": "pods"})
        spec = copy.deepcopy(body.get("spec") or {})
        containers = spec.get("containers") or []
        if not containers:
            raise ApiError(422, f'Pod "{name}" is invalid: spec.containers: Required value')
        for i, container in enumerate((spec.get("initContainers") or []) + containers):
            where = f"spec.containers[{i}]"
            if not DNS1123_LABEL.match(container.get("name") or ""):
                raise ApiError(422, f'Pod "{name}" is invalid: {where}.name: Invalid value: {container.get("name")!r}')
            if not container.get("image"):
                raise ApiError(422, f'Pod "{name}" is invalid: {where}.image: Required value')
            if not container.get("command"):
                raise ApiError(
                    422,
                    f'Pod "{name}": the stand-in runs a container\'s command, and {where} '
                    f"({container['name']}) has none (the image's entrypoint is not known here)",
                )
            for var in container.get("env") or []:
                if "valueFrom" in var and "fieldRef" not in var["valueFrom"]:
                    raise ApiError(
                        422,
                        f'Pod "{name}": the stand-in resolves only fieldRef env sources, not '
                        f"{sorted(var['valueFrom'])} ({var['name']})",
                    )
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            latest = container["image"].endswith(":latest") or ":" not in container["image"].rsplit("/", 1)[-1]
            container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("serviceAccountName", "default")
        spec["nodeName"] = self.node
        obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": spec,
            "status": {
                "phase": "Pending",
                "qosClass": "Burstable",
                "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1",
                "startTime": _time(),
            },
        }
        pod = _Pod(self, obj)
        self.pods[(namespace, name)] = pod
        self._all_pods.append(pod)
        self.created.append({"kind": "Pod", "namespace": namespace, "name": name, "body": copy.deepcopy(body)})
        pod.refresh()
        response = copy.deepcopy(obj)
        pod.thread.start()
        return response

    def _delete_pod(self, pod: _Pod, grace: float | None) -> dict:
        self.deleted.append(("Pod", pod.namespace, pod.name))
        if not pod.deleting:
            pod.obj["metadata"]["deletionTimestamp"] = _time()
            pod.obj["metadata"]["deletionGracePeriodSeconds"] = int(
                grace if grace is not None else pod.obj["spec"]["terminationGracePeriodSeconds"]
            )
            for container in pod.containers:
                if "running" in container.state:
                    self._event(
                        pod.obj,
                        "Killing",
                        f"Stopping container {container.name}",
                        f"spec.containers{{{container.name}}}",
                    )
            pod.kill(min(pod.obj["metadata"]["deletionGracePeriodSeconds"], self.max_grace))
            self._touch(pod.obj)
            if pod.finished:  # else the kubelet removes it when its processes have ended
                self._remove_pod(pod)
            self.changed.notify_all()
        return copy.deepcopy(pod.obj)

    def _remove_pod(self, pod: _Pod) -> None:
        if self.pods.get((pod.namespace, pod.name)) is pod:
            del self.pods[(pod.namespace, pod.name)]
            pod.deleted.set()
            self.changed.notify_all()

    def _pod_or_404(self, namespace: str, name: str) -> _Pod:
        pod = self.pods.get((namespace, name))
        if pod is None:
            raise _not_found("pods", name)
        return pod

    def _list(self, kind: str, items: list[dict], query: dict) -> tuple[int, dict]:
        labels, fields = label_selector(query.get("labelSelector")), field_selector(query.get("fieldSelector"))
        selected = [copy.deepcopy(i) for i in items if labels(i["metadata"].get("labels")) and fields(i)]
        return 200, {
            "apiVersion": "kubeflow.org/v1" if kind == "TFJobList" else "v1",
            "kind": kind,
            "metadata": {"resourceVersion": str(self._version)},
            "items": selected,
        }

    # routing
    def dispatch(self, method: str, path: str, query: dict, body: Any, content_type: str):
        """(code, payload) for the request, or a generator function of a log stream's chunks."""
        for pattern, methods in self._routes():
            m = re.fullmatch(pattern, path)
            if m:
                handler = methods.get(method)
                if handler is None:
                    raise ApiError(405, f"the server does not allow the method {method} on {path}")
                return handler(query=query, body=body, content_type=content_type, **m.groupdict())
        with self.lock:
            self.unhandled.append((method, path))
        raise ApiError(404, "the server could not find the requested resource")

    def _routes(self):
        ns = r"/api/v1/namespaces/(?P<namespace>[^/]+)"
        tf = TFJOB_PATH + r"/namespaces/(?P<namespace>[^/]+)/tfjobs"
        return [
            (r"/version", {"GET": self._version_info}),
            (r"/api/v1/pods", {"GET": self._list_pods}),
            (ns, {"GET": self._get_namespace}),
            (ns + "/pods", {"GET": self._list_pods, "POST": self._post_pod}),
            (
                ns + "/pods/(?P<name>[^/]+)",
                {"GET": self._get_pod, "PATCH": self._patch_pod, "DELETE": self._delete_pod_request},
            ),
            (ns + "/pods/(?P<name>[^/]+)/status", {"GET": self._get_pod}),
            (ns + "/pods/(?P<name>[^/]+)/log", {"GET": self._pod_log}),
            (ns + "/events", {"GET": self._list_events}),
            (r"/api/v1/events", {"GET": self._list_events}),
            (TFJOB_PATH + "/tfjobs", {"GET": self._list_tfjobs}),
            (tf, {"GET": self._list_tfjobs, "POST": self._post_tfjob}),
            (tf + "/(?P<name>[^/]+)", {"GET": self._get_tfjob, "DELETE": self._delete_tfjob}),
            (tf + "/(?P<name>[^/]+)/status", {"GET": self._get_tfjob}),
            (
                APPS_PATH + r"/namespaces/(?P<namespace>[^/]+)/deployments",
                {"GET": self._list_objects("Deployment"), "POST": self._post_object("Deployment")},
            ),
            (
                APPS_PATH + r"/namespaces/(?P<namespace>[^/]+)/deployments/(?P<name>[^/]+)(?:/status)?",
                {
                    "GET": self._get_object("Deployment"),
                    "PATCH": self._patch_object("Deployment"),
                    "DELETE": self._delete_object("Deployment"),
                },
            ),
            (
                NETWORKING_PATH + r"/namespaces/(?P<namespace>[^/]+)/networkpolicies",
                {"GET": self._list_objects("NetworkPolicy"), "POST": self._post_object("NetworkPolicy")},
            ),
            (
                NETWORKING_PATH + r"/namespaces/(?P<namespace>[^/]+)/networkpolicies/(?P<name>[^/]+)",
                {
                    "GET": self._get_object("NetworkPolicy"),
                    "PATCH": self._patch_object("NetworkPolicy"),
                    "DELETE": self._delete_object("NetworkPolicy"),
                },
            ),
            (ns + "/services", {"GET": self._list_objects("Service"), "POST": self._post_object("Service")}),
            (
                ns + "/services/(?P<name>[^/]+)",
                {
                    "GET": self._get_object("Service"),
                    "PATCH": self._patch_object("Service"),
                    "DELETE": self._delete_object("Service"),
                },
            ),
        ]

    def _version_info(self, **_):
        return 200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-standin", "platform": "linux/amd64"}

    def _get_namespace(self, namespace, **_):
        self._check_namespace(namespace)
        return 200, {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace},
            "status": {"phase": "Active"},
        }

    def _list_pods(self, query, namespace=None, **_):
        with self.lock:
            items = [p.obj for p in self.pods.values() if namespace in (None, p.namespace)]
            return self._list("PodList", items, query)

    def _post_pod(self, namespace, body, **_):
        with self.lock:
            return 201, self._create_pod(namespace, body)

    def _get_pod(self, namespace, name, **_):
        with self.lock:
            return 200, copy.deepcopy(self._pod_or_404(namespace, name).obj)

    def _patch_pod(self, namespace, name, body, content_type, **_):
        with self.lock:
            pod = self._pod_or_404(namespace, name)
            if "json-patch" in content_type:
                patched = _json_patch(pod.obj, body)
            elif "merge-patch" in content_type:
                patched = _merge_patch(pod.obj, body)
            else:
                raise ApiError(
                    415,
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: application/json-patch+json, application/merge-patch+json, "
                    f"application/strategic-merge-patch+json (not {content_type})",
                )
            if patched.get("spec") != pod.obj["spec"]:
                raise ApiError(
                    422,
                    f'Pod "{name}" is invalid: spec: Forbidden: the stand-in takes metadata patches '
                    "only (pod updates may not change most fields)",
                )
            for key in ("labels", "annotations"):
                if patched["metadata"].get(key) is not None:
                    pod.obj["metadata"][key] = patched["metadata"][key]
                else:
                    pod.obj["metadata"].pop(key, None)
            self._touch(pod.obj)
            return 200, copy.deepcopy(pod.obj)

    def _delete_pod_request(self, namespace, name, body, query, **_):
        grace = (body or {}).get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
        with self.lock:
            pod = self._pod_or_404(namespace, name)
            return 200, self._delete_pod(pod, None if grace is None else float(grace))

    def _pod_log(self, namespace, name, query, **_):
        follow, timestamps = _flag(query, "follow"), _flag(query, "timestamps")
        with self.lock:
            pod = self._pod_or_404(namespace, name)
            all_containers = pod.init_containers + pod.containers
            wanted = query.get("container")
            if not wanted:
                if len(pod.containers) != 1:
                    names = " ".join(c.name for c in pod.containers)
                    raise ApiError(400, f"a container name must be specified for pod {name}, choose one of: [{names}]")
                wanted = pod.containers[0].name
            container = next((c for c in all_containers if c.name == wanted), None)
            if container is None:
                raise ApiError(400, f"container {wanted} is not valid for pod {name}")
            if _flag(query, "previous"):
                if len(container.runs) < 2:
                    raise ApiError(400, f'previous terminated container "{wanted}" in pod "{name}" not found')
                run, follow = container.runs[-2], False
            elif not container.runs:
                reason = container.state.get("waiting", {}).get("reason", "ContainerCreating")
                raise ApiError(400, f'container "{wanted}" in pod "{name}" is waiting to start: {reason}')
            else:
                run = container.runs[-1]
        since = float(query["sinceSeconds"]) if query.get("sinceSeconds") else None
        if query.get("sinceTime"):
            since = time.time() - dt.datetime.fromisoformat(query["sinceTime"].replace("Z", "+00:00")).timestamp()
        tail = int(query["tailLines"]) if query.get("tailLines") else None
        limit = int(query["limitBytes"]) if query.get("limitBytes") else None

        def format_line(at: float, line: bytes) -> bytes:
            return (_log_time(at).encode() + b" " + line) if timestamps else line

        def chunks():
            sent_bytes = 0
            with self.changed:
                lines = [(at, line) for at, line in run.lines if since is None or at >= time.time() - since]
                start = len(run.lines)
            if tail is not None:
                lines = lines[-tail:] if tail else []
            for at, line in lines:
                data = format_line(at, line)
                if limit is not None:
                    data = data[: max(limit - sent_bytes, 0)]
                sent_bytes += len(data)
                yield data
            while follow and (limit is None or sent_bytes < limit):
                with self.changed:
                    while len(run.lines) == start and not run.done and not self.stopping.is_set():
                        self.changed.wait(0.5)
                    new, start = run.lines[start:], len(run.lines)
                    finished = run.done or self.stopping.is_set()
                for at, line in new:
                    data = format_line(at, line)
                    sent_bytes += len(data)
                    yield data
                if finished and not new:
                    return

        return chunks

    def _list_events(self, query, namespace=None, **_):
        with self.lock:
            items = [e for e in self.events if namespace in (None, e["metadata"]["namespace"])]
            return self._list("EventList", items, query)

    # tfjobs
    def _list_tfjobs(self, query, namespace=None, **_):
        with self.lock:
            items = [j.obj for j in self.tfjobs.values() if namespace in (None, j.namespace)]
            return self._list("TFJobList", items, query)

    def _post_tfjob(self, namespace, body, **_):
        with self.lock:
            self._check_namespace(namespace)
            body = body or {}
            if (body.get("apiVersion"), body.get("kind")) != ("kubeflow.org/v1", "TFJob"):
                raise ApiError(400, f"not a kubeflow.org/v1 TFJob: {body.get('apiVersion')} {body.get('kind')}")
            meta = body.get("metadata") or {}
            if meta.get("namespace") not in (None, namespace):
                raise ApiError(
                    400, "the namespace of the provided object does not match the namespace sent on the request"
                )
            name = meta.get("name", "")
            existing = self.tfjobs.get((namespace, name))
            if existing is not None:
                being_deleted = "object is being deleted: " if existing.deleting else ""
                raise ApiError(
                    409,
                    f'{being_deleted}tfjobs.kubeflow.org "{name}" already exists',
                    details={"name": name, "group": "kubeflow.org", "kind": "tfjobs"},
                )
            self._validate_tfjob(name, body)
            obj = copy.deepcopy(body)
            obj["metadata"] = self._new_meta(meta, namespace)
            obj["metadata"]["generation"] = 1
            job = _TFJob(self, obj)
            self.tfjobs[(namespace, obj["metadata"]["name"])] = job
            self.created.append(
                {"kind": "TFJob", "namespace": namespace, "name": obj["metadata"]["name"], "body": copy.deepcopy(body)}
            )
            response = copy.deepcopy(obj)
            message = f"TFJob {obj['metadata']['name']} is created."
            job._condition("Created", "TFJobCreated", message)  # the operator's onOwnerCreateFunc
            job._event("TFJobCreated", message)
            self._touch(obj)
            job.thread.start()
            return 201, response

    def _validate_tfjob(self, name: str, body: dict) -> None:
        """The CRD's schema (types) and the operator's validation webhook, in part."""
        invalid = f'TFJob.kubeflow.org "{name}" is invalid'
        if not DNS1123_LABEL.match(name or "") or len(name) > 63:
            raise ApiError(422, f"{invalid}: metadata.name: Invalid value: {name!r}: a DNS-1035/1123 label")
        replicas = (body.get("spec") or {}).get("tfReplicaSpecs")
        if not isinstance(replicas, dict) or not replicas:
            raise ApiError(422, f"{invalid}: spec.tfReplicaSpecs: Required value")
        for rtype, replica in replicas.items():
            where = f"spec.tfReplicaSpecs[{rtype}]"
            if rtype not in TF_REPLICA_TYPES:
                raise ApiError(
                    422,
                    f"{invalid}: {where}: Unsupported value: {rtype!r}: supported values: "
                    + ", ".join(f'"{t}"' for t in TF_REPLICA_TYPES),
                )
            count = replica.get("replicas", 1)
            if not isinstance(count, int) or isinstance(count, bool):
                raise ApiError(
                    422,
                    f'{invalid}: {where}.replicas: Invalid value: "{type(count).__name__}": '
                    f"{where}.replicas in body must be of type integer: {count!r}",
                )
            if replica.get("restartPolicy", "Never") not in ("Always", "OnFailure", "Never", "ExitCode"):
                raise ApiError(
                    422, f"{invalid}: {where}.restartPolicy: Unsupported value: {replica['restartPolicy']!r}"
                )
            containers = ((replica.get("template") or {}).get("spec") or {}).get("containers") or []
            if not containers:
                raise ApiError(422, f"{invalid}: {where}.template.spec.containers: Required value")
            if not any(c.get("name") == "tensorflow" for c in containers):
                raise ApiError(
                    422,
                    f"{invalid}: {where}.template.spec.containers: Required value: There is no "
                    "container named tensorflow",
                )
            for c in containers:
                if not c.get("image"):
                    raise ApiError(422, f"{invalid}: {where}.template.spec.containers.image: Required value")
        policy = ((body.get("spec") or {}).get("runPolicy") or {}).get("cleanPodPolicy")
        if policy not in (None, "All", "Running", "None"):
            raise ApiError(422, f"{invalid}: spec.runPolicy.cleanPodPolicy: Unsupported value: {policy!r}")

    def _get_tfjob(self, namespace, name, **_):
        with self.lock:
            job = self.tfjobs.get((namespace, name))
            if job is None:
                raise _not_found("tfjobs.kubeflow.org", name)
            return 200, copy.deepcopy(job.obj)

    def _delete_tfjob(self, namespace, name, body, query, **_):
        policy = (body or {}).get("propagationPolicy") or query.get("propagationPolicy") or "Background"
        with self.lock:
            job = self.tfjobs.get((namespace, name))
            if job is None:
                raise _not_found("tfjobs.kubeflow.org", name)
            self.deleted.append(("TFJob", namespace, name))
            job.deleting = True
            job.obj["metadata"]["deletionTimestamp"] = _time()
            if policy == "Foreground":
                job.obj["metadata"].setdefault("finalizers", []).append("foregroundDeletion")
            for pod in job._pods():  # the garbage collector: the job's pods go with it
                self._delete_pod(pod, None)
            self._touch(job.obj)
            response = copy.deepcopy(job.obj)
            if policy != "Foreground":
                del self.tfjobs[(namespace, name)]
            self.changed.notify_all()
            return 200, response

    # deployments and services: stored objects; a Deployment's rollout is complete at once (no pods run)
    def deployment(self, namespace: str, name: str) -> dict | None:
        with self.lock:
            return copy.deepcopy(self.objects.get(("Deployment", namespace, name)))

    def network_policy(self, namespace: str, name: str) -> dict | None:
        with self.lock:
            return copy.deepcopy(self.objects.get(("NetworkPolicy", namespace, name)))

    def service(self, namespace: str, name: str) -> dict | None:
        with self.lock:
            return copy.deepcopy(self.objects.get(("Service", namespace, name)))

    def _settle(self, kind: str, obj: dict) -> None:
        """What the controllers fill in: a Service's clusterIP, a Deployment's completed rollout."""
        if kind == "NetworkPolicy":
            return  # stored as it is (no controller here enforces it)
        if kind == "Service":
            obj.setdefault("spec", {}).setdefault("clusterIP", f"10.96.0.{len(self.objects) % 250 + 2}")
            obj.setdefault("spec", {}).setdefault("type", "ClusterIP")
            obj.setdefault("status", {"loadBalancer": {}})
            return
        replicas = obj.setdefault("spec", {}).setdefault("replicas", 1)
        generation = obj["metadata"].get("generation", 1)
        obj["status"] = {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ],
        }

    def _object_or_404(self, kind: str, namespace: str, name: str) -> dict:
        obj = self.objects.get((kind, namespace, name))
        if obj is None:
            group = {"Service": "", "Deployment": ".apps", "NetworkPolicy": ".networking.k8s.io"}[kind]
            raise _not_found(OBJECT_KINDS[kind][1] + group, name)
        return obj

    def _list_objects(self, kind: str):
        def handler(query, namespace=None, **_):
            with self.lock:
                items = [o for (k, ns, _n), o in self.objects.items() if k == kind and namespace in (None, ns)]
                code, payload = self._list(f"{kind}List", items, query)
                payload["apiVersion"] = OBJECT_KINDS[kind][0]
                return code, payload

        return handler

    def _post_object(self, kind: str):
        def handler(namespace, body, **_):
            with self.lock:
                self._check_namespace(namespace)
                body = body or {}
                if (body.get("apiVersion"), body.get("kind")) != (OBJECT_KINDS[kind][0], kind):
                    raise ApiError(
                        400, f"not a {OBJECT_KINDS[kind][0]} {kind}: {body.get('apiVersion')} {body.get('kind')}"
                    )
                meta = body.get("metadata") or {}
                if meta.get("namespace") not in (None, namespace):
                    raise ApiError(
                        400, "the namespace of the provided object does not match the namespace sent on the request"
                    )
                name = meta.get("name") or ""
                if not DNS1123_LABEL.match(name):
                    raise ApiError(422, f'{kind} "{name}" is invalid: metadata.name: Invalid value: {name!r}')
                if (kind, namespace, name) in self.objects:
                    raise ApiError(
                        409,
                        f'{OBJECT_KINDS[kind][1]} "{name}" already exists',
                        details={"name": name, "kind": OBJECT_KINDS[kind][1]},
                    )
                if kind == "Deployment":
                    spec = body.get("spec") or {}
                    selector = (spec.get("selector") or {}).get("matchLabels") or {}
                    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
                    if not selector or any(labels.get(k) != v for k, v in selector.items()):
                        raise ApiError(
                            422,
                            f'Deployment "{name}" is invalid: spec.template.metadata.labels: '
                            "`selector` does not match template `labels`",
                        )
                obj = copy.deepcopy(body)
                obj["metadata"] = self._new_meta(meta, namespace)
                obj["metadata"]["generation"] = 1
                self._settle(kind, obj)
                self.objects[(kind, namespace, name)] = obj
                self.created.append({"kind": kind, "namespace": namespace, "name": name, "body": copy.deepcopy(body)})
                self._touch(obj)
                self.changed.notify_all()
                return 201, copy.deepcopy(obj)

        return handler

    def _get_object(self, kind: str):
        def handler(namespace, name, **_):
            with self.lock:
                return 200, copy.deepcopy(self._object_or_404(kind, namespace, name))

        return handler

    def _patch_object(self, kind: str):
        def handler(namespace, name, body, content_type, **_):
            with self.lock:
                obj = self._object_or_404(kind, namespace, name)
                if "json-patch" in content_type:
                    patched = _json_patch(obj, body)
                elif "merge-patch" in content_type or content_type.startswith("application/json"):
                    patched = _merge_patch(obj, body)
                else:
                    raise ApiError(415, f"the body of the request was in an unknown format ({content_type})")
                patched["metadata"] = {
                    **obj["metadata"],
                    **{k: v for k, v in patched["metadata"].items() if k in ("labels", "annotations")},
                }
                if patched.get("spec") != obj.get("spec"):
                    patched["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
                self._settle(kind, patched)
                self.objects[(kind, namespace, name)] = patched
                self._touch(patched)
                self.changed.notify_all()
                return 200, copy.deepcopy(patched)

        return handler

    def _delete_object(self, kind: str):
        def handler(namespace, name, **_):
            with self.lock:
                obj = self._object_or_404(kind, namespace, name)
                del self.objects[(kind, namespace, name)]
                self.deleted.append((kind, namespace, name))
                self.changed.notify_all()
                return 200, {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Success",
                    "details": {"name": name, "kind": OBJECT_KINDS[kind][1], "uid": obj["metadata"]["uid"]},
                }

        return handler
