"""The sensors' triggers, run as the triggerer runs them (their async `run`), and the sensors'
deferral: what they hand the triggerer, and what they do with its event."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta

import pytest
from airflow.sdk.exceptions import AirflowSensorTimeout, TaskDeferred

from taxi_pipeline.operators.sensors import PreviousRunSettledSensor, WindowLandedSensor
from taxi_pipeline.operators.triggers import PreviousRunSettledTrigger, WindowLandedTrigger

WATERMARK = "2016-12-30T16:45:00+00:00"  # the newest trip of the sample
WATCHED = ["standard.push", "coarse.push", "promote_champion"]


def iso(when: datetime) -> str:
    return when.isoformat()


def in_seconds(seconds: float) -> str:
    return iso(datetime.now(UTC) + timedelta(seconds=seconds))


def first_event(trigger, timeout: float = 30) -> dict:
    async def first():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(asyncio.wait_for(first(), timeout))


@pytest.mark.parametrize(
    "trigger",
    [
        WindowLandedTrigger(warehouse="/w/taxi.duckdb", window_end=WATERMARK, give_up_at=WATERMARK, check_every=60),
        PreviousRunSettledTrigger(dag_id="d", run_id="r", task_ids=WATCHED, give_up_at=WATERMARK, check_every=1),
    ],
    ids=lambda t: type(t).__name__,
)
def test_a_trigger_is_rebuilt_from_what_it_serializes(trigger):
    """The triggerer imports the class path and calls it with the kwargs."""
    from airflow.sdk._shared.module_loading import import_string

    classpath, kwargs = trigger.serialize()
    assert import_string(classpath)(**kwargs).serialize() == (classpath, kwargs)


def test_the_window_trigger_fires_once_the_window_has_landed(warehouse):
    trigger = WindowLandedTrigger(
        warehouse=str(warehouse), window_end="2016-06-01T00:00:00+00:00", give_up_at=in_seconds(60)
    )
    assert first_event(trigger) == {"landed": True, "latest": WATERMARK}


def test_the_window_trigger_gives_up_at_the_timeout_with_the_watermark_it_saw(warehouse):
    trigger = WindowLandedTrigger(
        warehouse=str(warehouse), window_end="2017-01-01T00:00:00+00:00", give_up_at=in_seconds(0.3), watch_every=0.05
    )
    assert first_event(trigger) == {"landed": False, "latest": WATERMARK}


def test_the_window_trigger_looks_again_as_soon_as_the_warehouse_changes(warehouse, tmp_path):
    """No warehouse yet, then one lands (replaced whole, as load_trips does): the trigger fires within
    seconds, long before its next scheduled check."""
    landing = tmp_path / "taxi.duckdb"
    trigger = WindowLandedTrigger(
        warehouse=str(landing),
        window_end="2016-06-01T00:00:00+00:00",
        give_up_at=in_seconds(60),
        check_every=3600,
        watch_every=0.05,
    )

    async def land_then_wait():
        async def land():
            await asyncio.sleep(0.3)
            shutil.copy(warehouse, tmp_path / "staging")
            (tmp_path / "staging").replace(landing)

        landed = asyncio.create_task(land())
        async for event in trigger.run():
            await landed
            return event.payload

    assert asyncio.run(asyncio.wait_for(land_then_wait(), 20)) == {"landed": True, "latest": WATERMARK}


class _Comms:
    """The Task SDK calls the trigger makes in the triggerer, answering from a script of states."""

    def __init__(self, script: list[tuple[str, dict]]):
        self.script, self.calls = script, 0

    def task_states(self, dag_id, task_ids, run_ids):
        state = self.script[min(self.calls, len(self.script) - 1)][1]
        self.calls += 1
        return {run_ids[0]: {t: state.get(t) for t in task_ids}}

    def run_state(self, dag_id, run_id):
        return self.script[min(self.calls - 1, len(self.script) - 1)][0]


@pytest.fixture
def comms(monkeypatch):
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    def install(script):
        fake = _Comms(script)
        monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(fake.task_states))
        monkeypatch.setattr(RuntimeTaskInstance, "get_dagrun_state", staticmethod(fake.run_state))
        return fake

    return install


def test_the_previous_run_trigger_fires_once_the_deploys_have_settled(comms):
    fake = comms(
        [
            ("running", {"standard.push": "running"}),
            ("running", {"standard.push": "success", "coarse.push": "running"}),
            ("running", {"standard.push": "success", "coarse.push": "skipped", "promote_champion": "success"}),
        ]
    )
    trigger = PreviousRunSettledTrigger(
        dag_id="taxi_daily_retrain", run_id="previous", task_ids=WATCHED, give_up_at=in_seconds(60), check_every=0.01
    )
    event = first_event(trigger)
    assert event["settled"] is True and event["run_state"] == "running" and fake.calls == 3
    assert event["states"] == {"standard.push": "success", "coarse.push": "skipped", "promote_champion": "success"}


def test_the_previous_run_trigger_gives_up_at_the_timeout_with_the_states_it_saw(comms):
    comms([("running", {t: "running" for t in WATCHED})])
    trigger = PreviousRunSettledTrigger(
        dag_id="taxi_daily_retrain", run_id="previous", task_ids=WATCHED, give_up_at=in_seconds(0.2), check_every=0.05
    )
    assert first_event(trigger) == {
        "settled": False,
        "run_state": "running",
        "states": dict.fromkeys(WATCHED, "running"),
    }


class _Dag:
    dag_id = "taxi_daily_retrain"


def window_context(end: datetime) -> dict:
    return {"data_interval_end": end, "params": {"window_days": 30}, "dag": _Dag(), "run_id": "test"}


def test_a_window_not_landed_defers_to_the_triggerer(warehouse):
    sensor = WindowLandedSensor(task_id="wait_for_window")
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(window_context(datetime(2017, 1, 1, tzinfo=UTC)))
    trigger = deferred.value.trigger
    assert isinstance(trigger, WindowLandedTrigger) and trigger.warehouse == str(warehouse)
    assert trigger.window_end == "2017-01-01T00:00:00+00:00" and trigger.check_every == 300
    assert datetime.fromisoformat(trigger.give_up_at) - datetime.now(UTC) > timedelta(hours=5, minutes=59)
    assert deferred.value.method_name == "execute_complete" and deferred.value.timeout > timedelta(hours=6)


def test_a_landed_window_goes_on_without_deferring(warehouse):
    assert (
        WindowLandedSensor(task_id="wait_for_window").execute(window_context(datetime(2016, 6, 1, tzinfo=UTC))) is None
    )


def test_the_window_sensor_fails_with_the_watermark_when_its_trigger_gives_up(warehouse):
    sensor, context = WindowLandedSensor(task_id="wait_for_window"), window_context(datetime(2017, 1, 1, tzinfo=UTC))
    assert sensor.execute_complete(context, {"landed": True, "latest": "2017-01-01T00:05:00+00:00"}) is None
    with pytest.raises(AirflowSensorTimeout, match=r"holds trips only up to 2016-12-30 16:45:00\+00:00\. Check"):
        sensor.execute_complete(context, {"landed": False, "latest": WATERMARK})


class _PreviousRun:
    run_id = "scheduled__2015-12-31"


class _TaskInstance:
    def __init__(self, previous, state):
        self.previous, self.state = previous, state

    def get_previous_dagrun(self):
        return self.previous

    def get_task_states(self, dag_id, task_ids, run_ids):
        return {run_ids[0]: dict.fromkeys(task_ids, self.state)}

    def get_dagrun_state(self, dag_id, run_id):
        return "running"


def test_an_unsettled_previous_run_defers_to_the_triggerer():
    sensor = PreviousRunSettledSensor(task_id="wait_for_previous_deploys", task_ids=WATCHED)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({"ti": _TaskInstance(_PreviousRun(), "running")})
    trigger = deferred.value.trigger
    assert isinstance(trigger, PreviousRunSettledTrigger)
    assert trigger.run_id == _PreviousRun.run_id and trigger.task_ids == WATCHED and trigger.check_every == 2


@pytest.mark.parametrize("previous", [None, _PreviousRun()], ids=["first run", "settled"])
def test_a_settled_or_missing_previous_run_goes_on_without_deferring(previous):
    sensor = PreviousRunSettledSensor(task_id="wait_for_previous_deploys", task_ids=WATCHED)
    assert sensor.execute({"ti": _TaskInstance(previous, "success")}) is None


def test_the_previous_run_sensor_names_what_is_stuck_when_its_trigger_gives_up():
    sensor = PreviousRunSettledSensor(task_id="wait_for_previous_deploys", task_ids=WATCHED)
    event = {"settled": False, "run_state": "running", "states": {"standard.push": "running"}}
    with pytest.raises(AirflowSensorTimeout, match=r"it is running, its standard.push, .*'standard.push': 'running'"):
        sensor.execute_complete({}, event)
