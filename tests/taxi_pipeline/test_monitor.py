"""The daily serving monitor and its report, on sample-like synthetic trips: a year to train on, a day
served like it, and days that drifted (no services, no model: predictions are drawn from the label)."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from taxi_pipeline.monitor import (
    MonitorThresholds,
    append_history,
    monitor_day,
    prediction_drift,
    rank_auc,
    read_eval_reference,
    read_history,
    read_training_reference,
    realized_quality,
    whole_window,
)
from taxi_pipeline.reports import monitor as report
from taxi_pipeline.schema import infer_schema, made, render
from taxi_pipeline.trip_statistics import generate_statistics, label_of

PAYMENTS = {"Cash": 0.55, "Credit Card": 0.40, "No Charge": 0.03, "Unknown": 0.02}
COMPANIES = [f"Cab Company {i}" for i in range(20)]
TRAINING_START = datetime(2015, 1, 1, tzinfo=UTC)
DAY = datetime(2016, 3, 2, tzinfo=UTC)  # a Wednesday, after the training year
MODEL_VERSION = 1456790400


def trips(rng, n: int, start: datetime, days: int, first_key: int = 0) -> pd.DataFrame:
    """Trips shaped like the sample's: a lognormal fare, big tips on about a third of card trips."""
    seconds = start.timestamp() + rng.uniform(0, days * 86_400, n).round()
    moments = pd.to_datetime(seconds, unit="s", utc=True)
    fare = (rng.lognormal(2.1, 0.6, n) * 4).round() / 4
    payment = rng.choice(list(PAYMENTS), n, p=list(PAYMENTS.values()))
    weights = 0.8 ** np.arange(len(COMPANIES))
    company = rng.choice(COMPANIES, n, p=weights / weights.sum()).astype(object)
    company[rng.random(n) < 0.3] = None
    miles = (fare / 2.6 + rng.exponential(0.3, n)).round(1)
    return pd.DataFrame(
        {
            "unique_key": [f"trip-{first_key + i:07d}" for i in range(n)],
            "pickup_community_area": rng.integers(1, 78, n).astype(float),
            "fare": fare,
            "trip_start_month": moments.month,
            "trip_start_hour": moments.hour,
            "trip_start_day": (moments.dayofweek + 1) % 7 + 1,  # BigQuery's DAYOFWEEK: Sunday is 1
            "trip_start_timestamp": seconds.astype(int),
            "pickup_latitude": rng.normal(41.89, 0.03, n),
            "pickup_longitude": rng.normal(-87.64, 0.03, n),
            "dropoff_latitude": rng.normal(41.89, 0.03, n),
            "dropoff_longitude": rng.normal(-87.64, 0.03, n),
            "trip_miles": miles,
            "pickup_census_tract": None,
            "dropoff_census_tract": [f"170310{rng.integers(10000, 99999)}" for _ in range(n)],
            "payment_type": payment,
            "company": company,
            "trip_seconds": (miles * 200 + rng.exponential(120, n)).round(),
            "dropoff_community_area": rng.integers(1, 78, n).astype(float),
            "tips": np.where(
                (payment == "Credit Card") & (rng.random(n) < 0.6), (fare * rng.uniform(0.1, 0.35, n)).round(2), 0.0
            ),
        }
    )


def served(rng, frame: pd.DataFrame, shift: float = 0.0, informative: bool = True) -> pd.DataFrame:
    """A model's predictions for trips: a logit that knows the label (AUC about 0.95), moved by `shift`."""
    labels = label_of(frame).to_numpy()
    signal = np.where(labels, 1.5, -1.5) if informative else 0.0
    logits = signal + rng.normal(-0.3, 1.3, len(frame)) + shift
    return pd.DataFrame(
        {"unique_key": frame["unique_key"], "model_version": MODEL_VERSION, "probability": 1 / (1 + np.exp(-logits))}
    )


def calibration(probabilities, labels, bins: int = 10) -> list[dict]:
    """The eval split's histogram as taxi_model.evaluate._calibration_bins writes it to plots.json."""
    out = [
        {"lower": i / bins, "upper": (i + 1) / bins, "examples": 0.0, "labels": 0.0, "predictions": 0.0}
        for i in range(bins)
    ]
    for p, y in zip(probabilities, labels, strict=True):
        b = out[min(int(p * bins), bins - 1)]
        b["examples"] += 1
        b["labels"] += float(y)
        b["predictions"] += float(p)
    return out


