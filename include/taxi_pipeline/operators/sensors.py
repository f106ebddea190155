"""Sensors of taxi-mlops."""

from __future__ import annotations

import time
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
        self.log.info(
            "Window %s: warehouse holds trips up to %s -> %s",
            window,
            self._latest,
            "complete" if landed else "not complete yet",
        )
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


# States after which a task will not change again without someone clearing it.
FINISHED_STATES = frozenset({"success", "skipped", "failed", "upstream_failed", "removed"})


def previous_run_settled(previous_run_state: str | None, task_states: dict[str, str | None]) -> bool:
    """Whether the previous run's deploy decisions are final: it finished, or each task has."""
    if previous_run_state in ("success", "failed"):
        return True
    return bool(task_states) and all(state in FINISHED_STATES for state in task_states.values())


PREVIOUS_RUN_DOC = """
### wait_for_previous_deploys
Waits until the previous run (the previous window) has finished its deploy steps ({tasks}), so
that this run's evaluations are judged against what that window left in service, whatever the
timing of a backfill. Any finished state counts: a failed previous window does not block this one.

Each try checks every 2 s for up to 3 minutes, then frees its worker slot and tries again 5
minutes later.

**On timeout** (6 h): the previous run is stuck; look at it first. Marking its deploy steps failed
or skipped, or clearing them, releases this one.
"""


class PreviousRunSettledSensor(BaseSensorOperator):
    """Waits until the previous run (by logical date) has settled the given tasks (its deploys).

    A run's evaluation is judged against the served model older than its own window. In a backfill,
    runs of consecutive windows overlap; waiting for the previous window's pushes makes the baseline
    the same whatever the timing, so a reprocessed window is judged as it was the first time. It
    waits on finished states, not success: a failed previous window does not block this one.
    """

    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        task_ids: list[str],
        timeout: float = timedelta(hours=6).total_seconds(),
        hold: float = 180,
        check_every: float = 2,
        **kwargs,
    ):
        # In a backfill the previous window settles within a minute or two: each try watches for up
        # to `hold` seconds (checking every `check_every`), so this run goes on seconds after the
        # previous one settles; a previous run stuck longer frees the slot and is looked at again
        # every 5 minutes (reschedule).
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", timedelta(minutes=5).total_seconds())
        kwargs.setdefault("doc_md", PREVIOUS_RUN_DOC.format(tasks=", ".join(f"`{t}`" for t in task_ids)))
        super().__init__(timeout=timeout, **kwargs)
        self.watched_task_ids = list(task_ids)
        self.hold, self.check_every = hold, check_every
        self._last_states = None  # the previous check's states: one log line per change, not per check

    def poke(self, context) -> bool:
        deadline = time.monotonic() + self.hold
        while True:
            settled = self._previous_run_settled(context)
            if settled or time.monotonic() + self.check_every > deadline:
                return settled
            time.sleep(self.check_every)

    def _previous_run_settled(self, context) -> bool:
        ti = context["ti"]
        previous = ti.get_previous_dagrun()
        if previous is None:
            self.log.info("No earlier run of %s: nothing to wait for", self.dag_id)
            return True
        states = ti.get_task_states(dag_id=self.dag_id, task_ids=self.watched_task_ids, run_ids=[previous.run_id]).get(
            previous.run_id, {}
        )
        run_state = ti.get_dagrun_state(dag_id=self.dag_id, run_id=previous.run_id)
        settled = previous_run_settled(run_state, states)
        if settled or states != self._last_states:
            self.log.info(
                "Previous run %s is %s; its %s: %s -> %s",
                previous.run_id,
                run_state,
                ", ".join(self.watched_task_ids),
                states,
                "settled" if settled else "waiting",
            )
        self._last_states = states
        return settled
