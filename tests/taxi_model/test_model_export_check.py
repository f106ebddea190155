"""The export check: a real trained model is servable; broken exports of it are not, each with its reason."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import taxi_model  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
from taxi_model import export_check

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
import broken_model  # noqa: E402


@pytest.fixture(scope="module")
def eval_glob(window_dir) -> str:
    return str(window_dir / "eval" / "part-*.csv")


def test_a_trained_model_is_servable_and_the_report_is_written(trained_model, eval_glob, tmp_path):
    result = export_check.run(str(trained_model["model"]), eval_glob, str(tmp_path / "check"))
    assert result.servable, result.reasons
    report = json.loads((tmp_path / "check" / "report.json").read_text())
    assert report["servable"] is True and report["stats"]["non_finite"] == 0
    assert 0 < report["stats"]["min"] <= report["stats"]["mean"] <= report["stats"]["max"] < 1
    assert abs(report["stats"]["mean"] - report["stats"]["positive_rate"]) <= export_check.MAX_MEAN_GAP
    assert report["reasons"][0].endswith("; classification agrees")
    assert not list(tmp_path.glob("check.tmp-*"))


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("constant", "constant outputs: predictions spread 0.00e+00"),
        ("nan", "predictions are NaN or infinite"),
        ("unloadable", "the export does not load or answer through serving_default: OSError"),
        ("misclassifying", "the classification signature disagrees with serving_default: its scores [300, 2] differ"),
    ],
)
def test_a_broken_export_is_not_servable_and_says_why(kind, reason, trained_model, eval_glob, tmp_path):
    broken_model.build(kind, str(trained_model["model"]), str(tmp_path / kind))
    result = export_check.run(str(tmp_path / kind), eval_glob, str(tmp_path / "check"))
    assert not result.servable
    assert any(r.startswith(reason) or reason in r for r in result.reasons), result.reasons
    assert json.loads((tmp_path / "check" / "report.json").read_text())["servable"] is False


def test_skew_is_measured_against_the_eval_rows_labels(trained_model, window_dir):
    rows = export_check.read_rows(str(window_dir / "eval" / "part-*.csv"), limit=300)
    assert export_check.check(str(trained_model["model"]), rows).servable
    # The same model judged with a bar tighter than its own calibration error is called skewed.
    result = export_check.check(str(trained_model["model"]), rows, max_mean_gap=0.0)
    assert not result.servable and result.reasons[0].startswith("skewed outputs: mean prediction")