@pytest.fixture(scope="module")
def champion():
    """The champion's training year (its validation's statistics.json and schema) and its eval split
    (the calibration histogram and AUC its evaluation wrote)."""
    rng = np.random.default_rng(2015)
    year = trips(rng, 24_000, TRAINING_START, 365)
    splits = {"train": year.iloc[:16_000], "eval": year.iloc[16_000:]}
    statistics = {"window": generate_statistics(splits), "reference": None}
    schema = infer_schema([statistics["window"]["splits"]["train"]], made("inferred", run="test"))
    schema["version"] = 1
    scores = served(rng, splits["eval"])
    labels = label_of(splits["eval"]).to_numpy()
    return {
        "statistics": statistics,
        "schema": schema,
        "calibration": calibration(scores["probability"], labels),
        "auc": rank_auc(scores["probability"], labels),
    }


def monitor(champion, frame, predictions, **kwargs):
    return monitor_day(
        frame,
        predictions,
        champion["statistics"],
        champion["schema"],
        champion["calibration"],
        champion["auc"],
        day=f"{DAY:%Y-%m-%d}",
        **kwargs,
    )


@pytest.fixture(scope="module")
def normal_day(champion):
    rng = np.random.default_rng(1)
    frame = trips(rng, 3000, DAY, 1, first_key=1_000_000)
    return frame, monitor(champion, frame, served(rng, frame))


@pytest.fixture(scope="module")
def drifted_day(champion):
    """A day whose card payments are recorded as "Card" and whose fares are half as high again, scored
    by a model whose probabilities moved up."""
    rng = np.random.default_rng(2)
    frame = trips(rng, 3000, DAY, 1, first_key=2_000_000)
    predictions = served(rng, frame, shift=1.5)
    frame["payment_type"] = frame["payment_type"].replace({"Credit Card": "Card"})
    frame["fare"] = frame["fare"] * 1.5
    return frame, monitor(champion, frame, predictions)


def test_a_day_like_the_training_window_crosses_nothing(champion, normal_day):
    frame, result = normal_day
    assert result.crossed == [] and not result.alert and result.verdict == "ok"
    assert result.rows == result.scored == len(frame) and result.model_version == str(MODEL_VERSION)
    by_column = {f.column: f for f in result.features}
    # every compared column judged and within its threshold, the day of the week excepted
    assert by_column["fare"].measure == "Jensen-Shannon" and by_column["fare"].status == "ok"
    assert (
        by_column["fare"].threshold
        == champion["schema"]["features"]["fare"]["skew_comparator"]["jensen_shannon_divergence"]["threshold"]
    )
    assert by_column["payment_type"].measure == "L-infinity" and by_column["payment_type"].distance < 0.05
    assert by_column["trip_start_day"].measure is None and "day of the week" in by_column["trip_start_day"].status
    assert by_column["big_tipper"].measure == "base rate change"
    assert all(f.distance < f.threshold for f in result.features if f.distance is not None)
    assert result.unseen == {}
    assert result.prediction.js < 0.02 and result.prediction.count == len(frame)
    assert result.quality.auc == pytest.approx(champion["auc"], abs=0.02)
    json.dumps(result.to_dict())  # what a task returns or writes


def test_a_renamed_payment_type_and_higher_fares_cross_their_thresholds(drifted_day):
    _, result = drifted_day
    assert result.alert
    crossed = "\n".join(result.crossed)
    assert re.search(r"^payment_type: .* outside the schema's domain .*'Card' [34]\d\.\d%", crossed, re.M), crossed
    assert re.search(
        r"^payment_type: skew against the training window \(L-infinity distance 0\.\d+ > 0.15\)", crossed, re.M
    )
    assert re.search(r"^fare: skew against the training window \(Jensen-Shannon divergence", crossed, re.M)
    assert re.search(r"^predictions: the served probabilities drifted .* > 0.05", crossed, re.M)
    by_column = {f.column: f for f in result.features}
    assert by_column["fare"].crossed and by_column["payment_type"].crossed
    assert by_column["fare"].status == "CROSSED" and not by_column["trip_miles"].crossed
    (card,) = [share for value, share in result.unseen["payment_type"] if value == "Card"]
    assert 0.35 < card < 0.45


