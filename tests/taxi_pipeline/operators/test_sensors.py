from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from airflow.sdk.exceptions import AirflowSensorTimeout

from taxi_pipeline.operators.sensors import WindowLandedSensor


class _Dag:
    dag_id = "taxi_daily_retrain"


def context(end: datetime) -> dict:
    return {"data_interval_end": end, "params": {"window_days": 30}, "dag": _Dag(), "run_id": "test"}


def test_a_window_inside_the_data_has_landed(warehouse):
    sensor = WindowLandedSensor(task_id="wait_for_window")
    assert sensor.poke(context(datetime(2016, 6, 1, tzinfo=UTC))) is True


def test_a_window_past_the_data_has_not_landed(warehouse):
    sensor = WindowLandedSensor(task_id="wait_for_window")
    assert sensor.poke(context(datetime(2017, 1, 1, tzinfo=UTC))) is False


def test_without_a_triggerer_a_timeout_fails_with_the_watermark_it_saw(warehouse):
    sensor = WindowLandedSensor(task_id="wait_for_window", timeout=0, poke_interval=0, mode="poke", deferrable=False)
    with pytest.raises(AirflowSensorTimeout, match=r"holds trips only up to 2016-12-30 16:45:00"):
        sensor.execute(context(datetime(2017, 1, 1, tzinfo=UTC)))


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


@pytest.mark.parametrize(
    "previous, task_states, run_state, settled",
    [
        (None, {}, None, True),  # the first run, or a manual run with no earlier one
        (
            _PreviousRun(),
            {"standard.push": "success", "coarse.push": "running", "promote_champion": None},
            "running",
            False,
        ),  # a push still running in the previous window
        (
            _PreviousRun(),
            {"standard.push": "success", "coarse.push": "skipped", "promote_champion": "success"},
            "running",
            True,
        ),  # its deploys are done, its reports may still run
        (
            _PreviousRun(),
            {
                "standard.push": "upstream_failed",
                "coarse.push": "upstream_failed",
                "promote_champion": "upstream_failed",
            },
            "failed",
            True,
        ),  # a bad window does not block
        (_PreviousRun(), {}, "running", False),  # its tasks are not even created yet
    ],
)
def test_evaluation_waits_until_the_previous_windows_deploys_are_settled(previous, task_states, run_state, settled):
    from taxi_pipeline.operators.sensors import PreviousRunSettledSensor

    sensor = PreviousRunSettledSensor(task_id="wait_for_previous_deploys", task_ids=WATCHED, hold=0)
    assert sensor.poke({"ti": _TaskInstance(previous, task_states, run_state)}) is settled
    assert "`promote_champion`" in sensor.doc_md


def test_a_try_watches_the_previous_run_for_a_while_then_frees_its_slot():
    """In a backfill the previous window settles within a try's hold: this run goes on seconds later.
    A previous run stuck beyond the hold gives the slot back (reschedule) and is looked at again later."""
    from taxi_pipeline.operators.sensors import PreviousRunSettledSensor

    class Settling(_TaskInstance):
        checks = 0

        def get_task_states(self, dag_id, task_ids, run_ids):
            Settling.checks += 1
            done = "success" if Settling.checks >= 3 else "running"
            return {run_ids[0]: {t: done for t in task_ids}}

    sensor = PreviousRunSettledSensor(task_id="wait_for_previous_deploys", task_ids=WATCHED, hold=5, check_every=0.01)
    assert sensor.mode == "reschedule" and sensor.poke_interval == 300
    assert sensor.poke({"ti": Settling(_PreviousRun(), {}, "running")}) is True and Settling.checks == 3

    stuck = PreviousRunSettledSensor(task_id="wait_for_previous_deploys", task_ids=WATCHED, hold=0.2, check_every=0.05)
    began = time.monotonic()
    assert stuck.poke({"ti": _TaskInstance(_PreviousRun(), {t: "running" for t in WATCHED}, "running")}) is False
    assert 0.1 <= time.monotonic() - began < 1
