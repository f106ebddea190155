"""What both front ends do, on TF-Serving's protos: find a version, report status and metadata,
run Predict, Classify, Regress and MultiInference under the server's limits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from grpc import StatusCode
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, inference_pb2, input_pb2, model_pb2

from taxi_model.serving import classify_regress, request_log
from taxi_model.serving.batching import Batcher
from taxi_model.serving.errors import invalid_argument
from taxi_model.serving.inference import CLASSIFY_METHOD, DEFAULT_SIGNATURE, ModelVersion, Signature
from taxi_model.serving.metrics import ServingMetrics, note_model
from taxi_model.serving.repository import ModelRepository


class ModelService:
    def __init__(
        self,
        repository: ModelRepository,
        max_batch_size: int,
        batcher: Batcher | None = None,
        metrics: ServingMetrics | None = None,
        request_logs: request_log.RequestLogs | None = None,  # None: no request is logged
    ):
        self.repository = repository
        self.max_batch_size = max_batch_size
        self.batcher = batcher  # None: each request is its own model call (TF-Serving's default)
        self.metrics = metrics or ServingMetrics()
        self.request_logs = request_logs

    def _log(self, model: ModelVersion, build: request_log.LogBuilder) -> None:
        """Hands a served request to the request logs; `build` runs only if it is sampled, off this thread."""
        if self.request_logs is not None:
            self.request_logs.log(model.name, build)

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> ModelVersion:
        note_model(name, version)
        model = self.repository.resolve(name, version, label)
        note_model(name, model.version)
        return model

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> get_model_status_pb2.GetModelStatusResponse:
        note_model(name, version)
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, state in self.repository.version_states(name, version, label):
            status = response.model_version_status.add(
                version=number, state=get_model_status_pb2.ModelVersionStatus.State.Value(state.state)
            )
            status.status.SetInParent()  # printed even when OK, as TF-Serving does
            status.status.error_code = StatusCode[state.error_code].value[0]
            status.status.error_message = state.error_message
        return response

    def metadata(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> tuple[model_pb2.ModelSpec, get_model_metadata_pb2.SignatureDefMap]:
        model = self.resolve(name, version, label)
        return model_spec(model), model.signature_def_map

    def predict(
        self,
        model: ModelVersion,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Iterable[str] = (),
    ) -> tuple[Signature, dict[str, np.ndarray]]:
        with self.metrics.runtime(model.name, "Predict"):
            signature, outputs = model.predict(signature_name, inputs, output_filter, self.max_batch_size, self.batcher)
        self._log(
            model, lambda: request_log.predict_log(model_spec(model, signature.name), inputs, outputs, output_filter)
        )
        return signature, outputs

    def classify_or_regress(
        self, model: ModelVersion, method_name: str, signature_name: str, examples: input_pb2.Input
    ):
        """A Classify (CLASSIFY_METHOD) or Regress (REGRESS_METHOD) result on a request's examples."""
        with self.metrics.runtime(model.name, "Classify" if method_name == CLASSIFY_METHOD else "Regress"):
            result = classify_regress.run(
                model, method_name, signature_name, examples, self.max_batch_size, self.batcher
            )
        self._log(
            model,
            lambda: request_log.classify_or_regress_log(
                method_name, model_spec(model, signature_name or DEFAULT_SIGNATURE), examples, result
            ),
        )
        return result

    def multi_inference(self, request: inference_pb2.MultiInferenceRequest) -> inference_pb2.MultiInferenceResponse:
        """On the version the first task names, as TF-Serving's RunMultiInferenceWithServerCore."""
        model = self.resolve(**spec_args(request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()))
        response = inference_pb2.MultiInferenceResponse()
        with self.metrics.runtime(model.name, "MultiInference"):
            results = classify_regress.multi_inference(model, request, self.max_batch_size, self.batcher)
        for task, result in zip(request.tasks, results, strict=True):
            result.model_spec.CopyFrom(model_spec(model, task.model_spec.signature_name or DEFAULT_SIGNATURE))
            response.results.append(result)
        self._log(model, lambda: request_log.multi_inference_log(request, response))
        return response


def spec_args(spec: model_pb2.ModelSpec) -> dict:
    """name, version and label of a request's ModelSpec."""
    if not spec.name:
        raise invalid_argument("Missing ModelSpec")
    return {
        "name": spec.name,
        "version": spec.version.value if spec.HasField("version") else None,
        "label": spec.version_label or None,
    }


def model_spec(model: ModelVersion, signature_name: str = "") -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=model.name, signature_name=signature_name)
    spec.version.value = model.version
    return spec
