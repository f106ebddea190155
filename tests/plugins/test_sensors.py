from __future__ import annotations

from datetime import datetime, timezone

import pytest
from airflow.sdk.exceptions import AirflowSensorTimeout

from taxi_plugins.sensors import WindowLandedSensor


class _Dag:
    dag_id = "taxi_daily_retrain"


def context(end: datetime) -> dict:
    return {"data_interval_end": end, "params": {"window_days": 30}, "dag": _Dag(), "run_id": "test"}


def test_a_window_inside_the_data_has_landed(warehouse):
    sensor = WindowLandedSensor(task_id="wait_for_window")
    assert sensor.poke(context(datetime(2016, 6, 1, tzinfo=timezone.utc))) is True


def test_a_window_past_the_data_has_not_landed(warehouse):
    sensor = WindowLandedSensor(task_id="wait_for_window")
    assert sensor.poke(context(datetime(2017, 1, 1, tzinfo=timezone.utc))) is False


def test_timeout_fails_with_the_watermark_it_saw(warehouse, monkeypatch):
    sensor = WindowLandedSensor(task_id="wait_for_window", timeout=0, poke_interval=0, mode="poke")
    with pytest.raises(AirflowSensorTimeout, match=r"holds trips only up to 2016-12-30 16:45:00"):
        sensor.execute(context(datetime(2017, 1, 1, tzinfo=timezone.utc)))


class _PreviousRun:
    run_id = "scheduled__2015-12-31"


class _TaskInstance:
    """What the sensor asks the Task SDK: the previous run, its task states and its state."""

    def __init__(self, previous, task_states, run_state):
        self.previous, self.task_states, self.run_state = previous, task_states, run_state

    def get_previous_dagrun(self):
        return self.previous

    def get_task_states(self, dag_id, task_ids, run_ids):
        return {run_ids[0]: {t: s for t, s in self.task_states.items() if t in task_ids}}

    def get_dagrun_state(self, dag_id, run_id):
        return self.run_state


WATCHED = ["standard.push", "coarse.push", "promote_champion"]


@pytest.mark.parametrize("previous, task_states, run_state, settled", [
    (None, {}, None, True),  # the first run, or a manual run with no earlier one
    (_PreviousRun(), {"standard.push": "success", "coarse.push": "running", "promote_champion": None},
     "running", False),  # a push still running in the previous window
    (_PreviousRun(), {"standard.push": "success", "coarse.push": "skipped", "promote_champion": "success"},
     "running", True),  # its deploys are done, its reports may still run
    (_PreviousRun(), {"standard.push": "upstream_failed", "coarse.push": "upstream_failed",
                      "promote_champion": "upstream_failed"}, "failed", True),  # a bad window does not block
    (_PreviousRun(), {}, "running", False),  # its tasks are not even created yet
])
def test_evaluation_waits_until_the_previous_windows_deploys_are_settled(previous, task_states, run_state, settled):
    from taxi_plugins.sensors import PreviousRunSettledSensor

    sensor = PreviousRunSettledSensor(task_id="wait_for_previous_deploys", task_ids=WATCHED)
    assert sensor.poke({"ti": _TaskInstance(previous, task_states, run_state)}) is settled
    assert "`promote_champion`" in sensor.doc_md


def test_waiting_for_the_previous_run_pokes_soon_then_backs_off():
    """A backfill's previous window settles in seconds: the first pokes come fast; a stuck one costs little."""
    from datetime import timedelta

    from taxi_plugins.sensors import PreviousRunSettledSensor

    sensor = PreviousRunSettledSensor(task_id="wait_for_previous_deploys", task_ids=["standard.push"])
    assert sensor.mode == "reschedule" and sensor.poke_interval == 5
    assert sensor.exponential_backoff and sensor.max_wait == timedelta(minutes=5)
    # reschedule mode: the next wait follows from how long the sensor has waited so far
    waits = [sensor._get_next_poke_interval(started_at="2016-01-01", run_duration=lambda s=s: s, poke_count=1)
             for s in (0, 120, 3600)]
    assert waits[0] <= 10 and waits[0] < waits[1] < 300 and waits[2] == 300
