"""Guarantee 3, bad data stops at the gate: a broken source table gives a window that fails
validate_window with a line naming each problem.

Each case copies the session's scratch warehouse (the real sample), breaks the trips table the way
an upstream fault would (SQL on the copy), extracts the window with the real window SQL and
validates it as the DAG does. The run-level consequences (nothing downstream runs, the served model
is unchanged, on-call is alerted) are shown by a real DAG run in test_reliability_runs.py.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from taxi_pipeline.extract import extract_windows
from taxi_pipeline.files import read_split
from taxi_pipeline.layout import RunLayout
from taxi_pipeline.queries import LOCAL_SOURCE_TABLE
from taxi_pipeline.validation import validate_window
from taxi_pipeline.warehouse import connect
from taxi_pipeline.window import Window

WINDOW = Window.ending_at(datetime(2016, 1, 1, tzinfo=UTC), 365)
MIN_ROWS = 500
IN_WINDOW = (
    "trip_start_timestamp >= TIMESTAMPTZ '2015-01-01 00:00:00+00' "
    "AND trip_start_timestamp < TIMESTAMPTZ '2016-01-01 00:00:00+00'"
)
SOME = f"{IN_WINDOW} AND hash(unique_key) % 10 = 0"  # about a tenth of the window's trips
SECOND_HALF = "trip_start_timestamp >= TIMESTAMPTZ '2015-07-01 00:00:00+00'"

# case -> (SQL that breaks the copy of the trips table, what the summary must say)
BROKEN = {
    "text_in_numeric_column": (
        [
            f"ALTER TABLE {LOCAL_SOURCE_TABLE} ALTER trip_miles TYPE VARCHAR",
            f"UPDATE {LOCAL_SOURCE_TABLE} SET trip_miles = 'n/a' WHERE {SOME}",
        ],
        ["trip_miles: not numeric, has text values such as ['n/a']"],
    ),
    "negative_fares": (
        [f"UPDATE {LOCAL_SOURCE_TABLE} SET fare = -fare - 1 WHERE {SOME}"],
        ["fare:", "outside [0, 1000]", "big_tipper: the label's base rate moved"],
    ),
    "coordinates_outside_chicago": (
        [f"UPDATE {LOCAL_SOURCE_TABLE} SET pickup_latitude = 40.71, pickup_longitude = -74.0 WHERE {SOME}"],
        ["pickup_latitude:", "outside [41.6, 42.1]", "pickup_longitude:", "outside [-88, -87.5]"],
    ),
    "flood_of_nulls": (
        [
            f"UPDATE {LOCAL_SOURCE_TABLE} SET tips = NULL, payment_type = NULL "
            f"WHERE {IN_WINDOW} AND hash(unique_key) % 3 = 0"
        ],
        ["tips:", "nulls, at most 1% allowed", "payment_type:"],
    ),
    "duplicated_rows": (  # an ingestion batch loaded twice
        [f"INSERT INTO {LOCAL_SOURCE_TABLE} SELECT * FROM {LOCAL_SOURCE_TABLE} WHERE {SOME}"],
        ["unique_key:", "rows share their value with another row"],
    ),
    "empty_window": (  # the window's trips never landed (later ones did)
        [f"DELETE FROM {LOCAL_SOURCE_TABLE} WHERE {IN_WINDOW}"],
        [f"too few trips: 0 rows, at least {MIN_ROWS} required"],
    ),
    "hard_drift": (  # fares and durations in another unit than the previous window's
        [f"UPDATE {LOCAL_SOURCE_TABLE} SET fare = fare * 5, trip_seconds = trip_seconds * 5 WHERE {IN_WINDOW}"],
        [
            "fare: drifted from the previous window",
            "trip_seconds: drifted from the previous window",
            "big_tipper: the label's base rate moved",
        ],
    ),
    # Against the schema learned from the data (taxi_pipeline.schema) and the previous window:
    "company_renamed_in_part_of_the_window": (  # an upstream system renamed the largest company in July
        [
            f"UPDATE {LOCAL_SOURCE_TABLE} SET company = 'Taxi Affiliation Svcs' "
            f"WHERE company = 'Taxi Affiliation Services' AND {IN_WINDOW} AND {SECOND_HALF}"
        ],
        [
            "company:",
            "of values outside the schema's domain",
            "'Taxi Affiliation Svcs'",
            "company: drift against the previous window (L-infinity distance",
        ],
    ),
    "label_collapses_in_part_of_the_window": (  # tips stopped being recorded in July
        [f"UPDATE {LOCAL_SOURCE_TABLE} SET tips = 0 WHERE {IN_WINDOW} AND {SECOND_HALF}"],
        ["big_tipper: the label's base rate differs in part of the window", "2015-07 0.0%", "2015-12 0.0%"],
    ),
    "new_payment_type": (
        [f"UPDATE {LOCAL_SOURCE_TABLE} SET payment_type = 'Mobile' WHERE {SOME}"],
        ["payment_type:", "of values outside the schema's domain (at most 1.0% may be): 'Mobile'"],
    ),
    "hours_shifted_by_a_time_zone": (  # timestamps written in UTC, read as Chicago time
        [
            f"UPDATE {LOCAL_SOURCE_TABLE} SET trip_start_timestamp = trip_start_timestamp + INTERVAL 6 HOUR "
            f"WHERE {IN_WINDOW}"
        ],
        ["trip_start_hour: drift against the previous window (Jensen-Shannon divergence"],
    ),
    "community_area_out_of_range": (
        [f"UPDATE {LOCAL_SOURCE_TABLE} SET pickup_community_area = 7700 WHERE {SOME}"],
        ["pickup_community_area: values outside the schema's range", "e.g. 7700"],
    ),
    "company_missing_more_often": (
        [f"UPDATE {LOCAL_SOURCE_TABLE} SET company = NULL WHERE {IN_WINDOW} AND hash(unique_key) % 5 = 0"],
        ["company: null share", "against the previous window"],
    ),
}

# Each case validates a real broken copy of the warehouse: outside `make check`.
pytestmark = pytest.mark.slow


def broken_warehouse(warehouse: Path, tmp_path: Path, statements: list[str]) -> Path:
    copy = tmp_path / "warehouse" / "taxi.duckdb"
    copy.parent.mkdir(parents=True)
    shutil.copy(warehouse, copy)
    with connect(copy, read_only=False) as con:
        for statement in statements:
            con.execute(statement)
    return copy


@pytest.fixture(autouse=True)
def _schema(schema_2015):
    global SCHEMA
    SCHEMA = schema_2015


def extract_and_validate(warehouse: Path, tmp_path: Path):
    """What extract_window and validate_window do for the daily DAG's window."""
    layout = RunLayout(str(tmp_path / "artifacts"), "taxi_daily_retrain", WINDOW, "scheduled__2016-01-01")
    extract_windows(warehouse, layout, {"": WINDOW, "reference": WINDOW.previous()})
    return validate_window(
        layout.data_dir,
        WINDOW,
        str(tmp_path / "validation"),
        MIN_ROWS,
        SCHEMA,
        reference_dir=layout.split_dir("train", "reference"),
        reference_name="the previous window",
    )


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_source_fails_validation_naming_the_problem(case, warehouse, tmp_path):
    statements, expected = BROKEN[case]
    report = extract_and_validate(broken_warehouse(warehouse, tmp_path, statements), tmp_path)
    summary = (tmp_path / "validation" / "summary.txt").read_text()
    assert not report.success, summary
    assert summary.startswith(
        f"Validation of window {WINDOW} against schema v1: FAILED ({len(report.failures)} problems)"
    )
    for fragment in expected:
        assert fragment in summary, f"{case}: {fragment!r} not in\n{summary}"
    # One line per problem, and only the problems this case introduced (the real window is clean).
    assert len(report.failures) <= len(expected), summary


