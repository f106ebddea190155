"""taxi_batch_scoring: the served model's scores of every trip, every day (the "infer" step of the
Kubeflow taxi pipelines; TFX's BulkInferrer).

wait_for_window >> extract_window >> find_served_model >> score_trips >> load_predictions

The run's day is the day before its data interval end (or before the `window_end` Param of a
manual run). It scores that day's trips with the version of `taxi` at the `served_label` Param
(`stable`), with Beam's RunInference (the direct runner locally, Dataflow on gcp), and replaces the
day's rows of the `predictions` table (DuckDB locally, BigQuery on gcp). A new champion served (the
asset event of taxi_daily_retrain's promote_champion) re-scores the day before its window's end.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, AssetOrTimeSchedule, CronDataIntervalTimetable, chain

from taxi_pipeline import assets
from taxi_pipeline.dag_defaults import DEFAULT_ARGS, MACROS, on_call_doc, served_label_param, window_end_param
from taxi_pipeline.platforms import get_platform
from taxi_pipeline.platforms.extra_links import add_artifact_links
from taxi_pipeline.serving_root import CHAMPION_MODEL

platform = get_platform()

with DAG(
    dag_id="taxi_batch_scoring",
    schedule=AssetOrTimeSchedule(
        timetable=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"), assets=[assets.served_model(CHAMPION_MODEL)]
    ),
    start_date=datetime(2014, 1, 1),
    max_active_runs=2,
    tags=["taxi", "scoring", f"platform:{platform.name}"],
    doc_md=__doc__ + on_call_doc("taxi_batch_scoring", ""),
    default_args=DEFAULT_ARGS,
    params={"window_end": window_end_param(), "served_label": served_label_param()},
    user_defined_macros=MACROS,
) as dag:
    chain(
        platform.wait_for_window(),
        platform.extract_window(dag.dag_id),
        platform.find_served_model(),
        platform.score_trips(),
        platform.load_predictions(),
    )

add_artifact_links(dag)
