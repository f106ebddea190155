"""Sensors of taxi-mlops."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSensorTimeout

from taxi_pipeline.operators.triggers import (
    PreviousRunSettledTrigger,
    WindowLandedTrigger,
    previous_run_line,
    previous_run_settled,
)

# Past a sensor's own timeout, the trigger has given up and said so; the deferral's timeout is the
# backstop when no triggerer runs at all (the scheduler then fails the task).
DEFERRAL_GRACE = timedelta(minutes=10)


def give_up_at(timeout: float) -> str:
    """When a trigger deferred now gives up: the sensor's timeout from now (ISO, UTC)."""
    return (datetime.now(UTC) + timedelta(seconds=timeout)).isoformat()


def deferral_timeout(timeout: float) -> timedelta:
    return timedelta(seconds=timeout) + DEFERRAL_GRACE


class WindowLandedSensor(BaseSensorOperator):
    """Waits until the local warehouse holds trips up to the end of the run's window.

    A window [start, end) is complete once a trip starting at or after `end` has landed (the
    watermark query, shared with the gcp platform). It checks once in the worker, then defers to the
    triggerer (WindowLandedTrigger), holding no worker slot while it waits; `deferrable=False`, for an
    Airflow without a triggerer, pokes every `poke_interval` in reschedule mode instead. On timeout
    it fails with the watermark it saw.
    """

    ui_color = "#e8f4fd"

    def __init__(self, *, timeout: float = timedelta(hours=6).total_seconds(), deferrable: bool = True, **kwargs):
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", timedelta(minutes=5).total_seconds())
        super().__init__(timeout=timeout, **kwargs)
        self.deferrable = deferrable
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
        self.log.info(
            "Window %s: warehouse holds trips up to %s -> %s",
            window,
            self._latest,
            "complete" if landed else "not complete yet",
        )
        return landed

    def execute(self, context):
        if self.deferrable:
            if self.poke(context):
                return None
            from taxi_pipeline.run_context import run_window
            from taxi_pipeline.settings import get_settings

            self.log.info("Deferring to the triggerer: it watches the warehouse, holding no worker slot")
            self.defer(
                trigger=WindowLandedTrigger(
                    warehouse=str(get_settings().warehouse_path),
                    window_end=run_window(context).end.isoformat(),
                    give_up_at=give_up_at(self.timeout),
                    check_every=self.poke_interval,
                ),
                method_name="execute_complete",
                timeout=deferral_timeout(self.timeout),
            )
        try:
            return super().execute(context)
        except AirflowSensorTimeout as timeout:
            raise self._timed_out(context) from timeout

    def execute_complete(self, context, event: dict):
        """Back from the triggerer: the window landed, or the trigger gave up at the timeout."""
        from taxi_pipeline.run_context import run_window

        self._latest = datetime.fromisoformat(event["latest"]) if event["latest"] else None
        if not event["landed"]:
            raise self._timed_out(context)
        self.log.info("Window %s: warehouse holds trips up to %s -> complete", run_window(context), self._latest)
        return None

    def _timed_out(self, context) -> AirflowSensorTimeout:
        from taxi_pipeline.run_context import run_window

        return AirflowSensorTimeout(
            f"Window {run_window(context)} has not landed after {self.timeout:.0f}s: the warehouse holds "
            f"trips only up to {self._latest}. Check the ingestion into the trips table, then clear this task."
        )


class ScoresLandedSensor(BaseSensorOperator):
    """Waits until the local predictions table holds scores of the run's day (taxi_batch_scoring)."""

    ui_color = "#e8f4fd"

    def __init__(self, *, timeout: float = timedelta(hours=12).total_seconds(), **kwargs):
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", timedelta(minutes=5).total_seconds())
        super().__init__(timeout=timeout, **kwargs)

    def poke(self, context) -> bool:
        from taxi_pipeline.predictions import read_day
        from taxi_pipeline.run_context import run_window
        from taxi_pipeline.settings import get_settings

        day = run_window(context).start.date()
        rows = len(read_day(get_settings().predictions_path, day))
        self.log.info("Scores of %s in the predictions table: %s", day, rows or "none yet")
        return rows > 0


