"""The project's command line (what `make run` and `make airflow` call).

python -m taxi_pipeline.cli run [--date 2016-01-01] [--dag taxi_daily_retrain]
python -m taxi_pipeline.cli load-warehouse
python -m taxi_pipeline.cli airflow <airflow args...>
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from taxi_pipeline.pools import ensure_pools
from taxi_pipeline.processes import stop_process
from taxi_pipeline.run_view import RunView, TaskRow, failure_summary, finished_line, output_to, task_log
from taxi_pipeline.settings import REPO_ROOT, Settings, airflow_env, get_settings, private_home, ui_login

DEFAULT_DATE = "2016-01-01"


def ensure_warehouse(settings: Settings, say=print) -> None:
    from taxi_pipeline.sample_data import ensure_sample_files
    from taxi_pipeline.warehouse import load_trips

    if settings.warehouse_path.exists():
        return
    files = ensure_sample_files(settings.data_dir)
    rows = load_trips(settings.warehouse_path, files)
    say(f"Loaded {rows} trips from the tfx sample into {settings.warehouse_path}")


def _has_schema(db: Path) -> bool:
    """Whether the SQLite file holds Airflow's schema (connecting to a missing file creates an empty one)."""
    import sqlite3

    if not db.exists():
        return False
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchone() is not None


def ensure_airflow_db(settings: Settings) -> None:
    """Create (or upgrade) the metadata database of the project's Airflow home."""
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    marker = settings.airflow_home / ".migrated-with-pools"
    if marker.exists() and _has_schema(settings.airflow_home / "airflow.db"):  # a removed DB is made again
        return
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        env={**os.environ, **airflow_env(settings)},
        stdout=subprocess.DEVNULL,
    )
    ensure_pools(airflow_env(settings))
    marker.touch()


def run(args) -> int:
    """One run of the DAG in this process: a live view of its tasks on the terminal and every log
    line in a file (`--verbose`: the logs on the terminal, as they come), then the summary."""
    settings = get_settings()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    log_path = settings.home / "logs" / f"run_{args.dag}_{args.date}_{stamp}.log"
    with contextlib.ExitStack() as stack:
        if args.verbose:
            out = sys.stdout
        else:
            print(f"Full log: {log_path}", flush=True)
            out = stack.enter_context(output_to(log_path))
        return _run(args, settings, out, None if args.verbose else log_path)


def _run(args, settings: Settings, out: TextIO, log_path: Path | None) -> int:
    say = functools.partial(print, file=out, flush=True)
    ensure_warehouse(settings, say)
    ensure_airflow_db(settings)
    os.environ.update(airflow_env(settings))  # before Airflow is imported

    from airflow.dag_processing.dagbag import DagBag

    from taxi_pipeline.dag_defaults import run_in_process
    from taxi_pipeline.warm_runtime import warm_runtime

    logical_date = datetime.strptime(args.date, "%Y-%m-%d").replace(tzinfo=UTC)
    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    if args.dag not in bag.dags:
        say(f"No DAG {args.dag!r}; import errors: {bag.import_errors}")
        return 2
    dag = bag.dags[args.dag]
    say(
        f"Running {args.dag} on the {settings.platform} platform for logical date {args.date} "
        f"(TAXI_HOME={settings.home})"
    )
    conf = {}
    if "require_approval" in dag.params and dag.params["require_approval"] != "never":
        # a run in this process has no one to answer the approval gate (make stack or make airflow has)
        conf["require_approval"] = "never"
        say("require_approval=never: no person answers an approval in `make run` (the UI's runs ask)")
    view = RunView(dag, logical_date, out) if log_path else contextlib.nullcontext()
    with warm_runtime(settings), view:  # the runtime steps skip their library imports (taxi_model.warm)
        dag_run = run_in_process(dag, logical_date=logical_date, run_conf=conf or None)
    layout = print_summary(dag, dag_run, say, tasks=log_path is None)
    if dag_run.state != "success":
        if log_path:
            print_failures(dag_run, log_path, say)
        return 1
    if args.dag == "taxi_daily_retrain":
        serve_and_predict(settings, layout, out)
    return 0


