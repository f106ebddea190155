"""The gRPC front end: TF-Serving's PredictionService and ModelService (tensorflow_serving.apis).

Predict, Classify, Regress, MultiInference, GetModelMetadata and GetModelStatus are served
(Predict's outputs in the typed fields, float_val, ..., as TF-Serving's: Tensor::AsProtoField);
HandleReloadConfigRequest is UNIMPLEMENTED (the base servicer's answer).
"""

from __future__ import annotations

import functools
import logging
from concurrent import futures

import grpc
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from taxi_model.serving.errors import ServingError, invalid_argument
from taxi_model.serving.inference import CLASSIFY_METHOD, DEFAULT_SIGNATURE, REGRESS_METHOD, shape_text
from taxi_model.serving.service import ModelService, model_spec, spec_args
from taxi_model.serving.tensor_proto import PROTO_FIELDS, as_proto_field

SIGNATURE_DEF_FIELD = "signature_def"
_QUEUED_PER_WORKER = 4  # RPCs waiting for a gRPC thread, per thread
log = logging.getLogger("taxi_model.serving")


def check_input_tensor(key: str, proto: tensor_pb2.TensorProto, max_batch_size: int) -> None:
    """Refuses, before any array is built, an input whose declared shape is over the batch limit or
    whose values do not fill its shape exactly (a few bytes may declare a shape of millions)."""
    if proto.tensor_shape.unknown_rank:
        raise invalid_argument(f"input {key} has an unknown rank")
    dims = [dim.size for dim in proto.tensor_shape.dim]
    if any(size < 0 for size in dims):
        raise invalid_argument(f"input {key} has a negative dimension: {shape_text(dims)}")
    if dims and dims[0] > max_batch_size:
        raise invalid_argument(f"Task size {dims[0]} is larger than maximum input batch size {max_batch_size}")
    elements = 1
    for size in dims:
        elements *= size
    if proto.tensor_content:
        try:
            item_size = tf.as_dtype(proto.dtype).size
        except TypeError:
            raise invalid_argument(f"input {key} has an unsupported dtype {proto.dtype}") from None
        present = len(proto.tensor_content) // item_size if item_size else -1
        exact = len(proto.tensor_content) == elements * item_size
    else:
        field = PROTO_FIELDS.get(proto.dtype)
        per_element = 2 if field in ("scomplex_val", "dcomplex_val") else 1
        present = len(getattr(proto, field)) // per_element if field else -1
        exact = field is not None and len(getattr(proto, field)) == elements * per_element
    if not exact:
        raise invalid_argument(f"input {key} holds {present} values, its shape {shape_text(dims)} has {elements}")


def _rpc(method):
    """ServingError -> its status code; anything else -> INTERNAL, logged. The server keeps serving."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        if not context.is_active():  # its deadline passed (or the client left) while it waited for a thread
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded before the request was run")
        metrics = self._service.metrics
        served = metrics.begin("GRPC", method.__name__)
        served.model_name = getattr(getattr(request, "model_spec", None), "name", "")  # before it is resolved
        status = grpc.StatusCode.INTERNAL
        try:
            response = method(self, request, context)
            status = grpc.StatusCode.OK
            return response
        except ServingError as e:
            status = e.code
            context.abort(e.code, e.message)
        except Exception as e:
            log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
        finally:
            metrics.finish(served, status)

    return wrapper


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, service: ModelService):
        self._service = service

    @_rpc
    def Predict(self, request, context):
        model = self._service.resolve(**spec_args(request.model_spec))
        for key, proto in request.inputs.items():
            check_input_tensor(key, proto, self._service.max_batch_size)
        try:
            inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        except (TypeError, ValueError) as e:
            raise invalid_argument(f"bad input tensor: {e}") from None
        signature, outputs = self._service.predict(
            model, request.model_spec.signature_name, inputs, request.output_filter
        )
        response = predict_pb2.PredictResponse(model_spec=model_spec(model, signature.name))
        for key, array in outputs.items():
            response.outputs[key].CopyFrom(as_proto_field(array))
        return response

    @_rpc
    def GetModelMetadata(self, request, context):
        if not request.metadata_field:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        unsupported = [field for field in request.metadata_field if field != SIGNATURE_DEF_FIELD]
        if unsupported:
            raise invalid_argument(f"Metadata field {unsupported[0]} is not supported")
        spec, signature_def_map = self._service.metadata(**spec_args(request.model_spec))
        response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=spec)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_def_map)
        return response

    def _classify_or_regress(self, request, method_name: str):
        model = self._service.resolve(**spec_args(request.model_spec))
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        result = self._service.classify_or_regress(model, method_name, signature_name, request.input)
        return model_spec(model, signature_name), result

    @_rpc
    def Classify(self, request, context):
        spec, result = self._classify_or_regress(request, CLASSIFY_METHOD)
        return classification_pb2.ClassificationResponse(model_spec=spec, result=result)

    @_rpc
    def Regress(self, request, context):
        spec, result = self._classify_or_regress(request, REGRESS_METHOD)
        return regression_pb2.RegressionResponse(model_spec=spec, result=result)

    @_rpc
    def MultiInference(self, request, context):
        return self._service.multi_inference(request)


class ModelStatusService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, service: ModelService):
        self._service = service

    @_rpc
    def GetModelStatus(self, request, context):
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        return self._service.status(**spec_args(request.model_spec))


class GrpcServer:
    def __init__(self, host: str, port: int, service: ModelService, max_message_bytes: int, workers: int = 8):
        """`workers` RPCs run at once and _QUEUED_PER_WORKER times more wait; beyond that an RPC is refused
        RESOURCE_EXHAUSTED at once, and a message over max_message_bytes too (gRPC's own checks)."""
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.so_reuseport", 0),  # a taken port fails, not shared
            ],
            maximum_concurrent_rpcs=workers * (1 + _QUEUED_PER_WORKER),
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(service), self._server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelStatusService(service), self._server)
        try:
            self.port = self._server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:  # newer grpcio raises where older versions returned 0
            self.port = 0
        if not self.port:
            self._server.stop(None)
            raise OSError(f"cannot bind gRPC to {host}:{port}")

    def start(self) -> None:
        self._server.start()

    def stop(self, grace_seconds: float = 2.0) -> None:
        self._server.stop(grace_seconds).wait()
