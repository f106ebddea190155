"""Settings of the gcp platform (TAXI_PLATFORM=gcp); see README, "The gcp platform".

Each setting is read from the environment variable `TAXI_GCP_<NAME>`, else from the Airflow Variable
`taxi_gcp_<name>`, else its default. Only `TAXI_GCP_PROJECT` has no default. `conn_id` is read
from the environment only (the hooks take it before any template is rendered).

Parsing a DAG asks no Variable (each lookup is a call to the metadata DB or the API server, and
16 of them made a parse take ~20 s): `gcp_templates()` gives the settings as the DAG files use
them, a value from the environment as it is, else a template that asks the Variable when the task
runs (`{{ var.value.get('taxi_gcp_<name>', <its default>) }}`). `get_gcp_settings()` resolves them
all, for code that runs inside a task. No secret is a
setting: credentials come from the Airflow connections named here (`google_cloud_default` for
BigQuery, GCS, Dataflow, GKE and Vertex AI, unless `TAXI_GCP_CONN_ID` names another), and the pods
run as a Kubernetes service account bound to a Google service account (Workload Identity).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

# name -> (default, meaning); a default may use {project} and {region}. An image may be given by digest
# (`<name>@sha256:<digest>`, what production should pin: a tag can be moved, a digest cannot).
DEFAULTS: dict[str, tuple[str | None, str]] = {
    "project": (None, "the Google Cloud project of everything below"),
    "region": ("us-central1", "region of Dataflow, Vertex AI and the GKE cluster"),
    "bucket": (
        "{project}-taxi-mlops",
        "GCS bucket: artifacts/, serving/ (the TF-Serving model base paths), dataflow/ (temp, staging)",
    ),
    "bq_location": ("US", "BigQuery location of the source table and the extract dataset"),
    "source_table": (
        "{project}.chicago_taxi_trips.taxi_trips",
        "the trips table (the public table's schema), partitioned by HOUR on trip_start_timestamp",
    ),
    "extract_dataset": ("taxi_mlops_windows", "BigQuery dataset of the per-window split tables"),
    "predictions_table": (
        "{project}.taxi_mlops.predictions",
        "the batch scores (taxi_batch_scoring), partitioned by day: one partition per scored day",
    ),
    "gke_cluster": (
        "taxi-mlops",
        "GKE cluster of the TFJobs and of TF-Serving (Kubeflow's training operator installed)",
    ),
    "gke_location": ("{region}", "location of the GKE cluster (a region or a zone)"),
    "namespace": ("taxi-mlops", "Kubernetes namespace of the TFJobs, pods and TF-Serving"),
    "runtime_image": (
        "{region}-docker.pkg.dev/{project}/taxi-mlops/taxi-mlops-runtime:latest",
        "the image of docker/runtime: TFJob pods, Dataflow's SDK container, the window comparison pod "
        "(pin it by digest in production: <name>@sha256:<digest>)",
    ),
    "serving_image": (
        "tensorflow/serving:2.19.0",
        "the TF-Serving image of the model server Deployment "
        "(pin it by digest in production: tensorflow/serving@sha256:...)",
    ),
    "vertex_serving_image": (
        "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-17:latest",
        "Vertex AI's prebuilt TensorFlow serving container of the uploaded models",
    ),
    "service_account": (
        "taxi-mlops@{project}.iam.gserviceaccount.com",
        "the Google service account of the Dataflow workers (and, via Workload Identity, of the pods)",
    ),
    "k8s_service_account": (
        "taxi-mlops",
        "the Kubernetes service account of the TFJob, comparison and TF-Serving pods",
    ),
    "endpoint_id": ("1716", "the Vertex AI endpoint (numeric id) the champion is deployed to; created once"),
    "conn_id": ("google_cloud_default", "the Airflow connection to Google Cloud"),
}


def _variable(key: str) -> str | None:
    """An Airflow Variable, if Airflow can be asked for one here (not while a test parses a DAG offline)."""
    try:
        from airflow.sdk import Variable

        return Variable.get(key, default=None)
    except Exception:  # noqa: BLE001 - no API server/metastore to ask: the default applies
        return None


ENV_ONLY = ("conn_id",)


def _env(name: str) -> str | None:
    return os.environ.get(f"TAXI_GCP_{name.upper()}") or None


def conn_id() -> str:
    """The Airflow connection to Google Cloud: from the environment only (the hooks take it before
    any template is rendered)."""
    return _env("conn_id") or DEFAULTS["conn_id"][0]


def _lookup(name: str) -> str | None:
    return _env(name) or (None if name in ENV_ONLY else _variable(f"taxi_gcp_{name}"))


def _expression(name: str) -> str:
    """A Jinja expression of a setting's value at run time: the environment's at parse time, else
    the Airflow Variable's, else the default (which may use the project's and region's expressions)."""
    import string

    env = _env(name)
    if env:
        return repr(env)
    default = DEFAULTS[name][0]
    if name in ENV_ONLY:
        return repr(default)
    if default is None:
        return f"var.value.taxi_gcp_{name}"
    parts = []
    for literal, field, _spec, _conv in string.Formatter().parse(default):
        if literal:
            parts.append(repr(literal))
        if field:
            parts.append(f"({_expression(field)})")
    return f"var.value.get('taxi_gcp_{name}', {' ~ '.join(parts)})"


