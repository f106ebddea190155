"""The on-call experience in a real browser: Airflow as `make stack` runs it (PostgreSQL, the
CeleryExecutor with Redis and two workers, the triggerer, the api-server, scheduler and dag-processor)
with the project's DAGs and plugin, a real run of taxi_daily_retrain (a small window, few training steps) and a
run of taxi_serving_rollback, driven through headless Chromium (Debian's, via Playwright).

It logs in (the simple auth manager, a user and password of its own), opens the DAG's grid and graph
views, a task's log and its extra links, and each report, asserting on what the pages show (the run's
state, the reports' headline numbers against the artifacts). The screenshots are kept as the
test's artifacts in `.taxi/screenshots/` (ignored by git); with TAXI_UPDATE_SCREENSHOTS=1 they go
to docs/screenshots/ instead, the ones the README shows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_cli import add_user, airflow, airflow_services, list_runs, services_env, tasks_per_worker
from airflow_cli import log_tails as _tails

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / ("docs" if os.environ.get("TAXI_UPDATE_SCREENSHOTS") == "1" else ".taxi") / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DAG_ID = "taxi_daily_retrain"
DATE = "2016-01-01"
# A small run: 120 days of trips (about 1,500), 150 training steps.
CONF = {"window_days": 120, "train_steps": 150, "eval_steps": 5, "min_window_rows": 100}
USER = "oncall"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make setup)"),
]


@pytest.fixture(scope="module")
def airflow_ui(metadata_db, sample_files, tmp_path_factory):
    """Airflow's services on loopback (as make stack runs them), a TAXI_HOME of their own, and a user
    `oncall` with a password."""
    from taxi_pipeline.warehouse import load_trips

    home = tmp_path_factory.mktemp("ui_home")
    load_trips(home / "warehouse" / "taxi.duckdb", sample_files)
    # A metadata database of its own (metadata_db): other tests' runs of the same DAG and day would
    # otherwise stand in the way of this backfill (a day that has a run is not backfilled again).
    env = services_env(home, metadata_db)
    env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "False"  # only the runs this test asks for
    password = add_user(env, home, USER)
    logs = tmp_path_factory.mktemp("ui_services")
    dag_ids = (DAG_ID, "taxi_serving_rollback", "taxi_batch_scoring", "taxi_model_monitor")
    with airflow_services(env, logs, unpause=dag_ids, celery=True) as services:
        url = f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}"
        yield {"env": env, "logs": logs, "home": home, "url": url, "password": password, "services": services}


def wait_for_run(dag_id: str, ui: dict, minutes: float, run_id: str | None = None) -> dict:
    """The run once finished; fails at once, with the services' logs, if one of them exits meanwhile."""

    def finished():
        runs = [r for r in list_runs(dag_id, ui["env"]) if run_id in (None, r["run_id"])]
        return next((r for r in runs if r["state"] in ("success", "failed")), None)

    return ui["services"].wait_for(f"{dag_id} run {run_id or ''}", finished, timeout=minutes * 60, every=5)


@pytest.fixture(scope="module")
def daily_run(airflow_ui) -> dict:
    """One real run of taxi_daily_retrain for DATE, through the scheduler (a backfill of one day:
    a backfill run gets the day's data interval)."""
    airflow(
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        DATE,
        "--to-date",
        DATE,
        "--dag-run-conf",
        json.dumps(CONF),
        env=airflow_ui["env"],
    )
    run = wait_for_run(DAG_ID, airflow_ui, minutes=12)
    assert run["state"] == "success", f"{run}\n{_tails(airflow_ui['logs'])}"
    (run_dir,) = (airflow_ui["home"] / "artifacts" / DAG_ID).glob("window=*/run=*")
    return {**run, "dir": run_dir}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser, airflow_ui):
    """A logged-in page of the Airflow UI."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    from playwright.sync_api import Error as PlaywrightError

    try:
        page.goto(airflow_ui["url"] + "/")
    except PlaywrightError as error:  # the UI's own redirect to the login page cut the load of "/" short
        assert "ERR_ABORTED" in str(error), error
    username = page.locator("input[name=username]")
    username.wait_for()  # not logged in yet: the login page (a locator waits through the redirects)
    assert "/auth/login" in page.url, page.url
    username.fill(USER)
    page.locator("input[name=password]").fill(airflow_ui["password"])
    page.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(r"^(?!.*auth/login).*$"))
    yield page
    context.close()


def shot(page, name: str) -> None:
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def open_link(page, url: str, task: str, name: str):
    """Open a task's extra link (in its Details tab; a same-origin link opens in the same tab)."""
    page.goto(f"{url}/tasks/{task}/details")
    link = page.get_by_role("link", name=name)
    link.wait_for()
    link.click()
    page.wait_for_load_state("networkidle")
    return page


