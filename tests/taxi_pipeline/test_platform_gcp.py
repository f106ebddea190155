"""The gcp platform, offline: the DAGs parse with TAXI_PLATFORM=gcp without credentials or network,
have the local platform's shape, and every task renders for a window into objects that validate
(the TFJob read back by the Kubeflow training SDK's models, and its pods, Deployment, Service and the
runtime pods with kubernetes-validate; Dataflow's PipelineOptions; the window SQL is the local
platform's text)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taxi_pipeline.settings import REPO_ROOT

RENDER = Path(__file__).with_name("gcp_render.py")
K8S_VERSION = "1.30.0"

# Parses and renders the gcp DAGs in fresh interpreters (~40 s): outside `make check`.
pytestmark = pytest.mark.slow


def _run(platform: str, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAXI_GCP_", "GOOGLE_", "AIRFLOW_CONN_"))}
    env.update(
        TAXI_PLATFORM=platform,
        TAXI_GCP_PROJECT="taxi-test",
        # no network: any attempt to reach Google fails fast instead of passing by luck
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        NO_PROXY="",
        AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="0",
    )  # a loaded machine parses slowly; not what is tested here
    out = subprocess.run([sys.executable, str(RENDER), *args], env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(text for text in out.stdout.splitlines() if text.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


@pytest.fixture(scope="module")
def gcp():
    return _run("gcp", "render")


@pytest.fixture(scope="module")
def local():
    return _run("local")


def test_the_gcp_dags_parse_offline_with_the_local_shape(gcp, local):
    assert gcp["import_errors"] == {}
    # the settings are templates read when a task runs: parsing asks the metadata DB for no Variable
    assert gcp["variables_asked_while_parsing"] == []
    assert {d: v["tasks"] for d, v in gcp["dags"].items()} == {d: v["tasks"] for d, v in local["dags"].items()}


def _every_string(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _every_string(v)
    elif isinstance(value, list):
        for v in value:
            yield from _every_string(v)
    elif isinstance(value, str):
        yield value


@pytest.mark.parametrize(
    "dag_id", ["taxi_daily_retrain", "taxi_sliding_window", "taxi_batch_scoring", "taxi_model_monitor"]
)
def test_every_task_renders_with_gcs_paths(gcp, dag_id):
    rendered = gcp["dags"][dag_id]["rendered"]
    for task_id, entry in rendered.items():
        for text in _every_string(entry):
            assert "{{" not in text and "{%" not in text, (task_id, text)
            # No local data path; the project's own code (e.g. the Beam pipeline file the Dataflow
            # launcher runs) may live anywhere, /tmp included, and is left out of the check.
            data = text.replace(str(REPO_ROOT), "<repo>").replace("mountPath", "")
            assert "/.taxi/" not in data and "/tmp/" not in data, (task_id, text)
    beam = next((e for t, e in rendered.items() if t.endswith((".transform", "score_trips"))), None)
    if beam:
        assert beam["pipeline_options"]["output"].startswith(f"gs://taxi-test-taxi-mlops/artifacts/{dag_id}/window=")


def test_batch_scoring_runs_on_dataflow_and_loads_the_days_partition(gcp):
    rendered = gcp["dags"]["taxi_batch_scoring"]["rendered"]
    score = rendered["score_trips"]
    assert score["runner"] == "DataflowRunner" and score["py_file"] == "taxi_model.batch_score"
    options = score["pipeline_options"]
    assert options["model"] == "gs://taxi-test-taxi-mlops/serving/taxi/201601010000"
    assert options["model_version"] == "201601010000" and options["day"] == "2016-01-01"
    assert options["trips"].endswith("/data/day/*/part-*.csv")
    load = rendered["load_predictions"]
    assert load["operator"] == "GCSToBigQueryOperator"
    # the day's partition only, replaced whole: a rerun of the day leaves no duplicate
    assert load["destination_project_dataset_table"] == "taxi-test.taxi_mlops.predictions$20160101"
    assert load["write_disposition"] == "WRITE_TRUNCATE" and load["time_partitioning"]["field"] == "day"
    assert load["bucket"] == "taxi-test-taxi-mlops"
    (objects,) = load["source_objects"]
    assert objects.startswith("artifacts/taxi_batch_scoring/window=20160101T0000-20160102T0000/run=")
    assert objects.endswith("/scores/predictions-*.csv")


def _validate_k8s(obj):
    import kubernetes_validate

    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def _train_manifests(gcp) -> list[dict]:
    return [
        entry["tfjob"]
        for dag in gcp["dags"].values()
        for task_id, entry in dag.get("rendered", {}).items()
        if task_id.endswith(".train")
    ]


def _sdk_round_trip(manifest: dict):
    """The manifest read into the SDK's KubeflowOrgV1TFJob (client-side validation on), and back."""
    from kubeflow.training import ApiClient
    from kubeflow.training.models import KubeflowOrgV1TFJob

    from taxi_pipeline.k8s import check_tfjob

    job = check_tfjob(manifest)
    assert isinstance(job, KubeflowOrgV1TFJob)
    assert ApiClient().sanitize_for_serialization(job) == manifest  # nothing dropped or changed
    return job


