"""Sensors of taxi-mlops."""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSensorTimeout


class WindowLandedSensor(BaseSensorOperator):
    """Waits until the local warehouse holds trips up to the end of the run's window.

    A window [start, end) is complete once a trip starting at or after `end` has landed (the
    watermark query, shared with the gcp platform). On timeout it fails with the watermark it saw.
    """

    ui_color = "#e8f4fd"

    def __init__(self, *, timeout: float = timedelta(hours=6).total_seconds(), **kwargs):
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", timedelta(minutes=5).total_seconds())
        super().__init__(timeout=timeout, **kwargs)
        self._latest = None

    def poke(self, context) -> bool:
        from taxi_pipeline.run_context import run_window
        from taxi_pipeline.settings import get_settings
        from taxi_pipeline.warehouse import latest_trip_start

        window = run_window(context)
        warehouse = get_settings().warehouse_path
        if not warehouse.exists():
            self.log.info("No warehouse at %s yet (run `make run` or load it first)", warehouse)
            return False
        self._latest = latest_trip_start(warehouse)
        landed = self._latest is not None and self._latest >= window.end
        self.log.info("Window %s: warehouse holds trips up to %s -> %s", window, self._latest,
                      "complete" if landed else "not complete yet")
        return landed

    def execute(self, context):
        try:
            return super().execute(context)
        except AirflowSensorTimeout as timeout:
            from taxi_pipeline.run_context import run_window

            raise AirflowSensorTimeout(
                f"Window {run_window(context)} has not landed after {self.timeout:.0f}s: the warehouse holds "
                f"trips only up to {self._latest}. Check the ingestion into the trips table, then clear this task."
            ) from timeout
