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
