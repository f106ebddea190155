"""The artifacts app (mounted in the api-server at /taxi) and the extra links that point at it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from taxi_pipeline.platforms.artifact_urls import GcpLinks, LocalLinks


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TAXI_HOME", str(tmp_path))
    run = tmp_path / "artifacts" / "taxi_daily_retrain" / "window=w" / "run=r1"
    (run / "reports").mkdir(parents=True)
    (run / "reports" / "model.html").write_text("<html><body>AUC 0.93</body></html>")
    (run / "comparison.txt").write_text("variant AUC\n")
    (run / ".reports.staging-1").mkdir()
    (tmp_path / "warehouse").mkdir()
    (tmp_path / "warehouse" / "taxi.duckdb").write_text("secret")
    model = tmp_path / "serving" / "taxi" / "201601010000"
    model.mkdir(parents=True)
    (model / "saved_model.pb").write_text("x")
    (tmp_path / "serving" / "taxi" / "labels.json").write_text(json.dumps({"stable": 201601010000}))
    return tmp_path


@pytest.fixture
def client(home) -> TestClient:
    from taxi_plugins.artifacts_app import create_app

    return TestClient(create_app(login=False))


def test_files_and_listings_of_the_artifact_root_are_served(client):
    listing = client.get("/artifacts/taxi_daily_retrain/window=w/run=r1/")
    assert listing.status_code == 200 and "reports/model.html" in listing.text and "comparison.txt" in listing.text
    assert ".reports.staging" not in listing.text  # staging leftovers are not shown
    report = client.get("/artifacts/taxi_daily_retrain/window=w/run=r1/reports/model.html")
    assert report.status_code == 200 and "AUC 0.93" in report.text
    assert report.headers["content-type"].startswith("text/html")
    assert report.headers["content-security-policy"].startswith("sandbox")  # cannot act as the Airflow UI
    text = client.get("/artifacts/taxi_daily_retrain/window=w/run=r1/comparison.txt")
    assert text.headers["content-type"].startswith("text/plain")


def test_a_link_that_leaves_the_root_is_neither_listed_nor_served_and_a_broken_one_breaks_nothing(client, home):
    run = home / "artifacts" / "taxi_daily_retrain" / "window=w" / "run=r1"
    (run / "warehouse").symlink_to(home / "warehouse")  # out of the root
    (run / "db").symlink_to(home / "warehouse" / "taxi.duckdb")
    (run / "dangling").symlink_to(home / "nothing-here")
    (run / "same-report.html").symlink_to(run / "reports" / "model.html")  # within the root: listed
    (home / "artifacts" / "taxi_daily_retrain" / "window=x").symlink_to(home / "warehouse")
    listing = client.get("/artifacts/taxi_daily_retrain/window=w/run=r1/")
    assert listing.status_code == 200 and "comparison.txt" in listing.text and "same-report.html" in listing.text
    assert "warehouse" not in listing.text and ">db<" not in listing.text and "dangling" not in listing.text
    for path in ("warehouse/taxi.duckdb", "db", "dangling"):
        assert client.get(f"/artifacts/taxi_daily_retrain/window=w/run=r1/{path}").status_code == 404
    index = client.get("/")
    assert index.status_code == 200 and "window=w" in index.text and "window=x" not in index.text


def test_every_response_says_nosniff_and_reports_cannot_leave_their_sandbox(client):
    for path in (
        "/",
        "/artifacts/taxi_daily_retrain/window=w/run=r1/",
        "/serving/",
        "/artifacts/taxi_daily_retrain/window=w/run=r1/comparison.txt",
        "/artifacts/nothing",
    ):
        assert client.get(path).headers["x-content-type-options"] == "nosniff", path
    report = client.get("/artifacts/taxi_daily_retrain/window=w/run=r1/reports/model.html")
    assert report.headers["content-security-policy"] == "sandbox allow-scripts allow-popups"


@pytest.mark.parametrize(
    "path",
    [
        "/artifacts/%2e%2e/warehouse/taxi.duckdb",
        "/artifacts/..%2fwarehouse/taxi.duckdb",
        "/artifacts/taxi_daily_retrain/window=w/run=r1/.reports.staging-1/",
        "/artifacts/%2fetc/passwd",
        "/serving/..%2fwarehouse",
        "/serving/models.config",
    ],
)
def test_nothing_outside_the_artifact_root_or_hidden_is_served(client, path):
    assert client.get(path).status_code == 404


def test_a_served_models_status_shows_its_versions_and_labels(client):
    page = client.get("/serving/taxi")
    assert page.status_code == 200
    assert "1 versions; newest <b>201601010000</b>; label <b>stable</b> &rarr; <b>201601010000</b>" in page.text


def test_the_plugin_requires_the_airflow_login():
    from taxi_plugins.plugin import TaxiPlugin

    (app,) = TaxiPlugin.fastapi_apps
    assert app["url_prefix"] == "/taxi"
    assert TestClient(app["app"]).get("/").status_code == 401


def test_links_point_at_the_local_app_or_at_the_gcs_console(home):
    assert (
        LocalLinks().artifact(f"{home}/artifacts/d/window=w/run=r1/reports/model.html")
        == "/taxi/artifacts/d/window%3Dw/run%3Dr1/reports/model.html"
    )
    assert LocalLinks().served_model("taxi") == "/taxi/serving/taxi"
    assert (
        GcpLinks().artifact("gs://bkt/artifacts/d/window=w/run=r1/reports/model.html")
        == "https://storage.cloud.google.com/bkt/artifacts/d/window%3Dw/run%3Dr1/reports/model.html"
    )
    assert (
        GcpLinks().artifact("gs://bkt/artifacts/d/run=r1/variants/standard/logs")
        == "https://console.cloud.google.com/storage/browser/bkt/artifacts/d/run%3Dr1/variants/standard/logs"
    )


def test_every_task_with_an_artifact_has_its_links(dagbag_links):
    for dag_id, expected in {
        "taxi_daily_retrain": {
            "validate_window": {"Validation report", "Data report"},
            "standard.train": {"Training logs", "Model"},
            "coarse.evaluate": {"TFMA output", "Model report"},
            "standard.push": {"Served model"},
            "promote_champion": {"Served model"},
            "compare_variants": {"Variant comparison", "Model report"},
            "data_report": {"Data report"},
            "model_report": {"Model report"},
        },
        "taxi_sliding_window": {
            "compare_windows": {"Window comparison", "Model report"},
            "model_report": {"Model report", "Verdict history"},
        },
        "taxi_serving_rollback": {"roll_back": {"Served model"}},
    }.items():
        tasks = dagbag_links[dag_id]
        for task_id, names in expected.items():
            assert names <= {link.name for link in tasks[task_id]}, (dag_id, task_id)  # operators keep their own


def test_a_link_is_computed_from_the_runs_layout(dagbag_links, home):
    class TI:  # what the worker passes as ti_key: a finished task instance with its context
        def get_template_context(self):
            class Dag:
                dag_id = "taxi_daily_retrain"

            return {
                "params": {"window_days": 365},
                "dag": Dag(),
                "run_id": "scheduled__2016-01-01",
                "data_interval_start": datetime(2015, 12, 31, tzinfo=UTC),
                "data_interval_end": datetime(2016, 1, 1, tzinfo=UTC),
            }

    (logs, _) = dagbag_links["taxi_daily_retrain"]["standard.train"]
    assert logs.get_link(None, ti_key=TI()) == (
        "/taxi/artifacts/taxi_daily_retrain/window%3D20150101T0000-"
        "20160101T0000/run%3Dscheduled__2016-01-01/variants/standard/logs"
    )


@pytest.fixture(scope="module")
def dagbag_links():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
    return {dag_id: {t.task_id: list(t.operator_extra_links) for t in dag.tasks} for dag_id, dag in bag.dags.items()}
