"""A real run of taxi_sliding_window with dag.test() on the sample data."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from taxi_pipeline.dag_defaults import run_in_process
from taxi_pipeline.run_context import run_layout


@pytest.mark.slow
def test_a_month_is_judged_by_a_recent_and_a_long_model(airflow_db, warehouse):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags")).dags["taxi_sliding_window"]
    dag_run = run_in_process(dag, logical_date=datetime(2015, 2, 1, tzinfo=UTC))
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert dag_run.state == "success", states
    assert set(states) == {
        "wait_for_window",
        "extract_window",
        "validate_window",
        "compare_windows",
        "record_verdict",
        "data_report",
        "model_report",
    } | {f"{b}.{s}" for b in ("recent", "long") for s in ("transform", "train", "evaluate")}

    params = {k: v.value for k, v in dag.params.items()}
    layout = run_layout(
        {
            "dag": dag,
            "run_id": dag_run.run_id,
            "params": params,
            "data_interval_start": dag_run.data_interval_start,
            "data_interval_end": dag_run.data_interval_end,
        }
    )
    assert str(layout.window) == "[2015-01-01T00:00:00+00:00, 2015-02-01T00:00:00+00:00)"
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
