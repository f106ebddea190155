"""Every DAG imports cleanly, is tagged, retries its tasks, and stays cheap to parse.

One test case per DAG file (id: the file name, e.g. ``taxi_daily_retrain.py``) or per DAG (id: the DAG file's
stem, which is its dag_id, e.g. ``taxi_daily_retrain``), so one broken DAG fails only its own cases and does not
hide the others. The DAG files are known at collection time (a glob); the DagBag is parsed once per module."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

DAG_FOLDER = Path(__file__).resolve().parents[2] / "dags"
DAGS = sorted(DAG_FOLDER.glob("*.py"))
HEAVY = (
    "tensorflow",
    "tensorflow_transform",
    "tensorflow_model_analysis",
    "apache_beam",
    "pandas",
    "great_expectations",
    "duckdb",
    "sqlglot",
)


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAG_FOLDER))


def _dag_file(path: str) -> Path:
    """A DagBag path (an import_errors key or a fileloc, absolute or relative to the DAG folder) as a file."""
    return (DAG_FOLDER / path).resolve()


def _import_errors(dagbag, dag_file: Path) -> dict[str, str]:
    return {path: error for path, error in dagbag.import_errors.items() if _dag_file(path) == dag_file}


def _dags_of(dagbag, dag_file: Path) -> list:
    dags = [dag for dag in dagbag.dags.values() if _dag_file(dag.fileloc) == dag_file]
    failed = " (it failed to import: see its import-error case)" if _import_errors(dagbag, dag_file) else ""
    assert dags, f"{dag_file.name} defines no DAG{failed}"
    return dags


@pytest.mark.parametrize("dag_file", DAGS, ids=lambda p: p.name)
def test_every_dag_file_imports_without_error(dagbag, dag_file):
    errors = _import_errors(dagbag, dag_file)
    assert not errors, f"{dag_file.name} failed to import:\n" + "\n".join(errors.values())


def test_no_import_error_outside_the_dag_files(dagbag):
    # Anything else the DagBag parsed (a subfolder, a zip) has no case above, so its errors surface here.
    assert {path: error for path, error in dagbag.import_errors.items() if _dag_file(path) not in DAGS} == {}


def test_the_daily_retrain_dag_is_found(dagbag):
    assert "taxi_daily_retrain" in dagbag.dags


@pytest.mark.parametrize("dag_file", DAGS, ids=lambda p: p.stem)
def test_every_dag_has_tags_docs_and_retrying_tasks(dagbag, dag_file):
    for dag in _dags_of(dagbag, dag_file):
        assert dag.tags, dag.dag_id
        assert dag.doc_md, dag.dag_id
        no_retries = [task.task_id for task in dag.tasks if not task.retries >= 1]
        assert not no_retries, f"{dag.dag_id}: tasks without retries: {no_retries}"
        no_docs = [task.task_id for task in dag.tasks if not task.doc_md]
        assert not no_docs, f"{dag.dag_id}: tasks with no doc_md for on-call: {no_docs}"


@pytest.mark.parametrize("dag_file", DAGS, ids=lambda p: p.name)
def test_parsing_a_dag_file_imports_no_heavy_library(dag_file):
    probe = (
        f"import runpy, sys, json; runpy.run_path({str(dag_file)!r}); "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
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


@pytest.mark.parametrize("dag_id", ["taxi_daily_retrain", "taxi_sliding_window"])
def test_every_param_is_described_and_refuses_a_bad_value(dagbag, dag_id):
    from airflow.sdk.exceptions import ParamValidationError

    assert dag_id in dagbag.dags, f"{dag_id} is not in the DagBag (see its import-error case)"
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
