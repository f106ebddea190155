"""A real run of taxi_sliding_window through Airflow's scheduler, in a TAXI_HOME of its own where no
model is served yet: both models judged on every trip of the month and pushed as served models of
their own, the candidate offered for promotion, approved by a person through the REST API, and
served at taxi:stable with the verdict in its deployment record."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from airflow_cli import add_user, airflow, airflow_services, api_token, run_state, services_env, task_states

pytestmark = pytest.mark.slow

DAG_ID = "taxi_sliding_window"
APPROVER = "approver"
JANUARY = datetime(2015, 1, 1, tzinfo=UTC), datetime(2015, 2, 1, tzinfo=UTC)  # the month the run judges
VERSION = 201502010000  # the run's window end: the version of each branch's own served model
PROMOTED = VERSION + 1  # the winner's version of taxi (deployment.WINDOW_WINNER_MINUTE)


@pytest.fixture(scope="module")
def services(metadata_db, sample_files, tmp_path_factory):
    from taxi_pipeline.warehouse import load_trips

    home = tmp_path_factory.mktemp("sliding_home")
    load_trips(home / "warehouse" / "taxi.duckdb", sample_files)
    env, logs = services_env(home, metadata_db), tmp_path_factory.mktemp("sliding_services")
    env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "False"  # only the run this test asks for
    password = add_user(env, home, APPROVER)
    with airflow_services(env, logs, unpause=(DAG_ID,)) as running:
        running.token, running.home = api_token(env, APPROVER, password), home
        yield running


@pytest.fixture(scope="module")
def approved_run(services) -> dict:
    """A manual run of January 2015 whose promotion a person approves when asked."""
    conf = {"window_end": JANUARY[1].date().isoformat(), "require_approval": "always"}
    airflow("dags", "trigger", DAG_ID, "--run-id", "january", "--conf", json.dumps(conf), env=services.env)
    answered = services.answer_approval(services.token, DAG_ID, "january", "Approve", timeout=1200)
    finished = services.wait_for("the run", lambda: run_state(services.env, DAG_ID, "january"), timeout=300)
    states = task_states(services.env, services.token, DAG_ID, "january")
    assert finished == "success", states
    return {"answered": answered, "states": states}


def test_a_month_is_judged_by_a_recent_and_a_long_model(services, approved_run):
    from taxi_pipeline.layout import RunLayout
    from taxi_pipeline.window import Window

    steps = ("transform", "train", "evaluate", "check_export")  # the pushes: the next test
    expected = [f"{b}.{s}" for b in ("recent", "long") for s in steps] + [
        "wait_for_window",
        "extract_window",
        "validate_window",
        "compare_windows",
        "record_verdict",
        "decide_approval",
        "approve_champion",
        "promote_champion",
        "data_report",
        "model_report",
    ]
    states = {task: state for task, state in approved_run["states"].items() if not task.endswith(".push")}
    assert states == dict.fromkeys(expected, "success")
    layout = RunLayout(str(services.home / "artifacts"), DAG_ID, Window(*JANUARY), "january")
    newest = sum(
        1
        for split in ("train", "eval")
        for _ in csv.DictReader(open(f"{layout.split_dir(split, 'newest')}/part-00000.csv"))
    )
    comparison = json.loads(Path(layout.window_comparison_dir, "comparison.json").read_text())
    assert comparison["examples"] == newest > 500  # both models judged on every trip of the month
    assert comparison["verdict"] in ("recent", "long", "no significant difference")
    auc = comparison["auc"]
    assert auc["ci_low"] <= auc["difference"] <= auc["ci_high"]
    assert auc["difference"] == pytest.approx(auc["recent"] - auc["long"])
    assert comparison["slices"][0]["slice"] == "overall"
    for branch in ("recent", "long"):  # each trained on its own window, judged on the same month
        metrics = json.loads(Path(layout.evaluation_dir(branch), "metrics.json").read_text())
        assert metrics["candidate"]["overall"]["example_count"] == newest
        assert Path(layout.transform_dir(branch), "transform_graph").is_dir()
    history = list(csv.DictReader(open(Path(layout.history_dir, "history.csv"))))
    assert [(row["window_key"], row["verdict"]) for row in history] == [(layout.window.key, comparison["verdict"])]


def test_both_models_are_pushed_and_the_approved_candidate_becomes_taxi_stable(services, approved_run):
    from taxi_pipeline.comparison import read_blessing
    from taxi_pipeline.layout import RunLayout
    from taxi_pipeline.serving_root import ServingRoot
    from taxi_pipeline.window import Window

    layout = RunLayout(str(services.home / "artifacts"), DAG_ID, Window(*JANUARY), "january")
    root, states = ServingRoot(str(services.home / "serving")), approved_run["states"]
    for branch in ("recent", "long"):  # each blessed model is a version of a served model of its own
        blessed = read_blessing(layout, branch)["blessed"]
        assert states[f"{branch}.push"] == ("success" if blessed else "skipped")
        assert root.versions(f"taxi_{branch}") == ([VERSION] if blessed else [])

    versus = json.loads(Path(layout.window_comparison_dir, "versus_stable.json").read_text())
    assert versus["stable"] is None and versus["sentence"] == "no model is served at stable to compare with"
    assert "no model in service to compare with" in approved_run["answered"]["body"]  # what the approver read
    assert approved_run["answered"]["responded_by"]["name"] == APPROVER

    assert root.labels("taxi") == {"stable": PROMOTED}
    record = root.record("taxi", PROMOTED)
    comparison = json.loads(Path(layout.window_comparison_dir, "comparison.json").read_text())
    assert record["variant"] == versus["candidate"] and record["dag_id"] == DAG_ID
    assert comparison["sentence"] in record["reasons"]  # recorded with the verdict
    decision = json.loads(Path(layout.run_dir, "approval.json").read_text())
    assert decision["decision"] == "approved" and decision["by"] == APPROVER
