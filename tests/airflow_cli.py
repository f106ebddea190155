"""What the tests that start Airflow's own services share: free loopback ports, the Airflow CLI
with a clear failure, and the tails of the services' logs for a failure message."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def airflow(*args: str, env: dict) -> str:
    done = subprocess.run([sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def list_runs(dag_id: str, env: dict) -> list[dict]:
    out = airflow("dags", "list-runs", dag_id, "-o", "json", env=env)
    # the JSON is the last line: the CLI may print warnings (e.g. no graphviz) before it
    return json.loads(next((line for line in reversed(out.splitlines()) if line.startswith("[")), "[]"))


def run_state(env: dict, dag_id: str, run_id: str) -> str | None:
    """The run's state once it has finished, else None."""
    run = next((r for r in list_runs(dag_id, env) if r["run_id"] == run_id), None)
    return run["state"] if run and run["state"] in ("success", "failed") else None


def add_user(env: dict, home: Path, user: str, role: str = "admin") -> str:
    """A user of the simple auth manager for services started with `env` (call before starting
    them): returns its generated password."""
    password = secrets.token_urlsafe(12)
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({user: password}))
    env.update(
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{user}:{role}",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
    )
    return password


def api_token(env: dict, user: str, password: str) -> str:
    body = json.dumps({"username": user, "password": password}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}/auth/token",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["access_token"]


def api(env: dict, token: str, method: str, path: str, body: dict | None = None) -> dict:
    """A call of Airflow's REST API (/api/v2) with the user's token; {} for a GET of what is not there yet."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}/api/v2{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        if error.code == 404 and method == "GET":
            return {}  # not created yet
        raise AssertionError(f"{method} {path}: HTTP {error.code} {error.read()[:2000]!r}") from error


def task_states(env: dict, token: str, dag_id: str, run_id: str) -> dict[str, str]:
    answer = api(env, token, "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
    return {ti["task_id"]: ti["state"] for ti in answer["task_instances"]}


def tasks_per_worker(logs: Path, run_id: str) -> dict[str, set[str]]:
    """The tasks of `run_id` each Celery worker of `airflow_services(celery=True)` ran, from its log."""
    pattern = re.compile(rf"run_id={re.escape(run_id)}/task_id=([^/]+)/")
    return {p.stem: set(pattern.findall(p.read_text())) for p in sorted(logs.glob("worker-*.log"))}


def log_tails(logs: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(logs.glob("*.log")))


def services_env(taxi_home: Path, metadata_db: str) -> dict:
    """The environment of Airflow services on loopback, writing into `taxi_home`, with their metadata
    in the PostgreSQL database `metadata_db` (a URL: SQLite cannot take several services writing)."""
    port = free_port()
    return {
        **os.environ,
        "TAXI_HOME": str(taxi_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
    }


class Services:
    """Running Airflow services: `check()` fails at once, with the logs' tails, if one has exited."""

    def __init__(self, env: dict, logs: Path, procs: dict[str, subprocess.Popen]):
        self.env, self.logs, self.procs = env, logs, procs

    def check(self) -> None:
        dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
        assert not dead, f"Airflow's {', '.join(dead)} exited:\n{log_tails(self.logs)}"

    def wait_for(self, what: str, done, timeout: float, every: float = 3):
        """Poll `done()` until it returns something true (returned), a service dies, or `timeout`."""
        deadline = time.monotonic() + timeout
        while not (result := done()):
            self.check()
            assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s\n{log_tails(self.logs)}"
            time.sleep(every)
        return result

    def answer_approval(self, token: str, dag_id: str, run_id: str, answer: str, timeout: float) -> dict:
        """Wait until the run's approve_champion asks a person, then answer it (Approve or Reject) through
        the REST API, as the UI's form does; returns the answered details (the question, who answered)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/approve_champion"

        def waiting():
            state = api(self.env, token, "GET", path).get("state")
            finished = ("success", "skipped", "failed", "upstream_failed")
            assert state not in finished, f"run {run_id}: approve_champion {state} without asking anyone"
            return state == "awaiting_input"

        self.wait_for(f"run {run_id} asking for approval", waiting, timeout=timeout, every=5)
        asked = api(self.env, token, "GET", f"{path}/-1/hitlDetails")
        answered = api(self.env, token, "PATCH", f"{path}/-1/hitlDetails", {"chosen_options": [answer]})
        return {**answered, "body": asked.get("body")}


@contextlib.contextmanager
def airflow_services(env: dict, logs: Path, unpause: tuple[str, ...], celery: bool = False) -> Iterator[Services]:
    """api-server, scheduler, dag-processor and triggerer (the LocalExecutor), or with `celery` as
    `make stack` runs them: the CeleryExecutor with Redis and two Celery workers. Each service runs in a
    process group of its own (stopping one also stops its children, the task processes);
    yields once the DAGs `unpause` are parsed and unpaused."""
    from taxi_pipeline import stack

    procs = {}
    workers = 0
    try:
        if celery:
            redis_port = free_port()
            paths = stack.StackPaths(Path(env["TAXI_HOME"]))
            procs["redis"], password = stack.start_redis(paths, redis_port, log=logs / "redis.log")
            env.update(stack.celery_env(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], password, redis_port))
            workers = stack.CELERY_WORKERS
        for name, command in stack.service_commands(stack.AIRFLOW_SERVICES, workers).items():
            procs[name] = subprocess.Popen(
                command,
                env=env,
                start_new_session=True,
                stdout=open(logs / f"{name}.log", "w"),
                stderr=subprocess.STDOUT,
            )
        services = Services(env, logs, procs)

        def parsed() -> bool:
            listed = airflow("dags", "list", "-o", "plain", env=env)
            return all(dag_id in listed for dag_id in unpause)

        services.wait_for("the dag-processor parsing the DAGs", parsed, timeout=180)
        for dag_id in unpause:
            airflow("dags", "unpause", dag_id, env=env)  # the scheduler queues no task of a paused DAG
        yield services
    finally:
        for proc in procs.values():
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
