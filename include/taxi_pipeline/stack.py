"""The production-shaped local stack (`make stack`): Airflow as teams run it, on this machine.

PostgreSQL for the metadata DB (taxi_pipeline.postgres, a cluster of the project's own), Redis as
the Celery broker, and Airflow's api-server, scheduler, dag-processor, triggerer and two Celery
workers, with the warm runtime beside the workers. Every service listens on loopback only, with a
generated password where it takes one; their data and logs are under `$TAXI_HOME/stack/` (as root,
PostgreSQL's cluster is under /var/lib/taxi-mlops/, linked from there: its server runs as the user
`postgres`, which cannot enter the private TAXI_HOME). Ctrl-C, or `make stack-stop` from another
terminal, stops everything it started. `make run` keeps the embedded SQLite default.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from taxi_pipeline import postgres
from taxi_pipeline.settings import Settings, airflow_env, secret_file, ui_login

POSTGRES_PORT = int(os.environ.get("TAXI_STACK_POSTGRES_PORT", "15432"))
REDIS_PORT = int(os.environ.get("TAXI_STACK_REDIS_PORT", "16379"))
CELERY_WORKERS = 2
WORKER_CONCURRENCY = 4  # task processes per worker; the pools bound the heavy ML steps (taxi_pipeline.pools)
DATABASE = "airflow"
AIRFLOW_SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")


@dataclass(frozen=True)
class StackPaths:
    home: Path  # TAXI_HOME

    @property
    def folder(self) -> Path:
        return self.home / "stack"

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    @property
    def pid_file(self) -> Path:
        return self.folder / "stack.pid"

    @property
    def redis(self) -> Path:
        return self.folder / "redis"

    @property
    def postgres(self) -> Path:
        """The cluster's folder: under TAXI_HOME, or as root beside it (see the module's doc)."""
        if os.geteuid() != 0:
            return self.folder / "postgres"
        key = hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:12]
        return Path("/var/lib/taxi-mlops") / key / "postgres"


def start_redis(paths: StackPaths, port: int = REDIS_PORT, log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """redis-server on 127.0.0.1:port with a generated password (in its 0600 config file, not on a
    command line), no persistence (the broker's queue is rebuilt by the scheduler)."""
    if not shutil.which("redis-server"):
        raise RuntimeError("redis-server is not installed: apt-get install redis-server (make stack does)")
    redis_password = secret_file(paths.redis / "password")
    config = paths.redis / "redis.conf"
    config.write_text(
        f"bind 127.0.0.1\nport {port}\nprotected-mode yes\nrequirepass {redis_password}\ndir {paths.redis}\n"
        'save ""\nappendonly no\ndaemonize no\n'
    )
    config.chmod(0o600)
    server = subprocess.Popen(
        ["redis-server", str(config)],
        stdout=open(log or paths.logs / "redis.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return server, redis_password


def celery_env(metadata_url: str, redis_password: str, redis_port: int) -> dict[str, str]:
    """The CeleryExecutor's settings: Redis as the broker, the metadata DB as the result backend."""
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://:{redis_password}@127.0.0.1:{redis_port}/0",
        # the URL keeps +psycopg2: without it SQLAlchemy 2.1 picks psycopg 3, which is not installed
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata_url,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        # a task running longer than this is delivered again (a second copy): longer than any step runs
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
    }


def stack_env(settings: Settings, cluster: postgres.Cluster, redis_password: str, redis_port: int = REDIS_PORT):
    """The environment of every Airflow service of the stack: the project's Airflow settings, the
    PostgreSQL metadata DB, and the CeleryExecutor (celery_env)."""
    url = cluster.url(DATABASE)
    secrets_of_the_stack = {
        # one JWT secret for every service: the workers' task processes call the api-server's execution
        # API with tokens it must accept; and one key for the workers' log servers and the api-server
        "AIRFLOW__API_AUTH__JWT_SECRET": secret_file(StackPaths(settings.home).folder / "jwt_secret"),
        "AIRFLOW__API__SECRET_KEY": secret_file(StackPaths(settings.home).folder / "secret_key"),
    }
    return {
        **os.environ,
        **airflow_env(settings),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url,
        **secrets_of_the_stack,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://127.0.0.1:8080/execution/",
        **celery_env(url, redis_password, redis_port),
    }


def service_commands(
    services: tuple[str, ...] = AIRFLOW_SERVICES, workers: int = CELERY_WORKERS
) -> dict[str, list[str]]:
    """Each Airflow service's command, and `workers` Celery workers.

    No service starts a log server: they all run on this machine and write one log folder, which the
    api-server reads (a log server would listen on every interface, and need a port per process).
    """
    airflow = [sys.executable, "-m", "airflow"]
    serving_logs = ("scheduler", "triggerer")  # the services that would start one
    commands = {name: [*airflow, name, *(["--skip-serve-logs"] if name in serving_logs else [])] for name in services}
    for number in range(1, workers + 1):
        commands[f"worker-{number}"] = [
            *airflow,
            "celery",
            "worker",
            "--celery-hostname",
            f"worker-{number}@%h",
            "--skip-serve-logs",
        ]
    return commands


def wait_until(what: str, ready, processes: dict[str, subprocess.Popen], logs: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        dead = [name for name, process in processes.items() if process.poll() is not None]
        if dead:
            tails = "\n".join(f"--- {n}.log\n{(logs / f'{n}.log').read_text()[-1500:]}" for n in dead)
            raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}:\n{tails}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s (logs in {logs})")
        time.sleep(1)


def run_stack(settings: Settings, say=print) -> int:
    """Start the stack, say where the UI is, and run until Ctrl-C or `make stack-stop`."""
    from taxi_pipeline.pools import ensure_pools
    from taxi_pipeline.warm_runtime import warm_runtime

    paths = StackPaths(settings.home)
    paths.logs.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.geteuid() == 0:
        for folder in (paths.postgres.parent.parent, paths.postgres.parent):  # the server's user passes through
            folder.mkdir(exist_ok=True)
            folder.chmod(0o711)
        link = paths.folder / "postgres"
        if not link.is_symlink():
            link.symlink_to(paths.postgres)
    signal.signal(signal.SIGTERM, _interrupt)  # make stack-stop: stop as Ctrl-C does
    paths.pid_file.write_text(str(os.getpid()))
    processes: dict[str, subprocess.Popen] = {}
    cluster = postgres.Cluster(paths.postgres, POSTGRES_PORT)
    try:
        say(f"PostgreSQL on 127.0.0.1:{POSTGRES_PORT} ({paths.postgres})")
        cluster.start()
        cluster.create_database(DATABASE)
        redis, redis_password = start_redis(paths)
        processes["redis"] = redis
        say(f"Redis on 127.0.0.1:{REDIS_PORT}")
        env = stack_env(settings, cluster, redis_password)
        say("Migrating the metadata DB and creating the pools")
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL
        )
        ensure_pools(env)
        with warm_runtime(settings, log_path=paths.logs / "warm_runtime.log"):
            for name, command in service_commands().items():
                processes[name] = subprocess.Popen(
                    command,
                    env=env,
                    stdout=open(paths.logs / f"{name}.log", "w"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            say(f"Started {', '.join(processes)}; their logs: {paths.logs}")
            wait_until("the api-server", lambda: _answers(8080), processes, paths.logs, timeout=300)
            login = ui_login(settings) or "see the api-server's log"
            say(f"Airflow UI: http://127.0.0.1:8080   login: {login}   (Ctrl-C or make stack-stop stops it)")
            while True:
                dead = [name for name, process in processes.items() if process.poll() is not None]
                if dead:
                    say(f"{', '.join(dead)} exited (see {paths.logs}); stopping the stack")
                    return 1
                time.sleep(2)
    except KeyboardInterrupt:
        say("Stopping the stack")
        return 0
    finally:
        for process in reversed(list(processes.values())):
            _stop(process)
        cluster.stop()
        paths.pid_file.unlink(missing_ok=True)


def stop_stack(settings: Settings, say=print) -> int:
    """`make stack-stop`: ask a running stack to stop (SIGTERM to its supervisor) and wait for it."""
    pid_file = StackPaths(settings.home).pid_file
    if not pid_file.exists():
        say("No stack is running for this TAXI_HOME")
        return 0
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        say("The stack had already stopped")
        return 0
    deadline = time.monotonic() + 120
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(1)
    say("Stopped" if not pid_file.exists() else f"The stack (pid {pid}) did not stop within 120 s")
    return 0 if not pid_file.exists() else 1


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _answers(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2):
            return True
    except OSError:
        return False


def _stop(process: subprocess.Popen, timeout: float = 60) -> None:
    """Stop a service and its children (each runs in a process group of its own)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
