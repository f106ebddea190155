"""The gcp platform's Vertex AI flow, executed offline: the gcp DAG's `<variant>.push` and
`promote_champion` tasks (taxi_pipeline.operators.gcp), rendered for a window and run for real
against the GCS emulator (the run's artifacts, the serving root) and a fake Vertex AI behind the
google provider's hooks.

The fake (tests/standins/vertex.py, shared with tests/dags/test_gcp_offline_run.py) is Vertex AI's
model and endpoint services as the GAPIC clients the provider's ModelServiceHook and
EndpointServiceHook call (`get_model_service_client` / `get_endpoint_service_client` patched): the
hooks build the requests, the fake checks them with the real request types of google-cloud-aiplatform
(an unknown field or a malformed resource name fails) and answers as Vertex AI does: an upload with
`parent_model` adds a version to that model, a deployment with the traffic split `{"0": 100}` gives
the new deployed model all the traffic, an undeployment removes a deployed model that has no traffic
(one with traffic: FailedPrecondition) and is recorded (`undeployed`: the deployed model ids, in order).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from google.api_core.exceptions import ServiceUnavailable

from gcp_dag import PROJECT, TaskStateStore, link_url, task_run
from gcs_emulator import ROOT
from standins.vertex import LOCATION, REGION, vertex_behind_hooks  # the fake, shared with the whole-DAG test

SERVING = f"{ROOT}/serving"
TF_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-17:latest"  # the default vertex_serving_image
DAY1 = (datetime(2015, 12, 31, tzinfo=UTC), datetime(2016, 1, 1, tzinfo=UTC))
DAY2 = (datetime(2016, 1, 1, tzinfo=UTC), datetime(2016, 1, 2, tzinfo=UTC))
DAY3 = (datetime(2016, 1, 2, tzinfo=UTC), datetime(2016, 1, 3, tzinfo=UTC))
DAY4 = (datetime(2016, 1, 3, tzinfo=UTC), datetime(2016, 1, 4, tzinfo=UTC))
CONSOLE = "https://console.cloud.google.com/vertex-ai"


@pytest.fixture
def gcp(emulator, monkeypatch):
    """TAXI_PLATFORM=gcp on an empty bucket, a fake Vertex AI behind the hooks (tests/standins/vertex.py),
    TF-Serving's apply recorded."""
    from taxi_pipeline.operators.tf_serving import TFServingDeployOperator

    emulator.wipe(keep_buckets=True)
    monkeypatch.setenv("TAXI_PLATFORM", "gcp")
    with vertex_behind_hooks() as vertex:
        vertex.tf_serving = []
        monkeypatch.setattr(
            TFServingDeployOperator,
            "execute",
            lambda self, context: vertex.tf_serving.append((self.deployment, self.service)),
        )
        yield vertex
    assert set(vertex.regions) <= {REGION}


def _artifacts(context, aucs: dict[str, float], blessed: tuple[str, ...] = ("standard", "coarse")) -> None:
    """What the run's earlier tasks leave in GCS: each variant's SavedModel, blessing and export check,
    and the comparison of the variants."""
    from taxi_pipeline import files
    from taxi_pipeline.run_context import run_layout

    layout = run_layout(context)
    assert layout.run_dir.startswith(f"{ROOT}/artifacts/taxi_daily_retrain/")
    for variant, auc in aucs.items():
        for name in ("variables/variables.index", "variables/variables.data-00000-of-00001", "saved_model.pb"):
            files.write_text(f"{layout.model_dir(variant)}/{name}", f"{variant} {context['run_id']} {name}")
        ok = variant in blessed
        files.write_text(
            f"{layout.evaluation_dir(variant)}/blessing.json",
            json.dumps(
                {"blessed": ok, "reasons": [] if ok else ["AUC below 0.88"], "metrics": {"auc": auc}, "baseline": None}
            ),
        )
        files.write_json(f"{layout.export_check_dir(variant)}/report.json", {"servable": True, "reasons": []})
    files.write_text(
        f"{layout.run_dir}/comparison.json",
        json.dumps([{"variant": v, "auc": a, "blessed": v in blessed} for v, a in aucs.items()]),
    )


def _push(window, try_number=1, variant="standard"):
    task, context = task_run("taxi_daily_retrain", f"{variant}.push", *window, try_number=try_number)
    return task, context, task.execute(context)