@dataclass(frozen=True)
class GcpSettings:
    project: str
    region: str
    bucket: str
    bq_location: str
    source_table: str
    extract_dataset: str
    predictions_table: str
    gke_cluster: str
    gke_location: str
    namespace: str
    runtime_image: str
    serving_image: str
    vertex_serving_image: str
    service_account: str
    k8s_service_account: str
    endpoint_id: str
    conn_id: str

    @property
    def root(self) -> str:
        return f"gs://{self.bucket}"

    @property
    def artifact_root(self) -> str:
        return f"{self.root}/artifacts"

    @property
    def serving_root(self) -> str:
        return f"{self.root}/serving"

    @property
    def dataflow_temp(self) -> str:
        return f"{self.root}/dataflow/temp"

    @property
    def dataflow_staging(self) -> str:
        return f"{self.root}/dataflow/staging"

    def console(self, path: str) -> str:
        return f"https://console.cloud.google.com/{path}?project={self.project}"


def get_gcp_settings() -> GcpSettings:
    values: dict[str, str] = {}
    project = _lookup("project")
    if not project:
        raise ValueError(
            "TAXI_PLATFORM=gcp needs the Google Cloud project: set TAXI_GCP_PROJECT "
            "(or the Airflow Variable taxi_gcp_project); see README, 'The gcp platform'"
        )
    values["project"] = project
    region = _lookup("region") or DEFAULTS["region"][0]
    values["region"] = region
    for field in fields(GcpSettings):
        if field.name in values:
            continue
        values[field.name] = _lookup(field.name) or DEFAULTS[field.name][0].format(project=project, region=region)
    return GcpSettings(**values)


def known_at_parse(name: str) -> str | None:
    """A setting's value when a DAG file is parsed: its environment variable, or its default made
    from the environment's project (None when it depends on a Variable: parsing asks none)."""
    value = _env(name)
    if value:
        return value
    project, default = _env("project"), DEFAULTS[name][0]
    if project and default:
        return default.format(project=project, region=_env("region") or DEFAULTS["region"][0])
    return None


def gcp_templates() -> GcpSettings:
    """The settings for a DAG file, with no Variable asked: each is the environment's value, or a
    template that resolves it (Variable, else default) when the task runs. Use them only in
    templated fields."""
    values = {}
    for field in fields(GcpSettings):
        env = _env(field.name)
        if env or field.name in ENV_ONLY:
            values[field.name] = env or DEFAULTS[field.name][0]
        else:
            values[field.name] = "{{ " + _expression(field.name) + " }}"
    return GcpSettings(**values)


def dotted_part(value: str, index: int) -> str:
    """Part `index` of a dotted name (project.dataset.table), of a value or of a gcp_templates() template."""
    if value.startswith("{{") and value.endswith("}}"):
        return "{{ (" + value[2:-2].strip() + ").split('.')[" + str(index) + "] }}"
    return value.split(".")[index]
