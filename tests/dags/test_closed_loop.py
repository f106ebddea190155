"""The loop after deployment, for real: a champion trained and served (taxi_daily_retrain), the trips
of a day scored with it (taxi_batch_scoring) and the day monitored (taxi_model_monitor); a drifted
day alerts and, through the scheduler, starts an out-of-schedule taxi_daily_retrain (assets).

The sample has 10 to 25 trips a day, too few to judge a day's drift; two days are made of 1,500 of
the training window's own trips each, moved to the day (new keys): a normal day (the training
distribution) and a drifted one (the payment type "Credit Card" renamed "Card", fares x1.5).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from airflow_cli import (
    add_user,
    airflow,
    airflow_services,
    api,
    api_token,
    list_runs,
    run_state,
    services_env,
    task_states,
)
from taxi_pipeline.dag_defaults import run_in_process
from taxi_pipeline.settings import REPO_ROOT, get_settings

pytestmark = pytest.mark.slow

TRAINED_UNTIL = datetime(2015, 12, 1, tzinfo=UTC)  # the champion's window: the year before
CHAMPION = 201512010000
NORMAL_DAY, DRIFTED_DAY = datetime(2015, 12, 10, tzinfo=UTC), datetime(2015, 12, 20, tzinfo=UTC)
DAY_TRIPS = 1500
APPROVER = "approver"


def run_of(day: datetime) -> datetime:
    """The logical date of a manual run of `day` (dag.test and `dags trigger` end its interval there)."""
    return day + timedelta(days=1)


def run(dag_id: str, logical_date: datetime, conf: dict | None = None):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO_ROOT / "dags")).dags[dag_id]
    dag_run = run_in_process(dag, logical_date=logical_date, run_conf=conf)
    return dag_run, {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


def make_day(warehouse: Path, day: datetime, drifted: bool, seed: int) -> None:
    """Replace the trips of `day` by DAY_TRIPS trips of the champion's training window moved to it."""
    import duckdb

    drift = (
        ", CASE WHEN payment_type = 'Credit Card' THEN 'Card' ELSE payment_type END AS payment_type, fare * 1.5 AS fare"
        if drifted
        else ""
    )
    con = duckdb.connect(str(warehouse))
    try:
        con.execute("SET TimeZone = 'UTC'")
        table, start = "chicago_taxi_trips.taxi_trips", day.isoformat()
        con.execute(
            f"DELETE FROM {table} WHERE trip_start_timestamp >= $start::TIMESTAMPTZ "
            "AND trip_start_timestamp < $start::TIMESTAMPTZ + INTERVAL 1 DAY",
            {"start": start},
        )
        con.execute(
            f"""INSERT INTO {table} SELECT * REPLACE (
                    sha1(unique_key || $start) AS unique_key,
                    $start::TIMESTAMPTZ + (trip_start_timestamp - date_trunc('day', trip_start_timestamp))
                        AS trip_start_timestamp{drift})
                FROM (SELECT * FROM {table}
                      WHERE trip_start_timestamp >= $from::TIMESTAMPTZ AND trip_start_timestamp < $until::TIMESTAMPTZ
                        AND pickup_latitude IS NOT NULL
                      ORDER BY unique_key)
                USING SAMPLE reservoir({DAY_TRIPS} ROWS) REPEATABLE ({seed})""",
            {"start": start, "from": "2015-01-01", "until": TRAINED_UNTIL.isoformat()},
        )
    finally:
        con.close()


@pytest.fixture(scope="module")
def loop(airflow_db, sample_files, tmp_path_factory):
    """A TAXI_HOME of its own: the sample's warehouse with the two made days, a champion trained on
    the year before December 2015 and served at taxi:stable, and both days scored."""
    from taxi_pipeline.warehouse import load_trips

    home = tmp_path_factory.mktemp("loop_home")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TAXI_HOME", str(home))
        settings = get_settings()
        load_trips(settings.warehouse_path, sample_files)
        retrain, states = run("taxi_daily_retrain", TRAINED_UNTIL, {"variants": ["standard"]})
        assert retrain.state == "success", states
        make_day(settings.warehouse_path, NORMAL_DAY, drifted=False, seed=1)
        make_day(settings.warehouse_path, DRIFTED_DAY, drifted=True, seed=2)
        scored = {day: run("taxi_batch_scoring", run_of(day)) for day in (NORMAL_DAY, DRIFTED_DAY)}
        yield {"home": home, "settings": settings, "scored": scored}


def day_scores(settings, day: datetime):
    from taxi_pipeline.predictions import read_day

    return read_day(settings.predictions_path, day.date())


