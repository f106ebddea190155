"""What `make run` shows: a live view of the run's tasks, while every log goes to a file.

The run executes in this process (`dag.test`), and its tasks start the runtime's processes, so
the logs are redirected at the file-descriptor level (TensorFlow's C++ lines and the child
processes' output included). A thread reads the run's task instances from the metadata database
and draws them: a table with a spinner on a terminal, one line per finished task otherwise (CI,
a pipe).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

FINISHED = {"success", "failed", "skipped", "upstream_failed", "removed"}
STATE_STYLE = {
    "success": "green",
    "failed": "bold red",
    "upstream_failed": "red",
    "skipped": "dim",
    "running": "cyan",
    "up_for_retry": "yellow",
    "deferred": "magenta",
    "queued": "cyan",
}
# dag.test() names each task it starts in its log (airflow.sdk.definitions.dag._run_task).
TASK_START_MARK = "[DAG TEST] starting task_id={task_id} "
# `airflow.sdk.exceptions.AirflowFailException: the window ...`, `ValueError: ...`
EXCEPTION_LINE = re.compile(r"^[\w.]*(Exception|Error|Exit|Interrupt)\w*: ")
# The lines Airflow writes around every task, which say nothing about why it failed.
AIRFLOW_BOOKKEEPING = ("[DAG TEST]", "::group::", "::endgroup::", "Task instance state updated", "TAXI ALERT")


@dataclasses.dataclass(frozen=True)
class TaskRow:
    task_id: str
    state: str  # "" while not started in this run
    started: datetime | None
    ended: datetime | None
    mapped: int = 0  # how many mapped instances, 0 for an unmapped task

    def seconds(self, now: datetime) -> float | None:
        if self.started is None:
            return None
        return ((self.ended or now) - self.started).total_seconds()


def task_rows(task_ids: Iterable[str], instances: Iterable[tuple], since: datetime) -> list[TaskRow]:
    """One row per task, in `task_ids`' order, from (task_id, map_index, state, start, end) tuples.

    Instances that started before `since` belong to an earlier run of the same date (dag.test
    clears them as it starts): they count as not started. A mapped task's instances are shown as
    one row: running while any runs, failed if any failed, its span from the first start to the
    last end."""
    by_task: dict[str, list[tuple]] = {}
    for task_id, map_index, state, start, end in instances:
        if start is not None and start < since:
            state, start, end = "", None, None
        by_task.setdefault(task_id, []).append((map_index, state or "", start, end))
    rows = []
    for task_id in task_ids:
        found = by_task.get(task_id, [])
        states = [state for _, state, _, _ in found]
        starts = [start for _, _, start, _ in found if start]
        ends = [end for _, _, _, end in found if end]
        state = next(
            (s for s in ("failed", "upstream_failed", "up_for_retry", "running", "deferred", "queued") if s in states),
            states[0] if len(set(states)) == 1 else ("running" if starts else ""),
        )
        finished = bool(found) and all(s in FINISHED for s in states)
        rows.append(
            TaskRow(
                task_id,
                state,
                min(starts) if starts else None,
                max(ends) if finished and ends else None,
                mapped=sum(1 for index, *_ in found if index >= 0),
            )
        )
    return rows


def _duration(row: TaskRow, now: datetime) -> str:
    seconds = row.seconds(now)
    return "" if seconds is None else f"{seconds:6.1f} s"


def render(rows: list[TaskRow], now: datetime) -> Table:
    table = Table(box=None, pad_edge=False, show_header=False)
    table.add_column(width=2)
    table.add_column()
    table.add_column()
    table.add_column(justify="right")
    for row in rows:
        mark = Spinner("dots", style="cyan") if row.state == "running" else Text("")
        name = row.task_id + (f" [{row.mapped}]" if row.mapped else "")
        table.add_row(mark, name, Text(row.state or "-", style=STATE_STYLE.get(row.state, "dim")), _duration(row, now))
    return table


def finished_line(row: TaskRow, now: datetime) -> str:
    name = row.task_id + (f" [{row.mapped}]" if row.mapped else "")
    return f"  {name:<32} {row.state:<16} {_duration(row, now)}"


class RunView:
    """Draws the tasks of the DAG's run at `logical_date` until closed (a context manager)."""

    def __init__(self, dag, logical_date: datetime, terminal: TextIO, interval: float = 0.5):
        self._task_ids = [task.task_id for task in dag.topological_sort()]
        self._dag_id, self._logical_date = dag.dag_id, logical_date
        self._console = Console(file=terminal, highlight=False)
        self._interval = interval
        self._since = datetime.now(UTC)
        self._stop = threading.Event()
        self._printed: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name="run-view", daemon=True)
        self._live = (
            Live(console=self._console, refresh_per_second=8, redirect_stdout=False, redirect_stderr=False)
            if self._console.is_terminal
            else None
        )

    def __enter__(self) -> RunView:
        if self._live:
            self._live.start()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._draw()  # the final states
        if self._live:
            self._live.stop()

    def _instances(self) -> list[tuple]:
        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            run_id = session.scalar(
                select(DagRun.run_id).where(DagRun.dag_id == self._dag_id, DagRun.logical_date == self._logical_date)
            )
            if run_id is None:
                return []
            return [
                tuple(row)
                for row in session.execute(
                    select(
                        TaskInstance.task_id,
                        TaskInstance.map_index,
                        TaskInstance.state,
                        TaskInstance.start_date,
                        TaskInstance.end_date,
                    ).where(TaskInstance.dag_id == self._dag_id, TaskInstance.run_id == run_id)
                )
            ]

    def _draw(self) -> None:
        try:
            instances = self._instances()
        except Exception:  # noqa: BLE001  a busy database: the next tick draws
            return
        now = datetime.now(UTC)
        rows = task_rows(self._task_ids, instances, self._since)
        if self._live:
            self._live.update(Group(render(rows, now)))
            return
        for row in rows:
            if row.state in FINISHED and row.task_id not in self._printed:
                self._printed.add(row.task_id)
                self._console.print(finished_line(row, now), markup=False)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._draw()


