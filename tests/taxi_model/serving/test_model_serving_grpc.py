"""The gRPC API: TF-Serving's PredictionService and ModelService, used as the Kubeflow example does."""

from __future__ import annotations

import base64
import json

import grpc
import numpy as np
import pytest
import tensorflow as tf
from serving_test_support import MAX_BATCH_SIZE, MAX_BODY_BYTES
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)


@pytest.fixture
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as opened:
        yield opened


@pytest.fixture
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def predict_request(examples, model: str = "taxi", **spec) -> predict_pb2.PredictRequest:
    """The Kubeflow taxi example's client, unchanged."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = spec.pop("signature_name", "serving_default")
    if "version" in spec:
        request.model_spec.version.value = spec.pop("version")
    if "version_label" in spec:
        request.model_spec.version_label = spec.pop("version_label")
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto(examples, shape=[len(examples)]))
    return request


def test_predict_answers_what_the_saved_model_answers(stub, examples, saved_model_outputs):
    response = stub.Predict(predict_request(examples), timeout=10)
    assert response.model_spec.name == "taxi"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    np.testing.assert_array_equal(
        tf.make_ndarray(response.outputs["probabilities"]), saved_model_outputs["serving_default"]["probabilities"]
    )


def test_output_filter_and_another_signature(stub, examples, saved_model_outputs):
    request = predict_request(examples, signature_name="transform_features")
    request.output_filter.extend(["unique_key", "fare_xf"])
    response = stub.Predict(request, timeout=10)
    assert set(response.outputs) == {"unique_key", "fare_xf"}
    for key in response.outputs:
        np.testing.assert_array_equal(
            tf.make_ndarray(response.outputs[key]), saved_model_outputs["transform_features"][key]
        )


def test_model_status_and_metadata(channel):
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "taxi"}), timeout=10
    )
    assert [(s.version, s.state, s.status.error_code) for s in status.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)
    ]

    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec={"name": "taxi"}, metadata_field=["signature_def"]
    )
    metadata = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, timeout=10)
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    assert metadata.metadata["signature_def"].Unpack(signature_defs)
    assert metadata.model_spec.version.value == 1
    assert signature_defs.signature_def["serving_default"].inputs["examples"].dtype == tf.string.as_datatype_enum


def b64(example: bytes) -> dict:
    return {"b64": base64.b64encode(example).decode()}


def _wrong_shape(examples):
    request = predict_request(examples)
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto(np.array(examples[:4], dtype=object).reshape(2, 2)))
    return request


def _wrong_input_name(examples):
    request = predict_request(examples)
    request.inputs["rows"].CopyFrom(request.inputs.pop("examples"))
    return request


def _declared(dims, string_val=(), tensor_content=b"", dtype=tf.string):
    """A request whose input declares `dims` but holds only the values given: a few bytes on the wire."""

    def make(examples):
        request = predict_request(examples)
        tensor = request.inputs["examples"]
        tensor.Clear()
        tensor.dtype = dtype.as_datatype_enum
        tensor.tensor_shape.dim.extend([tensor.tensor_shape.Dim(size=size) for size in dims])
        tensor.string_val.extend(string_val)
        tensor.tensor_content = tensor_content
        return request

    return make


BAD_REQUESTS = {  # name: (request from the examples, status code, start of the details)
    "unknown model": (
        lambda ex: predict_request(ex, model="nope"),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    ),
    "unknown version": (
        lambda ex: predict_request(ex, version=7),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(taxi, 7)",
    ),
    "unknown label": (
        lambda ex: predict_request(ex, version_label="nope"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unrecognized servable version label: nope",
    ),
    "unknown signature": (
        lambda ex: predict_request(ex, signature_name="nope"),
        grpc.StatusCode.INVALID_ARGUMENT,
        'Serving signature name: "nope" not found',
    ),
    "wrong input name": (
        _wrong_input_name,
        grpc.StatusCode.INVALID_ARGUMENT,
        "input size does not match signature: 1!=1 len({rows}) != len({examples}). Sent extra: "
        "{rows}. Missing but required: {examples}.",
    ),
    "wrong type": (
        lambda ex: predict_request([1.5] * len(ex)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expects arg[examples] to be string but float32 is provided",
    ),
    "wrong shape": (
        _wrong_shape,
        grpc.StatusCode.INVALID_ARGUMENT,  # refused by the model's op, as in TF-Serving
        "Expected serialized to be a scalar or vector, got shape: [2,2]",
    ),
    "oversized batch": (
        lambda ex: predict_request(ex[:1] * (MAX_BATCH_SIZE + 1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"Task size {MAX_BATCH_SIZE + 1} is larger than maximum input batch size",
    ),
    "declared batch of 20,000,000": (
        _declared([20_000_000]),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"Task size 20000000 is larger than maximum input batch size {MAX_BATCH_SIZE}",
    ),
    "declared batch of 2**62, one value": (
        _declared([1 << 62], [b""]),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"Task size {1 << 62} is larger than maximum input batch size",
    ),
    "declared row of 20,000,000": (
        _declared([1, 20_000_000], [b""]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input examples holds 1 values, its shape [1,20000000] has 20000000",
    ),
    "fewer values than the shape": (
        _declared([3], [b"", b""]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input examples holds 2 values, its shape [3] has 3",
    ),
    "more values than the shape": (
        _declared([1], [b"", b""]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input examples holds 2 values, its shape [1] has 1",
    ),
    "short tensor_content": (
        _declared([4, 1_000_000], tensor_content=b"\0" * 8, dtype=tf.float32),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input examples holds 2 values, its shape [4,1000000]",
    ),
    "negative dimension": (
        _declared([-1]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input examples has a negative dimension: [-1]",
    ),
    "oversized message": (
        lambda ex: predict_request([b"x" * MAX_BODY_BYTES]),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "SERVER: Received message larger than max",
    ),
    "unparsable example": (
        lambda ex: predict_request([b"not an example"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Could not parse example input",
    ),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_requests_get_the_right_status_code(stub, examples, case):
    make_request, code, details = BAD_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(make_request(examples), timeout=10)
    assert (raised.value.code(), raised.value.details()[: len(details)]) == (code, details)
    assert stub.Predict(predict_request(examples[:1]), timeout=10).model_spec.version.value == 1


def test_classify_is_refused_for_a_signature_without_classification_inputs(stub):
    request = classification_pb2.ClassificationRequest(model_spec={"name": "taxi"})
    with pytest.raises(grpc.RpcError) as raised:
        stub.Classify(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("No classification inputs found in SignatureDef: ")


def test_status_of_an_unknown_model_is_not_found(channel):
    with pytest.raises(grpc.RpcError) as raised:
        model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "nope"}), timeout=10
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


TYPED_FIELDS = {
    tf.float32: "float_val",
    tf.float64: "double_val",
    tf.int32: "int_val",
    tf.int64: "int64_val",
    tf.string: "string_val",
    tf.bool: "bool_val",
}


@pytest.mark.parametrize("signature", ["serving_default", "transform_features"])
def test_predict_outputs_are_in_the_typed_fields_as_tf_servings(stub, rest, examples, signature):
    """TF-Serving answers Predict with Tensor::AsProtoField: the values in float_val, int64_val, string_val,
    ..., no tensor_content; and they are what the REST API answers."""
    response = stub.Predict(predict_request(examples, signature_name=signature), timeout=10)
    status, answer = rest.request(
        "POST",
        "/v1/models/taxi:predict",
        json.dumps({"signature_name": signature, "inputs": {"examples": [b64(e) for e in examples]}}).encode(),
    )
    assert status == 200
    rest_outputs = (
        answer["outputs"] if len(response.outputs) > 1 else {key: answer["outputs"] for key in response.outputs}
    )
    assert set(response.outputs) == set(rest_outputs)
    for key, proto in response.outputs.items():
        dtype = tf.as_dtype(proto.dtype)
        assert proto.tensor_content == b""
        assert [dim.size for dim in proto.tensor_shape.dim][0] == len(examples)
        values = list(getattr(proto, TYPED_FIELDS[dtype]))
        assert len(values) == np.prod([dim.size for dim in proto.tensor_shape.dim])
        expected = np.array(rest_outputs[key], dtype=object if dtype == tf.string else dtype.as_numpy_dtype)
        if dtype == tf.string:
            expected = np.vectorize(lambda value: value.encode())(expected)
        np.testing.assert_array_equal(np.array(values, dtype=expected.dtype), expected.reshape(-1))
        np.testing.assert_array_equal(tf.make_ndarray(proto), expected)  # the Kubeflow client's reading
