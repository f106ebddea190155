"""The services helper of the tests that start Airflow: a dead service fails the wait at once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from airflow_cli import Services


def test_a_wait_fails_with_the_log_tail_as_soon_as_a_service_has_exited(tmp_path):
    (tmp_path / "scheduler.log").write_text(
        "sqlalchemy.orm.exc.ObjectDeletedError: Instance <DagRun> has been deleted\n"
    )
    scheduler = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    scheduler.wait()
    services = Services({}, tmp_path, {"scheduler": scheduler})
    # a 10-minute wait for something that never comes: the dead scheduler ends it on the first check
    with pytest.raises(AssertionError, match=r"(?s)scheduler exited.*ObjectDeletedError"):
        services.wait_for("a run that never finishes", lambda: False, timeout=600)


def test_a_wait_returns_what_it_waited_for(tmp_path):
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        answers = iter([None, None, {"state": "success"}])
        assert Services({}, tmp_path, {"api-server": alive}).wait_for("a run", lambda: next(answers), 60, every=0) == {
            "state": "success"
        }
    finally:
        alive.kill()
        alive.wait()
