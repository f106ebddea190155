"""Task callables shared by the platforms: thin wrappers from an Airflow context to plain functions."""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class WindowValidationError(Exception):
    """The window's data failed validation (bad data does not get better on retry)."""


def extract_window_to_artifacts(**context) -> dict[str, int]:
    from taxi_pipeline.extract import extract_window
    from taxi_pipeline.run_context import run_layout
    from taxi_pipeline.settings import get_settings

    layout = run_layout(context)
    rows = extract_window(get_settings().warehouse_path, layout)
    log.info("Window %s extracted to %s: %s", layout.window, layout.data_dir, rows)
    return rows


def validate_window_artifacts(**context) -> dict:
    from airflow.sdk.exceptions import AirflowFailException

    from taxi_pipeline.run_context import run_layout
    from taxi_pipeline.storage import atomic_directory
    from taxi_pipeline.validation import validate_window

    layout = run_layout(context)
    with atomic_directory(layout.validation_dir) as staging:
        report = validate_window(layout.data_dir, layout.window, str(staging), context["params"]["min_window_rows"])
    for line in report.summary().splitlines():
        log.info(line)
    log.info("Full report: %s/summary.txt, Data Docs: %s/data_docs/index.html", layout.validation_dir,
             layout.validation_dir)
    if not report.success:
        raise AirflowFailException(
            f"Window {layout.window} failed validation with {len(report.failures)} problems: "
            + "; ".join(report.failures) + f". Report: {layout.validation_dir}/summary.txt")
    return {"rows": report.rows, "notes": report.notes}


def compare_variants(**context) -> list[dict]:
    """The run's comparison of its variants: one row each, logged as a table and written beside the run."""
    import json

    from taxi_model.variants import VARIANTS

    from taxi_pipeline.comparison import comparison_rows, format_table
    from taxi_pipeline.run_context import run_layout
    from taxi_pipeline.storage import write_text_atomically

    layout = run_layout(context)
    rows = comparison_rows(layout, list(VARIANTS))
    table = format_table(rows)
    for line in table.splitlines():
        log.info(line)
    write_text_atomically(f"{layout.run_dir}/comparison.txt", table + "\n")
    write_text_atomically(f"{layout.run_dir}/comparison.json", json.dumps(rows, indent=1))
    return rows