def test_the_training_statistics_may_be_given_as_validation_wrote_them_or_as_one_set(champion, normal_day):
    frame, result = normal_day
    rng = np.random.default_rng(1)
    whole = whole_window(champion["statistics"])
    assert whole is champion["statistics"]["window"]["all"] and whole_window(whole) is whole
    again = monitor_day(
        frame,
        served(rng, frame),
        whole,
        champion["schema"],
        champion["calibration"],
        champion["auc"],
        day="2016-03-02",
    )
    assert [(f.column, f.distance) for f in again.features] == [(f.column, f.distance) for f in result.features]


def test_a_model_that_stopped_ranking_trips_crosses_the_auc_margin(champion):
    rng = np.random.default_rng(3)
    frame = trips(rng, 3000, DAY, 1, first_key=3_000_000)
    result = monitor(champion, frame, served(rng, frame, informative=False))
    (line,) = [line for line in result.crossed if line.startswith("realized AUC")]
    assert f"below the eval AUC {champion['auc']:.4f} (at most 0.05 allowed)" in line
    assert result.quality.auc == pytest.approx(0.5, abs=0.05)


def test_a_small_day_is_measured_not_judged(champion):
    rng = np.random.default_rng(4)
    frame = trips(rng, 120, DAY, 1, first_key=4_000_000)
    predictions = served(rng, frame, shift=3.0, informative=False)
    result = monitor(champion, frame.iloc[:100], predictions)
    assert result.crossed == []
    assert result.rows == 100 and result.scored == 100
    notes = "\n".join(result.notes)
    assert "prediction drift not judged: 120 predictions, fewer than 500" in notes
    assert "realized quality not judged: 100 scored trips" in notes
    assert "20 predictions are of trips not among the day's" in notes
    assert "numeric skew not judged against the training window: fewer than 1000 values" in notes
    assert {f.status for f in result.features if f.measure == "Jensen-Shannon"} == {
        "not judged: fewer than 1000 values"
    }
    assert all(f.distance is not None for f in result.features if f.measure == "Jensen-Shannon")
    # the thresholds are the monitor's to set
    strict = monitor(champion, frame.iloc[:100], predictions, thresholds=MonitorThresholds(min_rows=50))
    assert any(line.startswith("predictions:") for line in strict.crossed)
    assert any(line.startswith("realized AUC") for line in strict.crossed)


def test_the_predictions_must_name_their_trips_and_model():
    with pytest.raises(ValueError, match="model_version, probability"):
        monitor_day(pd.DataFrame({"unique_key": []}), pd.DataFrame({"unique_key": []}), {}, {}, [], None, day="x")