def _calls(vertex, method):
    return [request for name, request in vertex.calls if name == method]


def test_push_uploads_the_pushed_version_as_a_new_vertex_model_and_a_retry_reuses_it(gcp):
    from airflow.providers.google.cloud.links.vertex_ai import VertexAIModelLink

    from taxi_pipeline import files
    from taxi_pipeline.serving_root import ServingRoot

    _, context = task_run("taxi_daily_retrain", "standard.push", *DAY1)
    _artifacts(context, {"standard": 0.95, "coarse": 0.93})
    task, context, result = _push(DAY1)

    # the version is in the serving root first, then uploaded from there
    artifact_uri = f"{SERVING}/taxi_standard/201601010000"
    assert ServingRoot(SERVING).versions("taxi_standard") == [201601010000]
    assert files.read_text(f"{artifact_uri}/saved_model.pb").startswith("standard scheduled__2016-01-01")
    (upload,) = _calls(gcp, "upload_model")
    assert upload.parent_model == ""  # the first version: a new model
    model = upload.model
    assert model.display_name == "taxi_standard" and model.artifact_uri == artifact_uri
    assert model.container_spec.image_uri == TF_IMAGE
    assert list(model.version_aliases) == ["v201601010000"]
    assert dict(model.labels) == {"taxi-model": "taxi-standard", "taxi-version": "201601010000"}
    (model_id,) = gcp.models
    assert result == f"{LOCATION}/models/{model_id}@1"
    ti = context["ti"]
    assert ti.xcoms["model_id"] == model_id
    assert link_url(task, VertexAIModelLink, ti) == (
        f"{CONSOLE}/models/locations/{REGION}/models/{model_id}/versions/default/properties?project={PROJECT}"
    )

    # the retry (the upload's operation outlived the try): the version is found by its alias, not uploaded twice
    retry, retry_context, again = _push(DAY1, try_number=2)
    assert again == result and len(_calls(gcp, "upload_model")) == 1
    assert retry_context["ti"].xcoms["model_id"] == model_id
    assert link_url(retry, VertexAIModelLink, retry_context["ti"]) == link_url(task, VertexAIModelLink, ti)


def test_a_later_window_is_a_new_version_of_the_same_vertex_model(gcp):
    for window in (DAY1, DAY2):
        _, context = task_run("taxi_daily_retrain", "standard.push", *window)
        _artifacts(context, {"standard": 0.95, "coarse": 0.93})
        *_, result = _push(window)
    (model_id,) = gcp.models  # one model, two versions
    first, second = _calls(gcp, "upload_model")
    # parent_model: the model's resource name (the hook builds it from the id the operator passes)
    assert second.parent_model == f"{LOCATION}/models/{model_id}"
    assert second.model.artifact_uri == f"{SERVING}/taxi_standard/201601020000"
    assert list(second.model.version_aliases) == ["v201601020000"]
    assert [v.version_id for v in gcp.models[model_id]["versions"]] == ["1", "2"]
    assert result == f"{LOCATION}/models/{model_id}@2"


def test_an_unblessed_variant_is_neither_pushed_nor_uploaded(gcp):
    from airflow.sdk.exceptions import AirflowSkipException

    from taxi_pipeline import files

    _, context = task_run("taxi_daily_retrain", "coarse.push", *DAY1)
    _artifacts(context, {"standard": 0.95, "coarse": 0.81}, blessed=("standard",))
    with pytest.raises(AirflowSkipException, match="coarse was not blessed.*AUC below 0.88"):
        _push(DAY1, variant="coarse")
    assert gcp.calls == [] and files.list_files(SERVING) == []


def _promote(window, try_number=1, state=None):
    task, context = task_run("taxi_daily_retrain", "promote_champion", *window, try_number=try_number, state=state)
    return task, context, task.execute(context)


