"""Real backfills of taxi_sliding_window through Airflow's scheduler (not dag.test()).

Starts Airflow as `make stack` runs it (PostgreSQL, Celery with two workers, the triggerer), backfills
three months, checks every run succeeded and wrote its own window, then reprocesses the same months
and checks the artifacts are identical (the data splits, the metrics, blessings and window
comparisons, by hash).

The last month's trips land while the backfill runs: that run's wait_for_window defers to the
triggerer, and goes on once they have landed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_cli import airflow, list_runs, services_env, tasks_per_worker
from airflow_cli import airflow_services as start_services
from airflow_cli import log_tails as _tails

DAG_ID = "taxi_sliding_window"
FROM_DATE, TO_DATE = "2014-04-01", "2014-06-01"  # three monthly runs
# Trips from this time on land during the first backfill: the last run's window [May, June) is not
# complete until then, the second's [April, May) is (it needs a trip from May on). A backfill run is
# named after its data interval's end.
LANDS_LATE = "2014-05-15"


@pytest.fixture(scope="module")
def airflow_services(metadata_db, sample_files, tmp_path_factory):
    """Airflow as `make stack` runs it (the CeleryExecutor with Redis and two workers, the triggerer,
    the api-server, scheduler and dag-processor) on loopback, with a metadata database and a TAXI_HOME
    of their own (so other tests' runs and artifacts don't mix with the backfill's)."""
    from taxi_pipeline.queries import LOCAL_SOURCE_TABLE
    from taxi_pipeline.warehouse import connect, load_trips

    home, landing = tmp_path_factory.mktemp("backfill_home"), tmp_path_factory.mktemp("landing")
    load_trips(landing / "taxi.duckdb", sample_files)  # everything, landed later by land_the_late_trips
    warehouse = home / "warehouse" / "taxi.duckdb"
    warehouse.parent.mkdir()
    shutil.copy(landing / "taxi.duckdb", warehouse)
    with connect(warehouse, read_only=False) as con:
        con.execute(f"DELETE FROM {LOCAL_SOURCE_TABLE} WHERE trip_start_timestamp >= ?", [LANDS_LATE])
    env, logs = services_env(home, metadata_db), tmp_path_factory.mktemp("airflow_services")
    with start_services(env, logs, unpause=(DAG_ID,), celery=True) as services:
        services.landing = landing / "taxi.duckdb"
        yield services, home


def land_the_late_trips(services, home: Path) -> str:
    """Once the last month's wait_for_window has deferred, land every trip (the warehouse replaced
    whole, as load_trips does); returns that run's id."""
    env = services.env

    def last_window_deferred():
        last = next((r for r in backfill_runs(env) if TO_DATE in r["run_id"]), None)
        state = last and airflow("tasks", "state", DAG_ID, "wait_for_window", last["run_id"], env=env).split()[-1]
        return last["run_id"] if state == "deferred" else None

    run_id = services.wait_for(
        "the last month's wait_for_window deferred", last_window_deferred, timeout=20 * 60, every=10
    )
    staging = home / "warehouse" / "taxi.duckdb.landing"
    shutil.copy(services.landing, staging)
    staging.replace(home / "warehouse" / "taxi.duckdb")
    return run_id


def backfill_runs(env) -> list[dict]:
    return [r for r in list_runs(DAG_ID, env) if r["run_id"].startswith("backfill__")]


def backfill(services, *extra: str, since: float, meanwhile=None) -> list[dict]:
    """Create a backfill, call `meanwhile()` and wait until its three runs have finished after `since`
    (a timestamp); fails at once, with the services' logs, if one of them exits meanwhile."""
    env = services.env
    command = [
        sys.executable,
        "-m",
        "airflow",
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        FROM_DATE,
        "--to-date",
        TO_DATE,
        "--max-active-runs",
        "2",
        # unattended: a window's candidate is promoted without asking a person (the approval is
        # tested in test_taxi_sliding_window.py)
        "--dag-run-conf",
        json.dumps({"require_approval": "never"}),
        *extra,
    ]
    deadline = time.monotonic() + 600
    # The scheduler closes a finished backfill on its next loop; until then a new one is refused.
    while (created := subprocess.run(command, env=env, capture_output=True, text=True)).returncode != 0:
        retry = "Another backfill is running" in created.stderr
        assert retry and time.monotonic() < deadline, created.stderr[-3000:]
        services.check()
        time.sleep(5)

    def three_finished():
        finished = [
            r
            for r in backfill_runs(env)
            if r["state"] in ("success", "failed") and r["end_date"] and _timestamp(r["end_date"]) > since
        ]
        return finished if len(finished) == 3 else None

    if meanwhile:
        meanwhile()
    return services.wait_for("the backfill's three runs", three_finished, timeout=30 * 60, every=10)


def task_logs(env, run_id: str, task_id: str) -> list[str]:
    """The logs of a task of a run, each with its trigger's lines (the triggerer writes them beside the
    attempt's log; the attempt's log itself starts again when the task resumes)."""
    folder = Path(env["AIRFLOW_HOME"], "logs", f"dag_id={DAG_ID}", f"run_id={run_id}", f"task_id={task_id}")
    attempts = sorted(p for p in folder.glob("attempt=*.log") if ".trigger." not in p.name)
    return ["\n".join(p.read_text() for p in sorted(folder.glob(f"{a.name}*"))) for a in attempts]


def _timestamp(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def data_hashes(artifacts: Path) -> dict[str, str]:
    """sha256 of every extracted data split of the DAG's runs."""
    wanted = [p for p in artifacts.rglob("part-*.csv") if "/data/" in p.as_posix()]
    return {p.relative_to(artifacts).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in wanted}


def result_hashes(artifacts: Path) -> dict[str, str]:
    """sha256 of every model's TFMA metrics and blessing and of every window comparison."""
    wanted = [
        *artifacts.rglob("metrics.json"),
        *artifacts.rglob("blessing.json"),
        *artifacts.rglob("window_comparison/comparison.json"),
    ]
    return {p.relative_to(artifacts).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in wanted}


@pytest.mark.slow
def test_a_backfill_runs_each_window_once_and_a_reprocess_rewrites_the_same_artifacts(airflow_services):
    services, home = airflow_services
    env, logs = services.env, services.logs
    artifacts = home / "artifacts" / DAG_ID
    start = time.time()
    landed_late = []
    first = backfill(services, since=start, meanwhile=lambda: landed_late.append(land_the_late_trips(services, home)))
    assert [r["state"] for r in first] == ["success"] * 3, f"{first}\n{_tails(logs)}"

    # The last month waited in the triggerer, not in a worker, and went on once its trips had landed.
    (sensor_log,) = task_logs(env, landed_late[0], "wait_for_window")
    waited = "Window ending 2014-06-01T00:00:00+00:00: warehouse holds trips up to 2014-05-14 23:00:00+00:00"
    assert f"{waited} -> not complete yet" in sensor_log and "Trigger fired event" in sensor_log, sensor_log
    assert "warehouse holds trips up to 2016-12-30 16:45:00+00:00 -> complete" in sensor_log, sensor_log

    spread = [tasks_per_worker(logs, r["run_id"]) for r in first]  # the Celery workers shared the runs
    assert all(any(ran.values()) for ran in spread) and any(all(ran.values()) for ran in spread), spread

    windows = sorted(p.name for p in artifacts.glob("window=*"))
    assert len(windows) == 3  # each run wrote its own window, once
    for window in windows:
        runs = list((artifacts / window).glob("run=*"))
        assert len(runs) == 1 and (runs[0] / "window_comparison" / "comparison.json").exists()
    history = (artifacts / "history" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 3  # a header and one verdict per window
    data_before, results_before = data_hashes(artifacts), result_hashes(artifacts)
    assert len(data_before) == 3 * 3 * 2  # 3 runs x 3 windows (newest, recent, long) x 2 splits
    assert len(results_before) == 3 * (2 * 2 + 1)  # 3 runs x (2 models x metrics and blessing + the comparison)

    # The reprocess runs its runtime steps in the warm runtime (taxi_model.warm), the first backfill
    # in fresh interpreters: the same artifacts below also say that a forked step computes what a fresh one does.
    from taxi_pipeline.warm_runtime import warm_runtime

    with warm_runtime(log_path=logs / "warm_runtime.log"):
        second = backfill(services, "--reprocess-behavior", "completed", since=time.time())
    assert [r["state"] for r in second] == ["success"] * 3, f"{second}\n{_tails(logs)}"
    assert sorted({r["run_id"] for r in second}) == sorted({r["run_id"] for r in first})  # the same runs, cleared
    assert sorted(p.name for p in artifacts.glob("window=*")) == windows
    assert data_hashes(artifacts) == data_before  # the same rows, byte for byte, in the same places
    # The same models, judged the same: TFT, training and TFMA reproduce their outputs even on a
    # machine as busy as a backfill makes it (fixed Beam batch sizes, deterministic TF ops, seeds).
    assert result_hashes(artifacts) == results_before
    transform_logs = [
        p
        for p in Path(env["AIRFLOW_HOME"], "logs").rglob("attempt=*.log")
        if p.parent.name.endswith(".transform") and f"dag_id={DAG_ID}/run_id=backfill__" in p.as_posix()
    ]
    by_attempt = {
        n: [p.read_text(errors="replace") for p in transform_logs if p.name == f"attempt={n}.log"] for n in (1, 2)
    }
    assert len(by_attempt[1]) == len(by_attempt[2]) == 3 * 2, transform_logs  # 3 runs x 2 branches
    assert all("No warm runtime at" in text for text in by_attempt[1])
    assert all("(in the warm runtime at" in text for text in by_attempt[2])
