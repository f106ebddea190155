"""TFMA evaluation and the blessing rule, on models trained from the synthetic window."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tensorflow_model_analysis.proto import config_pb2

from taxi_model.blessing import BlessingPolicy
from taxi_model.evaluate import eval_config, run, serving_version


def test_thresholds_gate_only_the_overall_slice_and_compare_only_with_a_baseline():
    policy = BlessingPolicy(auc_floor=0.9, auc_tolerance=0.02)
    alone, against = eval_config(policy, 0.77, with_baseline=False), eval_config(policy, 0.77, with_baseline=True)
    gated = {m.class_name: m for m in alone.metrics_specs[0].metrics if m.per_slice_thresholds}
    assert set(gated) == {"AUC", "BinaryAccuracy"}
    for metric in gated.values():
        (per_slice,) = metric.per_slice_thresholds
        assert list(per_slice.slicing_specs) == [config_pb2.SlicingSpec()]  # overall only
    assert gated["AUC"].per_slice_thresholds[0].threshold.value_threshold.lower_bound.value == 0.9
    assert gated["BinaryAccuracy"].per_slice_thresholds[0].threshold.value_threshold.lower_bound.value == 0.77
    assert not gated["AUC"].per_slice_thresholds[0].threshold.HasField("change_threshold")
    auc = next(m for m in against.metrics_specs[0].metrics if m.class_name == "AUC")
    change = auc.per_slice_thresholds[0].threshold.change_threshold
    assert change.absolute.value == -0.02 and change.direction == config_pb2.MetricDirection.HIGHER_IS_BETTER
    assert [s.is_baseline for s in against.model_specs] == [False, True]
    assert [list(s.feature_keys) for s in alone.slicing_specs] == [
        [],
        ["trip_start_hour"],
        ["company"],
        ["trip_start_day", "trip_start_month"],
    ]


@pytest.fixture(scope="module")
def serving_root(trained_model, tmp_path_factory) -> Path:
    """A TF-Serving base path whose version 1 is the trained model (a half-copied 2 is ignored)."""
    base = tmp_path_factory.mktemp("serving") / "taxi_standard"
    shutil.copytree(trained_model["model"], base / "1")
    (base / "2").mkdir()
    return base


def test_the_served_version_is_the_newest_complete_one(serving_root, tmp_path):
    assert serving_version(str(serving_root)) == f"{serving_root}/1"
    assert serving_version(str(tmp_path / "nothing")) is None


def test_the_baseline_is_older_than_the_runs_own_version(serving_root):
    # A rerun of window 1 must not be judged against its own earlier push.
    assert serving_version(str(serving_root), before=2) == f"{serving_root}/1"
    assert serving_version(str(serving_root), before=1) is None


def test_a_good_candidate_with_nothing_in_service_is_blessed(trained_model, window_dir, tmp_path):
    verdict = run(
        str(trained_model["model"]),
        str(window_dir / "eval" / "part-*.csv"),
        str(tmp_path / "eval"),
        policy=BlessingPolicy(auc_floor=0.6),
    )
    assert verdict.blessed, verdict.reasons
    assert "no model in service to compare with" in verdict.reasons
    assert verdict.metrics["example_count"] == 300
    assert verdict.metrics["binary_accuracy"] > verdict.metrics["majority_class_rate"]
    written = json.loads((tmp_path / "eval" / "blessing.json").read_text())
    assert written["blessed"] is True and written["metrics"] == pytest.approx(verdict.metrics)
    table = json.loads((tmp_path / "eval" / "metrics.json").read_text())["candidate"]
    assert {"overall", "trip_start_hour=0"} <= set(table) and any(k.startswith("company=") for k in table)
    assert any(" x " in k for k in table)  # the day x month slices
    plots = json.loads((tmp_path / "eval" / "plots.json").read_text())["candidate"]  # what the model report draws
    assert sum(b["examples"] for b in plots["calibration"]) == 300 and len(plots["calibration"]) == 10
    matrix = plots["confusion_matrix"]
    assert matrix["threshold"] == pytest.approx(0.5, abs=1e-3)
    assert (
        matrix["true_positives"] + matrix["false_positives"] + matrix["true_negatives"] + matrix["false_negatives"]
        == 300
    )
    assert (matrix["true_positives"] + matrix["true_negatives"]) / 300 == pytest.approx(
        verdict.metrics["binary_accuracy"], abs=1e-6
    )


def test_a_candidate_worse_than_the_served_model_is_not_blessed(one_step_model, serving_root, window_dir, tmp_path):
    verdict = run(
        str(one_step_model),
        str(window_dir / "eval" / "part-*.csv"),
        str(tmp_path / "eval"),
        baseline_model=serving_version(str(serving_root)),
        policy=BlessingPolicy(auc_floor=0.0),
    )
    table = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    candidate_auc, served_auc = table["candidate"]["overall"]["auc"], table["baseline"]["overall"]["auc"]
    assert served_auc - candidate_auc > 0.01  # the premise: the one-step model is worse
    assert not verdict.blessed
    assert verdict.baseline == f"{serving_root}/1"
    assert any("below the serving model's" in r for r in verdict.reasons), verdict.reasons


def test_a_candidate_below_the_absolute_floor_is_not_blessed(trained_model, window_dir, tmp_path):
    verdict = run(
        str(trained_model["model"]),
        str(window_dir / "eval" / "part-*.csv"),
        str(tmp_path / "eval"),
        policy=BlessingPolicy(auc_floor=0.9999),
    )
    assert not verdict.blessed
    assert any(r.startswith("auc ") and "below the bar 0.9999" in r for r in verdict.reasons), verdict.reasons
