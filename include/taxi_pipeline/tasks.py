"""Task callables shared by the platforms: thin wrappers from an Airflow context to plain functions."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taxi_pipeline.serving import DeploymentRecord

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
    from taxi_pipeline.storage import atomic_directory
    from taxi_pipeline.validation import validate_window

    layout, plan = run_layout(context), window_plan(context)
    reports, failures = {}, []
    for name, reference in plan.checks.items():
        out = layout.validation_dir(name)
        with atomic_directory(out) as staging:
            report = validate_window(
                layout.window_data_dir(name), plan.windows[name], str(staging), context["params"]["min_window_rows"],
                reference_dir=layout.split_dir("train", reference) if reference else None,
                reference_name=f"the {reference} window {plan.windows[reference]}" if reference else "")
        for line in report.summary().splitlines():
            log.info("%s%s", f"[{name}] " if name else "", line)
        log.info("Full report: %s/summary.txt, Data Docs: %s/data_docs/index.html", out, out)
        reports[name or "window"] = {"rows": report.rows, "notes": report.notes, "success": report.success}
        if not report.success:
            failures.append(f"window {name + ' ' if name else ''}{report.window} failed validation with "
                            f"{len(report.failures)} problems: " + "; ".join(report.failures)
                            + f". Report: {out}/summary.txt")
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
    log.info("Training %s%s", ", ".join(selected), f"; skipping {', '.join(skipped)} (the variants Param)" if skipped else "")
    return [f"{v}.transform" for v in selected]


def compare_variants(**context) -> list[dict]:
    """The run's comparison of its variants: one row each, logged as a table and written beside the run."""
    import json

    from taxi_pipeline.branches import selected_variants
    from taxi_pipeline.comparison import comparison_rows, format_table
    from taxi_pipeline.run_context import run_layout
    from taxi_pipeline.storage import write_text_atomically

    layout = run_layout(context)
    rows = comparison_rows(layout, selected_variants(context["params"]))
    table = format_table(rows)
    for line in table.splitlines():
        log.info(line)
    write_text_atomically(f"{layout.run_dir}/comparison.txt", table + "\n")
    write_text_atomically(f"{layout.run_dir}/comparison.json", json.dumps(rows, indent=1))
    return rows


def _record(layout, context, model: str, variant: str, blessing: dict) -> DeploymentRecord:
    from taxi_pipeline.run_context import run_end
    from taxi_pipeline.serving import DeploymentRecord, version_for

    return DeploymentRecord(
        model=model, version=version_for(run_end(context)), variant=variant,
        dag_id=layout.dag_id, run_id=layout.run_id, window=str(layout.window), source=layout.model_dir(variant),
        metrics=blessing["metrics"], reasons=blessing["reasons"])


def push_variant(variant: str, **context) -> int:
    """Push a blessed variant's model as the run's version of `taxi_<variant>`."""
    from airflow.sdk.exceptions import AirflowSkipException

    from taxi_pipeline.comparison import read_blessing
    from taxi_pipeline.run_context import run_layout
    from taxi_pipeline.serving import model_name, push_model
    from taxi_pipeline.settings import get_settings

    layout = run_layout(context)
    blessing = read_blessing(layout, variant)
    if not blessing["blessed"]:
        raise AirflowSkipException(f"{variant} was not blessed, nothing pushed: " + "; ".join(blessing["reasons"]))
    result = push_model(get_settings().serving_root, _record(layout, context, model_name(variant), variant, blessing))
    log.info(result.message)
    if not result.pushed:
        raise AirflowSkipException(result.message)
    return result.version


def promote_champion(**context) -> dict:
    """Push the best blessed variant as the run's version of `taxi` and label it `stable`."""
    import json
    from pathlib import Path

    from airflow.sdk.exceptions import AirflowSkipException

    from taxi_pipeline.comparison import read_blessing
    from taxi_pipeline.run_context import run_layout
    from taxi_pipeline.serving import CHAMPION_MODEL, STABLE_LABEL, push_and_label
    from taxi_pipeline.settings import get_settings

    layout = run_layout(context)
    rows = json.loads(Path(layout.run_dir, "comparison.json").read_text())
    blessed = [r for r in rows if r["blessed"]]
    if not blessed:
        raise AirflowSkipException("no variant was blessed: the served model is unchanged")
    champion = max(blessed, key=lambda r: r["auc"])
    blessing = read_blessing(layout, champion["variant"])
    serving_root = get_settings().serving_root
    result = push_and_label(serving_root, _record(layout, context, CHAMPION_MODEL, champion["variant"], blessing),
                            STABLE_LABEL)
    log.info("Champion: %s (AUC %.4f); %s", champion["variant"], champion["auc"], result.message)
    if not result.pushed:
        raise AirflowSkipException(result.message)
    log.info("%s label %r -> version %s", CHAMPION_MODEL, STABLE_LABEL, result.version)
    return {"variant": champion["variant"], "version": result.version, "auc": champion["auc"]}


def record_window_verdict(**context) -> dict:
    """Record the run's recent-vs-long verdict as its window's row of the DAG's history."""
    import json
    from pathlib import Path

    from taxi_pipeline.history import write_history
    from taxi_pipeline.run_context import run_layout, window_plan

    layout, plan = run_layout(context), window_plan(context)
    comparison = json.loads(Path(layout.window_comparison_dir, "comparison.json").read_text())
    row = {
        "window": str(plan.windows["newest"]), "window_key": layout.window.key, "run_id": layout.run_id,
        "recent_window": str(plan.windows["recent"]), "long_window": str(plan.windows["long"]),
        "examples": comparison["examples"], "verdict": comparison["verdict"], **{
            f"auc_{k}": v for k, v in comparison["auc"].items()},
    }
    path = write_history(layout.history_dir, row)
    log.info("%s", comparison["sentence"])
    log.info("Verdict of window %s recorded in %s", row["window"], path)
    return row
