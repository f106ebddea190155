"""Triggers of taxi-mlops' sensors: the waits that run in Airflow's triggerer, so a waiting run holds no
worker slot (taxi_pipeline.operators.sensors defers to them after its first check).

Each trigger gives up by itself at `give_up_at` (the sensor's timeout) with what it last saw, so the
sensor fails with the same message on timeout whether it waited in a worker or in the triggerer.
Kept free of heavy imports: the triggerer imports this module to run them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

# States after which a task will not change again without someone clearing it.
FINISHED_STATES = frozenset({"success", "skipped", "failed", "upstream_failed", "removed"})


def previous_run_settled(previous_run_state: str | None, task_states: dict[str, str | None]) -> bool:
    """Whether the previous run's deploy decisions are final: it finished, or each task has."""
    if previous_run_state in ("success", "failed"):
        return True
    return bool(task_states) and all(state in FINISHED_STATES for state in task_states.values())


def previous_run_line(run_id: str, run_state: str | None, task_ids: list[str], states: dict, settled: bool) -> str:
    """The log line of a check of the previous run (the sensor's and the trigger's)."""
    outcome = "settled" if settled else "waiting"
    return f"Previous run {run_id} is {run_state}; its {', '.join(task_ids)}: {states} -> {outcome}"


def _now() -> datetime:
    return datetime.now(UTC)


def _file_stamp(path: str) -> tuple[int, int, int] | None:
    """What changes when a file is written or replaced (its inode, size and mtime); None: no file."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _serialized(trigger: BaseTrigger, *names: str) -> tuple[str, dict[str, Any]]:
    """What the triggerer rebuilds `trigger` from: its class path and the constructor's arguments."""
    return f"{type(trigger).__module__}.{type(trigger).__qualname__}", {name: getattr(trigger, name) for name in names}


class WindowLandedTrigger(BaseTrigger):
    """Fires once the local warehouse holds a trip starting at or after `window_end` (the watermark).

    The watermark query is cheap but opens the DuckDB file; the warehouse file itself is watched
    every `watch_every` seconds (a stat), and queried when it changed, or every `check_every`
    seconds at the latest. So a window fires seconds after its trips land.
    """

    def __init__(
        self,
        warehouse: str,
        window_end: str,
        give_up_at: str,
        check_every: float = 300,
        watch_every: float = 5,
    ):
        super().__init__()
        self.warehouse, self.window_end, self.give_up_at = warehouse, window_end, give_up_at
        self.check_every, self.watch_every = check_every, watch_every

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return _serialized(self, "warehouse", "window_end", "give_up_at", "check_every", "watch_every")

    def _latest(self) -> datetime | None:
        from pathlib import Path

        from taxi_pipeline.warehouse import latest_trip_start

        return latest_trip_start(Path(self.warehouse))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        window_end, give_up_at = datetime.fromisoformat(self.window_end), datetime.fromisoformat(self.give_up_at)
        latest, checked_stamp, next_check = None, object(), 0.0
        loop = asyncio.get_running_loop()
        while True:
            stamp = _file_stamp(self.warehouse)
            if stamp is not None and (stamp != checked_stamp or loop.time() >= next_check):
                checked_stamp, next_check = stamp, loop.time() + self.check_every
                try:
                    latest = await asyncio.to_thread(self._latest)
                except Exception as error:  # a writer holding the file: read again at the next look
                    self.log.info("Could not read the watermark of %s yet: %s", self.warehouse, error)
                    checked_stamp = None
                else:
                    landed = latest is not None and latest >= window_end
                    self.log.info(
                        "Window ending %s: warehouse holds trips up to %s -> %s",
                        self.window_end,
                        latest,
                        "complete" if landed else "not complete yet",
                    )
                    if landed:
                        yield TriggerEvent({"landed": True, "latest": latest.isoformat()})
                        return
            if _now() >= give_up_at:
                yield TriggerEvent({"landed": False, "latest": latest.isoformat() if latest else None})
                return
            await asyncio.sleep(self.watch_every)


class PreviousRunSettledTrigger(BaseTrigger):
    """Fires once run `run_id` of `dag_id` has finished, or each of `task_ids` in it has (its deploys).

    Asks the states through the triggerer's Task SDK API (as the standard provider's WorkflowTrigger
    does), every `check_every` seconds; one log line per change of the states, not per check.
    """

    def __init__(self, dag_id: str, run_id: str, task_ids: list[str], give_up_at: str, check_every: float = 2):
        super().__init__()
        self.dag_id, self.run_id, self.task_ids = dag_id, run_id, list(task_ids)
        self.give_up_at, self.check_every = give_up_at, check_every

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return _serialized(self, "dag_id", "run_id", "task_ids", "give_up_at", "check_every")

    def _states(self) -> tuple[str | None, dict[str, str | None]]:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        states = RuntimeTaskInstance.get_task_states(dag_id=self.dag_id, task_ids=self.task_ids, run_ids=[self.run_id])
        run_state = RuntimeTaskInstance.get_dagrun_state(dag_id=self.dag_id, run_id=self.run_id)
        return run_state, states.get(self.run_id, {})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        give_up_at, last_states = datetime.fromisoformat(self.give_up_at), None
        while True:
            run_state, states = await sync_to_async(self._states)()
            settled = previous_run_settled(run_state, states)
            if settled or states != last_states:
                self.log.info(previous_run_line(self.run_id, run_state, self.task_ids, states, settled))
            last_states = states
            if settled or _now() >= give_up_at:
                yield TriggerEvent({"settled": settled, "run_state": run_state, "states": states})
                return
            await asyncio.sleep(self.check_every)