def test_the_unbroken_copy_passes(warehouse, tmp_path):
    """The cases above fail because of what each broke, not because the gate rejects everything."""
    report = extract_and_validate(broken_warehouse(warehouse, tmp_path, []), tmp_path)
    assert report.success, report.summary()


def test_a_missing_required_column_is_named_at_the_source_and_in_the_extract(warehouse, tmp_path):
    # The source table lost a column: the window SQL cannot run, and its error names the column.
    copy = broken_warehouse(warehouse, tmp_path, [f"ALTER TABLE {LOCAL_SOURCE_TABLE} DROP COLUMN company"])
    layout = RunLayout(str(tmp_path / "artifacts"), "taxi_daily_retrain", WINDOW, "missing")
    with pytest.raises(Exception, match="company"):
        extract_windows(copy, layout, {"": WINDOW})
    assert not Path(layout.data_dir).exists()  # nothing half-extracted is left for validation to read

    # The extract lost a column (an upstream export changed): validation names it.
    good = RunLayout(str(tmp_path / "artifacts"), "taxi_daily_retrain", WINDOW, "good")
    extract_windows(warehouse, good, {"": WINDOW, "reference": WINDOW.previous()})
    for split in ("train", "eval"):
        path = Path(good.split_dir(split), "part-00000.csv")
        read_split(str(path.parent)).drop(columns=["company"]).to_csv(path, index=False)
    report = validate_window(
        good.data_dir, WINDOW, str(tmp_path / "v"), MIN_ROWS, SCHEMA, reference_dir=good.split_dir("train", "reference")
    )
    assert report.failures == ["missing required columns: company"]
