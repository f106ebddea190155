"""Task callables shared by the platforms: thin wrappers from an Airflow context to plain functions."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def extract_window_to_artifacts(**context) -> dict[str, dict[str, int]]:
    from taxi_pipeline.extract import extract_windows
    from taxi_pipeline.run_context import run_layout, window_plan
    from taxi_pipeline.settings import get_settings

    layout, plan = run_layout(context), window_plan(context)
    rows = extract_windows(get_settings().warehouse_path, layout, plan.windows)
    for name, window in plan.windows.items():
        log.info("Window %s %s: %s", name or "of the run", window, rows[name or "window"])
    log.info("Extracted to %s", layout.data_dir)
    return rows


def validate_window_artifacts(**context) -> dict:
    """Validate each window of the run's plan; fail (without retries) if any is bad."""
    from airflow.sdk.exceptions import AirflowFailException

    from taxi_pipeline.run_context import run_layout, window_plan
    from taxi_pipeline.validation import RefusedSchemaChange, validate_run

    layout, plan = run_layout(context), window_plan(context)
    try:
        checked = validate_run(
            layout,
            plan,
            context["params"]["min_window_rows"],
            (context["params"].get("accept_data_changes") or "").strip(),
        )
    except RefusedSchemaChange as refused:
        raise AirflowFailException(str(refused)) from None
    reports, failures = {}, []
    for name, report in checked.items():
        out = layout.validation_dir(name)
        for line in report.summary().splitlines():
            log.info("%s%s", f"[{name}] " if name else "", line)
        log.info("Full report: %s/summary.txt, Data Docs: %s/data_docs/index.html", out, out)
        reports[name or "window"] = {
            "rows": report.rows,
            "notes": report.notes,
            "success": report.success,
            "schema_version": report.schema_version,
        }
        if not report.success:
            failures.append(
                f"window {name + ' ' if name else ''}{report.window} failed validation with "
                f"{len(report.failures)} problems: " + "; ".join(report.failures) + f". Report: {out}/summary.txt"
            )
    if failures:
        raise AirflowFailException(" | ".join(failures))
    return reports


SELECT_VARIANTS_DOC = """
### select_variants
Picks the variants this run trains, from its `variants` Param (all of them unless a manual run
chose fewer). The variants not chosen are skipped from their transform on; compare and promote
judge the chosen ones only.

**On failure**: the Param names an unknown variant; the message lists the known ones.
"""


def select_variants(**context) -> list[str]:
    """The first task of each variant the run trains (the `variants` Param); the others are skipped."""
    from airflow.sdk.exceptions import AirflowFailException

    from taxi_model.variants import VARIANTS
    from taxi_pipeline.branches import selected_variants

    try:
        selected = selected_variants(context["params"])
    except ValueError as bad:
        raise AirflowFailException(str(bad)) from bad
    skipped = [v for v in VARIANTS if v not in selected]
    log.info(
        "Training %s%s", ", ".join(selected), f"; skipping {', '.join(skipped)} (the variants Param)" if skipped else ""
    )
    return [f"{v}.transform" for v in selected]


def compare_variants(**context) -> list[dict]:
    """The run's comparison of its variants: one row each, logged as a table and written beside the run."""
    from taxi_pipeline import files
    from taxi_pipeline.branches import selected_variants
    from taxi_pipeline.comparison import comparison_rows, format_table
    from taxi_pipeline.run_context import run_layout

    layout = run_layout(context)
    rows = comparison_rows(layout, selected_variants(context["params"]))
    table = format_table(rows)
    for line in table.splitlines():
        log.info(line)
    files.write_text(f"{layout.run_dir}/comparison.txt", table + "\n")
    files.write_json(f"{layout.run_dir}/comparison.json", rows)
    return rows


def push_variant(variant: str, model: str, **context) -> int:
    """Push a blessed branch's model as the run's version of the served model `model`."""
    from taxi_pipeline import deployment

    with deployment.skip_if_not_deployed():
        return deployment.push_blessed_variant(_serving_root(), context, variant, model).version