def test_promote_creates_the_endpoint_once_and_gives_the_champion_all_the_traffic(gcp):
    from airflow.providers.google.cloud.links.vertex_ai import VertexAIEndpointLink, VertexAIModelLink

    from taxi_pipeline.serving_root import ServingRoot

    _, context = task_run("taxi_daily_retrain", "promote_champion", *DAY1)
    _artifacts(context, {"standard": 0.93, "coarse": 0.95})
    task, context, result = _promote(DAY1)

    # the champion (the blessed variant with the best AUC) is version 201601010000 of `taxi`, labelled stable
    assert result["variant"] == "coarse" and result["version"] == 201601010000
    assert ServingRoot(SERVING).labels("taxi") == {"stable": 201601010000}
    assert len(gcp.tf_serving) == 1  # the TF-Serving Deployment and Service applied
    (upload,) = _calls(gcp, "upload_model")
    assert upload.model.display_name == "taxi" and upload.model.artifact_uri == f"{SERVING}/taxi/201601010000"
    assert upload.model.container_spec.image_uri == TF_IMAGE
    (model_id,) = gcp.models
    assert result["vertex_model"] == f"{LOCATION}/models/{model_id}@1"

    (create,) = _calls(gcp, "create_endpoint")
    assert create.endpoint_id == "1716" and create.endpoint.display_name == "taxi"
    (deploy,) = _calls(gcp, "deploy_model")
    assert deploy.endpoint == f"{LOCATION}/endpoints/1716"
    assert deploy.deployed_model.model == f"{LOCATION}/models/{model_id}@1"
    assert deploy.deployed_model.dedicated_resources.machine_spec.machine_type == "n1-standard-2"
    assert dict(deploy.traffic_split) == {"0": 100}
    (deployed,) = gcp.endpoints["1716"]["deployed"]
    assert gcp.endpoints["1716"]["traffic"] == {deployed.id: 100}

    ti = context["ti"]
    assert ti.xcoms["endpoint_id"] == "1716" and ti.xcoms["deployed_model_id"] == deployed.id
    assert link_url(task, VertexAIEndpointLink, ti) == f"{CONSOLE}/locations/{REGION}/endpoints/1716?project={PROJECT}"
    # the model link is the model's page (not the deployed model's id, which DeployModelOperator files there)
    assert link_url(task, VertexAIModelLink, ti) == (
        f"{CONSOLE}/models/locations/{REGION}/models/{model_id}/versions/default/properties?project={PROJECT}"
    )

    # a retry: the endpoint exists, the version is uploaded and deployed with all the traffic: nothing is redone
    retry, retry_context, again = _promote(DAY1, try_number=2)
    assert again == result
    assert [len(_calls(gcp, m)) for m in ("upload_model", "create_endpoint", "deploy_model")] == [1, 1, 1]
    assert retry_context["ti"].xcoms["deployed_model_id"] == deployed.id
    assert link_url(retry, VertexAIEndpointLink, retry_context["ti"]) == link_url(task, VertexAIEndpointLink, ti)

    # the next day's champion: the endpoint is reused, the new version takes all the traffic
    _, context = task_run("taxi_daily_retrain", "promote_champion", *DAY2)
    _artifacts(context, {"standard": 0.96, "coarse": 0.95})
    _, _, day2 = _promote(DAY2)
    assert day2["variant"] == "standard" and day2["vertex_model"] == f"{LOCATION}/models/{model_id}@2"
    assert len(_calls(gcp, "create_endpoint")) == 1
    assert _calls(gcp, "upload_model")[-1].parent_model == f"{LOCATION}/models/{model_id}"
    old, new = gcp.endpoints["1716"]["deployed"]
    assert new.model == f"{LOCATION}/models/{model_id}@2"
    assert gcp.endpoints["1716"]["traffic"] == {new.id: 100}  # the previous champion keeps none
    assert ServingRoot(SERVING).labels("taxi") == {"stable": 201601020000}


def test_promote_skips_when_no_variant_was_blessed(gcp):
    from airflow.sdk.exceptions import AirflowSkipException

    _, context = task_run("taxi_daily_retrain", "promote_champion", *DAY1)
    _artifacts(context, {"standard": 0.8, "coarse": 0.81}, blessed=())
    with pytest.raises(AirflowSkipException, match="no variant was blessed"):
        _promote(DAY1)
    assert gcp.calls == [] and gcp.tf_serving == []


def _champion(window, state, try_number=1):
    """The promotion of the window's champion (its artifacts written first), with the task's state store."""
    _, context = task_run("taxi_daily_retrain", "promote_champion", *window)
    _artifacts(context, {"standard": 0.95, "coarse": 0.93})
    return _promote(window, try_number, state)


def _deployed(vertex) -> list[str]:
    return [d.id for d in vertex.endpoints["1716"]["deployed"]]


