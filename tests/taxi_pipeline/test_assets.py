"""An asset's identity is the same everywhere; its extra says where the data is on this install."""

from __future__ import annotations

from taxi_pipeline import assets

ALL = (
    lambda: assets.trips(),
    lambda: assets.window_extract("taxi_daily_retrain"),
    lambda: assets.served_model("taxi"),
    lambda: assets.predictions(),
    lambda: assets.retrain_request(),
)


def identities() -> list[tuple[str, str]]:
    return [(make().name, make().uri) for make in ALL]


def test_the_identity_does_not_move_with_the_home_or_the_platform(monkeypatch, tmp_path):
    monkeypatch.setenv("TAXI_PLATFORM", "local")
    monkeypatch.setenv("TAXI_HOME", str(tmp_path / "one"))
    local = identities()
    monkeypatch.setenv("TAXI_HOME", str(tmp_path / "two"))
    assert identities() == local
    monkeypatch.setenv("TAXI_PLATFORM", "gcp")
    monkeypatch.setenv("TAXI_GCP_PROJECT", "acme")
    assert identities() == local
    assert local[2] == ("served_model.taxi", "x-taxi://serving/taxi")


def test_local_locations_are_the_warehouse_files_and_folders(monkeypatch, tmp_path):
    monkeypatch.setenv("TAXI_PLATFORM", "local")
    monkeypatch.setenv("TAXI_HOME", str(tmp_path))
    assert assets.trips().extra["location"] == (
        f"duckdb://{tmp_path}/warehouse/taxi.duckdb?table=chicago_taxi_trips.taxi_trips"
    )
    assert assets.window_extract("taxi_daily_retrain").extra["location"] == (
        f"file://{tmp_path}/artifacts/taxi_daily_retrain"
    )
    assert assets.served_model("taxi").extra["location"] == f"file://{tmp_path}/serving/taxi"
    assert (
        assets.predictions().extra["location"] == f"duckdb://{tmp_path}/warehouse/predictions.duckdb?table=predictions"
    )


def test_gcp_locations_are_bigquery_tables_and_gcs_paths(monkeypatch):
    monkeypatch.setenv("TAXI_PLATFORM", "gcp")
    monkeypatch.setenv("TAXI_GCP_PROJECT", "acme")
    assert assets.trips().extra["location"] == "bigquery://acme/chicago_taxi_trips/taxi_trips"
    assert assets.served_model("taxi_standard").extra["location"] == "gs://acme-taxi-mlops/serving/taxi_standard"
    assert assets.predictions().extra["location"] == "bigquery://acme/taxi_mlops/predictions"
    monkeypatch.setenv("TAXI_GCP_BUCKET", "shared-bucket")
    assert assets.window_extract("taxi_sliding_window").extra["location"] == (
        "gs://shared-bucket/artifacts/taxi_sliding_window"
    )


def test_a_setting_kept_in_a_variable_leaves_no_location(monkeypatch):
    """Parsing asks no Variable: without TAXI_GCP_PROJECT the gcp locations are not known at parse."""
    monkeypatch.setenv("TAXI_PLATFORM", "gcp")
    monkeypatch.delenv("TAXI_GCP_PROJECT", raising=False)
    monkeypatch.delenv("TAXI_GCP_BUCKET", raising=False)
    assert assets.served_model("taxi").extra == {}
    assert assets.predictions().extra == {}
