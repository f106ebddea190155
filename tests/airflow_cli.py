"""What the tests that start Airflow's own services share: free loopback ports, the Airflow CLI
with a clear failure, and the tails of the services' logs for a failure message."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
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


def log_tails(logs: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(logs.glob("*.log")))


def services_env(taxi_home: Path) -> dict:
    """The environment of Airflow services on loopback, writing into `taxi_home`."""
    port = free_port()
    return {
        **os.environ,
        "TAXI_HOME": str(taxi_home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
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


@contextlib.contextmanager
def airflow_services(env: dict, logs: Path, unpause: tuple[str, ...]) -> Iterator[Services]:
    """api-server + scheduler + dag-processor, each in a process group of its own (stopping a service
    also stops its children: log server, workers); yields once the DAGs `unpause` are parsed and unpaused."""
    procs = {}
    try:
        for name in ("api-server", "scheduler", "dag-processor"):
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "airflow", name],
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