def _deployment_of(vertex, model: str) -> str:
    (deployed,) = [d.id for d in vertex.endpoints["1716"]["deployed"] if d.model == model]
    return deployed


def test_three_promotions_leave_the_champion_and_the_previous_one_deployed(gcp):
    from structlog.testing import capture_logs

    from taxi_pipeline.operators.gcp import ChampionDeployOperator

    states, ids = {}, []
    with capture_logs() as logs:
        for window in (DAY1, DAY2, DAY3):
            states[window] = TaskStateStore()
            *_, result = _champion(window, states[window])
            ids.append(_deployment_of(gcp, result["vertex_model"]))
            if window == DAY2:  # two deployments: nothing to undeploy yet
                assert _deployed(gcp) == ids and gcp.undeployed == []
    first, second, third = ids
    (model_id,) = gcp.models

    # the newest with all the traffic, the previous at 0% (a rollback is a traffic switch); the first is undeployed
    assert _deployed(gcp) == [second, third]
    assert gcp.endpoints["1716"]["traffic"] == {third: 100}
    assert gcp.undeployed == [first]
    (undeploy,) = _calls(gcp, "undeploy_model")
    assert undeploy.endpoint == f"{LOCATION}/endpoints/1716" and undeploy.deployed_model_id == first
    assert dict(undeploy.traffic_split) == {}  # it had no traffic: the split is left as it is
    # the previous champion was kept in the task's state store before the deployment
    assert states[DAY3][ChampionDeployOperator.PREVIOUS_KEY] == {
        "deployed_model_id": second,
        "model_version": f"{LOCATION}/models/{model_id}@2",
    }
    assert states[DAY1][ChampionDeployOperator.PREVIOUS_KEY] == {"deployed_model_id": None, "model_version": None}
    # one line per undeployed model: its deployed model id, model version and why
    (line,) = [e["event"] for e in logs if e["event"].startswith("Undeployed deployed model")]
    assert line == (
        f"Undeployed deployed model {first} (model version {LOCATION}/models/{model_id}@1) from endpoint "
        f"1716: 0% traffic, neither the champion ({third}) nor the previous champion ({second})"
    )

    # a retry of the last promotion and a rerun (the task cleared: the run's state store is kept): nothing more
    for try_number in (2, 3):
        _champion(DAY3, states[DAY3], try_number)
    assert _deployed(gcp) == [second, third] and gcp.endpoints["1716"]["traffic"] == {third: 100}
    assert gcp.undeployed == [first] and len(_calls(gcp, "deploy_model")) == 3


def test_a_retry_after_a_partial_undeploy_finishes_it_and_keeps_the_previous_champion(gcp, monkeypatch):
    from taxi_pipeline.operators.gcp import ChampionDeployOperator

    # the endpoint as the promotions before the undeployment left it: every deployment still there
    with monkeypatch.context() as before:
        before.setattr(ChampionDeployOperator, "undeploy_others", lambda self, context, champion_id: None)
        for window in (DAY1, DAY2, DAY3):
            _champion(window, TaskStateStore())
    d1, d2, d3 = _deployed(gcp)
    assert gcp.endpoints["1716"]["traffic"] == {d3: 100}

    # the next promotion: the second undeployment fails (the task fails with it)
    state = TaskStateStore()
    gcp.fail_undeploy = {d2}
    with pytest.raises(ServiceUnavailable):
        _champion(DAY4, state)
    d4 = _deployed(gcp)[-1]
    assert _deployed(gcp) == [d2, d3, d4] and gcp.undeployed == [d1]
    assert gcp.endpoints["1716"]["traffic"] == {d4: 100}

    # a retry without the stored previous champion (d3 no longer has traffic to tell it) undeploys nothing
    _champion(DAY4, TaskStateStore(), try_number=2)
    assert _deployed(gcp) == [d2, d3, d4] and gcp.undeployed == [d1]

    # the retry: the new version is deployed already; the rest is undeployed, the previous champion kept
    _champion(DAY4, state, try_number=3)
    assert _deployed(gcp) == [d3, d4] and gcp.undeployed == [d1, d2]
    assert gcp.endpoints["1716"]["traffic"] == {d4: 100}
    assert len(_calls(gcp, "deploy_model")) == 4
    assert [r.deployed_model_id for r in _calls(gcp, "undeploy_model")] == [d1, d2, d2]  # d2: failed, then done

    # a rerun: nothing more
    _champion(DAY4, state, try_number=4)
    assert _deployed(gcp) == [d3, d4] and len(_calls(gcp, "undeploy_model")) == 3


