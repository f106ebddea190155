"""The monitor's retraining requests: at most one a day, and a retry of the run that asked asks again."""

from __future__ import annotations

from datetime import UTC, datetime

from taxi_pipeline.layout import RunLayout
from taxi_pipeline.monitor_run import record_request
from taxi_pipeline.window import Window


def layout(root, run_id: str) -> RunLayout:
    day = Window(datetime(2015, 12, 20, tzinfo=UTC), datetime(2015, 12, 21, tzinfo=UTC))
    return RunLayout(str(root), "taxi_model_monitor", day, run_id)


def test_a_day_asks_for_one_retraining(tmp_path):
    request = {"day": "2015-12-20", "window_end": "2015-12-21T00:00:00+00:00", "reasons": ["fare drifted"]}
    assert record_request(layout(tmp_path, "scheduled__1"), request, "scheduled__1")
    assert record_request(layout(tmp_path, "scheduled__1"), request, "scheduled__1")  # its retry
    assert not record_request(layout(tmp_path, "manual__2"), request, "manual__2")  # another run, same day
    other_day = {**request, "day": "2015-12-21"}
    assert record_request(layout(tmp_path, "manual__2"), other_day, "manual__2")
