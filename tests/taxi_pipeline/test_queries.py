"""The window SQL on DuckDB against an independent computation on the sample CSVs."""

from __future__ import annotations

import csv
import hashlib
from datetime import UTC, datetime

import pytest

from taxi_pipeline.queries import WINDOW_COLUMNS, bigquery_sql, duckdb_sql
from taxi_pipeline.warehouse import SAMPLE_COLUMNS, connect, export_split, unique_key, window_params
from taxi_pipeline.window import Window

WINDOWS = [
    Window.ending_at(datetime(2016, 1, 1, tzinfo=UTC), 365),
    Window.ending_at(datetime(2014, 3, 15, tzinfo=UTC), 30),
    Window(datetime(2016, 12, 1, tzinfo=UTC), datetime(2017, 1, 1, tzinfo=UTC)),
]


@pytest.fixture(scope="module")
def sample_rows(sample_files) -> dict[str, dict]:
    """Every sample trip keyed by its derived unique_key (exact duplicates collapse, as in the load)."""
    rows = {}
    for path in sample_files:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                rows[unique_key([row[c] for c in SAMPLE_COLUMNS])] = row
    return rows


def expected_split(rows: dict[str, dict], window: Window, split: str) -> set[str]:
    start, end = window.start.timestamp(), window.end.timestamp()

    def bucket(key: str) -> str:
        return "eval" if int(hashlib.md5(key.encode()).hexdigest()[:8], 16) % 3 == 0 else "train"

    return {
        k
        for k, r in rows.items()
        if r["pickup_latitude"] and start <= int(r["trip_start_timestamp"]) < end and bucket(k) == split
    }


def query(warehouse, window: Window, split: str) -> list[dict]:
    with connect(warehouse) as con:
        cur = con.execute(duckdb_sql("window"), window_params(window, split))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def test_warehouse_holds_every_distinct_sample_trip(warehouse, sample_rows):
    with connect(warehouse) as con:
        (count,) = con.execute("SELECT count(*) FROM chicago_taxi_trips.taxi_trips").fetchone()
        types = dict(
            con.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'taxi_trips'"
            ).fetchall()
        )
    assert count == len(sample_rows) == 25_001  # 25,002 rows, one exact duplicate across the files
    assert types["trip_start_timestamp"] == "TIMESTAMP WITH TIME ZONE"
    assert types["fare"] == "DOUBLE" and types["trip_seconds"] == "BIGINT" and types["company"] == "VARCHAR"


@pytest.mark.parametrize("window", WINDOWS, ids=str)
def test_window_splits_match_an_independent_computation(warehouse, sample_rows, window):
    got = {split: query(warehouse, window, split) for split in ("train", "eval")}
    for split, rows in got.items():
        assert {r["unique_key"] for r in rows} == expected_split(sample_rows, window, split)
        assert len({r["unique_key"] for r in rows}) == len(rows)
    assert not {r["unique_key"] for r in got["train"]} & {r["unique_key"] for r in got["eval"]}
    total = len(got["train"]) + len(got["eval"])
    assert total > 0
    if total > 1000:  # a hash split: about 2/3 train
        assert 0.62 < len(got["train"]) / total < 0.71


def test_derived_columns_equal_the_samples_own(warehouse, sample_rows):
    """Month, hour and BigQuery's DAYOFWEEK (1 = Sunday) as the sample recorded them."""
    rows = query(warehouse, WINDOWS[0], "train") + query(warehouse, WINDOWS[0], "eval")
    assert [list(r) for r in rows[:1]] == [list(WINDOW_COLUMNS)]
    for r in rows:
        source = sample_rows[r["unique_key"]]
        assert (r["trip_start_month"], r["trip_start_hour"], r["trip_start_day"], r["trip_start_timestamp"]) == (
            int(source["trip_start_month"]),
            int(source["trip_start_hour"]),
            int(source["trip_start_day"]),
            int(source["trip_start_timestamp"]),
        )


def test_duckdb_text_is_translated_from_the_bigquery_text():
    bq = bigquery_sql("window")
    assert "FARM_FINGERPRINT" not in bq and "EXTRACT(DAYOFWEEK FROM trip_start_timestamp)" in bq
    assert "`bigquery-public-data.chicago_taxi_trips.taxi_trips`" in bq
    local = duckdb_sql("window")
    assert "$window_start" in local and "+ 1" in local and "chicago_taxi_trips.taxi_trips" in local


def test_export_split_writes_a_csv_with_the_window_columns(warehouse, tmp_path):
    path = tmp_path / "part-00000.csv"
    rows = export_split(warehouse, WINDOWS[1], "eval", str(path))
    with open(path, newline="") as f:
        records = list(csv.DictReader(f))
    assert rows == len(records) > 0
    assert tuple(records[0]) == WINDOW_COLUMNS
