"""Guarantee 5 at the serving root, with real processes: deployments are serialized (the
`taxi_deploy` pool of one slot in Airflow, and the serving root's lock everywhere), an older window
never replaces a newer version, and runs of different windows or run types never share a path.
The same through two real concurrent runs is in test_reliability_runs.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from taxi_pipeline.layout import RunLayout
from taxi_pipeline.pools import DEPLOY_POOL, POOLS
from taxi_pipeline.serving_root import ServingRoot
from taxi_pipeline.window import Window

DAGS = Path(__file__).resolve().parents[2] / "dags"
PUSH = """
import json, sys
from taxi_pipeline.serving_root import DeploymentRecord, ServingRoot
root, source, version = sys.argv[1], sys.argv[2], int(sys.argv[3])
record = DeploymentRecord(model="taxi", version=version, variant="standard", dag_id="d", run_id=f"r{version}",
                          window=str(version), source=source, metrics={}, reasons=[])
result = ServingRoot(root).push_and_label(record, "stable")  # as promote_champion does
print(json.dumps({"version": version, "pushed": result.pushed, "message": result.message}))
"""

# Real concurrent pushes and Airflow's pool: outside `make check`.
pytestmark = pytest.mark.slow


@pytest.fixture
def model(tmp_path) -> Path:
    """A stand-in SavedModel directory (pushes copy directories; what is inside does not matter here)."""
    source = tmp_path / "model"
    (source / "variables").mkdir(parents=True)
    (source / "saved_model.pb").write_bytes(b"\x08\x01" * 5000)
    (source / "variables" / "variables.data-00000-of-00001").write_bytes(b"w" * 200_000)
    return source


def push(root: Path, source: Path, version: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", PUSH, str(root), str(source), str(version)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_push_waits_while_another_deployment_holds_the_serving_root(model, tmp_path):
    root = tmp_path / "serving"
    with ServingRoot(str(root)).lock():
        waiting = push(root, model, 201601010000)
        time.sleep(3)
        assert waiting.poll() is None, waiting.communicate()  # blocked: no push interleaves with ours
        assert ServingRoot(str(root)).versions("taxi") == []
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert json.loads(out)["pushed"] is True
    assert ServingRoot(str(root)).versions("taxi") == [201601010000]


def test_concurrent_pushes_of_many_windows_leave_the_newest_served_labelled_and_configured(model, tmp_path):
    root = tmp_path / "serving"
    versions = [201512010000, 201601010000, 201511010000, 201602010000, 201510010000, 201601150000]
    procs = [push(root, model, v) for v in versions]  # all at once, in no particular order
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    newest = max(versions)
    served = ServingRoot(str(root)).versions("taxi")
    assert newest in served and ServingRoot(str(root)).labels("taxi") == {"stable": newest}
    for result in results:
        if not result["pushed"]:
            assert "of a newer window is already served" in result["message"]
    # Each push saw the pushes before it whole: a version is served only if no newer one was when it
    # was pushed, so the served versions are exactly the ones pushed, in increasing order of time.
    base = Path(ServingRoot(str(root)).base_path("taxi"))
    pushed = sorted(
        (r["version"] for r in results if r["pushed"]),
        key=lambda v: (base / "records" / f"{v}.json").stat().st_mtime_ns,
    )
    assert pushed == sorted(pushed) and sorted(pushed) == served
    # The config the server reads is the one the final state implies (no push wrote a stale one).
    assert (root / "models.config").read_text() == ServingRoot(str(root)).models_config()
    assert all(not p.name.startswith(".taxi") and "-" not in p.name for p in base.iterdir()), list(base.iterdir())


def test_pushes_and_label_moves_run_in_the_deploy_pool_of_one_slot(airflow_db):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.pool import Pool

    dag = DagBag(dag_folder=str(DAGS)).dags["taxi_daily_retrain"]
    deploying = [t for t in dag.tasks if t.task_id.endswith(".push") or t.task_id == "promote_champion"]
    assert len(deploying) == 3 and {t.pool for t in deploying} == {DEPLOY_POOL}
    assert POOLS[DEPLOY_POOL][0] == 1 and Pool.get_pool(DEPLOY_POOL).slots == 1


def test_a_backfill_and_the_daily_run_never_share_a_path():
    end = datetime(2016, 1, 1, tzinfo=UTC)
    runs = [
        RunLayout("/a", "taxi_daily_retrain", Window.ending_at(end, 365), run_id)
        for run_id in (
            "scheduled__2016-01-01T00:00:00+00:00",
            "backfill__2016-01-01T00:00:00+00:00",
            "manual__2016-01-01T00:00:00+00:00",
        )
    ]
    runs.append(
        RunLayout(
            "/a",
            "taxi_daily_retrain",
            Window.ending_at(datetime(2015, 12, 31, tzinfo=UTC), 365),
            "backfill__2015-12-31T00:00:00+00:00",
        )
    )
    dirs = [r.run_dir + "/" for r in runs]
    assert len(set(dirs)) == len(dirs)
    assert not any(a != b and b.startswith(a) for a in dirs for b in dirs)  # none inside another
