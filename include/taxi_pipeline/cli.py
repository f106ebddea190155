"""The project's command line (what `make run` and `make airflow` call).

    python -m taxi_pipeline.cli run [--date 2016-01-01] [--dag taxi_daily_retrain]
    python -m taxi_pipeline.cli load-warehouse
    python -m taxi_pipeline.cli airflow <airflow args...>
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from taxi_pipeline.pools import ensure_pools
from taxi_pipeline.processes import stop_process
from taxi_pipeline.settings import REPO_ROOT, Settings, airflow_env, get_settings, private_home

DEFAULT_DATE = "2016-01-01"


def ensure_warehouse(settings: Settings) -> None:
    from taxi_pipeline.sample_data import ensure_sample_files
    from taxi_pipeline.warehouse import load_trips

    if settings.warehouse_path.exists():
        return
    files = ensure_sample_files(settings.data_dir)
    rows = load_trips(settings.warehouse_path, files)
    print(f"Loaded {rows} trips from the tfx sample into {settings.warehouse_path}")


def ensure_airflow_db(settings: Settings) -> None:
    """Create (or upgrade) the metadata database of the project's Airflow home."""
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    marker = settings.airflow_home / ".migrated-with-pools"
    if marker.exists():
        return
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True,
                   env={**os.environ, **airflow_env(settings)}, stdout=subprocess.DEVNULL)
    ensure_pools(airflow_env(settings))
    marker.touch()


