"""Every DAG imports cleanly, is tagged, retries its tasks, and stays cheap to parse."""
from __future__ import annotations

import copy
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


# Values a person could type in the Trigger form, each refused by the Param's schema before a run exists.
BAD_PARAMS = {
    "window_end": ["2016-13-01", "yesterday", "2016-01-01 00:00"],
    "window_days": [0, -5, "365"],
    "train_steps": [0],
    "variants": [[], ["fine"], ["coarse", "coarse"]],
    "variant": ["fine"],
    "history_start": ["2013-02-30"],
}


def test_every_param_is_described_and_refuses_a_bad_value(dagbag):
    from airflow.sdk.exceptions import ParamValidationError

    for dag_id in ("taxi_daily_retrain", "taxi_sliding_window"):
        params = dagbag.dags[dag_id].params
        assert {"window_end", "train_steps", "min_window_rows"} <= set(params), dag_id
        for name in params:
            assert params.get_param(name).description, f"{dag_id} Param {name} has no description"
            assert params.get_param(name).schema.get("title"), f"{dag_id} Param {name} has no title for the form"
        assert params.validate()["window_end"] is None  # scheduled runs: the data interval end
        for name, values in BAD_PARAMS.items():
            if name not in params:
                continue
            for value in values:
                with pytest.raises(ParamValidationError, match=f"param {name}"):
                    copy.deepcopy(params).update({name: value})


def test_a_manual_run_can_choose_its_window_end_and_variants(dagbag):
    daily = copy.deepcopy(dagbag.dags["taxi_daily_retrain"].params)
    daily.update({"window_end": "2015-07-01", "variants": ["coarse"]})
    assert daily.validate()["variants"] == ["coarse"]
    sliding = copy.deepcopy(dagbag.dags["taxi_sliding_window"].params)
    sliding.update({"window_end": "2015-07-01", "variant": "coarse"})
    assert sliding.validate()["variant"] == "coarse"


def test_the_variants_run_side_by_side_after_one_selection(dagbag):
    dag = dagbag.dags["taxi_daily_retrain"]
    select = dag.get_task("select_variants")
    assert select.upstream_task_ids == {"validate_window"}
    assert select.downstream_task_ids == {"standard.transform", "coarse.transform"}
    # Compare and promote judge whichever variants ran: a skipped variant must not skip them.
    assert dag.get_task("compare_variants").trigger_rule == "none_failed"
    assert dag.get_task("promote_champion").trigger_rule == "none_failed"
    sliding = dagbag.dags["taxi_sliding_window"]
    for branch in ("recent", "long"):
        assert sliding.get_task(f"{branch}.transform").pipeline_options["variant"] == "{{ params.variant }}"
