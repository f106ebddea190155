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
        **{
            "sizes": [3000, 5000],
            "run_sizes": [3000, 30000],
            "memory_size": 4000,
            "repeats": 1,
            "backfill_windows": 1,
            **overrides,
        }
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


def expect_8(bench, args, prepared):
    """Each size's home reads a warehouse grown so that the run's window holds about that many trips."""
    bench_run = sys.modules[type(bench).__module__]
    assert sorted(prepared) == sorted(args.run_sizes)
    for trips, data in prepared.items():
        link = bench.work / "daily" / str(trips) / "home" / "warehouse" / "taxi.duckdb"
        assert data["warehouse"] == link and link.is_symlink()
        assert link.resolve() == (bench.work / "data" / str(data["scaled_trips"]) / "warehouse" / "taxi.duckdb")
        assert abs(data["window_trips"] - trips) < 0.05 * trips, data
        assert bench_run.window_trips(link, bench_run.run_window())[0] == data["window_trips"]
    # the bench's own home again after the set-up, not a size's
    assert bench.settings().home == bench.work / "home"


FIGURES = [
    pytest.param("1", expect_1, id="1"),
    pytest.param("3", expect_scaled(lambda args: args.sizes), id="3"),
    pytest.param("4", expect_scaled(lambda args: [min(args.sizes)]), id="4"),
    pytest.param("7", expect_scaled(lambda args: [args.memory_size]), id="7"),
    pytest.param("8", expect_8, id="8"),
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
        # the triggerer too: without it, a backfill's deferred wait_for_previous_deploys waits for hours
        assert {"api-server", "scheduler", "dag-processor", "triggerer"} <= set(ready.services.procs)
    db = sqlite3.connect(work / "home" / "airflow" / "airflow.db")
    try:
        assert db.execute("SELECT count(*) FROM dag WHERE dag_id = ?", (bench_run.DAG_ID,)).fetchone() == (1,)
    finally:
        db.close()


def test_figure_7_runs_its_airflow_side_steps_as_the_pipeline_calls_them(bench_run, work):
    """The steps' command lines (not their timing): extract, then validate as a DAG's first run
    (a schema learned from the window). The regression: validate_window took a schema the bench's
    step did not pass, and figure 7 failed at its second step."""
    bench = bench_run.Bench(work=work)
    results = bench_run.step_runs(bench, 4000, ["validate"])
    assert sorted(results) == ["extract", "validate"]
    assert results["extract"]["train"] + results["extract"]["eval"] == pytest.approx(4000, rel=0.01)
    assert results["validate"]["success"], results["validate"]["failures"]


def test_setup_only_prepares_the_chosen_figures_on_an_empty_work_dir(bench_run, work, capsys):
    """The command a user runs (`bench/run.py --setup-only`), for the figures that need no services."""
    argv = ["--figures", "1,3,4,7", "--sizes", "3000", "--memory-size", "4000", "--work", str(work), "--setup-only"]
    assert bench_run.main(argv) == 0
    out = capsys.readouterr().out
    for figure in ("1", "3", "4", "7"):
        assert f"figure {figure} ready" in out
    assert (work / "data" / "4000" / "warehouse" / "taxi.duckdb").exists()
    assert not (work / "results.json").exists()  # nothing measured


def test_the_growth_exponent_of_two_sizes(bench_run):
    assert bench_run.growth(10, 100, 1_000, 10_000) == pytest.approx(1.0)
    assert bench_run.growth(10, 20, 100_000, 1_000_000) == pytest.approx(0.301, abs=1e-3)


@pytest.mark.slow  # per size: the Airflow DB migration, the warm runtime, Airflow's services, the model server
def test_setup_only_prepares_figure_8_on_an_empty_work_dir(bench_run, work, capsys):
    """Figure 8's set-up as a user runs it: each size's home with its grown warehouse, then figure 2's
    services started on it, checked and stopped; nothing measured."""
    argv = ["--figures", "8", "--sizes", "3000", "--work", str(work), "--setup-only"]
    assert bench_run.main(argv) == 0
    assert "figure 8 ready" in capsys.readouterr().out
    home = work / "daily" / "3000" / "home"
    assert (home / "warehouse" / "taxi.duckdb").is_symlink()
    assert (home / "airflow" / "airflow.db").exists()
    assert (work / "daily" / "3000" / "probe_body.json").exists()
    assert not (work / "results.json").exists()  # nothing measured


def test_figure_8_rows_give_each_size_its_growth_exponent_and_survive_a_failed_size(bench_run, tmp_path, monkeypatch):
    """Figure 8's table from its runs' results (measure_run and the services replaced: no timing)."""
    sizes = [15_000, 100_000, 300_000, 1_000_000]
    start = 1_767_225_600.0  # 2026-01-01 UTC

    def iso(seconds):
        return bench_run.dt.datetime.fromtimestamp(start + seconds, bench_run.dt.UTC).isoformat()

    def measure_run(sub, ready, fixed, timeout, run_date):
        assert run_date == bench_run.RUN_DATE_8  # the window of whole months
        n = int(sub.work.name)
        if n == 300_000:
            raise RuntimeError("the run failed")
        transform = {"task_id": "standard.transform", "state": "success", "start": iso(1), "end": iso(1 + n / 5000)}
        return {
            "trigger": start,
            "trigger_to_served": 30 + n / 4000,
            "trigger_to_run_end": 32 + n / 4000,
            "state": "success",
            "task_instances": [transform],
            "cpu_seconds": 50 + n / 2000,
            "cpu_seconds_by_process_tree": {},
        }

    @bench_run.contextlib.contextmanager
    def setup_2_and_6(bench, args=None):
        yield bench_run.SchedulerSetup(b"", "socket", None, 0, 0)

    monkeypatch.setattr(bench_run, "setup_8", lambda bench, args: {t: {"window_trips": t} for t in sizes})
    monkeypatch.setattr(bench_run, "setup_2_and_6", setup_2_and_6)
    monkeypatch.setattr(bench_run, "runtime_fixed_costs", lambda bench, socket_path: {})
    monkeypatch.setattr(bench_run, "measure_run", measure_run)
    monkeypatch.setenv("TAXI_HOME", str(tmp_path / "unused"))
    bench = bench_run.Bench(work=tmp_path / "work")
    bench_run.figure_8(bench, bench_args(run_sizes=sizes))
    rows = {row.measure: row for row in bench.rows}
    first = rows["daily run to served model, 15,000-trip window (15,000 trips)"]
    assert (first.value, first.ratio, first.goal) == ("34 s", "", "")
    largest = rows["daily run to served model, 1,000,000-trip window (1,000,000 trips)"]
    # k against the last size measured (100k: 300k failed), and the 1M goal on the 1M row
    assert largest.ratio == f"k {bench_run.growth(55, 280, 100_000, 1_000_000):.2f}"
    assert (largest.goal, largest.verdict) == ("< 300 s, k <= 1.1", "pass")
    assert rows["daily run, 300,000-trip window"].verdict == "ERROR"
    assert rows["  step standard.transform"].ratio == "k 1.00 | k 1.00"
    assert bench.settings().home == bench.work / "home"
