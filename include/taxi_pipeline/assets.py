"""What the DAGs produce and consume, as Airflow assets: the lineage trips -> window -> served model
-> scores in the UI's asset graph, and the events that start a DAG out of its schedule.

    taxi_trips                 the warehouse's trips table (read by every DAG's window)
    taxi_window.<dag_id>       a DAG's extracted windows (its `extract_window` emits one event a run)
    served_model.<model>       a served model (`taxi`, `taxi_<variant>`): an event per version pushed,
                               {"version": ..., "window_end": ...} in its extra
    taxi_predictions           the batch scores table (taxi_batch_scoring emits an event per day)
    taxi_retrain_request       the monitor's request for an out-of-schedule retraining (at most one a day)

An asset's identity (its name and its `x-taxi://` URI) is the same on every platform and install;
where its data is goes in its extra, `location`: the DuckDB file and folders under TAXI_HOME
locally, the BigQuery table or `gs://` path on gcp (known when the DAG is parsed only from the
`TAXI_GCP_*` environment: parsing asks no Airflow Variable). Why not that location as the URI:
Airflow activates one URI per name; a URI that moved with TAXI_HOME or the platform (a test's home,
a second install on one metadata DB) would leave the other inactive, and every task naming it
would fail until the scheduler's next clean-up.
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import Asset

from taxi_pipeline.gcp_settings import known_at_parse as _gcp
from taxi_pipeline.settings import get_settings

PREDICTIONS_TABLE = "predictions"  # in the local predictions file, and the name of the BigQuery table


def _asset(name: str, path: str, group: str, location: str | None) -> Asset:
    # `x-`: Airflow's prefix of a scheme no provider normalizes (any other but file:// makes Airflow
    # load every provider's asset handlers, the google provider's GCS hook among them, at parse)
    return Asset(name=name, uri=f"x-taxi://{path}", group=group, extra={"location": location} if location else {})


def _on_gcp() -> bool:
    return get_settings().platform == "gcp"


def _under(kind: str, *parts: str) -> str | None:
    """A location under `artifacts` or `serving`: TAXI_HOME's folder, or the gcp bucket's prefix."""
    if _on_gcp():
        bucket = _gcp("bucket")
        return "/".join([f"gs://{bucket}/{kind}", *parts]) if bucket else None
    return "file://" + "/".join([str(get_settings().home / kind), *parts])


def _table(name: str, path: str, gcp_setting: str, local_file: Path, local_table: str) -> Asset:
    if _on_gcp():
        table = _gcp(gcp_setting)
        return _asset(name, path, "warehouse", "bigquery://" + table.replace(".", "/") if table else None)
    return _asset(name, path, "warehouse", f"duckdb://{local_file}?table={local_table}")


def trips() -> Asset:
    settings = get_settings()
    return _table(
        "taxi_trips", "warehouse/taxi_trips", "source_table", settings.warehouse_path, "chicago_taxi_trips.taxi_trips"
    )


def window_extract(dag_id: str) -> Asset:
    return _asset(f"taxi_window.{dag_id}", f"artifacts/{dag_id}", "windows", _under("artifacts", dag_id))


def served_model(model: str) -> Asset:
    return _asset(f"served_model.{model}", f"serving/{model}", "served_models", _under("serving", model))


def predictions() -> Asset:
    settings = get_settings()
    return _table(
        "taxi_predictions", "warehouse/predictions", "predictions_table", settings.predictions_path, PREDICTIONS_TABLE
    )


def retrain_request() -> Asset:
    location = _under("artifacts", "taxi_model_monitor", "retrain_requests")
    return _asset("taxi_retrain_request", "events/retrain_request", "events", location)
