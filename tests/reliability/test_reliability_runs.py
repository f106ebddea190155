"""Guarantees 1-6 through real runs of taxi_daily_retrain (dag.test in processes of their own, see
dag_runner.py), in a TAXI_HOME of this module's own:

- concurrent runs: the daily run (2016-01-01) and a backfill of an older window (2015-12-01) at
  once never write the same paths, and the older window never replaces the newer served version;
- retry: the backfill's tasks cleared and rerun give the same artifacts, and no second copy;
- crash: extract_window and standard.transform SIGKILLed mid-write leave their previous complete
  output, and their retry succeeds with the same output;
- bad models: a worse model and a broken export (constant outputs) are not deployed, and why is in
  the task log and the run's artifacts;
- bad data: a window with duplicated trips stops at validate_window, nothing downstream runs, the
  served model is unchanged, and the failure alert goes out through the connection's webhook.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from taxi_pipeline.layout import RunLayout
from taxi_pipeline.serving_root import ServingRoot
from taxi_pipeline.window import Window

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DAG_ID = "taxi_daily_retrain"
DAILY, BACKFILL = "2016-01-01", "2015-12-01"  # logical dates; the run's data interval ends there
ONLY_STANDARD = r"^(coarse\..*|compare_variants|decide_approval|approve_champion|promote_champion|model_report)$"
LEFTOVER = re.compile(r"\.(staging|tmp|old)-[0-9a-f]{32}$")


def run_after(logical_date: str) -> str:
    return f"{logical_date}T06:00:00"


def layout_of(home: Path, logical_date: str) -> RunLayout:
    end = datetime.fromisoformat(logical_date).replace(tzinfo=UTC)
    return RunLayout(
        str(home / "artifacts"), DAG_ID, Window.ending_at(end, 365), f"manual__{run_after(logical_date)}+00:00"
    )


def start(
    env: dict, logical_date: str, mark_success: str | None = None, conf: dict | None = None, log: Path | None = None
) -> subprocess.Popen:
    args = [
        sys.executable,
        str(HERE / "dag_runner.py"),
        DAG_ID,
        logical_date,
        run_after(logical_date),
        "--conf",
        json.dumps(conf or {}),
    ] + (["--mark-success", mark_success] if mark_success else [])
    out = open(log, "w") if log else subprocess.PIPE
    return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 1800) -> dict:
    proc.wait(timeout=timeout)
    text = log.read_text()
    results = [line for line in text.splitlines() if line.startswith("RESULT ")]
    assert results, f"the run printed no result (exit {proc.returncode}):\n{text[-4000:]}"
    return {**json.loads(results[-1][len("RESULT ") :]), "log": text}


def run(env: dict, logical_date: str, log: Path, **kwargs) -> dict:
    return finish(start(env, logical_date, log=log, **kwargs), log)


def tree(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """{relative path: sha256} of every file under root, but those whose path contains a `skip` part."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if not any(part in rel for part in skip):
            files[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def leftovers(root: Path) -> list[str]:
    return [p.as_posix() for p in root.rglob("*") if LEFTOVER.search(p.name)]


# Written anew by every try, though what they hold is the same: TensorBoard events, GX's run result
# and Data Docs pages (with their times), the SavedModel's fingerprint.pb (a fresh id per save; the
# graph and the variables are compared), TFMA's raw output (protos serialized in no fixed order; the
# metrics and the verdict decoded from it, metrics.json and blessing.json, are compared).
VOLATILE = (
    "/logs/",
    "events.out.tfevents",
    "data_docs/",
    "validation/result.json",
    "model/fingerprint.pb",
    "evaluation/tfma/",
)


@pytest.fixture(scope="module")
def home(airflow_db, warehouse, tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("reliability_home")
    (home / "warehouse").mkdir()
    shutil.copy(warehouse, home / "warehouse" / "taxi.duckdb")
    return home


@pytest.fixture(scope="module")
def env(home) -> dict:
    return {**os.environ, "TAXI_HOME": str(home)}


@pytest.fixture(scope="module")
def concurrent_runs(home, env, tmp_path_factory):
    """The daily run and a backfill of an older window (its standard variant), started at once."""
    logs = tmp_path_factory.mktemp("logs")
    daily = start(env, DAILY, log=logs / "daily.log")
    # The backfill starts once the daily run is under way: two dag.test processes that both write the
    # DAG folder's DAGs into a fresh metadata DB at the same instant collide on its primary key.
    deadline = time.monotonic() + 600
    while "[DAG TEST] running task" not in (logs / "daily.log").read_text() and daily.poll() is None:
        assert time.monotonic() < deadline, "the daily run did not start a task in time"
        time.sleep(1)
    backfill = start(env, BACKFILL, mark_success=ONLY_STANDARD, log=logs / "backfill.log")
    return finish(daily, logs / "daily.log"), finish(backfill, logs / "backfill.log")


def test_concurrent_runs_write_their_own_paths_and_the_older_window_never_replaces_the_newer(home, concurrent_runs):
    daily, backfill = concurrent_runs
    assert daily["state"] == "success", daily["states"]
    assert backfill["state"] == "success", backfill["states"]
    mine, theirs = layout_of(home, DAILY), layout_of(home, BACKFILL)
    assert mine.run_dir != theirs.run_dir and not mine.run_dir.startswith(theirs.run_dir)
    # Every artifact of either run is under its own run folder; both are complete.
    runs = [p for p in (home / "artifacts" / DAG_ID).glob("window=*/run=*")]
    assert sorted(map(str, runs)) == sorted([mine.run_dir, theirs.run_dir])
    for layout in (mine, theirs):
        assert Path(layout.model_dir("standard"), "saved_model.pb").exists()
        assert Path(layout.export_check_dir("standard"), "report.json").exists()
    assert not leftovers(home)

    serving = str(home / "serving")
    newest, older = 201601010000, 201512010000
    for model in ("taxi_standard", "taxi_coarse", "taxi"):
        assert max(ServingRoot(serving).versions(model)) == newest, model
    standard = ServingRoot(serving).base_path("taxi_standard")
    if older in ServingRoot(serving).versions("taxi_standard"):
        # The backfill pushed first; the daily run's newer version came after it, never the reverse.
        records = Path(standard, "records")
        assert (records / f"{older}.json").stat().st_mtime <= (records / f"{newest}.json").stat().st_mtime
        assert backfill["states"]["standard.push"] == "success"
    else:
        assert backfill["states"]["standard.push"] == "skipped"
        assert f"version {newest} of a newer window is already served" in backfill["log"]
    assert ServingRoot(serving).labels("taxi") == {"stable": newest}
    config = Path(serving, "models.config").read_text()
    assert f"versions: {newest}" in config and 'version_labels { key: "stable" value: 201601010000 }' in config


def test_clearing_and_rerunning_tasks_gives_the_same_artifacts_and_no_second_copy(home, env, concurrent_runs, tmp_path):
    layout = layout_of(home, BACKFILL)
    run_dir, serving = Path(layout.run_dir), home / "serving"
    before, served_before = tree(run_dir, VOLATILE), tree(serving)
    # Everything the backfill ran but the extract and the transform (retried in the crash test below).
    rerun = run(
        env,
        BACKFILL,
        tmp_path / "rerun.log",
        mark_success=r"^(wait_for_window|extract_window|standard\.transform|coarse\..*|compare_variants"
        r"|decide_approval|approve_champion|promote_champion|data_report|model_report)$",
    )
    assert rerun["state"] == "success", rerun["states"]
    assert {k: v for k, v in rerun["states"].items() if v != "success"} in ({}, {"standard.push": "skipped"}), rerun[
        "states"
    ]
    after = tree(run_dir, VOLATILE)
    assert sorted(after) == sorted(before)  # the same files: nothing duplicated, nothing lost
    changed = sorted(k for k in before if before[k] != after[k])
    assert changed == [], f"rerun changed {changed}"
    assert tree(serving) == served_before  # the served models are untouched by the rerun
    assert not leftovers(home)


def kill_mid_write(env: dict, logical_date: str, task: str, staging_glob: Path, log: Path) -> bool:
    """Run only `task` of the run, SIGKILL its process group once its staging output holds a file;
    True if it was killed mid-write (its staging output left behind)."""
    proc = start(env, logical_date, mark_success=rf"^(?!{re.escape(task)}$)", log=log)
    deadline = time.monotonic() + 900
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if any(any(s.iterdir()) for s in staging_glob.parent.glob(staging_glob.name) if s.is_dir()):
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.returncode == -signal.SIGKILL and bool(list(staging_glob.parent.glob(staging_glob.name)))


@pytest.mark.parametrize(
    "task, output, staging",
    [
        ("extract_window", "data", ".data.staging-*"),
        ("standard.transform", "variants/standard/transform", "transform.tmp-*"),
    ],
)
def test_a_task_killed_mid_write_leaves_its_previous_output_and_its_retry_succeeds(
    home, env, concurrent_runs, tmp_path, task, output, staging
):
    run_dir = Path(layout_of(home, DAILY).run_dir)
    target = run_dir / output
    before = tree(target)
    assert before
    for attempt in range(3):  # the extract writes for about a second: catch it in the act
        if kill_mid_write(env, DAILY, task, target.parent / staging, tmp_path / f"killed{attempt}.log"):
            break
    else:
        pytest.fail(f"{task} was never caught mid-write")
    # Readers see the previous complete output, never the half-written one (left under a hidden name).
    assert tree(target) == before
    assert leftovers(target.parent)

    retry = run(env, DAILY, tmp_path / "retry.log", mark_success=rf"^(?!{re.escape(task)}$)")
    assert retry["states"][task] == "success", retry["log"][-3000:]
    assert not leftovers(target.parent)  # the retry swept the killed try's staging
    after = tree(target)
    assert sorted(after) == sorted(before)
    if task == "extract_window":
        assert after == before  # the same splits, byte for byte


def test_a_worse_model_and_a_broken_export_are_not_deployed_and_say_why(home, env, concurrent_runs, tmp_path):
    """A run of the next day whose models were trained badly: `standard` for one step (a real model,
    worse than the one served and below the bar), `coarse` exported with constant outputs."""
    daily, next_day = layout_of(home, DAILY), layout_of(home, "2016-01-02")
    runtime = os.environ.get("TAXI_RUNTIME_PYTHON") or str(REPO / ".venv-runtime" / "bin" / "python")
    subprocess.run(
        [
            runtime,
            "-m",
            "taxi_model.trainer",
            "--transform_output",
            daily.transform_dir("standard"),
            "--serving_model_dir",
            next_day.model_dir("standard"),
            "--log_dir",
            str(tmp_path / "tb"),
            "--train_steps",
            "1",
            "--eval_steps",
            "1",
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    subprocess.run(
        [runtime, str(HERE / "broken_model.py"), "constant", daily.model_dir("coarse"), next_day.model_dir("coarse")],
        check=True,
        env=env,
        capture_output=True,
    )
    serving = home / "serving"
    served_before = tree(serving)

    result = run(env, "2016-01-02", tmp_path / "bad_models.log", mark_success=r"^.*\.(transform|train)$")
    states, log = result["states"], result["log"]
    assert result["state"] == "success", states
    assert states["standard.push"] == states["coarse.push"] == states["promote_champion"] == "skipped", states
    assert tree(serving) == served_before  # nothing deployed, no label moved

    standard = json.loads(Path(next_day.evaluation_dir("standard"), "blessing.json").read_text())
    assert not standard["blessed"] and standard["baseline"].endswith("/taxi_standard/201601010000")
    assert any("below the serving model's" in r for r in standard["reasons"]), standard["reasons"]
    coarse = json.loads(Path(next_day.export_check_dir("coarse"), "report.json").read_text())
    assert not coarse["servable"] and coarse["reasons"][0].startswith("constant outputs")
    # ... and the task log says so.
    assert "standard was not blessed, nothing pushed: " in log and "below the serving model's" in log
    assert "coarse: export NOT SERVABLE" in log and "export: constant outputs" in log
    assert "no variant was blessed: the served model is unchanged" in log
    comparison = json.loads(Path(next_day.run_dir, "comparison.json").read_text())
    assert [row["blessed"] for row in comparison] == [False, False]


@pytest.fixture
def webhook():
    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/s3cr3t-token-in-the-url", received
    server.shutdown()


def test_a_bad_window_stops_at_the_gate_leaves_the_served_model_and_alerts(home, concurrent_runs, webhook, tmp_path):
    """The trips of 2015 loaded twice by the ingestion, the largest company renamed from July and
    tips no longer recorded from July: a scratch home with that warehouse, the DAG's schema and a
    copy of what is served."""
    from taxi_pipeline.queries import LOCAL_SOURCE_TABLE
    from taxi_pipeline.warehouse import connect

    scratch = tmp_path / "home"
    (scratch / "warehouse").mkdir(parents=True)
    shutil.copy(home / "warehouse" / "taxi.duckdb", scratch / "warehouse" / "taxi.duckdb")
    with connect(scratch / "warehouse" / "taxi.duckdb", read_only=False) as con:
        con.execute(
            f"INSERT INTO {LOCAL_SOURCE_TABLE} SELECT * FROM {LOCAL_SOURCE_TABLE} "
            "WHERE year(trip_start_timestamp) = 2015 AND hash(unique_key) % 20 = 0"
        )
        from_july = "trip_start_timestamp >= TIMESTAMPTZ '2015-07-01 00:00:00+00'"
        con.execute(
            f"UPDATE {LOCAL_SOURCE_TABLE} SET company = 'Taxi Affiliation Svcs' "
            f"WHERE company = 'Taxi Affiliation Services' AND {from_july}"
        )
        con.execute(f"UPDATE {LOCAL_SOURCE_TABLE} SET tips = 0 WHERE {from_july}")
    shutil.copytree(home / "serving", scratch / "serving")
    schema = Path("artifacts", DAG_ID, "schema")  # learned by the runs before, from the data as it was
    shutil.copytree(home / schema, scratch / schema)
    served_before = tree(scratch / "serving")
    url, received = webhook
    env = {
        **os.environ,
        "TAXI_HOME": str(scratch),
        "AIRFLOW_CONN_TAXI_ALERTS": json.dumps({"conn_type": "http", "host": url}),
    }

    result = run(env, DAILY, tmp_path / "bad_window.log")
    states = result["states"]
    assert result["state"] == "failed"
    assert states["validate_window"] == "failed" and states["extract_window"] == "success"
    downstream = {k: v for k, v in states.items() if "." in k or k in ("compare_variants", "promote_champion")}
    assert set(downstream.values()) == {"upstream_failed"}, downstream  # nothing trained, nothing pushed
    assert tree(scratch / "serving") == served_before
    summary = Path(layout_of(scratch, DAILY).validation_dir(), "summary.txt").read_text()
    assert "FAILED" in summary and "unique_key:" in summary and "share their value with another row" in summary
    assert "of values outside the schema's domain" in summary and "'Taxi Affiliation Svcs'" in summary
    assert "big_tipper: the label's base rate differs in part of the window" in summary
    # On-call got one alert naming the task and the problem, and the webhook's secret is not in the log.
    (alert,) = received
    assert f"task {DAG_ID}.validate_window failed" in alert["text"] and "unique_key" in alert["text"]
    assert "s3cr3t-token-in-the-url" not in result["log"]