def decide_approval(**context) -> list[str]:
    """The approval gate's branch: ["approve_champion"] when the `require_approval` Param asks a person
    (the question is this task's `question` XCom, the approver's text), else [] (it is skipped)."""
    from taxi_pipeline import deployment, files
    from taxi_pipeline.run_context import run_layout

    layout = run_layout(context)
    rows = files.read_json(files.join(layout.run_dir, "comparison.json"))
    try:
        champion = deployment.choose_champion(rows)
    except deployment.NotDeployed:
        champion = None
    baseline_auc = champion and champion.get("baseline_auc")
    question = deployment.approval_question(context["params"]["require_approval"], champion, baseline_auc)
    if question is None:
        log.info("No approval needed (require_approval=%s)", context["params"]["require_approval"])
        return []
    table = files.read_text(files.join(layout.run_dir, "comparison.txt"))
    body = f"{question}\n\n```\n{table}\n```\n\nModel report: {layout.report_path('model')}"
    context["ti"].xcom_push(key="question", value=body)
    log.info("Asking for approval: %s", question)
    return ["approve_champion"]


def promote_champion(**context) -> dict:
    """Push the best blessed variant as the run's version of `taxi` and label it `stable`."""
    from taxi_pipeline import deployment

    with deployment.skip_if_not_deployed():
        champion, result = deployment.promote_champion(_serving_root(), context)
    return {"variant": champion["variant"], "version": result.version, "auc": champion["auc"]}


def roll_back(**context) -> dict:
    """The rollback DAG's task: roll back the model its Params name, and say what happened in the log."""
    from dataclasses import asdict

    from taxi_pipeline import deployment

    return asdict(deployment.roll_back(_serving_root(), context["params"], context["run_id"]))


def _serving_root():
    from taxi_pipeline.serving_root import ServingRoot
    from taxi_pipeline.settings import get_settings

    return ServingRoot(get_settings().serving_root)


def record_window_verdict(**context) -> dict:
    """Record the run's recent-vs-long verdict as its window's row of the DAG's history, and the
    rows of its promotion (comparison.json beside the run, as taxi_daily_retrain's compare_variants
    writes them: decide_approval and promote_champion read them)."""
    from taxi_pipeline import deployment, files
    from taxi_pipeline.comparison import comparison_rows, format_table
    from taxi_pipeline.history import write_history
    from taxi_pipeline.run_context import run_layout, window_plan

    layout, plan = run_layout(context), window_plan(context)
    comparison = files.read_json(f"{layout.window_comparison_dir}/comparison.json")
    versus = files.read_json(f"{layout.window_comparison_dir}/versus_stable.json")
    branches = {"recent": "recent", "long": "long"}  # each branch trained on the window of its name
    rows = deployment.window_rows(comparison_rows(layout, list(branches), branches), comparison, versus)
    table = format_table(rows)
    for line in table.splitlines():
        log.info(line)
    files.write_text(f"{layout.run_dir}/comparison.txt", table + "\n")
    files.write_json(f"{layout.run_dir}/comparison.json", rows)
    row = {
        "window": str(plan.windows["newest"]),
        "window_key": layout.window.key,
        "run_id": layout.run_id,
        "recent_window": str(plan.windows["recent"]),
        "long_window": str(plan.windows["long"]),
        "examples": comparison["examples"],
        "verdict": comparison["verdict"],
        **{f"auc_{k}": v for k, v in comparison["auc"].items()},
    }
    path = write_history(layout.history_dir, row)
    log.info("%s", comparison["sentence"])
    log.info("Candidate for promotion: %s (%s); %s", versus["candidate"], versus["why"], versus["sentence"])
    log.info("Verdict of window %s recorded in %s", row["window"], path)
    return row