def served_answers(settings, csv_glob: str) -> dict[str, float]:
    """The probability the local model server answers over REST for each trip of the CSV files."""
    from taxi_pipeline.cli import free_port
    from taxi_pipeline.processes import stop_process

    port = free_port()
    server = subprocess.Popen(
        [settings.runtime_python, "-m", "taxi_model.serving.server", "--serving_root", settings.serving_root]
        + ["--rest_port", str(port), "--grpc_port", str(free_port())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    ask = f"""
import json, taxi_model
from taxi_model.columns import read_rows
from taxi_model.serving.client import predict_rows, wait_until_available
wait_until_available("taxi", 120, label="stable", port={port})
rows, answers = read_rows({csv_glob!r}), {{}}
for start in range(0, len(rows), 500):  # the server takes at most 1,000 rows a request
    chunk = rows[start : start + 500]
    answer = predict_rows(chunk, "taxi", label="stable", port={port})
    answers.update({{r["unique_key"]: float(p) for r, p in zip(chunk, answer.probabilities)}})
print(json.dumps(answers))
"""
    try:
        out = subprocess.run([settings.runtime_python, "-c", ask], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        stop_process(server, timeout=20)


def test_a_day_is_scored_with_the_stable_model_and_its_scores_are_the_servers_answers(loop):
    from taxi_pipeline.serving_root import ServingRoot

    settings = loop["settings"]
    dag_run, states = loop["scored"][NORMAL_DAY]
    assert dag_run.state == "success", states
    assert ServingRoot(settings.serving_root).labels("taxi")["stable"] == CHAMPION
    scores = day_scores(settings, NORMAL_DAY)
    assert len(scores) == DAY_TRIPS and scores["unique_key"].is_unique
    assert set(scores["model_version"]) == {CHAMPION} and set(scores["day"].astype(str)) == {"2015-12-10"}
    day_glob = f"{settings.artifact_root}/taxi_batch_scoring/window=20151210T0000-20151211T0000/run=*/data/day/*/*.csv"
    served = served_answers(settings, day_glob)
    assert set(served) == set(scores["unique_key"])
    worst = max(abs(p - served[k]) for k, p in zip(scores["unique_key"], scores["probability"], strict=True))
    assert worst < 1e-6


def test_a_rerun_of_a_day_replaces_its_rows(loop):
    settings = loop["settings"]
    before = day_scores(settings, NORMAL_DAY)
    # a manual run of the same day (its window_end Param), as a backfill or a clear would be
    dag_run, states = run("taxi_batch_scoring", datetime(2016, 2, 1, tzinfo=UTC), {"window_end": "2015-12-11"})
    assert dag_run.state == "success", states
    after = day_scores(settings, NORMAL_DAY)
    assert len(after) == DAY_TRIPS
    columns = ["unique_key", "model_version", "probability"]
    assert after[columns].equals(before[columns])
    assert len(day_scores(settings, DRIFTED_DAY)) == DAY_TRIPS  # the other day is untouched


def test_the_monitor_raises_nothing_on_a_normal_day(loop):
    from taxi_pipeline import files

    dag_run, states = run("taxi_model_monitor", run_of(NORMAL_DAY))
    assert dag_run.state == "success", states
    assert states["monitor_serving"] == "success" and states["request_retraining"] == "skipped"
    run_dir = next(Path(loop["settings"].artifact_root, "taxi_model_monitor").glob("window=20151210T0000-*/run=*"))
    result = files.read_json(f"{run_dir}/monitor/result.json")
    assert result["crossed"] == [] and result["rows"] == DAY_TRIPS
    assert result["quality"]["auc"] > 0.8
    assert "Serving monitor" in (run_dir / "reports" / "monitor.html").read_text()


@pytest.fixture(scope="module")
def services(loop, metadata_db, tmp_path_factory):
    """Airflow's services on the loop's TAXI_HOME, with a user `approver` for the approval gate."""
    env, logs = services_env(loop["home"], metadata_db), tmp_path_factory.mktemp("loop_services")
    password = add_user(env, loop["home"], APPROVER)
    dag_ids = ("taxi_model_monitor", "taxi_daily_retrain")
    with airflow_services(env, logs, unpause=dag_ids) as running:
        running.token = api_token(env, APPROVER, password)
        for dag_id in dag_ids:  # unpaused, each has its latest scheduled run (today's): not this test's
            scheduled = running.wait_for(f"{dag_id}'s scheduled run", lambda d=dag_id: scheduled_runs(env, d), 60)
            for run in scheduled:
                api(env, running.token, "PATCH", f"/dags/{dag_id}/dagRuns/{run['run_id']}", {"state": "failed"})
        yield running


def test_the_approval_gate_promotes_what_is_approved_and_nothing_else(loop, services):
    """require_approval=always: two runs wait for a person; the approved one becomes taxi:stable, the
    rejected one is not promoted, and each decision is written beside its run."""
    from taxi_pipeline.serving_root import ServingRoot

    env, root = services.env, ServingRoot(loop["settings"].serving_root)
    for run_id, window_end in (("approved", "2015-12-05"), ("rejected", "2015-12-06")):
        conf = {"require_approval": "always", "variants": ["standard"], "window_end": window_end}
        airflow("dags", "trigger", "taxi_daily_retrain", "--run-id", run_id, "--conf", json.dumps(conf), env=env)
    token, dag_id = services.token, "taxi_daily_retrain"
    for run_id, answer in (("approved", "Approve"), ("rejected", "Reject")):
        answered = services.answer_approval(token, dag_id, run_id, answer, timeout=900)
        assert answered["chosen_options"] == [answer] and answered["responded_by"]["name"] == APPROVER
    for run_id in ("approved", "rejected"):
        finished = services.wait_for(f"run {run_id}", lambda r=run_id: run_state(env, dag_id, r), timeout=300)
        assert finished == "success", run_id
    states = {r: task_states(env, token, dag_id, r) for r in ("approved", "rejected")}
    assert states["approved"]["promote_champion"] == "success", states
    assert states["rejected"]["promote_champion"] == "skipped", states
    assert root.labels("taxi")["stable"] == 201512050000  # the approved window's, not the rejected one's
    assert 201512060000 not in root.versions("taxi")
    decisions = {
        r: json.loads(
            next(Path(loop["settings"].artifact_root).glob(f"taxi_daily_retrain/*/run={r}/approval.json")).read_text()
        )
        for r in ("approved", "rejected")
    }
    assert decisions["approved"]["decision"] == "approved" and decisions["approved"]["by"] == APPROVER
    assert decisions["rejected"]["decision"] == "rejected"


def test_a_drifted_day_alerts_and_starts_a_retraining_through_the_scheduler(loop, services):
    env = services.env
    conf = json.dumps({"window_end": run_of(DRIFTED_DAY).date().isoformat()})
    airflow("dags", "trigger", "taxi_model_monitor", "--run-id", "drifted_day", "--conf", conf, env=env)
    finished = services.wait_for(
        "the monitor's run of the drifted day", lambda: run_state(env, "taxi_model_monitor", "drifted_day"), timeout=600
    )
    assert finished == "success"

    def retraining_asked():
        runs = list_runs("taxi_daily_retrain", env)
        return [r for r in runs if r["run_id"].startswith("asset_triggered__")]

    (asked,) = services.wait_for("an asset-triggered taxi_daily_retrain run", retraining_asked, timeout=120)
    airflow("dags", "pause", "taxi_daily_retrain", env=env)  # its training is not what is tested here

    crossed = monitor_crossed(loop["settings"], "20151220")
    assert any("payment_type" in line and "Card" in line for line in crossed), crossed
    assert any(line.startswith("fare") for line in crossed), crossed
    event = consumed_event(env, asked["run_id"])
    assert event["asset"] == "taxi_retrain_request" and event["extra"]["window_end"].startswith("2015-12-21")
    # the alert went through the notifier (no connection configured here: its log line says so)
    task_logs = [p for p in Path(env["AIRFLOW_HOME"], "logs").rglob("*.log") if "monitor_serving" in str(p)]
    assert any("TAXI ALERT" in p.read_text() and "Card" in p.read_text() for p in task_logs)


def scheduled_runs(env: dict, dag_id: str) -> list[dict]:
    return [r for r in list_runs(dag_id, env) if r["run_id"].startswith("scheduled__")]


def monitor_crossed(settings, day_key: str) -> list[str]:
    from taxi_pipeline import files

    (result,) = Path(settings.artifact_root, "taxi_model_monitor").glob(f"window={day_key}T0000-*/run=*/monitor")
    return files.read_json(f"{result}/result.json")["crossed"]


def consumed_event(env: dict, run_id: str) -> dict:
    """The asset event the run consumed, from the metadata DB (as the UI shows it)."""
    code = f"""
import json
from airflow.models.dagrun import DagRun
from airflow.utils.session import create_session
with create_session() as session:
    run = session.query(DagRun).filter(DagRun.run_id == {run_id!r}).one()
    (event,) = run.consumed_asset_events
    print(json.dumps({{"asset": event.asset.name, "extra": event.extra}}))
"""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
