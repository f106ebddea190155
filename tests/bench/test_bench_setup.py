"""Each benchmark figure (bench/run.py) is a user-facing command that must run alone on a fresh work
dir: its set-up path is tested here on an empty one, figure by figure, never its timing."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench_run():
    spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_run", None)


@pytest.fixture
def work(tmp_path, monkeypatch, sample_files) -> Path:
    """An empty work dir but for the sample CSVs (what a fresh clone fetches once; not fetched again here)."""
    monkeypatch.setenv("TAXI_HOME", str(tmp_path / "unused"))  # restored after the test: the bench sets its own
    work = tmp_path / "work"
    data = work / "home" / "data"
    data.mkdir(parents=True)
    for path in sample_files:
        shutil.copy(path, data / path.name)
    return work


def bench_args(**overrides) -> argparse.Namespace:
    return argparse.Namespace(
        **{"sizes": [3000, 5000], "memory_size": 4000, "repeats": 1, "backfill_windows": 1, **overrides}
    )


def test_each_step_runs_after_the_steps_it_reads(bench_run):
    assert bench_run.with_prerequisites(["train"]) == ["extract", "transform", "train"]
    assert bench_run.with_prerequisites(["trainer_input"]) == ["extract", "transform", "trainer_input"]
    assert bench_run.with_prerequisites(["evaluate", "validate"]) == [
        "extract",
        "transform",
        "train",
        "evaluate",
        "validate",
    ]
    assert bench_run.with_prerequisites(["extract", "transform", "numpy"]) == ["extract", "transform", "numpy"]
    with pytest.raises(ValueError):
        bench_run.with_prerequisites(["deploy"])


def expect_1(bench, args, prepared):
    assert prepared["reference"].exists() and prepared["dag_files"]
    # its processes run in the bench's home, not the user's
    assert bench.env()["AIRFLOW_HOME"] == str(bench.work / "home" / "airflow")


def expect_scaled(sizes):
    def expect(bench, args, prepared):
        assert sorted(prepared) == sorted(sizes(args))
        assert (bench.work / "home" / "warehouse" / "taxi.duckdb").exists()
        for trips in sizes(args):
            assert (bench.work / "data" / str(trips) / "warehouse" / "taxi.duckdb").exists()

    return expect


def expect_5(bench, args, prepared):
    model, csv = prepared
    assert (model / "saved_model.pb").exists()
    assert csv.exists() and csv.stat().st_size > 0


FIGURES = [
    pytest.param("1", expect_1, id="1"),
    pytest.param("3", expect_scaled(lambda args: args.sizes), id="3"),
    pytest.param("4", expect_scaled(lambda args: [min(args.sizes)]), id="4"),
    pytest.param("7", expect_scaled(lambda args: [args.memory_size]), id="7"),
    # slow: with no model in the work dir, figure 5 trains one (extract, TFT transform, TF training)
    pytest.param("5", expect_5, id="5", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("figure", "expect"), FIGURES)
def test_a_figure_sets_itself_up_on_an_empty_work_dir(bench_run, work, figure, expect):
    bench = bench_run.Bench(work=work)
    args = bench_args()
    prepared = bench_run.SETUPS[figure](bench, args)
    expect(bench, args, prepared)
    assert bench_run.SETUPS[figure](bench, args) == prepared  # a second set-up (the figure's own) reuses it


@pytest.mark.slow  # the Airflow DB migration and the runtime interpreter (TensorFlow) that builds the request
def test_figures_2_and_6_build_their_probe_request_after_the_warehouse(bench_run, work):
    """The regression of a fresh `--work`: the probe request read a warehouse nobody had loaded yet."""
    bench = bench_run.Bench(work=work)
    body = bench_run.prepare_2_and_6(bench)
    assert json.loads(body)["instances"]
    assert (work / "home" / "warehouse" / "taxi.duckdb").exists()
    assert (work / "home" / "airflow" / "airflow.db").exists()


@pytest.mark.slow  # starts the warm runtime, Airflow's api-server, scheduler and dag-processor, the model server
def test_figures_2_and_6_start_their_services_on_an_empty_work_dir(bench_run, work):
    bench = bench_run.Bench(work=work)
    with bench_run.setup_2_and_6(bench, bench_args()) as ready:
        assert ready.body
        paused = ready.services.query("SELECT is_paused FROM dag WHERE dag_id = ?", bench_run.DAG_ID)
        assert paused == [(0,)]
        assert all(proc.poll() is None for proc in ready.services.procs.values())
    db = sqlite3.connect(work / "home" / "airflow" / "airflow.db")
    try:
        assert db.execute("SELECT count(*) FROM dag WHERE dag_id = ?", (bench_run.DAG_ID,)).fetchone() == (1,)
    finally:
        db.close()


def test_setup_only_prepares_the_chosen_figures_on_an_empty_work_dir(bench_run, work, capsys):
    """The command a user runs (`bench/run.py --setup-only`), for the figures that need no services."""
    argv = ["--figures", "1,3,4,7", "--sizes", "3000", "--memory-size", "4000", "--work", str(work), "--setup-only"]
    assert bench_run.main(argv) == 0
    out = capsys.readouterr().out
    for figure in ("1", "3", "4", "7"):
        assert f"figure {figure} ready" in out
    assert (work / "data" / "4000" / "warehouse" / "taxi.duckdb").exists()
    assert not (work / "results.json").exists()  # nothing measured