def find_served_model(**context) -> dict:
    """The model the run scores with: the version at the `served_label` Param of the champion model.
    Nothing served there yet: the run's scoring is skipped, with the reason (not a failure)."""
    from airflow.sdk.exceptions import AirflowSkipException

    from taxi_pipeline import files
    from taxi_pipeline.serving_root import CHAMPION_MODEL

    root, label = _serving_root(), context["params"]["served_label"]
    version = root.labels(CHAMPION_MODEL).get(label)
    if version is None:
        raise AirflowSkipException(
            f"no version of {CHAMPION_MODEL} is labelled {label!r} in {root.uri}: nothing to score with yet "
            "(taxi_daily_retrain promotes one)"
        )
    served = {"model": CHAMPION_MODEL, "label": label, "version": version}
    log.info("Scoring with %s:%s = version %s", CHAMPION_MODEL, label, version)
    return {**served, "path": files.join(root.base_path(CHAMPION_MODEL), str(version))}


def load_predictions(**context) -> int:
    """Replace the day's rows of the local predictions table with the run's scores."""
    from taxi_pipeline import predictions
    from taxi_pipeline.run_context import run_layout
    from taxi_pipeline.settings import get_settings

    layout = run_layout(context)
    path = get_settings().predictions_path
    rows = predictions.load_day(path, layout.window.start.date(), layout.scores_dir)
    log.info("%s rows of %s in %s (table %s)", rows, layout.window.start.date(), path, "predictions")
    return rows


def export_predictions(**context) -> int:
    """Write the day's rows of the local predictions table as the run's CSV (the monitor reads those)."""
    from taxi_pipeline import files, predictions
    from taxi_pipeline.run_context import run_layout
    from taxi_pipeline.settings import get_settings

    layout = run_layout(context)
    scores = predictions.read_day(get_settings().predictions_path, layout.window.start.date())
    with files.atomic_directory(layout.predictions_dir) as staging:
        scores.to_csv(staging / "part-00000.csv", index=False)
    log.info("%s scores of %s -> %s", len(scores), layout.window.start.date(), layout.predictions_dir)
    return len(scores)


def monitor_serving(**context) -> dict:
    """The day's monitor (taxi_pipeline.monitor): the result, the report, the history's row; an
    alert when a threshold is crossed."""
    from taxi_pipeline.monitor_run import monitor_run
    from taxi_pipeline.notifiers import TaxiAlertNotifier
    from taxi_pipeline.run_context import run_layout

    outcome = monitor_run(run_layout(context), _serving_root())
    for line in outcome["crossed"]:
        log.warning("CROSSED: %s", line)
    log.info("Day %s: %s; report %s", outcome["day"], outcome["verdict"], outcome["report"])
    if outcome["crossed"]:
        message = (
            f"MONITOR: the served model's day {outcome['day']} crossed {len(outcome['crossed'])} thresholds: "
            + "; ".join(outcome["crossed"])
            + f". Report: {outcome['report']}"
        )
        TaxiAlertNotifier().send(f"{message} | DAG {context['dag'].dag_id}, run {context['run_id']}")
    return outcome


def request_retraining(**context) -> dict:
    """Ask for an out-of-schedule taxi_daily_retrain of the current window (this task's asset event),
    when the monitor crossed a threshold and nothing was asked for this day yet; else skipped."""
    from airflow.sdk.exceptions import AirflowSkipException

    from taxi_pipeline.assets import retrain_request
    from taxi_pipeline.monitor_run import record_request
    from taxi_pipeline.run_context import run_end, run_layout

    outcome = context["ti"].xcom_pull(task_ids="monitor_serving")
    if not outcome["crossed"]:
        raise AirflowSkipException(f"day {outcome['day']}: no threshold crossed, no retraining asked for")
    request = {"day": outcome["day"], "window_end": run_end(context).isoformat(), "reasons": outcome["crossed"]}
    if not record_request(run_layout(context), request, context["run_id"]):
        raise AirflowSkipException(f"day {outcome['day']}: a retraining was already asked for (at most one a day)")
    context["outlet_events"][retrain_request()].extra = request
    log.info("Asked for a taxi_daily_retrain run of the window ending %s", request["window_end"])
    return request