PREVIOUS_RUN_DOC = """
### wait_for_previous_deploys
Waits until the previous run (the previous window) has finished its deploy steps ({tasks}), so
that this run's evaluations are judged against what that window left in service, whatever the
timing of a backfill. Any finished state counts: a failed previous window does not block this one.

It checks once, then defers to the triggerer, which checks every 2 s without holding a worker
slot (the task shows as deferred); the run goes on seconds after the previous one settles. Its
log has one line per change of the previous run's states.

**On timeout** (6 h): the previous run is stuck; look at it first. Marking its deploy steps failed
or skipped, or clearing them, releases this one.
"""


class PreviousRunSettledSensor(BaseSensorOperator):
    """Waits until the previous run (by logical date) has settled the given tasks (its deploys).

    A run's evaluation is judged against the served model older than its own window. In a backfill,
    runs of consecutive windows overlap; waiting for the previous window's pushes makes the baseline
    the same whatever the timing, so a reprocessed window is judged as it was the first time. It
    waits on finished states, not success: a failed previous window does not block this one.

    It checks once in the worker, then defers to the triggerer (PreviousRunSettledTrigger).
    `deferrable=False`, for an Airflow without a triggerer: each try watches for up to `hold`
    seconds, then frees its slot and is rescheduled every `poke_interval`.
    """

    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        task_ids: list[str],
        timeout: float = timedelta(hours=6).total_seconds(),
        deferrable: bool = True,
        hold: float = 180,
        check_every: float = 2,
        **kwargs,
    ):
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", timedelta(minutes=5).total_seconds())
        kwargs.setdefault("doc_md", PREVIOUS_RUN_DOC.format(tasks=", ".join(f"`{t}`" for t in task_ids)))
        super().__init__(timeout=timeout, **kwargs)
        self.watched_task_ids = list(task_ids)
        self.deferrable, self.hold, self.check_every = deferrable, hold, check_every
        self._last_states = None  # the previous check's states: one log line per change, not per check

    def execute(self, context):
        if not self.deferrable:
            return super().execute(context)
        previous_run_id, settled = self._check(context)
        if settled:
            return None
        self.log.info("Deferring to the triggerer: it watches run %s, holding no worker slot", previous_run_id)
        self.defer(
            trigger=PreviousRunSettledTrigger(
                dag_id=self.dag_id,
                run_id=previous_run_id,
                task_ids=self.watched_task_ids,
                give_up_at=give_up_at(self.timeout),
                check_every=self.check_every,
            ),
            method_name="execute_complete",
            timeout=deferral_timeout(self.timeout),
        )

    def execute_complete(self, context, event: dict):
        """Back from the triggerer: the previous run settled, or the trigger gave up at the timeout."""
        if event["settled"]:
            return None
        raise AirflowSensorTimeout(
            f"The previous run has not settled its deploys after {self.timeout:.0f}s: it is {event['run_state']}, "
            f"its {', '.join(self.watched_task_ids)}: {event['states']}. Look at that run first: marking its "
            "deploy steps failed or skipped, or clearing them, releases this one."
        )

    def poke(self, context) -> bool:
        deadline = time.monotonic() + self.hold
        while True:
            _, settled = self._check(context)
            if settled or time.monotonic() + self.check_every > deadline:
                return settled
            time.sleep(self.check_every)

    def _check(self, context) -> tuple[str | None, bool]:
        """The previous run's id (None: there is none) and whether it has settled."""
        ti = context["ti"]
        previous = ti.get_previous_dagrun()
        if previous is None:
            self.log.info("No earlier run of %s: nothing to wait for", self.dag_id)
            return None, True
        states = ti.get_task_states(dag_id=self.dag_id, task_ids=self.watched_task_ids, run_ids=[previous.run_id]).get(
            previous.run_id, {}
        )
        run_state = ti.get_dagrun_state(dag_id=self.dag_id, run_id=previous.run_id)
        settled = previous_run_settled(run_state, states)
        if settled or states != self._last_states:
            self.log.info(previous_run_line(previous.run_id, run_state, self.watched_task_ids, states, settled))
        self._last_states = states
        return previous.run_id, settled
