"""The taxi-mlops Airflow plugin: operator extra links, and the artifacts app in the api-server."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from taxi_pipeline.platforms.extra_links import ArtifactLink, HistoryLink, ServedModelLink


class TaxiPlugin(AirflowPlugin):
    name = "taxi_mlops"
    # The links are attached to the tasks by taxi_pipeline.platforms.extra_links.add_artifact_links;
    # registered here too.
    operator_extra_links = [ArtifactLink("Artifact"), ServedModelLink(), HistoryLink()]
    external_views = [{"name": "Taxi artifacts", "href": "/taxi/", "destination": "nav", "category": "browse"}]


def _fastapi_apps():
    from taxi_plugins.artifacts_app import app

    return [{"app": app, "url_prefix": "/taxi", "name": "taxi-mlops artifacts"}]


try:  # the app needs FastAPI (the api-server's); other Airflow processes load the plugin without it
    TaxiPlugin.fastapi_apps = _fastapi_apps()
except ImportError:  # pragma: no cover
    TaxiPlugin.fastapi_apps = []
