"""Validation of real and deliberately broken windows."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from taxi_pipeline.extract import extract_windows
from taxi_pipeline.files import read_split
from taxi_pipeline.layout import RunLayout
from taxi_pipeline.validation import validate_window
from taxi_pipeline.window import Window

WINDOW = Window.ending_at(datetime(2016, 1, 1, tzinfo=UTC), 365)
MIN_ROWS = 500


@pytest.fixture(scope="module")
def real_window(warehouse, tmp_path_factory) -> Path:
    layout = RunLayout(str(tmp_path_factory.mktemp("artifacts")), "test", WINDOW, "real")
    extract_windows(warehouse, layout, {"": WINDOW, "reference": WINDOW.previous()})
    return Path(layout.data_dir)


def broken_copy(real_window: Path, tmp_path: Path, mutate) -> Path:
    """A copy of the real window whose train split went through `mutate(frame) -> frame`."""
    for split in ("train", "eval", "reference/train"):
        frame = read_split(str(real_window / split))
        if split == "train":
            frame = mutate(frame)
        (tmp_path / "data" / split).mkdir(parents=True)
        frame.to_csv(tmp_path / "data" / split / "part-00000.csv", index=False)
    return tmp_path / "data"


@pytest.fixture(autouse=True)
def _schema(schema_2015):
    global SCHEMA
    SCHEMA = schema_2015


def validate(data_dir: Path, tmp_path: Path):
    return validate_window(
        str(data_dir),
        WINDOW,
        str(tmp_path / "validation"),
        MIN_ROWS,
        SCHEMA,
        reference_dir=str(data_dir / "reference" / "train"),
    )


def test_the_real_window_passes_and_writes_its_report(real_window, tmp_path):
    report = validate(real_window, tmp_path)
    assert report.success, report.summary()
    assert report.rows["train"] > 4000 and report.rows["eval"] > 2000
    out = tmp_path / "validation"
    assert json.loads((out / "report.json").read_text())["success"] is True
    assert json.loads((out / "result.json").read_text())["success"] is True
    assert (out / "data_docs" / "index.html").exists()
    assert "PASSED" in (out / "summary.txt").read_text()


def test_a_missing_column_is_named(real_window, tmp_path):
    report = validate(broken_copy(real_window, tmp_path, lambda f: f.drop(columns=["company"])), tmp_path)
    assert not report.success
    assert report.failures == ["missing required columns: company"]


def test_negative_fares_are_counted(real_window, tmp_path):
    def negative(frame):
        frame.loc[:24, "fare"] = -3.0
        return frame

    report = validate(broken_copy(real_window, tmp_path, negative), tmp_path)
    assert not report.success
    (line,) = [f for f in report.failures if f.startswith("fare:")]
    assert "25 values" in line and "outside [0, 1000]" in line


def test_a_text_value_in_a_numeric_column_is_shown(real_window, tmp_path):
    def text(frame):
        frame["trip_miles"] = frame["trip_miles"].astype(object)
        frame.loc[3, "trip_miles"] = "n/a"
        return frame

    report = validate(broken_copy(real_window, tmp_path, text), tmp_path)
    assert not report.success
    assert report.failures == ["trip_miles: not numeric, has text values such as ['n/a']"]


def test_an_empty_window_fails_on_its_row_count(real_window, tmp_path):
    report = validate(broken_copy(real_window, tmp_path, lambda f: f.iloc[:0]), tmp_path)
    assert report.failures == ["the train split is empty"]

    for split in ("train", "eval"):
        (tmp_path / "empty" / split).mkdir(parents=True)
        pd.DataFrame(columns=read_split(str(real_window / "eval")).columns).to_csv(
            tmp_path / "empty" / split / "part-00000.csv", index=False
        )
    report = validate_window(str(tmp_path / "empty"), WINDOW, str(tmp_path / "v2"), MIN_ROWS, SCHEMA)
    assert report.failures == [f"too few trips: 0 rows, at least {MIN_ROWS} required"]
    assert report.rows == {"train": 0, "eval": 0}


def test_hard_drift_from_the_previous_window_is_caught(real_window, tmp_path):
    def tripled(frame):
        frame["fare"] = frame["fare"] * 3
        frame["trip_seconds"] = frame["trip_seconds"] * 3
        return frame

    report = validate(broken_copy(real_window, tmp_path, tripled), tmp_path)
    assert not report.success
    drifted = sorted(f.split(":")[0] for f in report.failures if "drifted" in f)
    assert drifted == ["fare", "trip_seconds"]


def test_coordinates_outside_chicago_duplicates_and_null_floods(real_window, tmp_path):
    def broken(frame):
        frame.loc[:9, "pickup_longitude"] = -122.4  # San Francisco
        frame.loc[:, "payment_type"] = None
        return pd.concat([frame, frame.iloc[100:107]], ignore_index=True)

    report = validate(broken_copy(real_window, tmp_path, broken), tmp_path)
    text = "\n".join(report.failures)
    assert "pickup_longitude: 10 values" in text
    assert "unique_key: 14 rows share their value with another row" in text
    assert "payment_type:" in text and "nulls, at most 1% allowed" in text


def test_without_a_reference_window_drift_is_not_checked_and_said_so(real_window, tmp_path):
    report = validate_window(str(real_window), WINDOW, str(tmp_path / "v"), MIN_ROWS, SCHEMA)
    assert report.success
    assert report.notes == ["no reference window for this window: drift not checked"]


def test_skew_between_the_train_and_eval_splits_is_caught(real_window, tmp_path):
    def cards(frame):  # the train split's cash trips recorded as card trips, the eval split's not
        frame.loc[frame["payment_type"] == "Cash", "payment_type"] = "Credit Card"
        return frame

    report = validate(broken_copy(real_window, tmp_path, cards), tmp_path)
    assert not report.success
    assert any(
        f.startswith("payment_type: skew between the train and eval splits (L-infinity distance")
        for f in report.failures
    ), report.summary()
    anomalies = json.loads((tmp_path / "validation" / "anomalies.json").read_text())
    assert ["payment_type", "skew_comparator"] == anomalies["exceeded"][-1][:2] or any(
        e[:2] == ["payment_type", "skew_comparator"] for e in anomalies["exceeded"]
    )
    assert (tmp_path / "validation" / "schema.yaml").read_text() == SCHEMA


def test_a_legitimate_change_is_accepted_as_the_next_schema_version(warehouse, tmp_path):
    """A new payment type fails the window; a run with accept_data_changes writes the next version,
    which passes it, names the change and keeps what a person can review."""
    from taxi_pipeline.run_context import WindowPlan
    from taxi_pipeline.schema import SchemaStore, parse
    from taxi_pipeline.validation import accept_changes, keep_schema, run_schema

    layout = RunLayout(str(tmp_path / "artifacts"), "taxi_daily_retrain", WINDOW, "manual__accept")
    plan = WindowPlan({"": WINDOW, "reference": WINDOW.previous()}, {"": "reference"}, key="")
    store = SchemaStore(layout.schema_dir, layout.dag_id)
    store.write(SCHEMA)  # the DAG's current schema: version 1
    extract_windows(warehouse, layout, plan.windows)
    for split in ("train", "eval"):
        path = Path(layout.split_dir(split), "part-00000.csv")
        frame = read_split(str(path.parent))
        frame.loc[frame.index % 8 == 0, "payment_type"] = "Mobile"
        frame.to_csv(path, index=False)

    schema = run_schema(layout, plan)
    out = tmp_path / "validation"
    report = validate_window(
        layout.data_dir, WINDOW, str(out), MIN_ROWS, schema, reference_dir=layout.split_dir("train", "reference")
    )
    assert not report.success and report.anomalies == report.failures
    assert any("'Mobile'" in line for line in report.anomalies), report.summary()

    accepted = accept_changes(layout, schema, str(out), report, "payment by phone since 2015")
    assert store.versions() == [1]  # a candidate: kept once the window passes against it
    keep_schema(layout, accepted)
    assert store.versions() == [1, 2]
    new = parse(accepted)
    assert new["version"] == 2 and "Mobile" in new["features"]["payment_type"]["domain"]
    assert new["made"]["reason"] == "payment by phone since 2015" and new["made"]["run"] == "manual__accept"
    assert any(c.startswith("payment_type: 1 values added to the domain (Mobile)") for c in new["made"]["changes"])
    again = validate_window(
        layout.data_dir,
        WINDOW,
        str(tmp_path / "again"),
        MIN_ROWS,
        accepted,
        reference_dir=layout.split_dir("train", "reference"),
    )
    assert again.success, again.summary()
    assert again.schema_version == 2


def test_a_fixed_check_cannot_be_accepted(real_window, tmp_path):
    from taxi_pipeline.validation import accept_changes

    def negative(frame):
        frame.loc[:24, "fare"] = -3.0
        return frame

    report = validate(broken_copy(real_window, tmp_path, negative), tmp_path)
    layout = RunLayout(str(tmp_path / "artifacts"), "taxi_daily_retrain", WINDOW, "manual")
    with pytest.raises(ValueError, match="fixed expectations.*fare: 25 values"):
        accept_changes(layout, SCHEMA, str(tmp_path / "validation"), report, "fares can be negative now")