def test_rank_auc_counts_ties_half_and_needs_both_classes():
    assert rank_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # (0.5 vs 0.2) 1, (0.5 vs 0.5) 1/2, (0.9 vs 0.2) 1, (0.9 vs 0.5) 1: 3.5 of 4 pairs
    assert rank_auc([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx(0.875)
    assert rank_auc([0.3] * 6, [0, 1, 0, 1, 1, 0]) == pytest.approx(0.5)
    assert rank_auc([0.9, 0.8, 0.1], [0, 0, 1]) == 0.0
    assert rank_auc([0.1, 0.2], [1, 1]) is None and rank_auc([], []) is None
    rng = np.random.default_rng(5)
    scores, labels = rng.integers(0, 8, 300) / 8, rng.random(300) < 0.3  # many ties
    pairs = scores[labels][:, None] - scores[~labels][None, :]
    assert rank_auc(scores, labels) == pytest.approx(((pairs > 0) + 0.5 * (pairs == 0)).mean())


def test_realized_quality_is_auc_and_accuracy_at_one_half():
    quality = realized_quality([0.1, 0.4, 0.35, 0.8, 0.5], [0, 0, 1, 1, 0])
    assert quality.count == 5 and quality.positives == 2
    assert quality.auc == pytest.approx(4 / 6)  # 0.8 beats all three negatives, 0.35 beats 0.1 only
    # 0.35 is the one miss; 0.5 is not above one half, so it predicts the negative it is
    assert quality.accuracy == pytest.approx(4 / 5)
    assert realized_quality([0.9, 0.8], [1, 1]) is None


def test_prediction_drift_is_the_jensen_shannon_divergence_of_the_two_histograms():
    flat = [
        {"lower": i / 10, "upper": (i + 1) / 10, "examples": 10.0, "labels": 2.0, "predictions": i + 0.5}
        for i in range(10)
    ]
    same = prediction_drift(np.arange(10) / 10 + 0.05, flat)
    assert same.js == pytest.approx(0.0) and same.mean == pytest.approx(0.5) and same.reference_mean == 0.5
    # every prediction in the first bin against a uniform histogram: M = (0.55, 0.05 x 9)
    lowest = prediction_drift([0.0, 0.05, 0.0999], flat)
    expected = (math.log2(1 / 0.55) + 0.1 * math.log2(0.1 / 0.55) + 0.9 * math.log2(0.1 / 0.05)) / 2
    assert lowest.js == pytest.approx(expected) and lowest.shares[0] == 1.0
    # a bin holds its lower bound; 1.0 is in the last bin
    edges = prediction_drift([0.1, 0.2, 1.0], flat)
    assert edges.shares[1] == edges.shares[2] == edges.shares[9] == pytest.approx(1 / 3)
    assert prediction_drift([], flat).js is None


def test_a_rerun_of_a_day_replaces_its_history_row(tmp_path, normal_day, drifted_day):
    directory = str(tmp_path / "history")
    _, normal = normal_day
    _, drifted = drifted_day
    later = {**normal.history_row(), "window_key": "2016-03-03"}
    append_history(directory, later)
    append_history(directory, normal.history_row())
    append_history(directory, drifted.history_row())  # the same day again: a rerun
    rows = read_history(directory)
    assert [r["window_key"] for r in rows] == ["2016-03-02", "2016-03-03"]
    assert rows[0]["verdict"] == "alert" and rows[0]["crossed"] == len(drifted.crossed)
    assert rows[0]["js_fare"] == pytest.approx(drifted.history_row()["js_fare"])
    assert sorted(p.name for p in (tmp_path / "history").iterdir()) == [
        "2016-03-02.json",
        "2016-03-03.json",
        "history.csv",
    ]
    csv_lines = (tmp_path / "history" / "history.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[1].startswith("2016-03-02,")
    assert read_history(str(tmp_path / "nothing")) == []


def test_the_references_are_read_from_the_champions_validation_and_evaluation(tmp_path, champion):
    validation, evaluation = tmp_path / "validation", tmp_path / "evaluation"
    validation.mkdir()
    evaluation.mkdir()
    (validation / "statistics.json").write_text(json.dumps(champion["statistics"]))
    (validation / "schema.yaml").write_text(render(champion["schema"], "taxi_daily_retrain", 1))
    (evaluation / "plots.json").write_text(json.dumps({"candidate": {"calibration": champion["calibration"]}}))
    (evaluation / "blessing.json").write_text(json.dumps({"blessed": True, "metrics": {"auc": 0.93}}))
    statistics, schema = read_training_reference(str(validation))
    assert statistics == json.loads(json.dumps(champion["statistics"]["window"]["all"]))
    assert schema["features"]["payment_type"]["domain"] == champion["schema"]["features"]["payment_type"]["domain"]
    assert read_eval_reference(str(evaluation)) == (champion["calibration"], 0.93)


def test_the_report_shows_the_verdict_distances_unseen_values_predictions_and_history(champion, normal_day):
    rng = np.random.default_rng(6)
    frame = trips(rng, 3000, DAY, 1, first_key=6_000_000)
    frame.loc[:1499, "payment_type"] = "<script>alert('x')</script>"
    result = monitor(champion, frame, served(rng, frame))
    history = [{**normal_day[1].history_row(), "window_key": "2016-03-01"}, result.history_row()]
    page = report.build(result, history)
    assert f'data-verdict="ALERT: {len(result.crossed)} thresholds crossed"' in page
    for section in ("crossed", "features", "unseen", "predictions", "history"):
        assert f'<section id="{section}">' in page
    for table in ("distances", "unseen-values", "prediction-bins", "history-table"):
        assert f'<table id="{table}">' in page
    assert 'data-metric="realized AUC"' in page and 'data-metric="model version"' in page
    # the prediction histogram, and the history: AUC, prediction drift, numeric, categorical, label
    assert page.count("<svg") == 6
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "http://" not in re.sub(r'xmlns(:\w+)?="http://[^"]+"', "", page)  # works offline

    calm = report.build(normal_day[1], [])
    assert 'data-verdict="OK: no threshold crossed"' in calm and "<p>no threshold crossed.</p>" in calm
    assert "no monitored day recorded yet" in calm and calm.count("<svg") == 1
