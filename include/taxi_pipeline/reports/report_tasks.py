"""Task callables of the report tasks (thin: the reports are built in data.py and model.py)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def write_data_report(**context) -> dict:
    from taxi_pipeline import files
    from taxi_pipeline.reports import data
    from taxi_pipeline.run_context import run_layout, window_plan

    layout = run_layout(context)
    html, facts = data.build(layout, window_plan(context))
    files.write_text(layout.report_path("data"), html)
    log.info("%s; rows %s. Data report: %s", facts["verdict"], facts["rows"], layout.report_path("data"))
    return facts


def write_model_report(**context) -> dict:
    from taxi_pipeline import files
    from taxi_pipeline.reports import model
    from taxi_pipeline.run_context import run_layout

    layout = run_layout(context)
    html, facts = model.build(layout)
    files.write_text(layout.report_path("model"), html)
    if "window_verdict" in facts:  # the sliding-window DAG's history, as a page of its own too
        files.write_text(f"{layout.history_dir}/history.html", model.build_history(layout.history_dir, layout.dag_id))
    for name, m in facts["models"].items():
        log.info(
            "%s: AUC %.4f, accuracy %.4f, %s",
            name,
            m["auc"],
            m["accuracy"],
            "blessed" if m["blessed"] else "NOT blessed",
        )
    log.info("Model report: %s", layout.report_path("model"))
    return facts


DATA_REPORT_DOC = """
### data_report
Writes the run's data report, `reports/data.html` (the "Data report" link): rows per split,
per-feature summaries, missing values, the drift of the key features against the reference window
(histogram overlays) and the validation verdict. Runs also when validation failed: that is when
the report is most useful.

**On failure**: the report could not be built (the log has the error); the pipeline is not
affected. A retry rewrites the report.
"""
MODEL_REPORT_DOC = """
### model_report
Writes the run's model report, `reports/model.html` (the "Model report" link): each model's TFMA
metrics overall and per slice (hour, top companies, day x month), calibration, confusion matrix,
candidate vs the served baseline, the blessing verdict, and the run's comparison (variants, or
recent vs long with the history of verdicts).

**On failure**: the report could not be built (the log has the error); models and serving are not
affected. A retry rewrites the report.
"""


def data_report_task():
    """The data report task, the same on every platform (it reads the layout through fsspec)."""
    from airflow.providers.standard.operators.python import PythonOperator

    return PythonOperator(
        task_id="data_report",
        python_callable=write_data_report,
        doc_md=DATA_REPORT_DOC,
        trigger_rule="all_done",
        retries=1,
    )


def model_report_task():
    from airflow.providers.standard.operators.python import PythonOperator

    return PythonOperator(
        task_id="model_report",
        python_callable=write_model_report,
        doc_md=MODEL_REPORT_DOC,
        trigger_rule="none_failed",
        retries=1,
    )