def test_the_previous_champion_is_the_deployment_that_had_the_traffic(gcp):
    state = TaskStateStore()
    for window in (DAY1, DAY2):
        _champion(window, TaskStateStore())
    d1, d2 = _deployed(gcp)
    gcp.endpoints["1716"]["traffic"] = {d1: 100}  # on-call rolled back: a traffic switch to the first champion

    _champion(DAY3, state)
    d3 = _deployed(gcp)[-1]
    # the rolled-back-to deployment is the previous champion, kept; the newer one without traffic is undeployed
    assert _deployed(gcp) == [d1, d3] and gcp.undeployed == [d2]
    assert gcp.endpoints["1716"]["traffic"] == {d3: 100}


def _roll_back(target: str, try_number: int = 1):
    """The gcp platform's `taxi_serving_rollback` task for the champion model, rendered and run."""
    task, context = task_run("taxi_serving_rollback", "roll_back", *DAY4, try_number=try_number)
    context["params"] = {"model": "taxi", "target_version": target, "reason": "AUC dropped in production (INC-7)"}
    context["run_id"] = "manual__rollback"
    return task.execute(context)


def test_a_rollback_moves_the_labels_in_gcs_and_the_endpoints_traffic_back(gcp):
    from taxi_pipeline import files
    from taxi_pipeline.serving_root import ServingRoot

    for window in (DAY1, DAY2, DAY3):
        _champion(window, TaskStateStore())
    second, third = _deployed(gcp)
    root = ServingRoot(SERVING)
    assert root.versions("taxi") == [201601010000, 201601020000, 201601030000]

    outcome = _roll_back("previous")
    # the serving root, as TF-Serving on GKE reads it: the target labelled stable, the newer version retired
    assert (outcome["from_version"], outcome["to_version"]) == (201601030000, 201601020000)
    assert root.versions("taxi") == [201601010000, 201601020000] and root.retired_versions("taxi") == [201601030000]
    assert root.labels("taxi") == {"stable": 201601020000}
    config = files.read_text(f"{SERVING}/models.config")
    assert "versions: 201601030000" not in config and 'key: "stable" value: 201601020000' in config
    (record,) = root.rollbacks("taxi")
    assert record["reason"] == "AUC dropped in production (INC-7)" and record["run_id"] == "manual__rollback"
    # Vertex AI: a traffic switch to the previous champion, kept deployed at 0% for this; nothing undeployed
    assert outcome["vertex_deployed_model"] == second
    assert gcp.endpoints["1716"]["traffic"] == {second: 100} and _deployed(gcp) == [second, third]
    assert len(_calls(gcp, "update_endpoint")) == 1 and len(_calls(gcp, "deploy_model")) == 3

    # a rerun changes nothing, in GCS or on the endpoint
    again = _roll_back("201601020000", try_number=2)
    assert not again["changed"] and root.versions("taxi") == [201601010000, 201601020000]
    assert gcp.endpoints["1716"]["traffic"] == {second: 100}
    assert len(_calls(gcp, "update_endpoint")) == 1 and len(_calls(gcp, "deploy_model")) == 3

    # further back, to a version no longer deployed (undeployed by the third promotion): deployed again
    first = _roll_back("201601010000")
    assert root.versions("taxi") == [201601010000] and root.labels("taxi") == {"stable": 201601010000}
    assert _deployed(gcp)[-1] == first["vertex_deployed_model"] not in (second, third)
    assert gcp.endpoints["1716"]["traffic"] == {first["vertex_deployed_model"]: 100}


def test_a_rollback_to_a_version_vertex_never_had_changes_the_endpoint_not_and_says_so(gcp):
    from airflow.sdk.exceptions import AirflowFailException

    for window in (DAY1, DAY2):
        _champion(window, TaskStateStore())
    traffic = dict(gcp.endpoints["1716"]["traffic"])
    (model_id,) = gcp.models
    gcp.models[model_id]["versions"] = gcp.models[model_id]["versions"][1:]  # v201601010000 deleted in Vertex AI
    with pytest.raises(AirflowFailException, match="Vertex AI has no version v201601010000 of the model taxi"):
        _roll_back("previous")
    assert gcp.endpoints["1716"]["traffic"] == traffic
