"""Where a person opens an artifact or a served model: the URL of each, per platform.

The operator extra links (include/taxi_pipeline/platforms/extra_links.py) ask the platform's `links` for the URL of
a path of the run's layout, so a link is the same on both platforms and only its target differs:
- local: the project's artifacts app, mounted in the Airflow api-server at /taxi (plugins/taxi_plugins/
  artifacts_app.py), which serves $TAXI_HOME/artifacts read-only and the serving root's status;
- gcp: the Cloud console's page of a GCS folder, or the authenticated GCS URL of a file (HTML opens rendered).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

APP_PREFIX = "/taxi"  # where the artifacts app is mounted in the api-server


def _api_prefix() -> str:
    """The path the Airflow api-server is served under ('' at the root), from [api] base_url."""
    from urllib.parse import urlparse

    try:
        from airflow.configuration import conf

        base_url = conf.get("api", "base_url", fallback="") or ""
    except Exception:  # noqa: BLE001 (outside Airflow)
        base_url = ""
    return urlparse(base_url).path.rstrip("/")


class LocalLinks:
    def artifact(self, path: str) -> str:
        from taxi_pipeline.settings import get_settings

        root = Path(get_settings().artifact_root)
        relative = Path(path).relative_to(root).as_posix() if Path(path).is_absolute() else path
        return f"{_api_prefix()}{APP_PREFIX}/artifacts/{quote(relative)}"

    def served_model(self, model: str) -> str:
        return f"{_api_prefix()}{APP_PREFIX}/serving/{quote(model)}"


class GcpLinks:
    def artifact(self, path: str) -> str:
        if not path.startswith("gs://"):
            raise ValueError(f"not a GCS path: {path}")
        bucket_and_object = path[len("gs://") :].rstrip("/")
        if "." in bucket_and_object.rsplit("/", 1)[-1]:  # a file: the authenticated URL renders it
            return f"https://storage.cloud.google.com/{quote(bucket_and_object)}"
        return f"https://console.cloud.google.com/storage/browser/{quote(bucket_and_object)}"

    def served_model(self, model: str) -> str:
        from taxi_pipeline.serving_root import ServingRoot
        from taxi_pipeline.settings import get_settings

        return self.artifact(ServingRoot(get_settings().serving_root).base_path(model))
