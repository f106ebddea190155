"""Shared fixtures. This file is loaded by both environments' test runs, so it imports only the
standard library and taxi_pipeline's pure-Python modules at the top."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from datetime import UTC
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The sample CSVs are fetched once into the repo's default home and shared by all test sessions.
SAMPLE_CACHE = REPO / ".taxi" / "data"


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def pytest_configure(config):
    # A run stopped by SIGTERM (a CI timeout, `kill`) unwinds as Ctrl-C does: the fixtures' teardowns
    # stop the Airflow services, Redis and PostgreSQL clusters the tests started.
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    # Every test session writes into its own TAXI_HOME / AIRFLOW_HOME, never into the user's.
    home = Path(tempfile.mkdtemp(prefix="taxi_home_"))
    os.environ["TAXI_HOME"] = str(home)
    os.environ["TAXI_PLATFORM"] = "local"
    # gcsfs asks a bucket's layout over gRPC (the storage control API) before each use; the GCS
    # emulator has no such API, and every ask waits 60 s before falling back: off for the tests.
    os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
    sys.path[:0] = [str(REPO / "include"), str(REPO / "plugins")]
    from taxi_pipeline.settings import airflow_env

    os.environ.update(airflow_env())


def pytest_unconfigure(config):
    shutil.rmtree(os.environ.get("TAXI_HOME", "/nonexistent"), ignore_errors=True)


@pytest.fixture(scope="session")
def taxi_home() -> Path:
    return Path(os.environ["TAXI_HOME"])


@pytest.fixture(scope="session")
def sample_files() -> list[Path]:
    from taxi_pipeline.sample_data import ensure_sample_files

    return ensure_sample_files(SAMPLE_CACHE)


@pytest.fixture(scope="session")
def warehouse(sample_files, taxi_home) -> Path:
    """The local warehouse of the session's TAXI_HOME, loaded from the real sample."""
    from taxi_pipeline.settings import get_settings
    from taxi_pipeline.warehouse import load_trips

    path = get_settings().warehouse_path
    if not path.exists():
        load_trips(path, sample_files)
    return path


@pytest.fixture(scope="session")
def schema_2015(warehouse, tmp_path_factory) -> str:
    """The schema text inferred from the real sample's 2015 window and the year before it (train
    splits): what a daily run validating the 2015 window would have as its schema."""
    from datetime import datetime

    from taxi_pipeline.extract import extract_windows
    from taxi_pipeline.layout import RunLayout
    from taxi_pipeline.run_context import WindowPlan
    from taxi_pipeline.validation import run_schema
    from taxi_pipeline.window import Window

    window = Window.ending_at(datetime(2016, 1, 1, tzinfo=UTC), 365)
    layout = RunLayout(str(tmp_path_factory.mktemp("schema")), "taxi_daily_retrain", window, "schema")
    plan = WindowPlan({"": window, "reference": window.previous()}, {"": "reference"}, key="")
    extract_windows(warehouse, layout, plan.windows)
    return run_schema(layout, plan)


@pytest.fixture(scope="session")
def airflow_db(taxi_home):
    """A migrated Airflow metadata DB in the session's AIRFLOW_HOME."""
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL, env=os.environ.copy()
    )
    from taxi_pipeline.pools import ensure_pools

    ensure_pools({})
    return home


@pytest.fixture(scope="session")
def postgres_cluster():
    """A PostgreSQL cluster of the session's own (taxi_pipeline.postgres), for the tests that start
    Airflow's services: never the machine's own cluster, stopped and removed at the end. Its folder
    is outside pytest's private temp folder, which the server's user (postgres, as root) cannot enter."""
    from airflow_cli import free_port
    from taxi_pipeline import postgres

    folder = Path(tempfile.mkdtemp(prefix="taxi_pg_", dir="/tmp"))
    folder.chmod(0o711)
    try:
        with postgres.running(folder / "cluster", free_port()) as cluster:
            yield cluster
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def metadata_db(postgres_cluster, request) -> str:
    """A migrated Airflow metadata database of the test module's own, with the pools: its URL."""
    from airflow_cli import airflow
    from taxi_pipeline.pools import ensure_pools

    url = postgres_cluster.create_database(request.module.__name__.rpartition(".")[2].lower())
    env = {**os.environ, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url}
    airflow("db", "migrate", env=env)
    ensure_pools(env)
    return url


@pytest.fixture(scope="module")
def emulator():
    """A GCS emulator (tests/gcs_emulator.py) for a module's tests, with the hooks pointed at it."""
    from gcs_emulator import running

    with running() as server:
        yield server
