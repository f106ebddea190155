"""The whole gcp DAG, run offline (issue 22 item 6): taxi_daily_retrain for one window, then
taxi_serving_rollback, parsed with TAXI_PLATFORM=gcp and run with dag.test(). Every task runs its
real gcp operator code; only Google's services and the cluster are stand-ins, at the client boundary:

- GCS: the in-process gcp-storage-emulator (tests/gcs_emulator.py) for the Airflow side (gcsfs, the
  GCS hook) and Beam (STORAGE_EMULATOR_HOST); TensorFlow's own gs:// filesystem reaches it through
  an HTTPS CONNECT proxy (tests/standins/gcs_tls_proxy.py).
- BigQuery (wait_for_window, extract_window): BigQueryHook answered by the DuckDB warehouse of the
  real sample (tests/standins/bigquery.py): the window SQL's real rows land in the emulated bucket.
- Dataflow (<variant>.transform): the DataflowRunner's command line run by Beam's local
  engine, the job state through DataflowHook's API (tests/standins/dataflow.py).
- GKE (<variant>.train TFJob, .evaluate and .check_export pods, TF-Serving's Deployment and Service in
  promote_champion): the Kubernetes stand-in behind the real GKE hook (tests/standins/gke.py); its
  pods and TFJob replicas are processes of .venv-runtime.
- Vertex AI (push, promote_champion, roll_back): the fake model and endpoint services behind the
  provider's hooks (tests/standins/vertex.py).

Not stood in (said where it matters): TF-Serving itself (the Deployment is applied and its rollout
reported complete, but no model server runs: the tensorflow/serving image's binary is not here, so
its readiness probe is not exercised) and Vertex AI's serving of the uploaded models (the fake
records uploads, deployments and traffic; nothing predicts).

Precondition seeded (a second window's full run would double the test's time): an earlier window's
champion `taxi` version 201512010000 labelled `stable` in the serving root and deployed on the
endpoint with all the traffic, so the rollback has a version to go back to. Its SavedModel is a
placeholder: nothing in this test loads the served `taxi` model (the variants' evaluation baselines
are `taxi_standard` / `taxi_coarse`, which start empty).
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parents[2]
LOGICAL_DATE = datetime(2016, 1, 1, tzinfo=UTC)
VERSION, PREVIOUS_VERSION = 201601010000, 201512010000
CONF = {"window_days": 365, "train_steps": 300, "eval_steps": 50, "workers": 1}  # 300 steps: the blessing bar's
SOURCE_TABLE = "taxi-test.chicago_taxi_trips.taxi_trips"  # the gcp settings' default for project taxi-test
NAMESPACE = "taxi-mlops"
WATCHDOG_SECONDS = 1200  # a hung stand-in ends the session with every thread's stack, not a silent hang
TASK_TIMEOUT = timedelta(minutes=4)  # the slowest task (a transform) takes ~90 s here
VARIANT_STEPS = ("transform", "train", "evaluate", "check_export", "push")


def _seed_previous_champion(serving: str, vertex) -> str:
    """An earlier window's champion, served and deployed with all the traffic (see the module's docstring).
    Returns its deployed model id."""
    import tempfile

    from standins.vertex import LOCATION, EndpointClient, ModelClient
    from taxi_pipeline.serving_root import DeploymentRecord, ServingRoot

    with tempfile.TemporaryDirectory() as model:
        Path(model, "saved_model.pb").write_text("placeholder of an earlier window's SavedModel")
        ServingRoot(serving).push_and_label(
            DeploymentRecord(
                model="taxi",
                version=PREVIOUS_VERSION,
                variant="standard",
                dag_id="taxi_daily_retrain",
                run_id="scheduled__2015-12-01T00:00:00+00:00",
                window="[2014-12-01, 2015-12-01)",
                source=model,
                metrics={"auc": 0.9},
                reasons=[],
            ),
            "stable",
        )
    upload = (
        ModelClient(vertex)
        .upload_model(
            {
                "parent": LOCATION,
                "model": {
                    "display_name": "taxi",
                    "artifact_uri": f"{serving}/taxi/{PREVIOUS_VERSION}",
                    "container_spec": {"image_uri": "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-17:latest"},
                    "version_aliases": [f"v{PREVIOUS_VERSION}"],
                },
            }
        )
        .result()
    )
    endpoints = EndpointClient(vertex)
    endpoints.create_endpoint({"parent": LOCATION, "endpoint_id": "1716", "endpoint": {"display_name": "taxi"}})
    deployed = endpoints.deploy_model(
        {
            "endpoint": f"{LOCATION}/endpoints/1716",
            "traffic_split": {"0": 100},
            "deployed_model": {
                "model": f"{upload.model}@{upload.model_version_id}",
                "display_name": "taxi",
                "dedicated_resources": {"machine_spec": {"machine_type": "n1-standard-2"}, "min_replica_count": 1},
            },
        }
    ).result()
    return deployed.deployed_model.id


def _failing_fast(dag, stack: contextlib.ExitStack):
    """The DAG's failures fail the run at once (a dead stand-in must not look like a slow one): no
    retries, a task timeout, and the sensors give up instead of deferring for hours; the TFJob is
    polled every 5 s instead of 30 (a cadence, not a behaviour). Set on the session's parsed DAG (a
    deep copy loses the extra links' state) and restored on exit."""
    from airflow.sdk import BaseSensorOperator

    from taxi_pipeline.operators.tfjob import TFJobTrainOperator

    for task in dag.tasks:
        names = ("retries", "execution_timeout", "timeout", "poke_interval")
        saved = {k: getattr(task, k) for k in names if hasattr(task, k)}
        stack.callback(lambda t=task, v=saved: [setattr(t, k, x) for k, x in v.items()])
        task.retries, task.execution_timeout = 0, TASK_TIMEOUT
        if isinstance(task, BaseSensorOperator):
            task.timeout = 60
        if isinstance(task, TFJobTrainOperator):
            task.poke_interval = 5
    return dag


