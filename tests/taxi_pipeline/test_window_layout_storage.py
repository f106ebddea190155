from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pendulum
import pytest

from taxi_pipeline.files import atomic_directory
from taxi_pipeline.layout import RunLayout
from taxi_pipeline.window import Window


def test_window_ends_at_the_interval_end_and_has_a_previous_window():
    end = pendulum.datetime(2016, 1, 1, tz="UTC")
    window = Window.ending_at(end, 365)
    assert window.start == datetime(2015, 1, 1, tzinfo=UTC)
    assert window.previous() == Window(datetime(2014, 1, 1, tzinfo=UTC), window.start)
    assert window.key == "20150101T0000-20160101T0000"
    with pytest.raises(ValueError, match="at least 1"):
        Window.ending_at(end, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        Window(datetime(2015, 1, 1), datetime(2016, 1, 1))


def test_a_window_reads_back_from_its_text():
    """Deployment records keep the window as text; the monitor reads it back to find the champion's run."""
    window = Window(datetime(2014, 12, 1, tzinfo=UTC), datetime(2015, 12, 1, tzinfo=UTC))
    assert Window.parse(str(window)) == window


def test_layout_is_keyed_by_dag_window_and_run():
    window = Window.ending_at(datetime(2016, 1, 1, tzinfo=UTC), 30)
    layout = RunLayout("gs://bucket/artifacts/", "taxi_daily_retrain", window, "scheduled__2015-12-31T00:00:00+00:00")
    assert layout.run_dir == (
        "gs://bucket/artifacts/taxi_daily_retrain/window=20151202T0000-20160101T0000/"
        "run=scheduled__2015-12-31T00_00_00_00_00"
    )
    assert layout.split_glob("train") == layout.run_dir + "/data/train/part-*.csv"
    assert layout.model_dir("coarse") == layout.run_dir + "/variants/coarse/model"
    with pytest.raises(ValueError):
        layout.split_dir("test")


def test_atomic_directory_publishes_whole_or_keeps_the_previous(tmp_path: Path):
    dest = tmp_path / "data"
    with atomic_directory(str(dest)) as staging:
        (staging / "a.csv").write_text("first")
    assert (dest / "a.csv").read_text() == "first"

    with pytest.raises(RuntimeError):
        with atomic_directory(str(dest)) as staging:
            (staging / "a.csv").write_text("half")
            raise RuntimeError("crash mid-write")
    assert (dest / "a.csv").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]

    with atomic_directory(str(dest)) as staging:
        (staging / "b.csv").write_text("second")
    assert sorted(p.name for p in dest.iterdir()) == ["b.csv"]


def test_a_retry_sweeps_the_staging_leftovers_of_a_killed_try(tmp_path: Path):
    dest = tmp_path / "data"
    leftover = tmp_path / ".data.staging-deadbeef"
    leftover.mkdir()
    (leftover / "partial.csv").write_text("x")
    with atomic_directory(str(dest)) as staging:
        (staging / "a.csv").write_text("ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
