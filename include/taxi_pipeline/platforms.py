"""The one place where the platforms differ: each builds the same stages from its own operators.

`local` (the default) runs on this machine: DuckDB for BigQuery, a local folder for GCS, Beam's
DirectRunner for Dataflow, local processes for the TFJob. `gcp` uses the providers' operators.
DAG files call `get_platform()` and the stage builders; the DAG's shape does not depend on it.
"""
from __future__ import annotations

from taxi_pipeline.settings import get_settings

WAIT_DOC = """
### wait_for_window
Waits until the warehouse holds trips up to the end of this run's training window (a trip at or
after the window's end has landed). Reschedules itself every 5 minutes, for up to 6 hours.

**On failure** (timeout): the message says how far the trips table has landed. Check the ingestion
into the trips table; once the data is there, clear this task.
"""
EXTRACT_DOC = """
### extract_window
Runs the window SQL (`include/taxi_pipeline/sql/window.sql`) for the train and eval splits of the
window, and for the previous window (the drift reference), and publishes them atomically under
`.../window=<window>/run=<run>/data/`. Returns the row count of each split.

**On failure**: the warehouse could not be read or the query failed; the log has the SQL error.
It is safe to retry: a retry rewrites the same files.
"""
VALIDATE_DOC = """
### validate_window
Checks the extracted window with great-expectations: columns and types, non-negative fares, tips,
miles and durations, Chicago coordinates, null fractions, unique keys, a minimum row count, and
drift of fare, miles and duration against the previous window.

**On failure**: the window's data is bad and nothing downstream runs (the served model is left
alone). The log lists each problem on one line; the full report is `validation/summary.txt` and
GX's Data Docs `validation/data_docs/index.html` in the run's artifacts. Fix the data at the
source, then clear this task; retrying without a fix fails the same way.
"""


class LocalPlatform:
    name = "local"

    def wait_for_window(self):
        from taxi_plugins.sensors import WindowLandedSensor

        return WindowLandedSensor(task_id="wait_for_window", doc_md=WAIT_DOC)

    def extract_window(self):
        from airflow.providers.standard.operators.python import PythonOperator

        from taxi_pipeline.tasks import extract_window_to_artifacts

        return PythonOperator(task_id="extract_window", python_callable=extract_window_to_artifacts,
                              doc_md=EXTRACT_DOC)

    def validate_window(self):
        from airflow.providers.standard.operators.python import PythonOperator

        from taxi_pipeline.tasks import validate_window_artifacts

        return PythonOperator(task_id="validate_window", python_callable=validate_window_artifacts,
                              doc_md=VALIDATE_DOC)


class GcpPlatform:
    name = "gcp"

    def __getattr__(self, stage):
        raise NotImplementedError(
            f"The gcp platform's {stage} stage is not built yet (issue 6); use TAXI_PLATFORM=local")


def get_platform():
    return {"local": LocalPlatform, "gcp": GcpPlatform}[get_settings().platform]()
