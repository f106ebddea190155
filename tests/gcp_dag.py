"""The gcp platform's DAGs built in this process and their tasks run for a window, offline.

`gcp_dag(dag_id)` parses the DAG file with TAXI_PLATFORM=gcp (the platform setting is restored
after: the DAG keeps the gcp tasks, the session stays local); parsed once per session.
`task_run(...)` copies one of its tasks, renders its templates for a run of a window with the
context tests/taxi_pipeline/gcp_render.py uses (no Airflow Variable set: every setting takes its
default) and returns it with that context, whose task instance records the XComs the task pushes.
Execute it with TAXI_PLATFORM=gcp set (`gcp_platform` below), as a worker of the gcp deployment.
`link_url(task, link, ti)` is the URL Airflow's worker stores for an extra link when the task ends.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
PROJECT = "taxi-test"


class NoVariables:
    """`var.value` of a deployment that sets no Airflow Variable: every setting takes its default."""

    def get(self, key, default=None):
        return default

    def __getattr__(self, key):
        raise KeyError(f"no Airflow Variable {key}")


class RecordingTI(SimpleNamespace):
    """The task instance of the context: what the operators push to XCom, by key."""

    def __init__(self, **fields):
        super().__init__(xcoms={}, map_index=-1, stats_tags={}, **fields)

    def xcom_push(self, key, value, **kwargs):
        self.xcoms[key] = value


class TaskStateStore(dict):
    """The task_state_store of Airflow 3.3's context (kept across tries of a task instance)."""

    def set(self, key, value):
        self[key] = value


@functools.cache
def gcp_dag(dag_id: str):
    with mock.patch.dict(os.environ, TAXI_PLATFORM="gcp", TAXI_GCP_PROJECT=PROJECT):
        spec = importlib.util.spec_from_file_location(f"gcp_{dag_id}", REPO / "dags" / f"{dag_id}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.dag


def task_run(
    dag_id: str, task_id: str, start: datetime, end: datetime, try_number: int = 1, state: TaskStateStore | None = None
):
    """A rendered copy of the task and its context for the scheduled run of [start, end)."""
    from airflow.sdk.execution_time import macros

    dag = gcp_dag(dag_id)
    task = copy.deepcopy(dag.get_task(task_id))
    params = dag.params.dump() if hasattr(dag.params, "dump") else dict(dag.params)
    run_id = "scheduled__" + end.isoformat()
    ti = RecordingTI(dag_id=dag_id, task_id=task_id, run_id=run_id, try_number=try_number)
    context = {
        "dag": dag,
        "task": task,
        "ti": ti,
        "task_instance": ti,
        "params": params,
        "run_id": run_id,
        "data_interval_start": start,
        "data_interval_end": end,
        "logical_date": start,
        "macros": macros,
        "ds": start.strftime("%Y-%m-%d"),
        "var": {"value": NoVariables()},
        "task_state_store": state if state is not None else TaskStateStore(),
    }
    task.render_template_fields(context, jinja_env=dag.get_template_env())
    return task, context


def link_url(task, link_class, ti) -> str:
    """The URL of the task's extra link of `link_class`, as the worker computes it when the task ends
    (Airflow 3: BaseOperatorLink.get_link with the task, reading the XComs the task pushed)."""
    link = next(x for x in task.operator_extra_links if isinstance(x, link_class))
    with mock.patch(
        "airflow.providers.google.cloud.links.base.XCom.get_value",
        side_effect=lambda key, ti_key: ti_key.xcoms.get(key),
    ):
        return link.get_link(operator=task, ti_key=ti)
