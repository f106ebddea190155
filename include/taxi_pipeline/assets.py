"""What the DAGs produce and consume, as Airflow assets: the lineage trips -> window -> served model
-> scores in the UI's asset graph, and the events that start a DAG out of its schedule.

    taxi_trips                 the warehouse's trips table (read by every DAG's window)
    taxi_window.<dag_id>       a DAG's extracted windows (its `extract_window` emits one event a run)
    served_model.<model>       a served model (`taxi`, `taxi_<variant>`): an event per version pushed,
                               {"version": ..., "window_end": ...} in its extra
    taxi_predictions           the batch scores table (taxi_batch_scoring emits an event per day)
    taxi_retrain_request       the monitor's request for an out-of-schedule retraining (at most one a day)

An asset's name is its identity, the same on both platforms; its URI says where the data is: the
DuckDB file and folders under TAXI_HOME locally, BigQuery tables and `gs://` paths on gcp (known when
the DAG is parsed only from the `TAXI_GCP_*` environment; a setting that is an Airflow Variable
leaves the URI at the asset's name, since parsing asks no Variable).
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import Asset

from taxi_pipeline.gcp_settings import known_at_parse as _gcp
from taxi_pipeline.settings import get_settings

PREDICTIONS_TABLE = "predictions"  # in the local predictions file, and the name of the BigQuery table


def _bigquery_uri(table: str | None) -> str | None:
    return "bigquery://" + table.replace(".", "/") if table else None


def _under(root: str | None, *parts: str) -> str | None:
    if root is None:
        return None
    uri = "/".join([root.rstrip("/"), *parts])
    return uri if "://" in uri else f"file://{uri}"


def _asset(name: str, uri: str | None, group: str) -> Asset:
    return Asset(name=name, uri=uri or name, group=group)


def _gcp_root(kind: str) -> str | None:
    bucket = _gcp("bucket")
    return f"gs://{bucket}/{kind}" if bucket else None


def _root(kind: str) -> str | None:
    """`artifacts` or `serving`, under TAXI_HOME or the gcp bucket."""
    settings = get_settings()
    if settings.platform == "gcp":
        return _gcp_root(kind)
    return str(settings.home / kind)


def _table(name: str, gcp_setting: str, local_file: Path, local_table: str) -> Asset:
    if get_settings().platform == "gcp":
        return _asset(name, _bigquery_uri(_gcp(gcp_setting)), "warehouse")
    # `x-`: Airflow's prefix of a scheme no provider normalizes (any other scheme than file:// makes
    # Airflow load every provider's asset handlers, the google provider's GCS hook among them, at parse)
    return _asset(name, f"x-duckdb://{local_file}?table={local_table}", "warehouse")


def trips() -> Asset:
    return _table("taxi_trips", "source_table", get_settings().warehouse_path, "chicago_taxi_trips.taxi_trips")


def window_extract(dag_id: str) -> Asset:
    return _asset(f"taxi_window.{dag_id}", _under(_root("artifacts"), dag_id), "windows")


def served_model(model: str) -> Asset:
    return _asset(f"served_model.{model}", _under(_root("serving"), model), "served_models")


def predictions() -> Asset:
    return _table("taxi_predictions", "predictions_table", get_settings().predictions_path, PREDICTIONS_TABLE)


def retrain_request() -> Asset:
    return _asset(
        "taxi_retrain_request", _under(_root("artifacts"), "taxi_model_monitor", "retrain_requests"), "events"
    )