def test_the_run_shows_in_the_grid_and_the_graph(page, airflow_ui, daily_run):
    base = airflow_ui["url"]
    page.goto(f"{base}/dags/{DAG_ID}/runs/{daily_run['run_id']}")
    page.get_by_text("success").first.wait_for()
    for task in ("wait_for_window", "validate_window", "data_report", "model_report", "promote_champion"):
        page.get_by_text(task, exact=True).first.wait_for()
    shot(page, "grid")
    page.goto(f"{base}/dags/{DAG_ID}")
    page.locator("button[aria-label*='raph'], [title*='raph']").first.click()  # the grid/graph toggle
    page.get_by_text("compare_variants").first.wait_for()
    for group in ("standard", "coarse"):  # the two variants side by side
        page.get_by_text(group, exact=True).first.wait_for()
    shot(page, "graph")


def test_the_runs_tasks_ran_on_both_celery_workers(airflow_ui, daily_run):
    ran = tasks_per_worker(airflow_ui["logs"], daily_run["run_id"])
    assert set(ran) == {"worker-1", "worker-2"} and all(ran.values()), ran
    everything = ran["worker-1"] | ran["worker-2"]
    assert {"wait_for_window", "standard.train", "coarse.train", "promote_champion"} <= everything


def test_a_tasks_log_and_its_links_to_the_validation_and_data_reports(page, airflow_ui, daily_run):
    rows = json.loads((daily_run["dir"] / "validation" / "report.json").read_text())["rows"]
    run_url = f"{airflow_ui['url']}/dags/{DAG_ID}/runs/{daily_run['run_id']}"
    page.goto(f"{run_url}/tasks/validate_window")
    page.get_by_text("Validation of window").first.wait_for()  # the task's log
    shot(page, "task_log")
    page.goto(f"{run_url}/tasks/validate_window/details")
    page.get_by_role("link", name="Data report").wait_for()
    shot(page, "task_links")
    report = open_link(page, run_url, "validate_window", "Data report")
    assert report.locator("[data-verdict]").first.inner_text() == "VALIDATION PASSED"
    headline = {m.get_attribute("data-metric"): m.locator(".v").inner_text() for m in report.locator(".metric").all()}
    assert headline["train rows"] == f"{rows['train']:,}" and headline["eval rows"] == f"{rows['eval']:,}"
    assert report.locator("svg").count() >= 5  # missing values and the drift overlays, drawn
    report.screenshot(path=str(SCREENSHOTS / "data_report.png"), full_page=True)
    validation = open_link(page, run_url, "validate_window", "Validation report")
    validation.get_by_text("summary.txt").first.wait_for()  # the validation folder's listing


def test_the_model_report_and_the_served_model(page, airflow_ui, daily_run):
    blessings = {
        v: json.loads((daily_run["dir"] / "variants" / v / "evaluation" / "blessing.json").read_text())
        for v in ("standard", "coarse")
    }
    run_url = f"{airflow_ui['url']}/dags/{DAG_ID}/runs/{daily_run['run_id']}"
    report = open_link(page, run_url, "compare_variants", "Model report")
    for variant, blessing in blessings.items():
        section = report.locator(f"#model-{variant}")
        assert section.locator("[data-verdict]").inner_text() == ("BLESSED" if blessing["blessed"] else "NOT BLESSED")
        assert section.locator("[data-metric=AUC] .v").inner_text() == f"{blessing['metrics']['auc']:.4f}"
        assert section.locator("svg").count() >= 4  # hour, calibration, confusion matrix, companies, day x month
    report.screenshot(path=str(SCREENSHOTS / "model_report.png"), full_page=False)
    logs = open_link(page, run_url, "standard.train", "Training logs")
    assert ">train/<" in logs.content()  # the TensorBoard logs (train/ and validation/ event files)
    if not any(b["blessed"] for b in blessings.values()):
        pytest.skip("no variant was blessed in this small run: nothing was served")
    (version,) = [p.name for p in (airflow_ui["home"] / "serving" / "taxi").iterdir() if p.name.isdigit()]
    served = open_link(page, run_url, "promote_champion", "Served model")
    assert f"label stable → {version}" in served.locator("#summary").inner_text()