def _states(dag_run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


@pytest.fixture(scope="module")
def offline_gcp(airflow_db, warehouse):
    """Both DAGs run once inside the stand-ins; yields what the tests read, the stand-ins still up."""
    from gcp_dag import gcp_dag
    from gcs_emulator import ROOT, running
    from standins.bigquery import bigquery_over_warehouse
    from standins.dataflow import dataflow_standin
    from standins.gcs_tls_proxy import GcsTlsProxy
    from standins.gke import kubernetes_standin
    from standins.vertex import vertex_behind_hooks
    from taxi_pipeline.dag_defaults import run_in_process

    faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True)
    with contextlib.ExitStack() as stack:
        stack.callback(faulthandler.cancel_dump_traceback_later)
        daily = _failing_fast(gcp_dag("taxi_daily_retrain"), stack)
        rollback = _failing_fast(gcp_dag("taxi_serving_rollback"), stack)
        emulator = stack.enter_context(running())
        emulator_host = os.environ["STORAGE_EMULATOR_HOST"]
        proxy = stack.enter_context(GcsTlsProxy(int(emulator_host.rsplit(":", 1)[1])))
        runtime_env = {
            **proxy.env(),
            "STORAGE_EMULATOR_HOST": emulator_host,
            "PYTHONPATH": str(REPO / "tests" / "standins" / "runtime_site"),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        stack.enter_context(mock.patch.dict(os.environ, TAXI_PLATFORM="gcp"))
        cluster = stack.enter_context(kubernetes_standin(extra_env=runtime_env))
        bigquery = stack.enter_context(bigquery_over_warehouse(warehouse, SOURCE_TABLE))
        vertex = stack.enter_context(vertex_behind_hooks())
        dataflow = stack.enter_context(dataflow_standin(runtime_env))
        serving = f"{ROOT}/serving"
        previous_deployed = _seed_previous_champion(serving, vertex)
        vertex.calls.clear()

        started = time.monotonic()
        daily_run = run_in_process(daily, logical_date=LOGICAL_DATE, run_conf=CONF)
        daily_seconds = time.monotonic() - started
        served = _serving_state(serving)
        comparison = _comparison(daily, daily_run)
        endpoint_after_daily = _endpoint(vertex)
        calls_before_rollback = len(vertex.calls)
        started = time.monotonic()
        rollback_run = run_in_process(
            rollback,
            logical_date=datetime(2016, 1, 2, tzinfo=UTC),
            run_conf={
                "model": "taxi",
                "target_version": "previous",
                "reason": "offline test: the new champion is rolled back",
            },
        )
        rollback_seconds = time.monotonic() - started
        print(f"daily run {daily_seconds:.0f} s, rollback {rollback_seconds:.0f} s")
        yield {
            "daily_run": daily_run,
            "rollback_run": rollback_run,
            "served": served,
            "comparison": comparison,
            "after_rollback": _serving_state(serving),
            "endpoint_after_daily": endpoint_after_daily,
            "endpoint_after_rollback": _endpoint(vertex),
            "previous_deployed": previous_deployed,
            "rollback_calls": [name for name, _ in vertex.calls[calls_before_rollback:]],
            "cluster": cluster,
            "bigquery": bigquery,
            "vertex": vertex,
            "dataflow": dataflow,
            "proxy": proxy,
            "emulator": emulator,
            "serving": serving,
        }


def _serving_state(serving: str) -> dict:
    from taxi_pipeline import files
    from taxi_pipeline.serving_root import ServingRoot

    root = ServingRoot(serving)
    return {
        "versions": {m: root.versions(m) for m in ("taxi", "taxi_standard", "taxi_coarse")},
        "retired": root.retired_versions("taxi"),
        "labels": root.labels("taxi"),
        "record": root.record("taxi", VERSION),
        "rollbacks": root.rollbacks("taxi"),
        "models_config": files.read_text(f"{serving}/models.config"),
        "saved_model_bytes": (
            len(files.read_bytes(f"{serving}/taxi/{VERSION}/saved_model.pb"))
            if files.exists(f"{serving}/taxi/{VERSION}/saved_model.pb")
            else 0
        ),
    }


def _comparison(dag, dag_run) -> list[dict]:
    """The run's compare_variants output (comparison.json in the emulated bucket)."""
    from taxi_pipeline import files
    from taxi_pipeline.run_context import run_layout

    params = {**{k: v.value for k, v in dag.params.items()}, **CONF}
    layout = run_layout(
        {"dag": dag, "run_id": dag_run.run_id, "params": params, "data_interval_end": dag_run.data_interval_end}
    )
    assert layout.run_dir.startswith("gs://")
    return files.read_json(f"{layout.run_dir}/comparison.json")


def _endpoint(vertex) -> dict:
    """The endpoint's deployed models: deployed model id -> (model version alias, traffic %)."""
    endpoint = vertex.endpoints["1716"]
    aliases = {f"{i}@{v.version_id}": v.version_aliases[0] for i, m in vertex.models.items() for v in m["versions"]}
    return {
        d.id: (
            aliases[f"{d.model.split('@')[0].rsplit('/', 1)[-1]}@{d.model_version_id}"],
            endpoint["traffic"].get(d.id, 0),
        )
        for d in endpoint["deployed"]
    }


@pytest.mark.slow
def test_every_task_of_the_gcp_daily_run_succeeds_on_the_stand_ins(offline_gcp):
    run = offline_gcp["daily_run"]
    states = _states(run)
    assert run.state == "success", states
    assert states == {
        **{
            t: "success"
            for t in (
                "wait_for_window",
                "extract_window",
                "validate_window",
                "select_variants",
                "wait_for_previous_deploys",
                "compare_variants",
                "decide_approval",
                "promote_champion",
                "data_report",
                "model_report",
                *(f"{v}.{s}" for v in ("standard", "coarse") for s in VARIANT_STEPS),
            )
        },
        "approve_champion": "skipped",  # require_approval=never: nobody is asked
    }

    bigquery = offline_gcp["bigquery"]
    assert bigquery.partition_checks == [(SOURCE_TABLE, "2015123123")]
    queries = [j for j in bigquery.jobs.values() if "query" in j.configuration]
    assert len(queries) == 4 and len(bigquery.jobs) == 8  # window and reference x train and eval
    train_rows = len(bigquery.tables[next(t for t in bigquery.tables if t.endswith("__window_train"))][1])
    assert train_rows > 4000  # the real 2015 rows of the sample

    dataflow = offline_gcp["dataflow"]
    assert sorted(j["name"] for j in dataflow.jobs.values()) == [
        f"daily-retrain-20150101t0000-20160101t0000-{v}-transform" for v in ("coarse", "standard")
    ]
    assert {j["currentState"] for j in dataflow.jobs.values()} == {"JOB_STATE_DONE"}
    assert all("--runner=DataflowRunner" in c and "--project=taxi-test" in c for c in dataflow.commands)

    cluster = offline_gcp["cluster"]
    tfjobs = [c for c in cluster.created if c["kind"] == "TFJob"]
    assert len(tfjobs) == 2
    assert all(j["body"]["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] == 1 for j in tfjobs)
    ran = [" ".join(c["argv"][1:4]) for c in cluster.commands]
    assert sum("-m taxi_model.trainer" in r for r in ran) == 2, ran
    assert sum("-m taxi_model.export_check" in r for r in ran) == 2, ran
    assert sum("-m taxi_model.evaluate" in r for r in ran) == 2, ran
    assert any("--transform_output gs://" in " ".join(c["argv"]) for c in cluster.commands)
    deployment = cluster.deployment(NAMESPACE, "taxi-serving")  # applied; no model server runs (module doc)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "tensorflow/serving:2.19.0"
    assert cluster.service(NAMESPACE, "taxi-serving")["spec"]["clusterIP"]
    policy = cluster.network_policy(NAMESPACE, "taxi-serving")  # who may reach TF-Serving: set before its pods
    assert policy["spec"]["podSelector"] == deployment["spec"]["selector"]
    assert not cluster.unhandled, cluster.unhandled
    assert any("CONNECT www.googleapis.com:443" in r for r in offline_gcp["proxy"].requests)  # TF used gs://


@pytest.mark.slow
def test_the_champion_is_served_at_stable_and_gets_all_the_vertex_traffic(offline_gcp):
    served = offline_gcp["served"]
    assert served["versions"] == {
        "taxi": [PREVIOUS_VERSION, VERSION],
        "taxi_standard": [VERSION],
        "taxi_coarse": [VERSION],
    }
    assert served["labels"] == {"stable": VERSION}
    assert served["record"]["run_id"] == offline_gcp["daily_run"].run_id
    comparison = offline_gcp["comparison"]
    assert [row["variant"] for row in comparison] == ["standard", "coarse"]
    assert all(row["blessed"] and 0.88 <= row["auc"] <= 1.0 for row in comparison), comparison  # real models
    assert served["record"]["variant"] == max(comparison, key=lambda r: r["auc"])["variant"]
    assert served["saved_model_bytes"] > 10_000  # the trained SavedModel, copied from the run's artifacts
    assert f'version_labels {{ key: "stable" value: {VERSION} }}' in served["models_config"]
    endpoint = offline_gcp["endpoint_after_daily"]
    previous = offline_gcp["previous_deployed"]
    new = [d for d, (alias, _) in endpoint.items() if alias == f"v{VERSION}"]
    assert len(new) == 1 and endpoint[new[0]][1] == 100
    assert endpoint[previous] == (f"v{PREVIOUS_VERSION}", 0)  # kept deployed at 0%: a rollback is a switch


@pytest.mark.slow
def test_the_rollback_moves_the_labels_and_the_vertex_traffic_back(offline_gcp):
    run = offline_gcp["rollback_run"]
    assert run.state == "success", _states(run)
    after = offline_gcp["after_rollback"]
    assert after["versions"]["taxi"] == [PREVIOUS_VERSION] and after["retired"] == [VERSION]
    assert after["labels"] == {"stable": PREVIOUS_VERSION}
    assert f'version_labels {{ key: "stable" value: {PREVIOUS_VERSION} }}' in after["models_config"]
    (record,) = after["rollbacks"]
    assert (record["from"], record["to"]) == (VERSION, PREVIOUS_VERSION)
    endpoint = offline_gcp["endpoint_after_rollback"]
    previous = offline_gcp["previous_deployed"]
    assert endpoint[previous] == (f"v{PREVIOUS_VERSION}", 100)
    assert [traffic for alias, traffic in endpoint.values() if alias == f"v{VERSION}"] == [0]
    calls = offline_gcp["rollback_calls"]  # a traffic switch: nothing uploaded, deployed or undeployed
    assert "update_endpoint" in calls and not {"upload_model", "deploy_model", "undeploy_model"} & set(calls)
