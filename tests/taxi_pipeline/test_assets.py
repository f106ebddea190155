"""The assets' names are their identity on both platforms; their URIs say where the data is."""

from __future__ import annotations

from airflow.sdk import Asset

from taxi_pipeline import assets


def normalized(uri: str) -> str:
    """The URI as Airflow keeps it (it normalizes URIs, e.g. `file:///x` to `file:/x`)."""
    return Asset(name="any", uri=uri).uri


def test_local_assets_point_at_the_warehouse_and_folders(monkeypatch, tmp_path):
    monkeypatch.setenv("TAXI_PLATFORM", "local")
    monkeypatch.setenv("TAXI_HOME", str(tmp_path))
    assert assets.trips().name == "taxi_trips"
    assert assets.trips().uri == normalized(
        f"x-duckdb://{tmp_path}/warehouse/taxi.duckdb?table=chicago_taxi_trips.taxi_trips"
    )
    assert assets.window_extract("taxi_daily_retrain").uri == normalized(
        f"file://{tmp_path}/artifacts/taxi_daily_retrain"
    )
    assert assets.served_model("taxi").uri == normalized(f"file://{tmp_path}/serving/taxi")
    assert assets.predictions().uri == normalized(
        f"x-duckdb://{tmp_path}/warehouse/predictions.duckdb?table=predictions"
    )
    assert assets.retrain_request().name == "taxi_retrain_request"


def test_gcp_assets_are_bigquery_tables_and_gcs_paths(monkeypatch):
    monkeypatch.setenv("TAXI_PLATFORM", "gcp")
    monkeypatch.setenv("TAXI_GCP_PROJECT", "acme")
    assert assets.trips().uri == "bigquery://acme/chicago_taxi_trips/taxi_trips"
    assert assets.served_model("taxi_standard").uri == "gs://acme-taxi-mlops/serving/taxi_standard"
    assert assets.predictions().uri == "bigquery://acme/taxi_mlops/predictions"
    monkeypatch.setenv("TAXI_GCP_BUCKET", "shared-bucket")
    assert assets.window_extract("taxi_sliding_window").uri == "gs://shared-bucket/artifacts/taxi_sliding_window"


def test_a_setting_kept_in_a_variable_leaves_the_uri_at_the_name(monkeypatch):
    """Parsing asks no Variable: without TAXI_GCP_PROJECT the gcp URIs are not known when a DAG is parsed."""
    monkeypatch.setenv("TAXI_PLATFORM", "gcp")
    monkeypatch.delenv("TAXI_GCP_PROJECT", raising=False)
    monkeypatch.delenv("TAXI_GCP_BUCKET", raising=False)
    assert assets.served_model("taxi").uri == "served_model.taxi"
    assert assets.predictions().uri == "taxi_predictions"
