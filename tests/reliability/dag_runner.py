"""One in-process run of a project DAG (dag.test), in its own process so that tests can run two at
once or SIGKILL one mid-task. Prints `RESULT <json>` (run id, state, task states) as its last line.

    .venv/bin/python tests/reliability/dag_runner.py DAG_ID LOGICAL_DATE RUN_AFTER [--conf JSON] [--mark-success REGEX]

A fixed RUN_AFTER gives a fixed run id (manual__<RUN_AFTER>): running it again clears and reruns
the same run, writing the same paths (what a clear in the UI does); --mark-success marks the tasks
it matches as succeeded without running them, so only the others are rerun.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

DAGS = Path(__file__).resolve().parents[2] / "dags"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dag_id")
    parser.add_argument("logical_date")
    parser.add_argument("run_after")
    parser.add_argument("--conf", default="{}")
    parser.add_argument("--mark-success", default=None)
    args = parser.parse_args()

    from airflow.dag_processing.dagbag import DagBag

    from taxi_pipeline.dag_defaults import run_in_process

    def utc(text: str) -> datetime:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)

    dag = DagBag(dag_folder=str(DAGS)).dags[args.dag_id]
    dag_run = run_in_process(
        dag,
        logical_date=utc(args.logical_date),
        run_after=utc(args.run_after),
        run_conf=json.loads(args.conf),
        mark_success_pattern=args.mark_success,
    )
    states = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dag_run.get_task_instances()}
    print(
        "RESULT "
        + json.dumps(
            {"run_id": dag_run.run_id, "state": str(getattr(dag_run.state, "value", dag_run.state)), "states": states}
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