def print_failures(dag_run, log_path: Path, say) -> None:
    """Each failed task: the end of its log, and where the rest is."""
    for ti in dag_run.get_task_instances():
        if ti.state != "failed":
            continue
        line, lines = task_log(log_path, ti.task_id)
        error, tail = failure_summary(lines)
        say(f"\nTask {ti.task_id} failed: {error or 'see its log'}")
        if tail:
            say("The end of its log:")
        for text in tail:
            say(f"  {text}")
        say(f"All of it: less +{line} {log_path}" if line else f"Its log: {log_path}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_predict(settings: Settings, layout, out: TextIO = sys.stdout, rows: int = 5) -> None:
    """Start the local model server on the serving root, ask it about a few real eval rows over
    REST and gRPC (the champion model `taxi`, label `stable`), and stop it."""
    from taxi_pipeline.serving_root import CHAMPION_MODEL, STABLE_LABEL, ServingRoot

    say = functools.partial(print, file=out, flush=True)
    if STABLE_LABEL not in ServingRoot(settings.serving_root).labels(CHAMPION_MODEL):
        say(f"\nNo {CHAMPION_MODEL}:{STABLE_LABEL} model is served (nothing was blessed); no predictions.")
        return
    rest_port, grpc_port = free_port(), free_port()
    log_path = settings.home / "model_server.log"
    say(
        f"\nStarting the local model server on {settings.serving_root} "
        f"(REST 127.0.0.1:{rest_port}, gRPC 127.0.0.1:{grpc_port}; log {log_path})"
    )
    with open(log_path, "w") as log_file:
        server = subprocess.Popen(
            [
                settings.runtime_python,
                "-m",
                "taxi_model.serving.server",
                "--serving_root",
                settings.serving_root,
                "--rest_port",
                str(rest_port),
                "--grpc_port",
                str(grpc_port),
                "--monitoring_config_file",  # metrics on the REST port, as `make serve`
                str(REPO_ROOT / "include" / "taxi_model" / "serving" / "monitoring.config"),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            for protocol, port, wait in (("rest", rest_port, 120), ("grpc", grpc_port, 30)):
                say(f"Predictions of {CHAMPION_MODEL}:{STABLE_LABEL} over {protocol.upper()} for {rows} eval rows:")
                client = subprocess.run(
                    [
                        settings.runtime_python,
                        "-m",
                        "taxi_model.serving.client",
                        "--csv",
                        layout.split_glob("eval"),
                        "--rows",
                        str(rows),
                        "--model",
                        CHAMPION_MODEL,
                        "--label",
                        STABLE_LABEL,
                        "--protocol",
                        protocol,
                        "--port",
                        str(port),
                        "--wait",
                        str(wait),
                    ],
                    stdout=out,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                if client.returncode != 0:  # TensorFlow's start-up chatter is on stderr: shown only on failure
                    raise RuntimeError(f"the model server did not answer over {protocol}:\n{client.stderr[-2000:]}")
        finally:
            stop_process(server, timeout=20)


def print_summary(dag, dag_run, say=print, tasks: bool = True):
    """The run's window, artifacts, validation verdicts, comparisons and served models (and each
    task's state and time, unless the live view showed them)."""
    from taxi_pipeline.run_context import run_layout, window_plan

    context = {
        "dag": dag,
        "run_id": dag_run.run_id,
        "data_interval_start": dag_run.data_interval_start,
        "data_interval_end": dag_run.data_interval_end,
        "params": {**{k: v.value for k, v in dag.params.items()}, **(dag_run.conf or {})},
    }
    layout = run_layout(context)
    say()
    say(f"Run {dag_run.run_id}: {dag_run.state}")
    say(f"  window:    {layout.window}")
    say(f"  artifacts: {layout.run_dir}")
    instances = dag_run.get_task_instances() if tasks else []
    for ti in sorted(instances, key=lambda t: (t.start_date or dag_run.start_date, t.task_id)):
        started = ti.start_date if ti.end_date else None  # a time only for the tasks that ended
        say(finished_line(TaskRow(ti.task_id, ti.state or "", started, ti.end_date), ti.end_date))
    plan = window_plan(context)
    for name in plan.checks:
        report = Path(layout.validation_dir(name)) / "report.json"
        if report.exists():
            verdict = json.loads(report.read_text())
            title = f"window {name} {plan.windows[name]}" if name else "rows per split"
            say(f"  {title}: {verdict['rows']}")
            say(
                f"    validation: {'passed' if verdict['success'] else 'FAILED'} "
                f"({layout.validation_dir(name)}/summary.txt)"
            )
            for line in verdict["failures"]:
                say(f"    - {line}")
    for title, comparison in (
        ("Variants", Path(layout.run_dir) / "comparison.txt"),
        ("Recent vs long window", Path(layout.window_comparison_dir) / "comparison.txt"),
    ):
        if comparison.exists():
            say(f"\n{title}:")
            say(comparison.read_text())
    scores = Path(layout.scores_dir) / "summary.json"
    if scores.exists():
        summary = json.loads(scores.read_text())
        say(
            f"  scored:    {summary['rows']} trips with taxi version {summary['model_version']}, into the "
            f"predictions table ({get_settings().predictions_path})"
        )
    monitored = Path(layout.monitor_dir) / "result.json"
    if monitored.exists():
        result = json.loads(monitored.read_text())
        version = result["model_version"]
        say(f"  monitor:   {result['verdict']}, {result['rows']} trips scored by taxi version {version}")
        for line in result["crossed"]:
            say(f"    - {line}")
        say(f"  report:    {layout.report_path('monitor')}")
    if dag.dag_id != "taxi_daily_retrain":
        return layout
    from taxi_model.variants import VARIANTS
    from taxi_pipeline.serving_root import CHAMPION_MODEL, ServingRoot, model_name

    serving_root = ServingRoot(get_settings().serving_root)
    say(f"Served models ({serving_root.uri}):")
    for model in [model_name(v) for v in VARIANTS] + [CHAMPION_MODEL]:
        versions = serving_root.versions(model)
        labels = serving_root.labels(model)
        say(f"  {model:<16} versions {versions or 'none'}{'  labels ' + str(labels) if labels else ''}")
    return layout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taxi")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="one full run of a DAG for a logical date, on the embedded platform")
    run_p.add_argument("--date", default=DEFAULT_DATE, help=f"logical date YYYY-MM-DD (default {DEFAULT_DATE})")
    run_p.add_argument("--dag", default="taxi_daily_retrain")
    run_p.add_argument("--verbose", action="store_true", help="every log line on the terminal, no live view")
    sub.add_parser("load-warehouse", help="fetch the sample and (re)load the local warehouse")
    sub.add_parser("stack", help="the production-shaped stack: PostgreSQL, Redis, Celery workers, triggerer")
    sub.add_parser("stack-stop", help="stop the stack of this TAXI_HOME")
    af = sub.add_parser("airflow", help="run an airflow command in the project's Airflow home")
    af.add_argument("airflow_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    private_home(get_settings())  # before anything writes there

    if args.command == "run":
        return run(args)
    if args.command == "load-warehouse":
        ensure_warehouse(get_settings())
        return 0
    if args.command in ("stack", "stack-stop"):
        from taxi_pipeline import stack

        if args.command == "stack-stop":
            return stack.stop_stack(get_settings())
        ensure_warehouse(get_settings())
        return stack.run_stack(get_settings())
    settings = get_settings()
    ensure_warehouse(settings)
    ensure_airflow_db(settings)
    # Airflow's own subprocesses (standalone starts `airflow scheduler`, ...) find this venv's `airflow`.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    command, env = (
        [sys.executable, "-m", "airflow", *args.airflow_args],
        {**os.environ, **airflow_env(settings), "PATH": path},
    )
    if args.airflow_args[:1] in (["standalone"], ["scheduler"]):  # the ones that run tasks: beside a warm runtime
        from taxi_pipeline.warm_runtime import warm_runtime

        standalone = args.airflow_args[:1] == ["standalone"]
        log_path = settings.home / "logs" / "airflow_standalone.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with warm_runtime(settings), open(log_path if standalone else os.devnull, "ab") as log:
            if standalone:  # its services' logs go to a file; the terminal gets the address and the login
                print(f"Starting Airflow (scheduler, api-server, dag-processor); their logs: {log_path}", flush=True)
            airflow = subprocess.Popen(
                command, env=env, **({"stdout": log, "stderr": subprocess.STDOUT} if standalone else {})
            )
            if standalone:
                announce_the_ui(settings, airflow)
            while True:
                try:
                    return airflow.wait()
                except KeyboardInterrupt:
                    pass  # Airflow got the same Ctrl-C: let it shut down its processes, then stop ours
    os.execve(sys.executable, command, env)


def announce_the_ui(settings: Settings, airflow: subprocess.Popen, port: int = 8080, timeout: float = 300) -> None:
    """Once the api-server answers: its address and the login (simple auth manager's generated
    password), printed once."""
    import time
    import urllib.request

    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while airflow.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=2):
                break
        except OSError:
            time.sleep(1)
    else:
        print("Airflow did not answer; see its log.", flush=True)
        return
    print(f"Airflow UI: {url}   login: {ui_login(settings) or 'see the log'}   (Ctrl-C stops it)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
