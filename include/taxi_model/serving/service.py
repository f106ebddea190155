"""What both front ends do, on TF-Serving's protos: find a version, report status and metadata,
run Predict under the server's limits."""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
from grpc import StatusCode
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from taxi_model.serving.errors import ServingError, invalid_argument
from taxi_model.serving.inference import CLASSIFY_METHOD, ModelVersion, Signature
from taxi_model.serving.repository import ModelRepository


class ModelService:
    def __init__(self, repository: ModelRepository, max_batch_size: int):
        self.repository = repository
        self.max_batch_size = max_batch_size

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> ModelVersion:
        return self.repository.resolve(name, version, label)

    def status(self, name: str, version: int | None = None,
               label: str | None = None) -> get_model_status_pb2.GetModelStatusResponse:
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, state in self.repository.version_states(name, version, label):
            status = response.model_version_status.add(
                version=number, state=get_model_status_pb2.ModelVersionStatus.State.Value(state.state))
            status.status.SetInParent()  # printed even when OK, as TF-Serving does
            status.status.error_code = StatusCode[state.error_code].value[0]
            status.status.error_message = state.error_message
        return response

    def metadata(self, name: str, version: int | None = None, label: str | None = None
                 ) -> tuple[model_pb2.ModelSpec, get_model_metadata_pb2.SignatureDefMap]:
        model = self.resolve(name, version, label)
        return model_spec(model), model.signature_def_map

    def predict(self, model: ModelVersion, signature_name: str, inputs: Mapping[str, np.ndarray],
                output_filter: Iterable[str] = ()) -> tuple[Signature, dict[str, np.ndarray]]:
        return model.predict(signature_name, inputs, output_filter, self.max_batch_size)

    @staticmethod
    def check_method(signature: Signature, method_name: str) -> None:
        """Classify and Regress need a signature of their kind; this server answers Predict only."""
        kind = "classification" if method_name == CLASSIFY_METHOD else "regression"
        if signature.method_name != method_name:
            raise invalid_argument(f"Expected {kind} signature method_name to be {method_name}. Was: "
                                   f"{signature.method_name}")
        raise ServingError(StatusCode.UNIMPLEMENTED, f"signature {signature.name} is a {kind} signature; this server "
                                                     f"implements Predict only: use :predict")


def model_spec(model: ModelVersion, signature_name: str = "") -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=model.name, signature_name=signature_name)
    spec.version.value = model.version
    return spec
