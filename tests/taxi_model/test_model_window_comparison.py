"""Recent window vs all history (taxi_model.window_comparison): AUC, paired bootstrap, slice table, a real run."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from taxi_model import window_comparison as wc
from taxi_model.window_comparison import (
    BootstrapResult,
    ComparisonError,
    auc,
    format_table,
    paired_bootstrap_difference,
    slice_rows,
)


def brute_force_auc(labels, scores) -> float:
    """Over all (positive, negative) pairs: 1 if the positive scores higher, 0.5 if tied."""
    positives = [s for y, s in zip(labels, scores, strict=True) if y == 1]
    negatives = [s for y, s in zip(labels, scores, strict=True) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positives, negatives))
    return wins / (len(positives) * len(negatives))


def noisy_scores(labels, noise: float, rng) -> np.ndarray:
    """Scores that separate the classes less well the larger the noise."""
    return np.asarray(labels) + rng.normal(0, noise, len(labels))


# --- AUC ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_auc_matches_the_pairwise_count_including_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 120))
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]  # both classes
    scores = np.round(rng.random(n), 1)  # 11 distinct values: many ties, also across classes
    assert auc(labels, scores) == pytest.approx(brute_force_auc(labels, scores), abs=1e-12)


def test_auc_of_perfect_reversed_and_constant_scores():
    labels = [0, 0, 1, 1, 0, 1]
    assert auc(labels, [0.1, 0.2, 0.8, 0.9, 0.3, 0.7]) == 1.0
    assert auc(labels, [0.9, 0.8, 0.2, 0.1, 0.7, 0.3]) == 0.0
    assert auc(labels, [0.5] * 6) == 0.5
    assert auc([1, 0], np.array([[0.7], [0.2]])) == 1.0  # a [batch, 1] output is flattened


def test_auc_refuses_a_single_class_and_bad_input():
    with pytest.raises(ComparisonError, match="both classes"):
        auc([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(ComparisonError, match="both classes"):
        auc([], [])
    with pytest.raises(ComparisonError, match="0 and 1"):
        auc([0, 2], [0.1, 0.2])
    with pytest.raises(ComparisonError, match="NaN"):
        auc([0, 1], [0.1, math.nan])
    with pytest.raises(ComparisonError, match="3 scores for 2 labels"):
        auc([0, 1], [0.1, 0.2, 0.3])


def test_a_resample_weighted_by_counts_is_the_auc_of_the_repeated_examples():
    rng = np.random.default_rng(3)
    labels, scores = rng.integers(0, 2, 50), np.round(rng.random(50), 1)
    indices = rng.integers(0, 50, 50)
    distinct, groups = np.unique(scores, return_inverse=True)
    counts = np.bincount(indices, minlength=50).astype(float)
    weighted = wc._weighted_auc(labels, groups.reshape(-1), len(distinct), counts)
    assert weighted == pytest.approx(brute_force_auc(labels[indices], scores[indices]), abs=1e-12)


# --- paired bootstrap ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_models():
    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.25).astype(int)
    return labels, noisy_scores(labels, 0.5, rng), noisy_scores(labels, 1.5, rng)  # better, worse


def test_the_bootstrap_is_deterministic_with_a_seed(two_models):
    labels, better, worse = two_models
    first = paired_bootstrap_difference(labels, better, worse, resamples=200, seed=5)
    assert paired_bootstrap_difference(labels, better, worse, resamples=200, seed=5) == first
    other = paired_bootstrap_difference(labels, better, worse, resamples=200, seed=6)
    assert other.difference == first.difference and (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)


def test_a_clearly_better_model_has_an_interval_above_zero(two_models):
    labels, better, worse = two_models
    result = paired_bootstrap_difference(labels, better, worse, resamples=500, seed=0)
    assert result.difference == pytest.approx(auc(labels, better) - auc(labels, worse))
    assert (result.auc_a, result.auc_b) == (auc(labels, better), auc(labels, worse))
    assert 0 < result.ci_low <= result.difference <= result.ci_high
    assert wc.verdict(result) == wc.RECENT
    assert (result.resamples, result.used, result.seed, result.confidence) == (500, 500, 0, 0.95)
    swapped = paired_bootstrap_difference(labels, worse, better, resamples=500, seed=0)
    assert swapped.ci_high < 0 and wc.verdict(swapped) == wc.LONG
    assert (swapped.ci_low, swapped.ci_high) == pytest.approx((-result.ci_high, -result.ci_low))


def test_close_models_have_an_interval_around_zero():
    rng = np.random.default_rng(1)
    labels = (rng.random(300) < 0.3).astype(int)
    result = paired_bootstrap_difference(
        labels, noisy_scores(labels, 1.0, rng), noisy_scores(labels, 1.0, rng), resamples=300, seed=0
    )
    assert result.ci_low <= result.difference <= result.ci_high
    assert result.ci_low < 0 < result.ci_high and wc.verdict(result) == wc.NO_DIFFERENCE


def test_identical_models_differ_by_exactly_zero(two_models):
    labels, better, _ = two_models
    result = paired_bootstrap_difference(labels, better, better.copy(), resamples=100, seed=0)
    assert (result.difference, result.ci_low, result.ci_high) == (0.0, 0.0, 0.0)
    assert wc.verdict(result) == wc.NO_DIFFERENCE


def test_resamples_with_a_single_class_are_skipped():
    labels = np.array([1] + [0] * 11)  # one positive: about a third of the resamples miss it
    scores = np.linspace(0, 1, 12)
    result = paired_bootstrap_difference(labels, scores, scores[::-1], resamples=300, seed=0)
    assert 100 < result.used < 300 and not math.isnan(result.ci_low)


# --- sentence, slices, table ---------------------------------------------------------------------


def test_the_sentence():
    result = BootstrapResult(
        difference=0.0312,
        ci_low=0.0118,
        ci_high=0.0504,
        auc_a=0.9,
        auc_b=0.87,
        resamples=1000,
        used=1000,
        seed=0,
        confidence=0.95,
    )
    assert wc.sentence(result, 412) == (
        "the recent-window model's AUC is 0.031 higher (95% CI 0.012 to 0.050) on 412 trips of the newest window"
    )
    lower = BootstrapResult(-0.02, -0.035, -0.004, 0.85, 0.87, 1000, 1000, 0, 0.95)
    assert "AUC is 0.020 lower (95% CI -0.035 to -0.004)" in wc.sentence(lower, 50)
    same = BootstrapResult(0.0, 0.0, 0.0, 0.9, 0.9, 10, 10, 0, 0.95)
    assert "AUC is the same as the long-history model's (95% CI 0.000 to 0.000)" in wc.sentence(same, 50)


def metrics(slices: dict[str, tuple[float, float, float]]) -> dict:
    """A metrics.json as taxi_model.evaluate writes it, from {slice: (example_count, auc, binary_accuracy)}."""
    return {
        "candidate": {
            name: {"example_count": n, "auc": a, "binary_accuracy": acc, "precision": 0.5}
            for name, (n, a, acc) in slices.items()
        }
    }


RECENT_METRICS = metrics(
    {
        "trip_start_hour=10": (40.0, 0.91, 0.88),
        "trip_start_hour=3": (25.0, 0.80, 0.84),
        "company=Flash Cab": (30.0, 0.90, 0.85),
        "trip_start_day=1 x trip_start_month=5": (22.0, 0.70, 0.80),
        "trip_start_hour=4": (5.0, 0.99, 0.99),  # too few examples
        "company=Yellow Cab": (60.0, 0.85, 0.82),  # not in the long evaluation
        "overall": (300.0, 0.93, 0.87),
        "company=City Service": (20.0, float("nan"), 0.9),  # TFMA's AUC of a single-class slice
    }
)
LONG_METRICS = metrics(
    {
        "overall": (300.0, 0.90, 0.85),
        "trip_start_hour=3": (25.0, 0.82, 0.80),
        "trip_start_hour=10": (40.0, 0.85, 0.86),
        "trip_start_hour=4": (5.0, 0.5, 0.5),
        "company=Flash Cab": (30.0, 0.88, 0.87),
        "trip_start_day=1 x trip_start_month=5": (22.0, 0.72, 0.80),
        "company=City Service": (20.0, 0.7, 0.8),
    }
)


def test_the_slice_table_pairs_the_slices_of_both_evaluations():
    rows = slice_rows(RECENT_METRICS, LONG_METRICS, min_examples=20)
    assert [r["slice"] for r in rows] == [
        "overall",
        "company=City Service",
        "company=Flash Cab",
        "trip_start_day=1 x trip_start_month=5",
        "trip_start_hour=3",
        "trip_start_hour=10",
    ]
    overall = rows[0]
    assert overall["example_count"] == 300 and isinstance(overall["example_count"], int)
    assert (overall["recent_auc"], overall["long_auc"]) == (0.93, 0.90)
    assert overall["auc_difference"] == pytest.approx(0.03)
    assert overall["binary_accuracy_difference"] == pytest.approx(0.02)
    hour3 = rows[4]
    assert hour3["auc_difference"] == pytest.approx(-0.02) and hour3["binary_accuracy_difference"] == pytest.approx(
        0.04
    )
    city = rows[1]
    assert city["recent_auc"] is None and city["auc_difference"] is None and city["long_auc"] == 0.7
    assert [r["slice"] for r in slice_rows(RECENT_METRICS, LONG_METRICS, min_examples=30)] == [
        "overall",
        "company=Flash Cab",
        "trip_start_hour=10",
    ]
    # overall stays even below the bar
    assert [r["slice"] for r in slice_rows(RECENT_METRICS, LONG_METRICS, min_examples=1000)] == ["overall"]
    json.dumps(rows, allow_nan=False)  # NaN became None: strict JSON


def test_the_slice_table_needs_the_candidate_model():
    with pytest.raises(ComparisonError, match="long evaluation's metrics.json has no 'candidate'"):
        slice_rows(RECENT_METRICS, {"baseline": {}})


def test_the_table_is_aligned():
    text = format_table(slice_rows(RECENT_METRICS, LONG_METRICS, min_examples=20))
    lines = text.splitlines()
    assert lines[0].split() == [
        "slice",
        "examples",
        "auc",
        "recent",
        "auc",
        "long",
        "auc",
        "diff",
        "acc",
        "recent",
        "acc",
        "long",
        "acc",
        "diff",
    ]
    assert len({len(line) for line in lines}) == 1  # numbers right-aligned to the same column ends
    assert lines[2].startswith("overall ") and "+0.0300" in lines[2]
    assert "trip_start_day=1 x trip_start_month=5" in text and "-0.0200" in text
    city = next(line for line in lines if line.startswith("company=City Service"))
    assert " - " in city  # a missing AUC


# --- a real run ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluations(trained_model, one_step_model, window_dir, tmp_path_factory) -> dict[str, Path]:
    """Both models evaluated by TFMA on the eval split, as the DAG does before the comparison."""
    from taxi_model import evaluate
    from taxi_model.blessing import BlessingPolicy

    root = tmp_path_factory.mktemp("evaluations")
    for name, model in (("recent", trained_model["model"]), ("long", one_step_model)):
        evaluate.run(
            str(model), str(window_dir / "eval" / "part-*.csv"), str(root / name), policy=BlessingPolicy(auc_floor=0.0)
        )
    return {"recent": root / "recent", "long": root / "long"}


def cli_args(trained_model, one_step_model, eval_glob, evaluations, output) -> list[str]:
    return [
        "--recent_model",
        str(trained_model["model"]),
        "--long_model",
        str(one_step_model),
        "--eval",
        str(eval_glob),
        "--recent_evaluation",
        str(evaluations["recent"]),
        "--long_evaluation",
        str(evaluations["long"]),
        "--output",
        str(output),
    ]


def test_the_recent_model_beats_the_one_step_model(
    trained_model, one_step_model, window_dir, evaluations, tmp_path, capsys
):
    output = tmp_path / "comparison"
    args = cli_args(trained_model, one_step_model, window_dir / "eval" / "part-*.csv", evaluations, output)
    wc.main(args + ["--bootstrap", "500", "--seed", "1", "--min_slice_examples", "15"])
    report = json.loads((output / "comparison.json").read_text())
    assert report["verdict"] == "recent", report["sentence"]
    assert report["examples"] == 300
    assert report["bootstrap"] == {"resamples": 500, "used": 500, "seed": 1, "confidence": 0.95}
    assert report["min_slice_examples"] == 15
    a = report["auc"]
    assert a["difference"] == pytest.approx(a["recent"] - a["long"]) and 0 < a["ci_low"] <= a["ci_high"]
    assert report["sentence"].startswith("the recent-window model's AUC is ")
    assert report["sentence"].endswith(
        f"higher (95% CI {a['ci_low']:.3f} to {a['ci_high']:.3f}) on 300 trips of the newest window"
    )
    slices = report["slices"]
    assert slices[0]["slice"] == "overall" and slices[0]["example_count"] == 300
    assert abs(slices[0]["recent_auc"] - a["recent"]) < 0.01  # TFMA's thresholded AUC vs the exact one
    assert len(slices) > 1 and all(s["example_count"] >= 15 for s in slices)
    text = (output / "comparison.txt").read_text().splitlines()
    assert text[0] == report["sentence"] and text[1] == "verdict: recent"
    assert "fewer than 15 examples left out" in text[3] and any(line.startswith("overall ") for line in text)
    assert f"{report['sentence']}\nverdict: recent" in capsys.readouterr().err  # logged
    assert not list(tmp_path.glob("comparison.tmp-*"))  # the staging dir is gone


def test_the_candidate_is_compared_with_the_served_model_on_the_same_trips(
    trained_model, one_step_model, window_dir, evaluations, tmp_path
):
    """The served model at stable is the one-step model: the candidate (the recent model, the verdict's
    winner) is significantly better; comparison.json is what it is without a served model."""
    eval_glob = window_dir / "eval" / "part-*.csv"
    alone, versus = tmp_path / "alone", tmp_path / "versus"
    wc.main(cli_args(trained_model, one_step_model, eval_glob, evaluations, alone) + ["--bootstrap", "200"])
    served = str(one_step_model) + "/"  # a version directory, as the DAG passes it
    wc.main(
        cli_args(trained_model, one_step_model, eval_glob, evaluations, versus)
        + ["--bootstrap", "200", "--stable_model", served]
    )
    assert (alone / "comparison.json").read_bytes() == (versus / "comparison.json").read_bytes()
    nothing = json.loads((alone / "versus_stable.json").read_text())
    assert nothing["candidate"] == "recent" and nothing["stable"] is None and nothing["significant"] is None
    report = json.loads((versus / "versus_stable.json").read_text())
    assert report["candidate"] == "recent" and report["why"] == "the verdict's winner"
    assert report["stable"] == {"version": one_step_model.name} and report["significant"] is True
    comparison = json.loads((versus / "comparison.json").read_text())
    assert report["auc"]["candidate"] == comparison["auc"]["recent"]  # the same trips, the same AUC
    assert report["auc"]["stable"] == pytest.approx(comparison["auc"]["long"])  # the one-step model again
    assert report["sentence"].startswith("the recent-window model's AUC is ")


def test_with_no_significant_difference_the_candidate_is_the_higher_auc():
    report = {"verdict": wc.NO_DIFFERENCE, "auc": {"recent": 0.80, "long": 0.81}}
    assert wc.candidate_of(report) == ("long", "no significant difference between the two: the higher AUC")
    result = wc.BootstrapResult(0.004, -0.01, 0.02, 0.81, 0.806, 100, 100, 0, 0.95)
    served = wc.versus_stable(report, result, "201512010000")
    assert served["significant"] is False and served["stable"] == {"version": "201512010000"}
    assert served["sentence"] == (
        "the long-window model's AUC is 0.004 higher than the served version 201512010000's "
        "(95% CI -0.010 to 0.020) on the same trips"
    )


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_an_eval_set_the_comparison_cannot_use_is_a_clear_error(
    trained_model, one_step_model, window_dir, evaluations, tmp_path
):
    with (window_dir / "eval" / "part-00000.csv").open() as f:
        rows = list(csv.DictReader(f))
    no_tips = write_rows(tmp_path / "no_tips" / "part-0.csv", [{**r, "tips": "0"} for r in rows[:50]])
    too_few = write_rows(tmp_path / "few" / "part-0.csv", rows[:3])
    cases = [
        (no_tips, "all 50 eval trips have big_tipper=0: AUC needs both classes"),
        (too_few, "3 eval rows match"),
        (tmp_path / "nothing" / "*.csv", "0 eval rows match"),
    ]
    for eval_glob, message in cases:
        with pytest.raises(SystemExit, match=message):
            wc.main(cli_args(trained_model, one_step_model, eval_glob, evaluations, tmp_path / "out"))
        assert not (tmp_path / "out").exists()
    missing = {**evaluations, "long": tmp_path / "no_evaluation"}
    with pytest.raises(SystemExit, match="the long evaluation has no metrics.json"):
        wc.main(cli_args(trained_model, one_step_model, window_dir / "eval" / "part-*.csv", missing, tmp_path / "out"))
