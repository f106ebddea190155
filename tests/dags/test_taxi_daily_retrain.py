"""Real runs of taxi_daily_retrain with dag.test() on the sample data."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from taxi_pipeline.dag_defaults import run_in_process
from taxi_pipeline.run_context import run_layout
from taxi_pipeline.serving_root import ServingRoot, version_for
from taxi_pipeline.settings import get_settings
from taxi_pipeline.warehouse import load_trips

LOGICAL_DATE = datetime(2016, 1, 1, tzinfo=UTC)


def run_dag(logical_date=LOGICAL_DATE, conf=None):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags")).dags["taxi_daily_retrain"]
    dag_run = run_in_process(dag, logical_date=logical_date, run_conf=conf)
    params = {**{k: v.value for k, v in dag.params.items()}, **(conf or {})}
    layout = run_layout(
        {"dag": dag, "run_id": dag_run.run_id, "params": params, "data_interval_end": dag_run.data_interval_end}
    )
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    return dag_run, layout, states


@pytest.fixture(scope="module")
def daily_run(airflow_db, warehouse):
    """One real run of the whole DAG for the 2015 window (shared by the tests below)."""
    return run_dag()


def task_context(dag_run, layout) -> dict:
    class Dag:
        dag_id = layout.dag_id

    return {
        "dag": Dag(),
        "run_id": dag_run.run_id,
        "data_interval_end": dag_run.data_interval_end,
        "params": {"window_days": 365},
    }


@pytest.mark.slow
def test_a_daily_run_trains_evaluates_and_compares_both_variants(daily_run):
    dag_run, layout, states = daily_run
    assert dag_run.state == "success", states
    assert set(states) == {
        "wait_for_window",
        "extract_window",
        "validate_window",
        "select_variants",
        "wait_for_previous_deploys",
        "compare_variants",
        "decide_approval",
        "approve_champion",
        "promote_champion",
        "data_report",
        "model_report",
    } | {
        f"{v}.{step}"
        for v in ("standard", "coarse")
        for step in ("transform", "train", "evaluate", "check_export", "push")
    }
    assert states["approve_champion"] == "skipped"  # require_approval=never: nobody is asked
    assert str(layout.window) == "[2015-01-01T00:00:00+00:00, 2016-01-01T00:00:00+00:00)"
    train = list(csv.DictReader(open(f"{layout.split_dir('train')}/part-00000.csv")))
    eval_ = list(csv.DictReader(open(f"{layout.split_dir('eval')}/part-00000.csv")))
    assert len(train) > 4000 and len(eval_) > 2000
    report = json.loads(Path(layout.validation_dir(), "report.json").read_text())
    assert report["success"] is True and report["rows"] == {"train": len(train), "eval": len(eval_)}
    comparison = json.loads(Path(layout.run_dir, "comparison.json").read_text())
    assert [row["variant"] for row in comparison] == ["standard", "coarse"]
    for row in comparison:
        blessing = json.loads(Path(layout.evaluation_dir(row["variant"]), "blessing.json").read_text())
        assert row["blessed"] is blessing["blessed"] is True, row  # real models on a real year pass the bar
        assert 0.88 <= row["auc"] <= 1.0 and row["accuracy"] > row["majority_class_rate"]
        assert row["eval_rows"] == len(eval_) and blessing["baseline"] is None
        assert Path(layout.model_dir(row["variant"]), "saved_model.pb").exists()
        assert Path(layout.transform_dir(row["variant"]), "transform_graph").is_dir()
        assert any(Path(layout.logs_dir(row["variant"])).rglob("events.out.tfevents*"))
    assert "variant" in Path(layout.run_dir, "comparison.txt").read_text()


@pytest.mark.slow
def test_blessed_models_are_served_and_the_champion_is_stable(daily_run):
    dag_run, layout, states = daily_run
    serving_root = get_settings().serving_root
    version = version_for(dag_run.data_interval_end)
    assert version == 201601010000
    for model in ("taxi_standard", "taxi_coarse", "taxi"):
        assert ServingRoot(serving_root).versions(model) == [version]
    comparison = json.loads(Path(layout.run_dir, "comparison.json").read_text())
    champion = max(comparison, key=lambda r: r["auc"])["variant"]
    record = json.loads(Path(ServingRoot(serving_root).base_path("taxi"), "records", f"{version}.json").read_text())
    assert record["variant"] == champion and record["run_id"] == dag_run.run_id
    assert ServingRoot(serving_root).labels("taxi") == {"stable": version}
    assert 'version_labels { key: "stable" value: 201601010000 }' in Path(serving_root, "models.config").read_text()


@pytest.mark.slow
def test_redeploying_the_same_window_keeps_one_copy_and_an_unblessed_model_is_not_pushed(daily_run, tmp_path):
    from airflow.sdk.exceptions import AirflowSkipException

    from taxi_pipeline.callables import promote_champion, push_variant

    dag_run, layout, _ = daily_run
    context = task_context(dag_run, layout)
    serving_root = get_settings().serving_root
    before = sorted(p.relative_to(serving_root).as_posix() for p in Path(serving_root).rglob("*"))
    assert push_variant("standard", "taxi_standard", **context) == 201601010000  # a retry of the push
    assert promote_champion(**context)["version"] == 201601010000
    after = sorted(p.relative_to(serving_root).as_posix() for p in Path(serving_root).rglob("*"))
    assert after == before

    blessing = Path(layout.evaluation_dir("coarse"), "blessing.json")
    verdict = json.loads(blessing.read_text())
    blessing.write_text(json.dumps({**verdict, "blessed": False, "reasons": ["auc 0.5 is below the bar 0.88"]}))
    try:
        with pytest.raises(AirflowSkipException, match="coarse was not blessed, nothing pushed: auc 0.5 is below"):
            push_variant("coarse", "taxi_coarse", **context)
    finally:
        blessing.write_text(json.dumps(verdict))
    assert ServingRoot(serving_root).versions("taxi_coarse") == [201601010000]


@pytest.mark.slow
def test_a_manual_run_trains_the_chosen_variant_on_the_chosen_window(airflow_db, sample_files, tmp_path, monkeypatch):
    """Params of a manual run: `window_end` replaces the data interval end in the windows, the artifact
    folder and the served version; `variants` trains one variant and skips the other."""
    monkeypatch.setenv("TAXI_HOME", str(tmp_path / "home"))
    load_trips(get_settings().warehouse_path, sample_files)

    conf = {"window_end": "2015-07-01", "variants": ["coarse"]}
    dag_run, layout, states = run_dag(logical_date=datetime(2016, 3, 1, tzinfo=UTC), conf=conf)
    assert dag_run.state == "success", states
    assert {k: v for k, v in states.items() if k.startswith("standard.")} == {
        f"standard.{step}": "skipped" for step in ("transform", "train", "evaluate", "check_export", "push")
    }
    assert {states[f"coarse.{step}"] for step in ("transform", "train", "evaluate", "check_export", "push")} == {
        "success"
    }
    assert states["compare_variants"] == states["promote_champion"] == "success"
    assert str(layout.window) == "[2014-07-01T00:00:00+00:00, 2015-07-01T00:00:00+00:00)"
    assert Path(layout.split_dir("train")).is_dir() and not Path(layout.variant_dir("standard")).exists()
    comparison = json.loads(Path(layout.run_dir, "comparison.json").read_text())
    assert [row["variant"] for row in comparison] == ["coarse"]
    serving_root = get_settings().serving_root
    assert ServingRoot(serving_root).versions("taxi_coarse") == [201507010000]
    assert ServingRoot(serving_root).versions("taxi") == [201507010000]
    assert not Path(ServingRoot(serving_root).base_path("taxi_standard")).exists()
    record = json.loads(Path(ServingRoot(serving_root).base_path("taxi"), "records", "201507010000.json").read_text())
    assert record["variant"] == "coarse" and record["window"] == str(layout.window)


@pytest.mark.slow
def test_a_bad_window_fails_validation_and_stops_the_run(airflow_db, sample_files, tmp_path, monkeypatch):
    """A warehouse whose 2015 fares are negative: validate_window fails with the problem named."""
    broken = tmp_path / "broken.csv"
    with open(sample_files[0], newline="") as src, open(broken, "w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, reader.fieldnames)
        writer.writeheader()
        for row in reader:
            if datetime.fromtimestamp(int(row["trip_start_timestamp"]), UTC).year == 2015:
                row["fare"] = f"-{row['fare']}"
            writer.writerow(row)
    monkeypatch.setenv("TAXI_HOME", str(tmp_path / "home"))
    load_trips(get_settings().warehouse_path, [broken])

    dag_run, layout, states = run_dag()
    assert dag_run.state == "failed"
    assert {k: states[k] for k in ("wait_for_window", "extract_window", "validate_window")} == {
        "wait_for_window": "success",
        "extract_window": "success",
        "validate_window": "failed",
    }
    downstream = {k: v for k, v in states.items() if "." in k or k == "compare_variants"}
    assert downstream and set(downstream.values()) == {"upstream_failed"}  # nothing was trained
    summary = Path(layout.validation_dir(), "summary.txt").read_text()
    assert "FAILED" in summary and "fare:" in summary and "outside [0, 1000]" in summary
