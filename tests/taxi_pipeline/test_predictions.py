"""The local predictions table: a day's load replaces that day's rows, in one transaction."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from taxi_pipeline import predictions

HEADER = "day,unique_key,model_version,probability,scored_at\n"


def write_scores(directory: Path, day: str, keys: list[str], version: int, probability: float) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"{day},{key},{version},{probability},2016-01-02T00:00:00+00:00\n" for key in keys]
    half = len(lines) // 2  # two shards, each with its header (as Beam writes them)
    (directory / "predictions-00000-of-00002.csv").write_text(HEADER + "".join(lines[:half]))
    (directory / "predictions-00001-of-00002.csv").write_text(HEADER + "".join(lines[half:]))
    return str(directory)


def test_loading_a_day_again_replaces_its_rows_and_leaves_the_other_days(tmp_path):
    table = tmp_path / "warehouse" / "predictions.duckdb"
    first = write_scores(tmp_path / "a", "2015-12-10", ["k1", "k2", "k3"], 1, 0.25)
    other = write_scores(tmp_path / "b", "2015-12-11", ["k9"], 1, 0.5)
    assert predictions.load_day(table, date(2015, 12, 10), first) == 3
    assert predictions.load_day(table, date(2015, 12, 11), other) == 1
    rerun = write_scores(tmp_path / "c", "2015-12-10", ["k1", "k2"], 2, 0.75)
    assert predictions.load_day(table, date(2015, 12, 10), rerun) == 2

    day = predictions.read_day(table, date(2015, 12, 10))
    assert list(day["unique_key"]) == ["k1", "k2"]  # no duplicate, no leftover of the first load
    assert set(day["model_version"]) == {2} and set(day["probability"]) == {0.75}
    assert list(day.columns) == list(predictions.COLUMNS)
    assert list(predictions.read_day(table, date(2015, 12, 11))["unique_key"]) == ["k9"]


def test_a_load_without_scores_fails_and_changes_nothing(tmp_path):
    table = tmp_path / "predictions.duckdb"
    predictions.load_day(table, date(2015, 12, 10), write_scores(tmp_path / "a", "2015-12-10", ["k1"], 1, 0.5))
    with pytest.raises(FileNotFoundError, match="no scores"):
        predictions.load_day(table, date(2015, 12, 10), str(tmp_path / "empty"))
    assert len(predictions.read_day(table, date(2015, 12, 10))) == 1


def test_a_bad_shard_rolls_the_whole_day_back(tmp_path):
    table = tmp_path / "predictions.duckdb"
    predictions.load_day(table, date(2015, 12, 10), write_scores(tmp_path / "a", "2015-12-10", ["k1"], 1, 0.5))
    bad = write_scores(tmp_path / "b", "2015-12-10", ["k1", "k2"], 2, 0.5)
    Path(bad, "predictions-00001-of-00002.csv").write_text(HEADER + "2015-12-10,k2,not-a-version,0.5,x\n")
    with pytest.raises(Exception, match="not-a-version|Conversion|convert"):
        predictions.load_day(table, date(2015, 12, 10), bad)
    assert list(predictions.read_day(table, date(2015, 12, 10))["model_version"]) == [1]


def test_reading_a_day_before_any_load_gives_no_rows(tmp_path):
    assert predictions.read_day(tmp_path / "none.duckdb", date(2015, 12, 10)).empty


def test_the_bigquery_schema_is_the_tables():
    assert [(f["name"], f["type"]) for f in predictions.bigquery_schema()] == [
        ("day", "DATE"),
        ("unique_key", "STRING"),
        ("model_version", "INT64"),
        ("probability", "FLOAT64"),
        ("scored_at", "TIMESTAMP"),
    ]