@contextlib.contextmanager
def output_to(log_path: Path) -> Iterator[TextIO]:
    """Sends this process's stdout and stderr, and so its child processes', to `log_path`; yields
    a stream to the terminal the process had."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as log:
        for fd in saved:
            os.dup2(log.fileno(), fd)
    terminal = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    try:
        yield terminal
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd, original in saved.items():
            os.dup2(original, fd)
            os.close(original)
        terminal.close()


def task_log(log_path: Path, task_id: str) -> tuple[int, list[str]]:
    """The lines of the task's latest attempt in the run's log, and the line number it starts at."""
    text = log_path.read_text(errors="replace").splitlines()
    mark = TASK_START_MARK.format(task_id=task_id)
    starts = [n for n, line in enumerate(text) if mark in line]
    if not starts:
        return 0, []
    begin = starts[-1]
    others = [n for n, line in enumerate(text) if n > begin and "[DAG TEST] starting task_id=" in line]
    return begin + 1, text[begin : others[0] if others else len(text)]


def failure_summary(lines: list[str], tail: int = 6, width: int = 200) -> tuple[str, list[str]]:
    """A failed task's error (the last line a Python exception printed) and the last lines of its
    log before Airflow's own bookkeeping, each cut to `width` characters."""
    error = next((line.strip() for line in reversed(lines) if EXCEPTION_LINE.match(line.strip())), "")
    own = [line for line in lines if not any(mark in line for mark in AIRFLOW_BOOKKEEPING)]

    def shorten(line: str) -> str:
        return line if len(line) <= width else line[: width - 3] + "..."

    return shorten(error), [shorten(line) for line in own[-tail:]]
