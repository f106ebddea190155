"""Every DAG imports cleanly, is tagged, retries its tasks, and stays cheap to parse."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DAGS = sorted((Path(__file__).resolve().parents[2] / "dags").glob("*.py"))
HEAVY = ("tensorflow", "tensorflow_transform", "tensorflow_model_analysis", "apache_beam", "pandas",
         "great_expectations", "duckdb", "sqlglot")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS[0].parent))


def test_every_dag_file_imports_without_error(dagbag):
    assert dagbag.import_errors == {}
    assert "taxi_daily_retrain" in dagbag.dags


def test_every_dag_has_tags_docs_and_retrying_tasks(dagbag):
    for dag in dagbag.dags.values():
        assert dag.tags, dag.dag_id
        assert dag.doc_md, dag.dag_id
        for task in dag.tasks:
            assert task.retries >= 1, task.task_id
            assert task.doc_md, f"{dag.dag_id}.{task.task_id} has no doc_md for on-call"


@pytest.mark.parametrize("dag_file", DAGS, ids=lambda p: p.name)
def test_parsing_a_dag_file_imports_no_heavy_library(dag_file):
    probe = (f"import runpy, sys, json; runpy.run_path({str(dag_file)!r}); "
             f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
