"""The live view of `make run`: which rows it draws, where the logs go, what a failure shows."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

from taxi_pipeline.run_view import TaskRow, failure_summary, finished_line, task_log, task_rows

START = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def test_rows_follow_the_dags_order_and_show_untouched_tasks_as_not_started():
    rows = task_rows(
        ["extract", "validate", "train"],
        [("validate", -1, "running", at(5), None), ("extract", -1, "success", at(1), at(4))],
        START,
    )
    assert [(r.task_id, r.state) for r in rows] == [("extract", "success"), ("validate", "running"), ("train", "")]
    assert rows[0].seconds(at(100)) == 3.0
    assert rows[1].seconds(at(7)) == 2.0  # running: up to now


def test_an_earlier_runs_instances_of_the_same_date_count_as_not_started():
    rows = task_rows(["extract"], [("extract", -1, "success", START - timedelta(days=1), START)], START)
    assert rows == [TaskRow("extract", "", None, None)]


def test_a_mapped_task_is_one_row_failed_if_any_instance_failed_and_spanning_all_of_them():
    instances = [("push", 0, "success", at(1), at(2)), ("push", 1, "failed", at(2), at(6))]
    (row,) = task_rows(["push"], instances, START)
    assert (row.state, row.mapped, row.seconds(at(60))) == ("failed", 2, 5.0)
    assert finished_line(row, at(60)).split() == ["push", "[2]", "failed", "5.0", "s"]


def test_a_mapped_task_runs_until_its_last_instance_ends():
    instances = [("push", 0, "success", at(1), at(2)), ("push", 1, None, None, None)]
    (row,) = task_rows(["push"], instances, START)
    assert (row.state, row.ended) == ("running", None)


def test_a_failed_tasks_log_is_its_own_latest_attempt(tmp_path):
    log = tmp_path / "run.log"
    log.write_text(
        textwrap.dedent("""\
        [DAG TEST] starting task_id=train map_index=-1
        first attempt
        [DAG TEST] starting task_id=train map_index=-1
        epoch 1
        ValueError: the window is empty
        [DAG TEST] starting task_id=report map_index=-1
        report lines
        """)
    )
    assert task_log(log, "train") == (
        3,
        ["[DAG TEST] starting task_id=train map_index=-1", "epoch 1", "ValueError: the window is empty"],
    )
    assert task_log(log, "deploy") == (0, [])


def test_a_failure_is_summed_up_by_its_exception_and_its_own_last_lines():
    lines = [
        "[DAG TEST] starting task_id=validate_window map_index=-1",
        "Traceback (most recent call last):",
        '  File "callables.py", line 58, in validate_window_artifacts',
        "airflow.sdk.exceptions.AirflowFailException: window failed validation with 1 problems: " + "x" * 300,
        "2026-11-30T23:45:11Z [info     ] ::group::Post Execute",
        "2026-11-30T23:45:11Z [warning  ] TAXI ALERT (no alert connection configured): task failed",
        "[DAG TEST] end task task_id=validate_window map_index=-1",
    ]
    error, tail = failure_summary(lines, tail=2, width=100)
    assert error.startswith("airflow.sdk.exceptions.AirflowFailException: window failed validation")
    assert len(error) == 100 and error.endswith("...")
    assert tail == ['  File "callables.py", line 58, in validate_window_artifacts', error]


def test_logs_of_the_process_and_its_children_go_to_the_file_and_the_view_to_the_terminal(tmp_path):
    log = tmp_path / "logs" / "run.log"
    script = textwrap.dedent(f"""
        import os, subprocess, sys
        from pathlib import Path
        from taxi_pipeline.run_view import output_to
        with output_to(Path({str(log)!r})) as terminal:
            print("a log line")
            print("an error line", file=sys.stderr)
            subprocess.run([sys.executable, "-c", "import os; os.write(2, b'a child C-level line')"], check=True)
            print("the view", file=terminal)
        print("after the run")
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["the", "view", "after", "the", "run"]
    assert result.stderr == ""
    assert log.read_text().split("\n")[:2] == ["a log line", "an error line"]
    assert "a child C-level line" in log.read_text()


def test_on_a_terminal_the_live_view_leaves_the_logs_in_the_file(tmp_path):
    """rich's Live would route the process's prints to the terminal, above the view: not here."""
    import os
    import pty

    log = tmp_path / "run.log"
    script = textwrap.dedent(f"""
        import types
        from datetime import datetime, timezone
        from pathlib import Path
        from taxi_pipeline.run_view import RunView, output_to
        dag = types.SimpleNamespace(dag_id="none", topological_sort=lambda: [])
        with output_to(Path({str(log)!r})) as terminal:
            with RunView(dag, datetime.now(timezone.utc), terminal, interval=0.05):
                print("a log line", flush=True)
            print("the view", file=terminal)
        """)
    controller, terminal = pty.openpty()
    child = subprocess.Popen([sys.executable, "-c", script], stdout=terminal, stderr=terminal)
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    assert child.wait(timeout=60) == 0, shown
    os.close(controller)
    assert b"the view" in shown and b"a log line" not in shown
    assert "a log line" in log.read_text()
