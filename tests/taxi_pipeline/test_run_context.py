"""A run's windows follow from its Params."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pendulum

from taxi_pipeline.history import write_history
from taxi_pipeline.run_context import window_plan
from taxi_pipeline.window import Window


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def test_the_daily_plan_trains_on_window_days_and_measures_drift_against_the_previous_window():
    plan = window_plan({"params": {"window_days": 365}, "data_interval_start": pendulum.datetime(2015, 12, 31),
                        "data_interval_end": pendulum.datetime(2016, 1, 1)})
    window = Window(utc(2015, 1, 1), utc(2016, 1, 1))
    assert plan.windows == {"": window, "reference": window.previous()}
    assert plan.checks == {"": "reference"} and plan.key == ""


def test_the_sliding_plan_judges_the_run_interval_with_a_recent_and_a_long_model():
    plan = window_plan({"params": {"recent_days": 90, "history_start": "2013-01-01"},
                        "data_interval_start": pendulum.datetime(2015, 1, 1),
                        "data_interval_end": pendulum.datetime(2015, 2, 1)})
    assert plan.windows == {
        "newest": Window(utc(2015, 1, 1), utc(2015, 2, 1)),
        "recent": Window(utc(2014, 10, 3), utc(2015, 1, 1)),
        "long": Window(utc(2013, 1, 1), utc(2015, 1, 1)),
    }
    assert plan.checks == {"newest": "recent", "recent": None, "long": None} and plan.key == "newest"


def test_the_history_has_one_row_per_window_and_a_rerun_replaces_its_row(tmp_path):
    for key, verdict in (("20150201", "recent"), ("20150101", "long"), ("20150201", "no significant difference")):
        path = write_history(str(tmp_path), {"window_key": key, "verdict": verdict})
    lines = open(path).read().splitlines()
    assert lines == ["window_key,verdict", "20150101,long", "20150201,no significant difference"]
    assert json.loads((tmp_path / "20150201.json").read_text())["verdict"] == "no significant difference"


def test_the_evaluation_baseline_is_bounded_by_the_runs_own_served_version():
    """The evaluate task renders --baseline_before from the run's data interval (taxi_version())."""
    from taxi_pipeline.dag_defaults import MACROS
    from jinja2 import Environment

    template = Environment().from_string("{{ taxi_version() }}")
    rendered = template.render(**MACROS, data_interval_end=pendulum.datetime(2016, 1, 1))
    assert rendered == "201601010000"