def test_the_tfjob_reads_back_into_the_sdk_models_and_its_pods_validate_as_pods(gcp):
    from taxi_pipeline.k8s import RUNTIME_UID, security_context

    manifests = _train_manifests(gcp)
    assert len(manifests) == 4  # one per DAG and branch
    for job in manifests:
        model = _sdk_round_trip(job)
        assert model.spec.run_policy.clean_pod_policy == "Running" and model.spec.run_policy.backoff_limit == 2
        assert list(model.spec.tf_replica_specs) == ["Worker"]
        worker = job["spec"]["tfReplicaSpecs"]["Worker"]
        assert worker["replicas"] == 2 and type(worker["replicas"]) is int  # the `workers` Param's default
        assert worker["restartPolicy"] == "ExitCode"
        template = worker["template"]
        assert template["spec"]["automountServiceAccountToken"] is False  # no API token in a training pod
        assert template["spec"]["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
        _validate_k8s(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": job["metadata"]["name"], **template["metadata"]},
                "spec": template["spec"],
            }
        )
        container = template["spec"]["containers"][0]
        assert container["securityContext"] == security_context(RUNTIME_UID)  # non-root, read-only root
        assert not any(e["name"] == "TF_CONFIG" for e in container["env"])  # the training operator sets it
        assert container["image"].endswith("taxi-mlops-runtime:latest")
        assert container["args"][container["args"].index("--train_steps") + 1] == "300"


