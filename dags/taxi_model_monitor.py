"""taxi_model_monitor: what the served model saw each day against what it was trained on.

wait_for_scores >> extract_window >> export_predictions >> monitor_serving >> request_retraining

The run's day is the day before its data interval end (or before the `window_end` Param). Its
trips and the served model's scores of them (taxi_batch_scoring's `predictions` table) are set
against the champion's training window and evaluation (TFDV's training/serving skew, Vertex AI's
model monitoring): feature drift with the schema's thresholds (taxi_pipeline.anomalies, the module
validate_window uses), values never seen in training, prediction drift, and the realized AUC once
the day's tips are in. A crossed threshold alerts on-call and asks, at most once a day, for an
out-of-schedule taxi_daily_retrain run (the `taxi_retrain_request` asset). The report:
`reports/monitor.html` in the run's artifacts, with the history of every monitored day.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, CronDataIntervalTimetable, chain

from taxi_pipeline.dag_defaults import DEFAULT_ARGS, MACROS, on_call_doc, window_end_param
from taxi_pipeline.platforms import get_platform
from taxi_pipeline.platforms.extra_links import add_artifact_links

platform = get_platform()

with DAG(
    dag_id="taxi_model_monitor",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),  # wait_for_scores waits for the scoring
    start_date=datetime(2014, 1, 1),
    max_active_runs=2,
    tags=["taxi", "monitoring", f"platform:{platform.name}"],
    doc_md=__doc__ + on_call_doc("taxi_model_monitor", ", the history of every day under `history/`"),
    default_args=DEFAULT_ARGS,
    params={"window_end": window_end_param()},
    user_defined_macros=MACROS,
) as dag:
    chain(
        platform.wait_for_scores(),
        platform.extract_window(dag.dag_id),
        platform.export_predictions(),
        platform.monitor_serving(),
        platform.request_retraining(),
    )

add_artifact_links(dag)
