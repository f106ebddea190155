"""The run reports, built from a real extracted and validated window and TFMA-shaped evaluation output."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from taxi_pipeline.extract import extract_windows
from taxi_pipeline.reports import data, model
from taxi_pipeline.reports.report_tasks import write_data_report, write_model_report
from taxi_pipeline.run_context import window_plan
from taxi_pipeline.validation import validate_window

END = datetime(2016, 1, 1, tzinfo=UTC)


class _Dag:
    dag_id = "taxi_daily_retrain"


def context(**params):
    return {
        "params": {"window_days": 365, **params},
        "data_interval_end": END,
        "data_interval_start": datetime(2015, 12, 31, tzinfo=UTC),
        "dag": _Dag(),
        "run_id": "manual__r1",
    }


def evaluation(auc: float, blessed: bool, baseline: bool) -> dict:
    """What taxi_model.evaluate writes (metrics.json, plots.json, blessing.json), for 100 trips."""
    overall = {
        "example_count": 100.0,
        "auc": auc,
        "binary_accuracy": 0.86,
        "precision": 0.7,
        "recall": 0.9,
        "calibration": 1.05,
    }
    table = {
        "overall": overall,
        **{f"trip_start_hour={h}": {"example_count": 4.0, "auc": 0.8 + h / 200} for h in range(24)},
        "company=Taxi Affiliation Services": {"example_count": 30.0, "auc": 0.91},
        "company=Flash Cab": {"example_count": 12.0, "auc": 0.88},
        "trip_start_day=2 x trip_start_month=5": {"example_count": 8.0, "auc": 0.9},
    }
    metrics = {"candidate": table, **({"baseline": {"overall": {**overall, "auc": auc - 0.01}}} if baseline else {})}
    calibration = [
        {"lower": i / 10, "upper": (i + 1) / 10, "examples": 10.0, "labels": float(i), "predictions": i + 0.5}
        for i in range(10)
    ]
    plots = {
        "candidate": {
            "calibration": calibration,
            "confusion_matrix": {
                "threshold": 0.5,
                "true_positives": 20.0,
                "false_positives": 9.0,
                "true_negatives": 66.0,
                "false_negatives": 5.0,
            },
        }
    }
    blessing = {
        "blessed": blessed,
        "reasons": [f"auc {auc:.4f} >= floor 0.88"] if blessed else ["auc too low"],
        "metrics": {**overall, "majority_class_rate": 0.75},
        "baseline": "/serving/taxi_standard/1" if baseline else None,
    }
    return {"metrics.json": metrics, "plots.json": plots, "blessing.json": blessing}


@pytest.fixture(scope="module")
def run(
    warehouse,
    tmp_path_factory,
):
    """A run of taxi_daily_retrain with its window extracted and validated for real, and two evaluated variants."""
    import os
    from unittest import mock

    # the module's own TAXI_HOME, restored after it (the rest of the session keeps the warehouse's)
    with mock.patch.dict(os.environ, TAXI_HOME=str(tmp_path_factory.mktemp("report_home"))):
        yield from _run(warehouse)


def _run(warehouse):
    ctx = context(min_window_rows=500)
    plan = window_plan(ctx)
    from taxi_pipeline.run_context import run_layout

    layout = run_layout(ctx)
    extract_windows(warehouse, layout, plan.windows)
    from taxi_pipeline.validation import run_schema

    report = validate_window(
        layout.data_dir,
        plan.windows[""],
        layout.validation_dir(),
        500,
        run_schema(layout, plan),
        reference_dir=layout.split_dir("train", "reference"),
    )
    for variant, (auc, blessed) in {"standard": (0.934, True), "coarse": (0.85, False)}.items():
        directory = Path(layout.evaluation_dir(variant))
        directory.mkdir(parents=True)
        for name, content in evaluation(auc, blessed, baseline=variant == "standard").items():
            (directory / name).write_text(json.dumps(content))
    rows = [
        {
            "variant": v,
            "train_rows": report.rows["train"],
            "eval_rows": 100,
            "auc": a,
            "accuracy": 0.86,
            "majority_class_rate": 0.75,
            "blessed": b,
            "why": "",
            "baseline": None,
        }
        for v, a, b in (("standard", 0.934, True), ("coarse", 0.85, False))
    ]
    Path(layout.run_dir, "comparison.json").write_text(json.dumps(rows))
    yield ctx, layout, report


def test_the_data_report_shows_the_verdict_the_rows_the_features_and_the_drift(run):
    ctx, layout, report = run
    facts = write_data_report(**ctx)
    page = Path(layout.report_path("data")).read_text()
    assert facts["verdict"] == "VALIDATION PASSED" and facts["rows"] == report.rows
    assert 'data-verdict="VALIDATION PASSED"' in page
    assert f">{report.rows['train']:,}<" in page and f">{report.rows['eval']:,}<" in page
    assert set(facts["drift"]) == set(data.DRIFT_FEATURES) and all(v < 0.3 for v in facts["drift"].values())
    assert page.count("<svg") == 1 + len(data.DRIFT_FEATURES)  # missing values + one overlay per feature
    # the categorical values beside the reference window's and the schema's domain
    assert 'id="values-company"' in page and 'id="values-payment_type"' in page and 'id="label"' in page
    assert "Against the schema (version 1)" in page and ">Taxi Affiliation Services<" in page
    assert "http://" not in re.sub(r'xmlns(:\w+)?="http://[^"]+"', "", page)  # nothing to fetch: works offline
    assert not list(Path(layout.reports_dir).glob(".*"))  # no staging leftovers


def test_the_data_report_of_a_failed_validation_lists_its_problems(run, tmp_path):
    ctx, layout, _ = run
    failed = {
        "window": "w",
        "success": False,
        "rows": {"train": 3, "eval": 1},
        "notes": [],
        "failures": ["too few trips: 4 rows, at least 500 required"],
    }
    validation = Path(layout.validation_dir(), "report.json")
    kept = validation.read_text()
    try:
        validation.write_text(json.dumps(failed))
        html, facts = data.build(layout, window_plan(ctx))
    finally:
        validation.write_text(kept)
    assert facts["verdict"] == "VALIDATION FAILED (1 problems)" and not facts["passed"]
    assert "too few trips: 4 rows, at least 500 required" in html


def test_the_model_report_compares_the_variants_and_shows_each_models_evaluation(run):
    ctx, layout, _ = run
    facts = write_model_report(**ctx)
    page = Path(layout.report_path("model")).read_text()
    assert facts["champion"] == "standard"
    assert facts["models"]["standard"] == {
        "blessed": True,
        "auc": 0.934,
        "accuracy": 0.86,
        "examples": 100.0,
        "baseline": "/serving/taxi_standard/1",
    }
    assert 'data-verdict="CHAMPION: standard (AUC 0.9340)"' in page
    assert 'data-verdict="NOT BLESSED"' in page and 'id="model-coarse"' in page
    assert "candidate - baseline" in page  # the standard variant was judged against its served model
    # per variant: AUC by hour, calibration, confusion matrix, top companies, day x month
    assert page.count("<svg") == 2 * 5
    assert "Taxi Affiliation Services" in page


def test_the_history_of_verdicts_is_a_line_chart_with_one_point_per_window(tmp_path):
    header = (
        "window,window_key,run_id,recent_window,long_window,examples,verdict,"
        "auc_recent,auc_long,auc_difference,auc_ci_low,auc_ci_high"
    )
    rows = [
        f"w,2015{m:02d}01T0000-x,r,a,b,600,{v},0.92,0.93,-0.01,-0.03,0.01"
        for m, v in ((1, "no significant difference"), (2, "long"), (3, "recent"))
    ]
    (tmp_path / "history.csv").write_text("\n".join([header, *rows]) + "\n")
    page = model.build_history(str(tmp_path), "taxi_sliding_window")
    assert page.count("<svg") == 1 and "3 windows" in page
    assert page.count("<tr>") == 1 + 3
