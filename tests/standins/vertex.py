"""A fake Vertex AI for the gcp platform's tests, at the client boundary: the model and endpoint
services as the GAPIC clients the google provider's ModelServiceHook and EndpointServiceHook call
(`get_model_service_client` / `get_endpoint_service_client` patched by `vertex_behind_hooks`).

Why there: the hooks and operators run their own code and build the real requests; the fake checks
them with the real request types of google-cloud-aiplatform (an unknown field or a malformed
resource name fails) and answers as Vertex AI does: an upload with `parent_model` adds a version to
that model, a deployment with the traffic split `{"0": 100}` gives the new deployed model all the
traffic, an undeployment removes a deployed model that has no traffic (one with traffic:
FailedPrecondition) and is recorded (`undeployed`: the deployed model ids, in order). Shared by
tests/taxi_pipeline/operators/test_vertex_flow.py and tests/dags/test_gcp_offline_run.py.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from unittest import mock

from google.api_core.exceptions import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ServiceUnavailable
from google.cloud.aiplatform_v1 import EndpointServiceClient, ModelServiceClient
from google.cloud.aiplatform_v1.types import DeployedModel, Endpoint, Model, endpoint_service, model_service

PROJECT = "taxi-test"
REGION = "us-central1"  # the gcp settings' default
LOCATION = f"projects/{PROJECT}/locations/{REGION}"


class Operation:
    """A long-running operation that is done (the hooks' wait_for_operation calls result())."""

    def __init__(self, response):
        self.response = response

    def result(self, timeout=None, polling=None, retry=None):
        return self.response


class FakeVertex:
    def __init__(self):
        self.models: dict[str, dict] = {}  # model id -> {"display_name", "versions": [Model]}
        self.endpoints: dict[str, dict] = {}  # endpoint id -> {"display_name", "deployed": [DeployedModel], "traffic"}
        self.calls: list[tuple[str, object]] = []
        self.undeployed: list[str] = []  # the deployed model ids of the undeployments, in order
        self.fail_undeploy: set[str] = set()  # deployed model ids whose next undeployment fails (then succeeds)
        self._ids = iter(range(4000, 5000))

    def _model_id(self, name: str) -> str:
        match = re.fullmatch(rf"{LOCATION}/models/(\d+)", name)
        if not match or match.group(1) not in self.models:
            raise NotFound(f"Model {name} not found")
        return match.group(1)


class ModelClient:
    common_location_path = staticmethod(ModelServiceClient.common_location_path)
    model_path = staticmethod(ModelServiceClient.model_path)

    def __init__(self, vertex: FakeVertex):
        self.vertex = vertex

    def list_models(self, request, **kwargs):
        request = model_service.ListModelsRequest(request)
        self.vertex.calls.append(("list_models", request))
        assert request.parent == LOCATION
        wanted = re.fullmatch(r'display_name="([^"]+)"', request.filter).group(1)
        return [
            Model(name=f"{LOCATION}/models/{i}", display_name=m["display_name"])
            for i, m in self.vertex.models.items()
            if m["display_name"] == wanted
        ]

    def list_model_versions(self, request, **kwargs):
        request = model_service.ListModelVersionsRequest(request)
        self.vertex.calls.append(("list_model_versions", request))
        return list(self.vertex.models[self.vertex._model_id(request.name)]["versions"])

    def upload_model(self, request, **kwargs):
        request = model_service.UploadModelRequest(request)
        self.vertex.calls.append(("upload_model", request))
        assert request.parent == LOCATION
        if request.parent_model:
            model_id = self.vertex._model_id(request.parent_model)
        else:
            model_id = str(next(self.vertex._ids))
            self.vertex.models[model_id] = {"display_name": request.model.display_name, "versions": []}
        versions = self.vertex.models[model_id]["versions"]
        taken = {a for v in versions for a in v.version_aliases}
        if taken & set(request.model.version_aliases):
            raise InvalidArgument(f"aliases {sorted(taken & set(request.model.version_aliases))} are taken")
        version = Model(request.model)
        version.name, version.version_id = f"{LOCATION}/models/{model_id}", str(len(versions) + 1)
        versions.append(version)
        return Operation(model_service.UploadModelResponse(model=version.name, model_version_id=version.version_id))


class EndpointClient:
    common_location_path = staticmethod(EndpointServiceClient.common_location_path)
    endpoint_path = staticmethod(EndpointServiceClient.endpoint_path)

    def __init__(self, vertex: FakeVertex):
        self.vertex = vertex

    def _endpoint(self, name: str) -> tuple[str, dict]:
        endpoint_id = name.rsplit("/", 1)[-1]
        if name != f"{LOCATION}/endpoints/{endpoint_id}" or endpoint_id not in self.vertex.endpoints:
            raise NotFound(f"Endpoint {name} not found")
        return endpoint_id, self.vertex.endpoints[endpoint_id]

    def _proto(self, endpoint_id: str) -> Endpoint:
        e = self.vertex.endpoints[endpoint_id]
        return Endpoint(
            name=f"{LOCATION}/endpoints/{endpoint_id}",
            display_name=e["display_name"],
            deployed_models=e["deployed"],
            traffic_split=e["traffic"],
        )

    def get_endpoint(self, request, **kwargs):
        request = endpoint_service.GetEndpointRequest(request)
        self.vertex.calls.append(("get_endpoint", request))
        return self._proto(self._endpoint(request.name)[0])

    def create_endpoint(self, request, **kwargs):
        request = endpoint_service.CreateEndpointRequest(request)
        self.vertex.calls.append(("create_endpoint", request))
        assert request.parent == LOCATION
        # a user-chosen numeric id: up to 9 digits, no leading zero (the API's rule)
        assert re.fullmatch(r"[1-9][0-9]{0,8}", request.endpoint_id), request.endpoint_id
        if request.endpoint_id in self.vertex.endpoints:
            raise AlreadyExists(f"Endpoint {request.endpoint_id} already exists")
        self.vertex.endpoints[request.endpoint_id] = {
            "display_name": request.endpoint.display_name,
            "deployed": [],
            "traffic": {},
        }
        return Operation(self._proto(request.endpoint_id))

    def deploy_model(self, request, **kwargs):
        request = endpoint_service.DeployModelRequest(request)
        self.vertex.calls.append(("deploy_model", request))
        endpoint_id, endpoint = self._endpoint(request.endpoint)
        model, _, version_id = request.deployed_model.model.partition("@")
        versions = self.vertex.models[self.vertex._model_id(model)]["versions"]
        assert version_id in {v.version_id for v in versions}, request.deployed_model.model
        deployed = DeployedModel(request.deployed_model)
        deployed.id, deployed.model_version_id = str(next(self.vertex._ids)), version_id
        split = dict(request.traffic_split)
        assert sum(split.values()) == 100 and set(split) <= {"0", *(d.id for d in endpoint["deployed"])}
        endpoint["deployed"].append(deployed)
        if split:
            endpoint["traffic"] = {(deployed.id if k == "0" else k): v for k, v in split.items()}
        return Operation(endpoint_service.DeployModelResponse(deployed_model=deployed))

    def update_endpoint(self, request, **kwargs):
        request = endpoint_service.UpdateEndpointRequest(request)
        self.vertex.calls.append(("update_endpoint", request))
        endpoint_id, endpoint = self._endpoint(request.endpoint.name)
        assert list(request.update_mask.paths) == ["traffic_split"], request.update_mask
        split = dict(request.endpoint.traffic_split)
        assert sum(split.values()) == 100 and set(split) <= {d.id for d in endpoint["deployed"]}, split
        endpoint["traffic"] = split
        return self._proto(endpoint_id)

    def undeploy_model(self, request, **kwargs):
        request = endpoint_service.UndeployModelRequest(request)
        self.vertex.calls.append(("undeploy_model", request))
        _, endpoint = self._endpoint(request.endpoint)
        if request.deployed_model_id in self.vertex.fail_undeploy:
            self.vertex.fail_undeploy.discard(request.deployed_model_id)
            raise ServiceUnavailable(f"undeploying {request.deployed_model_id}: try again")
        if request.deployed_model_id not in {d.id for d in endpoint["deployed"]}:
            raise NotFound(f"Deployed model {request.deployed_model_id} not found")
        traffic = dict(request.traffic_split) if request.traffic_split else dict(endpoint["traffic"])
        gone = request.deployed_model_id
        if traffic.get(gone, 0):
            raise FailedPrecondition(f"Deployed model {gone} has {traffic[gone]}% of the traffic")
        endpoint["deployed"] = [d for d in endpoint["deployed"] if d.id != gone]
        endpoint["traffic"] = {k: v for k, v in traffic.items() if k != gone} if endpoint["deployed"] else {}
        self.vertex.undeployed.append(request.deployed_model_id)
        return Operation(endpoint_service.UndeployModelResponse())


@contextlib.contextmanager
def vertex_behind_hooks(vertex: FakeVertex | None = None) -> Iterator[FakeVertex]:
    """The provider's Vertex AI hooks answered by `vertex` (a new FakeVertex if none); `vertex.regions`
    records the region each client was asked for."""
    from airflow.providers.google.cloud.hooks.vertex_ai.endpoint_service import EndpointServiceHook
    from airflow.providers.google.cloud.hooks.vertex_ai.model_service import ModelServiceHook

    vertex = vertex or FakeVertex()
    vertex.regions = []

    def client(kind):
        def get(self, region=None):
            vertex.regions.append(region)
            return kind(vertex)

        return get

    with (
        mock.patch.object(ModelServiceHook, "get_model_service_client", client(ModelClient)),
        mock.patch.object(EndpointServiceHook, "get_endpoint_service_client", client(EndpointClient)),
    ):
        yield vertex
