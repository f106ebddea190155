"""A run's windows follow from its Params."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pendulum
import pytest

from taxi_pipeline.history import write_history
from taxi_pipeline.run_context import run_end, window_plan
from taxi_pipeline.window import Window


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_the_daily_plan_trains_on_window_days_and_measures_drift_against_the_previous_window():
    plan = window_plan(
        {
            "params": {"window_days": 365},
            "data_interval_start": pendulum.datetime(2015, 12, 31),
            "data_interval_end": pendulum.datetime(2016, 1, 1),
        }
    )
    window = Window(utc(2015, 1, 1), utc(2016, 1, 1))
    assert plan.windows == {"": window, "reference": window.previous()}
    assert plan.checks == {"": "reference"} and plan.key == ""


def test_the_scoring_and_monitor_plan_is_the_day_before_the_runs_end():
    plan = window_plan(
        {
            "params": {"served_label": "stable"},
            "data_interval_start": pendulum.datetime(2015, 12, 10),
            "data_interval_end": pendulum.datetime(2015, 12, 11),
        }
    )
    assert plan.windows == {"day": Window(utc(2015, 12, 10), utc(2015, 12, 11))} and plan.key == "day"
    assert plan.checks == {}  # nothing validated: the day's trips are scored or monitored as they are


class Event:
    def __init__(self, extra):
        self.extra = extra


def test_a_run_started_by_an_asset_event_ends_at_the_events_window_end():
    """Asset-triggered runs have no data interval: the newest window_end of the events that started it."""
    events = {"taxi_retrain_request": [Event({"window_end": "2015-12-21T00:00:00+00:00"}), Event({})]}
    context = {"params": {}, "data_interval_end": None, "triggering_asset_events": events}
    assert run_end(context) == utc(2015, 12, 21)
    events["served_model.taxi"] = [Event({"version": 1, "window_end": "2015-12-22T00:00:00+00:00"})]
    assert run_end(context) == utc(2015, 12, 22)
    # a manual run's window_end Param still wins
    assert run_end({**context, "params": {"window_end": "2015-06-01"}}) == utc(2015, 6, 1)
    with pytest.raises(ValueError, match="no asset event naming a window_end"):
        run_end({"params": {}, "data_interval_end": None, "triggering_asset_events": {"x": [Event(None)]}})


def test_the_sliding_plan_judges_the_run_interval_with_a_recent_and_a_long_model():
    plan = window_plan(
        {
            "params": {"recent_days": 90, "history_start": "2013-01-01"},
            "data_interval_start": pendulum.datetime(2015, 1, 1),
            "data_interval_end": pendulum.datetime(2015, 2, 1),
        }
    )
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
    from jinja2 import Environment

    from taxi_pipeline.dag_defaults import MACROS

    template = Environment().from_string("{{ taxi_version() }}")
    rendered = template.render(**MACROS, params={"window_days": 365}, data_interval_end=pendulum.datetime(2016, 1, 1))
    assert rendered == "201601010000"


def test_a_manual_window_end_replaces_the_data_interval_end_everywhere():
    """A manual run for 2015-07-01 is that window's run: windows, artifact folder and served version."""
    from jinja2 import Environment

    from taxi_pipeline.dag_defaults import MACROS

    context = {
        "params": {"window_days": 365, "window_end": "2015-07-01"},
        "data_interval_start": pendulum.datetime(2026, 11, 21),
        "data_interval_end": pendulum.datetime(2026, 11, 22),
    }
    plan = window_plan(context)
    assert plan.windows[""] == Window(utc(2014, 7, 1), utc(2015, 7, 1))
    assert plan.windows["reference"] == Window(utc(2013, 7, 1), utc(2014, 7, 1))
    assert run_end(context) == utc(2015, 7, 1)
    rendered = Environment().from_string("{{ taxi_version() }}").render(**MACROS, **context)
    assert rendered == "201507010000"
    assert window_plan({**context, "params": {"window_days": 365, "window_end": None}}).windows[""].end == utc(
        2026, 11, 22
    )


def test_a_manual_sliding_run_judges_the_calendar_month_before_its_window_end():
    base = {
        "params": {"recent_days": 90, "history_start": "2013-01-01"},
        "data_interval_start": pendulum.datetime(2026, 10, 1),
        "data_interval_end": pendulum.datetime(2026, 11, 1),
    }
    for window_end, newest in (
        ("2015-02-01", Window(utc(2015, 1, 1), utc(2015, 2, 1))),
        ("2015-01-01", Window(utc(2014, 12, 1), utc(2015, 1, 1))),
        ("2015-03-31", Window(utc(2015, 2, 28), utc(2015, 3, 31))),
    ):
        plan = window_plan({**base, "params": {**base["params"], "window_end": window_end}})
        assert plan.windows["newest"] == newest
        assert plan.windows["long"] == Window(utc(2013, 1, 1), newest.start)


def test_a_history_start_after_the_judged_month_is_refused_with_the_reason():
    context = {
        "params": {"recent_days": 90, "history_start": "2015-06-01", "window_end": "2015-02-01"},
        "data_interval_start": None,
        "data_interval_end": None,
    }
    with pytest.raises(ValueError, match="history_start 2015-06-01 is not before the judged window"):
        window_plan(context)


def test_a_run_without_data_interval_or_window_end_says_how_to_give_one():
    with pytest.raises(ValueError, match="set the window_end Param"):
        run_end({"params": {"window_days": 365}, "data_interval_end": None})


def test_the_variants_param_selects_in_the_contracts_order_and_refuses_unknown_ones():
    from taxi_pipeline.branches import selected_variants

    assert selected_variants({"variants": ["coarse", "standard"]}) == ["standard", "coarse"]
    assert selected_variants({"variants": ["coarse"]}) == ["coarse"]
    assert selected_variants({}) == ["standard", "coarse"]
    with pytest.raises(ValueError, match=r"unknown variants \['fine'\]"):
        selected_variants({"variants": ["fine"]})


def test_select_variants_starts_the_chosen_variants_only():
    from airflow.sdk.exceptions import AirflowFailException

    from taxi_pipeline.callables import select_variants

    assert select_variants(params={"variants": ["coarse"]}) == ["coarse.transform"]
    assert select_variants(params={"variants": ["standard", "coarse"]}) == ["standard.transform", "coarse.transform"]
    with pytest.raises(AirflowFailException, match="unknown variants"):
        select_variants(params={"variants": ["fine"]})