def test_the_worker_count_renders_from_the_workers_param_as_an_integer(gcp):
    import yaml

    from taxi_pipeline.k8s import WORKERS_TEMPLATE, tfjob_yaml
    from taxi_pipeline.operators.tfjob import TFJobTrainOperator

    window = _train_manifests(gcp)[0]
    templated = json.loads(json.dumps(window))
    templated["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] = WORKERS_TEMPLATE
    op = TFJobTrainOperator(
        task_id="train", yaml_conf=tfjob_yaml(templated), location="us-central1", cluster_name="c", project_id="p"
    )
    op.render_template_fields({"params": {"workers": 3}})
    job = yaml.safe_load(op.yaml_conf)
    model = _sdk_round_trip(job)
    assert model.spec.tf_replica_specs["Worker"].replicas == 3
    assert job["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] == 3
    job["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] = 2
    assert job == window  # and nothing else moved


def test_a_bad_tfjob_is_refused():
    from taxi_pipeline.k8s import check_tfjob, tfjob

    def refused(change, match: str):
        job = tfjob(name="x", namespace="n", image="i", arguments=[], service_account="s", workers=2, labels={})
        change(job, job["spec"]["tfReplicaSpecs"]["Worker"])
        with pytest.raises(ValueError, match=match):
            check_tfjob(job)

    refused(lambda job, worker: worker.update(restartPolicy="Sometimes"), "'Sometimes' is not one of Always")
    refused(
        lambda job, worker: job["spec"]["runPolicy"].update(cleanPodPolicy="Sometimes"), "'Sometimes' is not one of All"
    )
    refused(lambda job, worker: job["spec"].update(tfReplicaSpecs={"Workers": worker}), "not a TFJob replica type")
    refused(lambda job, worker: worker.update(replicas="{{ params.workers }}"), "invalid literal for int")
    refused(lambda job, worker: worker.update(replicas="3"), r"replicas: '3' -> 3")
    refused(
        lambda job, worker: worker["template"]["spec"]["containers"][0].update(imagePullPolicyy="Always"),
        r"imagePullPolicyy: 'Always' -> '<missing>'",
    )  # a field the models do not know
    refused(lambda job, worker: job["spec"].pop("runPolicy"), "`run_policy`, must not be `None`")
    refused(lambda job, worker: worker["template"]["spec"]["containers"][0].pop("name"), "`name`, must not be `None`")


def test_tf_serving_deployment_service_and_runtime_pods_validate(gcp):
    promote = gcp["dags"]["taxi_daily_retrain"]["rendered"]["promote_champion"]
    deployment, service = promote["deployment"], promote["service"]
    _validate_k8s(deployment)
    _validate_k8s(service)
    _validate_k8s(promote["network_policy"])
    # TF-Serving (no authentication of its own) is reachable from the project's pods and its clients only
    (rule,) = promote["network_policy"]["spec"]["ingress"]
    assert promote["network_policy"]["spec"]["podSelector"] == deployment["spec"]["selector"]
    assert {p["port"] for p in rule["ports"]} == {8500, 8501}
    assert {"namespaceSelector": {"matchLabels": {"taxi-mlops/serving-client": "true"}}} in rule["from"]
    pod_spec = deployment["spec"]["template"]["spec"]
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in container["ports"]} == {8500, 8501}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models/taxi"
    assert "--model_config_file=gs://taxi-test-taxi-mlops/serving/models.config" in container["args"]
    assert container["securityContext"]["readOnlyRootFilesystem"] and container["resources"]["limits"]
    assert {p["port"] for p in service["spec"]["ports"]} == {8500, 8501}
    assert promote["traffic_split"] == {"0": 100} and promote["endpoint_id"].isdigit()
    for dag in gcp["dags"].values():
        for task_id, entry in dag.get("rendered", {}).items():
            if "pod" in entry:
                _validate_k8s(entry["pod"])
                assert entry["pod"]["spec"]["automountServiceAccountToken"] is False, task_id
                assert entry["pod"]["spec"]["volumes"][0]["emptyDir"] == {"sizeLimit": "1Gi"}, task_id


def test_runtime_pods_have_one_name_per_run(gcp):
    from taxi_pipeline.operators.gcp import run_pod_name

    rendered = gcp["dags"]["taxi_sliding_window"]["rendered"]
    pod = rendered["compare_windows"]["pod"]
    run_id = "scheduled__2015-02-01T00:00:00+00:00"
    assert pod["metadata"]["name"] == run_pod_name("taxi_sliding_window", "compare_windows", run_id)
    assert pod["metadata"]["name"].startswith("taxi-sliding-window-compare-windows-")
    assert rendered["compare_windows"]["random_name_suffix"] is False
    assert (
        run_pod_name("taxi_sliding_window", "compare_windows", "manual__2015-02-01T00:00:00+00:00")
        != pod["metadata"]["name"]
    )
    names = [
        e["pod"]["metadata"]["name"] for d in gcp["dags"].values() for e in d.get("rendered", {}).values() if "pod" in e
    ]
    assert len(set(names)) == len(names)  # check_export of each variant and DAG, compare_windows: all distinct


def test_dataflow_pipeline_options_are_complete_and_valid_for_the_dataflow_runner(gcp, monkeypatch):
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, WorkerOptions
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner

    # the validator's one network call: a warning about the buckets' soft-delete policy
    monkeypatch.setattr(GoogleCloudOptions, "_warn_if_soft_delete_policy_enabled", lambda self, arg: None)
    names = set()
    for dag in gcp["dags"].values():
        for entry in dag.get("rendered", {}).values():
            if entry["operator"] != "BeamRunPythonPipelineOperator":
                continue
            assert entry["runner"] == "DataflowRunner" and entry["dataflow"]["append_job_name"] is False
            options = {
                **entry["pipeline_options"],
                "project": entry["dataflow"]["project_id"],
                "region": entry["dataflow"]["location"],
                "job_name": entry["job_name"],
                "service_account_email": entry["dataflow"]["service_account"],
            }
            args = [f"--{k}={v}" for k, v in options.items() if not isinstance(v, (list, dict))]
            args += [f"--experiments={e}" for e in options["experiments"]]
            pipeline_options = PipelineOptions(args)
            assert PipelineOptionsValidator(pipeline_options, DataflowRunner()).validate() == []
            gcp_options = pipeline_options.view_as(GoogleCloudOptions)
            assert gcp_options.temp_location.startswith("gs://") and gcp_options.region == "us-central1"
            assert pipeline_options.view_as(WorkerOptions).sdk_container_image.endswith("taxi-mlops-runtime:latest")
            names.add(entry["job_name"])
    # one per DAG, window and branch, deterministic and distinct: the transforms (2 variants, recent and
    # long) and the day's scoring; evaluate is a runtime pod, not a Dataflow job
    assert len(names) == 5
    assert "daily-retrain-20150101t0000-20160101t0000-standard-transform" in names


def test_the_monitor_waits_for_and_exports_the_days_partition(gcp):
    rendered = gcp["dags"]["taxi_model_monitor"]["rendered"]
    wait = rendered["wait_for_scores"]
    assert wait["operator"] == "BigQueryTablePartitionExistenceSensor"
    assert (wait["project_id"], wait["dataset_id"], wait["table_id"]) == ("taxi-test", "taxi_mlops", "predictions")
    assert wait["partition_id"] == "20160101"
    export = rendered["export_predictions"]
    assert export["source_project_dataset_table"] == "taxi-test.taxi_mlops.predictions$20160101"
    (uri,) = export["destination_cloud_storage_uris"]
    assert uri.startswith("gs://taxi-test-taxi-mlops/artifacts/taxi_model_monitor/window=20160101T0000-20160102T0000/")
    assert uri.endswith("/predictions/part-*.csv")


def test_extract_runs_the_window_sql_the_local_platform_translates(gcp):
    from taxi_pipeline.queries import LOCAL_SOURCE_TABLE, bigquery_sql, duckdb_sql

    extract = gcp["dags"]["taxi_daily_retrain"]["rendered"]["extract_window"]
    jobs = extract["jobs"]
    assert {(j["window"], j["split"]) for j in jobs} == {
        (w, s) for w in ("window", "reference") for s in ("train", "eval")
    }
    source = "`taxi-test.chicago_taxi_trips.taxi_trips`"
    for job in jobs:
        query = job["query"]["configuration"]["query"]
        assert query["query"] == bigquery_sql("window", source)
        assert query["writeDisposition"] == "WRITE_TRUNCATE"
        assert job["export"]["destination_cloud_storage_uris"][0].endswith(
            f"/data/{'reference/' if job['window'] == 'reference' else ''}{job['split']}/part-*.csv"
        )
    # the same text, but for the table, is what the local platform translates for DuckDB
    local_text = query["query"].replace(source, LOCAL_SOURCE_TABLE)
    assert local_text == bigquery_sql("window", LOCAL_SOURCE_TABLE)
    assert duckdb_sql("window", LOCAL_SOURCE_TABLE)  # (duckdb_sql translates exactly that text)
    ids = [j["query"]["job_id"] for j in jobs] + [j["export"]["job_id"] for j in jobs]
    assert len(set(ids)) == len(ids)
    sliding = gcp["dags"]["taxi_sliding_window"]["rendered"]
    assert {j["window"] for j in sliding["extract_window"]["jobs"]} == {"newest", "recent", "long"}
    assert sliding["wait_for_window"]["partition_id"] == "2015013123"


def test_an_image_pinned_by_digest_goes_into_the_manifests_as_it_is():
    from taxi_pipeline.k8s import tf_serving_deployment, tfjob

    pinned = "tensorflow/serving@sha256:" + "0123456789abcdef" * 4
    deployment = tf_serving_deployment(
        namespace="ns",
        image=pinned,
        models_config="gs://b/serving/models.config",
        service_account="sa",
        ready_model="taxi",
    )
    _validate_k8s(deployment)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == pinned
    runtime = "us-docker.pkg.dev/p/taxi/runtime@sha256:" + "f" * 64
    job = tfjob(name="j", namespace="ns", image=runtime, arguments=[], service_account="sa", workers=1, labels={})
    assert job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["image"] == runtime