def test_a_day_scored_and_monitored_and_the_asset_graph(page, airflow_ui, daily_run):
    """After the run: its champion scores the day before (taxi_batch_scoring), the day is monitored
    (taxi_model_monitor, its report through the task's link), and the asset graph shows the lineage."""
    if not (airflow_ui["home"] / "serving" / "taxi").is_dir():
        pytest.skip("no variant was blessed in this small run: nothing was served to score with")
    for dag_id in ("taxi_batch_scoring", "taxi_model_monitor"):
        conf = json.dumps({"window_end": DATE})
        airflow("dags", "trigger", dag_id, "--run-id", "ui_day", "--conf", conf, env=airflow_ui["env"])
        assert wait_for_run(dag_id, airflow_ui, minutes=10, run_id="ui_day")["state"] == "success", dag_id
    run_url = f"{airflow_ui['url']}/dags/taxi_model_monitor/runs/ui_day"
    report = open_link(page, run_url, "monitor_serving", "Monitor report")
    assert report.locator("[data-verdict]").first.inner_text().startswith(("OK", "ALERT"))
    assert report.locator("svg").count() >= 1  # the served probabilities against the eval split's
    report.screenshot(path=str(SCREENSHOTS / "monitor_report.png"), full_page=False)
    page.goto(f"{airflow_ui['url']}/assets")
    page.get_by_role("link", name="served_model.taxi", exact=True).click()
    for dag_id in (DAG_ID, "taxi_batch_scoring"):  # who serves the champion, who scores with it: graph nodes
        page.locator(".react-flow__node", has_text=dag_id).first.wait_for()
    shot(page, "asset_graph")


def test_a_rollback_run_is_idempotent_and_shows_the_served_model(page, airflow_ui, daily_run):
    versions = [p.name for p in (airflow_ui["home"] / "serving" / "taxi").glob("[0-9]*")]
    if not versions:
        pytest.skip("nothing was served by the daily run")
    (version,) = versions  # the run's data interval end, YYYYMMDDHHMM
    conf = {"model": "taxi", "target_version": version, "reason": "browser test: pin the served version"}
    airflow(
        "dags",
        "trigger",
        "taxi_serving_rollback",
        "--run-id",
        "rollback_check",
        "--conf",
        json.dumps(conf),
        env=airflow_ui["env"],
    )
    run = wait_for_run("taxi_serving_rollback", airflow_ui, minutes=3, run_id="rollback_check")
    assert run["state"] == "success"
    run_url = f"{airflow_ui['url']}/dags/taxi_serving_rollback/runs/rollback_check"
    page.goto(f"{run_url}/tasks/roll_back")
    page.get_by_text(f"already served at version {version}").first.wait_for()  # nothing to do: idempotent
    served = open_link(page, run_url, "roll_back", "Served model")
    assert f"newest <b>{version}</b>" in served.content()
    served.screenshot(path=str(SCREENSHOTS / "served_model.png"))


def test_the_trigger_form_offers_the_params_and_a_bad_value_is_refused(page, airflow_ui):
    page.goto(f"{airflow_ui['url']}/dags/{DAG_ID}")
    page.get_by_role("button", name=re.compile(r"^\s*Trigger", re.I)).first.click()
    dialog = page.get_by_role("dialog").first
    dialog.get_by_text("Run Parameters").first.wait_for()
    form = dialog.inner_text()
    for label in ("Window end", "Window days", "Variants", "Train steps", "Manual runs: the day the run's windows end"):
        assert label in form, form
    shot(page, "trigger_form")
    page.keyboard.press("Escape")

    before = len(list_runs(DAG_ID, airflow_ui["env"]))
    refused = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "trigger", DAG_ID, "--conf", json.dumps({"window_end": "yesterday"})],
        env=airflow_ui["env"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0
    assert "'yesterday' is not a 'date'" in refused.stdout + refused.stderr
    assert len(list_runs(DAG_ID, airflow_ui["env"])) == before  # refused before a run existed
