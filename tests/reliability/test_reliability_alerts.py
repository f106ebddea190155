"""Guarantee 6, failures are loud: every task alerts on failure through the connection-configured
notifier (one log line when no connection is configured), and both DAGs carry a deadline alert.

A real failed task in a real run calling it is in test_reliability_runs.py (the bad-window run).
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import structlog

from taxi_pipeline.notifiers import TaxiAlertNotifier

DAGS = Path(__file__).resolve().parents[2] / "dags"
SECRET = "T000/B000/s3cr3t-webhook-token"


@pytest.fixture
def webhook():
    """A local webhook that records what it is sent: (url, received bodies)."""
    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "auth": self.headers.get("Authorization"), **json.loads(body)})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/services/{SECRET}", received
    server.shutdown()


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert not bag.import_errors
    return bag.dags


class FakeTI:  # what the notifier reads of a task instance: its id, try and log link
    task_id = "validate_window"
    try_number = 1
    log_url = "http://127.0.0.1:8080/dags/taxi_daily_retrain/runs/r/tasks/validate_window"


def failure_context(dag):
    return {
        "dag": dag,
        "ti": FakeTI(),
        "run_id": "scheduled__2016-01-01T00:00:00+00:00",
        "exception": ValueError("window [2015, 2016) failed validation with 1 problems: fare: 25 values"),
        "params": {"window_days": 365},
        "data_interval_end": datetime(2016, 1, 1, tzinfo=UTC),
    }


def test_every_task_of_both_dags_alerts_on_failure(dags):
    for dag in dags.values():
        for task in dag.tasks:
            callbacks = (
                task.on_failure_callback if isinstance(task.on_failure_callback, list) else [task.on_failure_callback]
            )
            assert any(isinstance(c, TaxiAlertNotifier) for c in callbacks), (dag.dag_id, task.task_id)


def test_without_a_connection_the_alert_is_one_clear_log_line(dags, capsys, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_TAXI_ALERTS", raising=False)
    TaxiAlertNotifier()(failure_context(dags["taxi_daily_retrain"]))
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "TAXI ALERT" in line]
    line = line[line.index("TAXI ALERT") :]
    assert line.startswith("TAXI ALERT (no alert connection 'taxi_alerts' configured, nobody notified): ")
    assert "task taxi_daily_retrain.validate_window failed (run scheduled__2016-01-01T00:00:00+00:00, try 1)" in line
    assert "ValueError: window [2015, 2016) failed validation" in line
    assert "artifacts: " in line and "/artifacts/taxi_daily_retrain/window=" in line  # where the report is


def test_with_a_connection_the_alert_is_posted_and_the_secret_stays_out_of_the_log(dags, webhook, capsys, monkeypatch):
    url, received = webhook
    monkeypatch.setenv(
        "AIRFLOW_CONN_TAXI_ALERTS", json.dumps({"conn_type": "http", "host": url, "password": "bearer-s3cr3t"})
    )
    TaxiAlertNotifier()(failure_context(dags["taxi_daily_retrain"]))
    (message,) = received
    assert message["path"] == f"/services/{SECRET}" and message["auth"] == "Bearer bearer-s3cr3t"
    assert "task taxi_daily_retrain.validate_window failed" in message["text"]
    logged = capsys.readouterr().out
    assert "TAXI ALERT sent through connection 'taxi_alerts' (HTTP 200)" in logged
    assert SECRET not in logged and "bearer-s3cr3t" not in logged


def test_a_webhook_given_as_a_uri_is_posted_to_and_its_secret_path_stays_out_of_the_log(
    dags, webhook, capsys, monkeypatch
):
    url, received = webhook
    monkeypatch.setenv("AIRFLOW_CONN_TAXI_ALERTS", url)  # the URI form: Airflow splits it into type, host, schema
    TaxiAlertNotifier()(failure_context(dags["taxi_daily_retrain"]))
    (message,) = received
    assert message["path"] == f"/services/{SECRET}" and message["auth"] is None
    logged = capsys.readouterr().out
    assert "TAXI ALERT sent through connection 'taxi_alerts' (HTTP 200)" in logged and SECRET not in logged


@pytest.mark.parametrize(
    "uri",
    [
        json.dumps({"conn_type": "http", "host": f"ftp://hooks.example.com/services/{SECRET}"}),
        f"file:///services/{SECRET}",
    ],
)
def test_a_webhook_that_is_not_http_fails_its_alert_without_the_secret_in_the_log(dags, capsys, monkeypatch, uri):
    monkeypatch.setenv("AIRFLOW_CONN_TAXI_ALERTS", uri)
    TaxiAlertNotifier(timeout=2)(failure_context(dags["taxi_daily_retrain"]))  # never raises
    logged = capsys.readouterr().out
    (line,) = [line for line in logged.splitlines() if "TAXI ALERT" in line]
    assert "TAXI ALERT could not be sent through connection 'taxi_alerts'" in line
    assert "task taxi_daily_retrain.validate_window failed" in line  # the alert's text is still in the log
    assert SECRET not in logged and "s3cr3t" not in logged


def test_an_alert_with_a_token_follows_no_redirect(dags, capsys, monkeypatch):
    """A redirect would carry the bearer token to wherever it points."""
    hits = []

    class Redirecting(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            hits.append((self.path, self.headers.get("Authorization")))
            self.send_response(307)
            self.send_header("Location", "/elsewhere")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_TAXI_ALERTS",
            json.dumps(
                {
                    "conn_type": "http",
                    "host": f"http://127.0.0.1:{server.server_port}/services/{SECRET}",
                    "password": "bearer-s3cr3t",
                }
            ),
        )
        TaxiAlertNotifier(timeout=2)(failure_context(dags["taxi_daily_retrain"]))
    finally:
        server.shutdown()
    assert hits == [(f"/services/{SECRET}", "Bearer bearer-s3cr3t")]  # the redirect was not followed
    logged = capsys.readouterr().out
    assert "TAXI ALERT could not be sent through connection 'taxi_alerts'" in logged and "redirect refused" in logged
    assert SECRET not in logged and "bearer-s3cr3t" not in logged


def test_an_unreachable_webhook_is_logged_and_does_not_raise(dags, capsys, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_TAXI_ALERTS", json.dumps({"conn_type": "http", "host": "http://127.0.0.1:9/x"}))
    TaxiAlertNotifier(timeout=2)(failure_context(dags["taxi_daily_retrain"]))
    logged = capsys.readouterr().out
    assert "TAXI ALERT could not be sent through connection 'taxi_alerts'" in logged
    assert "task taxi_daily_retrain.validate_window failed" in logged  # the alert is still in the log


@pytest.mark.parametrize("dag_id, hours", [("taxi_daily_retrain", 8), ("taxi_sliding_window", 36)])
def test_both_dags_have_a_deadline_alert_that_airflow_runs_through_the_notifier(
    dags, dag_id, hours, webhook, monkeypatch, tmp_path
):
    from airflow.sdk import DeadlineReference
    from airflow.sdk.execution_time.callback_supervisor import execute_callback
    from airflow.serialization.serialized_objects import DagSerialization

    url, received = webhook
    monkeypatch.setenv("AIRFLOW_CONN_TAXI_ALERTS", json.dumps({"conn_type": "http", "host": url}))
    (alert,) = DagSerialization.from_dict(DagSerialization.to_dict(dags[dag_id])).deadline  # as the scheduler sees it
    assert alert["reference"] == DeadlineReference.DAGRUN_QUEUED_AT.serialize_reference()
    interval = timedelta(seconds=alert["interval"]["__data__"])
    path, kwargs = alert["callback"]["__data__"]["path"], alert["callback"]["__data__"]["kwargs"]
    # Far beyond a normal run (minutes on the sample) and the sensor's 6 hours of waiting.
    assert interval == timedelta(hours=hours)
    assert path == "taxi_pipeline.notifiers.TaxiAlertNotifier"

    # Run the callback the way Airflow's executor does when the deadline is missed.
    ok, error = execute_callback(
        path,
        {**kwargs, "context": {"dag_run": None, "dag_id": dag_id, "run_id": "r1"}},
        dag_rel_path=f"{dag_id}.py",
        bundle_path=str(DAGS),
        log=structlog.get_logger("deadline"),
    )
    assert ok, error
    (message,) = received
    assert message["text"].startswith(f"DEADLINE MISSED: a {dag_id} run is still not done {hours} hours")
    assert f"DAG {dag_id}, run r1" in message["text"]