def run(args) -> int:
    settings = get_settings()
    ensure_warehouse(settings)
    ensure_airflow_db(settings)
    os.environ.update(airflow_env(settings))  # before Airflow is imported

    from airflow.dag_processing.dagbag import DagBag

    from taxi_pipeline.dag_defaults import run_in_process

    logical_date = datetime.strptime(args.date, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    if args.dag not in bag.dags:
        print(f"No DAG {args.dag!r}; import errors: {bag.import_errors}", file=sys.stderr)
        return 2
    dag = bag.dags[args.dag]
    print(f"Running {args.dag} on the {settings.platform} platform for logical date {args.date} "
          f"(TAXI_HOME={settings.home})")
    from taxi_pipeline.warm_runtime import warm_runtime

    with warm_runtime(settings):  # the runtime steps skip their library imports (taxi_model.warm)
        dag_run = run_in_process(dag, logical_date=logical_date)
    layout = print_summary(dag, dag_run)
    if dag_run.state != "success":
        return 1
    if args.dag == "taxi_daily_retrain":
        serve_and_predict(settings, layout)
    return 0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_predict(settings: Settings, layout, rows: int = 5) -> None:
    """Start the local model server on the serving root, ask it about a few real eval rows over
    REST and gRPC (the champion model `taxi`, label `stable`), and stop it."""
    from taxi_pipeline.serving_root import CHAMPION_MODEL, STABLE_LABEL, ServingRoot

    if STABLE_LABEL not in ServingRoot(settings.serving_root).labels(CHAMPION_MODEL):
        print(f"\nNo {CHAMPION_MODEL}:{STABLE_LABEL} model is served (nothing was blessed); no predictions.")
        return
    rest_port, grpc_port = free_port(), free_port()
    log_path = settings.home / "model_server.log"
    print(f"\nStarting the local model server on {settings.serving_root} "
          f"(REST 127.0.0.1:{rest_port}, gRPC 127.0.0.1:{grpc_port}; log {log_path})")
    with open(log_path, "w") as log_file:
        server = subprocess.Popen(
            [settings.runtime_python, "-m", "taxi_model.serving.server", "--serving_root", settings.serving_root,
             "--rest_port", str(rest_port), "--grpc_port", str(grpc_port)], stdout=log_file, stderr=subprocess.STDOUT)
        try:
            for protocol, port, wait in (("rest", rest_port, 120), ("grpc", grpc_port, 30)):
                print(f"Predictions of {CHAMPION_MODEL}:{STABLE_LABEL} over {protocol.upper()} for {rows} eval rows:")
                client = subprocess.run(
                    [settings.runtime_python, "-m", "taxi_model.serving.client", "--csv", layout.split_glob("eval"),
                     "--rows", str(rows), "--model", CHAMPION_MODEL, "--label", STABLE_LABEL,
                     "--protocol", protocol, "--port", str(port), "--wait", str(wait)],
                    stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
                if client.returncode != 0:  # TensorFlow's start-up chatter is on stderr: shown only on failure
                    raise RuntimeError(f"the model server did not answer over {protocol}:\n{client.stderr[-2000:]}")
        finally:
            stop_process(server, timeout=20)


def print_summary(dag, dag_run):
    from taxi_pipeline.run_context import run_layout, window_plan

    context = {"dag": dag, "run_id": dag_run.run_id, "data_interval_start": dag_run.data_interval_start,
               "data_interval_end": dag_run.data_interval_end,
               "params": {**{k: v.value for k, v in dag.params.items()}, **(dag_run.conf or {})}}
    layout = run_layout(context)
    print()
    print(f"Run {dag_run.run_id}: {dag_run.state}")
    print(f"  window:    {layout.window}")
    print(f"  artifacts: {layout.run_dir}")
    for ti in sorted(dag_run.get_task_instances(), key=lambda t: (t.start_date or dag_run.start_date, t.task_id)):
        took = f"{(ti.end_date - ti.start_date).total_seconds():6.1f} s" if ti.start_date and ti.end_date else ""
        print(f"  {ti.task_id:<28} {ti.state:<16} {took}")
    plan = window_plan(context)
    for name in plan.checks:
        report = Path(layout.validation_dir(name)) / "report.json"
        if report.exists():
            verdict = json.loads(report.read_text())
            title = f"window {name} {plan.windows[name]}" if name else "rows per split"
            print(f"  {title}: {verdict['rows']}")
            print(f"    validation: {'passed' if verdict['success'] else 'FAILED'} ({layout.validation_dir(name)}/summary.txt)")
            for line in verdict["failures"]:
                print(f"    - {line}")
    for title, comparison in (("Variants", Path(layout.run_dir) / "comparison.txt"),
                              ("Recent vs long window", Path(layout.window_comparison_dir) / "comparison.txt")):
        if comparison.exists():
            print(f"\n{title}:")
            print(comparison.read_text())
    if dag.dag_id != "taxi_daily_retrain":
        return layout
    from taxi_model.variants import VARIANTS

    from taxi_pipeline.serving_root import CHAMPION_MODEL, ServingRoot, model_name

    serving_root = ServingRoot(get_settings().serving_root)
    print(f"Served models ({serving_root.uri}):")
    for model in [model_name(v) for v in VARIANTS] + [CHAMPION_MODEL]:
        versions = serving_root.versions(model)
        labels = serving_root.labels(model)
        print(f"  {model:<16} versions {versions or 'none'}{'  labels ' + str(labels) if labels else ''}")
    return layout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taxi")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="one full run of a DAG for a logical date, on the embedded platform")
    run_p.add_argument("--date", default=DEFAULT_DATE, help=f"logical date YYYY-MM-DD (default {DEFAULT_DATE})")
    run_p.add_argument("--dag", default="taxi_daily_retrain")
    sub.add_parser("load-warehouse", help="fetch the sample and (re)load the local warehouse")
    af = sub.add_parser("airflow", help="run an airflow command in the project's Airflow home")
    af.add_argument("airflow_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    private_home(get_settings())  # before anything writes there

    if args.command == "run":
        return run(args)
    if args.command == "load-warehouse":
        ensure_warehouse(get_settings())
        return 0
    settings = get_settings()
    ensure_warehouse(settings)
    ensure_airflow_db(settings)
    # Airflow's own subprocesses (standalone starts `airflow scheduler`, ...) find this venv's `airflow`.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    command, env = [sys.executable, "-m", "airflow", *args.airflow_args], {**os.environ, **airflow_env(settings), "PATH": path}
    if args.airflow_args[:1] in (["standalone"], ["scheduler"]):  # the ones that run tasks: beside a warm runtime
        from taxi_pipeline.warm_runtime import warm_runtime

        with warm_runtime(settings):
            airflow = subprocess.Popen(command, env=env)
            while True:
                try:
                    return airflow.wait()
                except KeyboardInterrupt:
                    pass  # Airflow got the same Ctrl-C: let it shut down its processes, then stop ours
    os.execve(sys.executable, command, env)


if __name__ == "__main__":
    sys.exit(main())
