"""TF-Serving's own test cases for Predict, Classify, Regress and MultiInference, ported: the same
requests on TF-Serving's test SavedModels (testdata/tf_serving/) must get the answers and errors
TF-Serving's tests expect, over the server's REST and gRPC APIs. Each case names its source:

    model_servers/tensorflow_model_server_test.py          TensorflowModelServerTest.<test>
    model_servers/http_rest_api_handler_test.cc            HttpRestApiHandlerTest.<test>
    servables/tensorflow/multi_inference_test.cc           MultiInferenceTest.<test> (TF1 and TF2 models)
    servables/tensorflow/classifier_test.cc, regressor_test.cc   ClassifierTest.<test>, RegressorTest.<test>
    util/json_tensor_test.cc                               ClassifyRegressRequestTest.<test>, ...

(classifier_test and regressor_test run with the method-name check off, TF-Serving's default and
this server's only mode; their fake Sessions are the SavedModels of tf_serving_test_models.py.)
"""

from __future__ import annotations

import json
import math

import grpc
import pytest
from google.protobuf import text_format
from serving_test_support import running_server
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tf_serving_test_models import (
    HALF_PLUS_THREE,
    HALF_PLUS_TWO,
    HALF_PLUS_TWO_2_VERSIONS,
    HALF_PLUS_TWO_TF2,
    TESTDATA,
    VERSION,
    class_scores,
    example,
    save_fake_classifier,
    save_fake_regressor,
    save_keras_sequential,
    save_tf_saved_model,
    save_tf_saved_model_multiple_signatures,
)

from taxi_model.serving import rest_examples, rest_json
from taxi_model.serving.client import RestClient
from taxi_model.serving.errors import ServingError

CLASSIFY, REGRESS = "tensorflow/serving/classify", "tensorflow/serving/regress"
TWO_VERSIONS = "saved_model_half_plus_two_2_versions"  # http_rest_api_handler_test's kTestModelName
MODELS = {  # name served: base path (as the upstream tests name them)
    "default": HALF_PLUS_TWO,
    "default_tf2": HALF_PLUS_TWO_TF2,
    "half_plus_two": HALF_PLUS_TWO,
    "half_plus_three": HALF_PLUS_THREE,
    TWO_VERSIONS: HALF_PLUS_TWO_2_VERSIONS,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("tf_serving_cases")
    built = {
        "fake_classifier": save_fake_classifier,
        "fake_regressor": save_fake_regressor,
        "tf_saved_model_save": save_tf_saved_model,
        "tf_saved_model_save_multiple_signatures": save_tf_saved_model_multiple_signatures,
        "keras_sequential_saved_model_save": save_keras_sequential,
    }
    models = {**MODELS, **{name: save(root / name) for name, save in built.items()}}
    entries = [
        f'config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}'
        for name, path in models.items()
        if name != TWO_VERSIONS
    ]
    # HttpRestApiHandlerTest's server: version 123 only, labelled "Version_Label".
    entries.append(
        f'config {{ name: "{TWO_VERSIONS}" base_path: "{HALF_PLUS_TWO_2_VERSIONS}" '
        f'model_platform: "tensorflow" model_version_policy {{ specific {{ versions: {VERSION} }} }} '
        f'version_labels {{ key: "Version_Label" value: {VERSION} }} }}'
    )
    (root / "models.config").write_text("model_config_list { " + " ".join(entries) + " }\n")
    with running_server(root) as running:
        yield running


@pytest.fixture
def rest(server):
    connection = RestClient(port=server.rest_port)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def post(rest, path: str, document) -> tuple[int, dict]:
    return rest.request("POST", path, document if isinstance(document, bytes) else json.dumps(document).encode())


def assert_rpc_error(call, request, code: grpc.StatusCode, details: str) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=30)
    assert raised.value.code() == code
    assert details in raised.value.details()


def assert_model_spec(spec, name: str, signature_name: str, version: int = VERSION) -> None:
    """TensorflowModelServerTestBase._VerifyModelSpec."""
    assert (spec.name, spec.signature_name, spec.version.value) == (name, signature_name, version)


# -- Predict


def verify_predict_request(
    stub,
    expected_output: float,
    model_name: str = "default",
    specify_output: bool = True,
    batch_input: bool = False,
    signature_name: str = "serving_default",
) -> None:
    """TensorflowModelServerTestBase.VerifyPredictRequest: x = [2.0] (shape [1], or [1, 1] batched)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    if batch_input:
        request.inputs["x"].tensor_shape.dim.add().size = 1
    if specify_output:
        request.output_filter.append("y")
    result = stub.Predict(request, timeout=30)
    assert "y" in result.outputs
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert list(result.outputs["y"].float_val) == [expected_output]
    assert_model_spec(result.model_spec, model_name, signature_name)


@pytest.mark.parametrize("specify_output", [True, False])
def test_predict_saved_model(stub, specify_output):
    # TensorflowModelServerTest.testPredictSavedModel (_TestPredict): x of shape [1] into a [?,1] signature.
    verify_predict_request(stub, expected_output=3.0, specify_output=specify_output)


@pytest.mark.parametrize("specify_output", [True, False])
@pytest.mark.parametrize("model_name, expected_output", [("half_plus_two", 3.0), ("half_plus_three", 4.0)])
def test_good_model_config(stub, model_name, expected_output, specify_output):
    # TensorflowModelServerTest.testGoodModelConfig: half_plus_three is a TF1 SavedModel that
    # tf.saved_model.load refuses; it is served from a TF1 Session.
    verify_predict_request(stub, expected_output, model_name=model_name, specify_output=specify_output)


@pytest.mark.parametrize(
    "case, model_name, expected_output, options",
    [
        ("test_tf_saved_model_save", "tf_saved_model_save", 12.0, {"specify_output": False}),
        (
            "test_tf_saved_model_save_multiple_signatures",
            "tf_saved_model_save_multiple_signatures",
            2.0,
            {"signature_name": "custom_signature_key"},
        ),
        ("test_tf_saved_model_save_multiple_signatures", "tf_saved_model_save_multiple_signatures", 1.0, {}),
        ("test_sequential_keras_saved_model_save", "keras_sequential_saved_model_save", 2.0, {"batch_input": True}),
    ],
)
def test_saved_models_of_tf2(stub, case, model_name, expected_output, options):
    # TensorflowModelServerTest.<case>: SavedModels written by tf.saved_model.save at test time
    verify_predict_request(stub, expected_output, model_name=model_name, **options)


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"instances": [2.0, 3.0, 4.0]}, {"predictions": [3.0, 3.5, 4.0]}),  # testPredictREST
        ({"inputs": [2.0, 3.0, 4.0]}, {"outputs": [3.0, 3.5, 4.0]}),  # testPredictColumnarREST
    ],
)
def test_predict_rest(rest, body, expected):
    # TensorflowModelServerTest.testPredictREST, testPredictColumnarREST: shape [3] into a [?,1] signature.
    assert post(rest, "/v1/models/default:predict", body) == (200, expected)


@pytest.mark.parametrize(
    "path, body, expected",
    [
        (
            f"/v1/models/{TWO_VERSIONS}:predict",
            {"instances": [[1.0, 2.0], [3.0, 4.0]]},
            {"predictions": [[2.5, 3.0], [3.5, 4.0]]},
        ),
        (f"/v1/models/{TWO_VERSIONS}/versions/123:predict", {"instances": [1.0, 2.0]}, {"predictions": [2.5, 3.0]}),
        (
            f"/v1/models/{TWO_VERSIONS}/labels/Version_Label:predict",
            {"instances": [1.0, 2.0]},
            {"predictions": [2.5, 3.0]},
        ),
        (
            f"/v1/models/{TWO_VERSIONS}/versions/123:predict",
            {"signature_name": "serving_default", "instances": [3.0, 4.0]},
            {"predictions": [3.5, 4.0]},
        ),
        (
            f"/v1/models/{TWO_VERSIONS}/versions/123:predict",
            {"signature_name": "serving_default", "inputs": [3.0, 4.0]},
            {"outputs": [3.5, 4.0]},
        ),
    ],
)
def test_handler_predict(rest, path, body, expected):
    # HttpRestApiHandlerTest.Predict
    assert post(rest, path, body) == (200, expected)


@pytest.mark.parametrize(
    "path, status",
    [
        ("/v1/models/foo:predict", 404),
        ("/v1/models/foo/versions/50:predict", 404),
        (f"/v1/models/{TWO_VERSIONS}99:predict", 404),
    ],
)
def test_handler_predict_model_name_version_errors(rest, path, status):
    # HttpRestApiHandlerTest.PredictModelNameVersionErrors (NOT_FOUND)
    assert post(rest, path, {"instances": [1]})[0] == status


@pytest.mark.parametrize(
    "path, body, error",
    [
        (":predict", b"", "JSON Parse error: The document is empty"),
        (":predict", b"instances = [1, 2]", "JSON Parse error: "),  # rapidjson: "Invalid value."; Python's words differ
        (":predict", b'{ "instances": ["x", "y"] }', "not of expected type: float"),
        ("/labels/Version_Nonexistent:predict", b'{ "instances": ["x", "y"] }', "Unrecognized servable version label"),
        (":predict", b'{ "signature_name": 100 }', "'signature_name' key must be a string value."),
    ],
)
def test_handler_predict_request_errors(rest, path, body, error):
    # HttpRestApiHandlerTest.PredictRequestErrors (INVALID_ARGUMENT)
    status, answer = post(rest, f"/v1/models/{TWO_VERSIONS}{path}", body)
    assert status == 400 and error in answer["error"]


@pytest.mark.parametrize(
    "method, path, error",
    [
        ("GET", "/v1/foo", "Malformed request"),
        ("POST", "/v1/foo", "Malformed request"),
        ("GET", "/v1/models", "Missing model name"),
        ("GET", "/v1/models/debug/model_name", "Malformed request"),
        ("POST", "/v1/models", "Malformed request"),
        ("GET", "/v1/models/foo:predict", "Malformed request"),
        ("GET", "/v1/models/foo/version/50:predict", "Malformed request"),
        ("POST", "/v1/models/foo/version/50:regress", "Malformed request"),
        ("POST", "/v1/models/foo/versions/HELLO:regress", "Malformed request"),
        ("POST", f"/v1/models/foo/versions/{2**64 - 1}:regress", "Failed to convert version"),
        ("POST", "/v1/models/foo/metadata", "Malformed request"),
        ("POST", "/v1/models/foo/label/some_label:regress", "Malformed request"),
        ("POST", "/v1/models/foo/versions/50/labels/some_label:regress", "Malformed request"),
        ("POST", "/v1/models/foo/versions/some_label:regress", "Malformed request"),
    ],
)
def test_handler_unsupported_api_calls(rest, method, path, error):
    # HttpRestApiHandlerTest.UnsupportedApiCalls (INVALID_ARGUMENT), and kPathRegex's refusals
    status, answer = rest.request(method, path, b"" if method == "POST" else None)
    assert status == 400 and error in answer["error"]


# -- Classify and Regress on the half_plus_two models


@pytest.mark.parametrize("model", ["default", "default_tf2"])
def test_classify(stub, model):
    # TensorflowModelServerTest.testClassify (TF1), testClassifyTf2 (predict method names, check off)
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.example_list.examples.add().CopyFrom(example(x=2.0))
    result = stub.Classify(request, timeout=30)
    assert len(result.result.classifications) == 1
    assert len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    assert_model_spec(result.model_spec, model, "classify_x_to_y")


@pytest.mark.parametrize("model", ["default", "default_tf2"])
def test_regress(stub, model):
    # TensorflowModelServerTest.testRegress (TF1), testRegressTf2
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "regress_x_to_y"
    request.input.example_list.examples.add().CopyFrom(example(x=2.0))
    result = stub.Regress(request, timeout=30)
    assert [regression.value for regression in result.result.regressions] == [3.0]
    assert_model_spec(result.model_spec, model, "regress_x_to_y")


@pytest.mark.parametrize("model", ["default", "default_tf2"])
def test_multi_inference(stub, model):
    # TensorflowModelServerTest.testMultiInference (TF1), testMultiInferenceTf2
    request = multi_inference_request(model, [("regress_x_to_y", REGRESS), ("classify_x_to_y", CLASSIFY)])
    result = stub.MultiInference(request, timeout=30)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for i in range(2):
        assert_model_spec(result.results[i].model_spec, model, request.tasks[i].model_spec.signature_name)


@pytest.mark.parametrize(
    "method, expected",
    [
        ("classify", {"results": [[["", 3.0]]]}),  # testClassifyREST
        ("regress", {"results": [3.0]}),  # testRegressREST
    ],
)
def test_classify_and_regress_rest(rest, method, expected):
    # TensorflowModelServerTest.testClassifyREST, testRegressREST
    body = {"signature_name": f"{method}_x_to_y", "examples": [{"x": 2.0}]}
    assert post(rest, f"/v1/models/default:{method}", body) == (200, expected)


@pytest.mark.parametrize(
    "path, body, expected",
    [
        (":regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]}, {"results": [42]}),
        ("/versions/123:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]}, {"results": [42]}),
        (
            "/labels/Version_Label:regress",
            {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]},
            {"results": [42]},
        ),
        (":classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 20.0}]}, {"results": [[["", 12]]]}),
        (
            "/labels/Version_Label:classify",
            {"signature_name": "classify_x_to_y", "examples": [{"x": 10.0}]},
            {"results": [[["", 7]]]},
        ),
    ],
)
def test_handler_regress_and_classify(rest, path, body, expected):
    # HttpRestApiHandlerTest.Regress, HttpRestApiHandlerTest.Classify
    assert post(rest, f"/v1/models/{TWO_VERSIONS}{path}", body) == (200, expected)


# -- Status and metadata (the same tests' model)


STATUS_123 = {
    "model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
}


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/default",
        f"/v1/models/{TWO_VERSIONS}",
        f"/v1/models/{TWO_VERSIONS}/versions/123",
        f"/v1/models/{TWO_VERSIONS}/labels/Version_Label",
    ],
)
def test_get_status_rest(rest, path):
    # TensorflowModelServerTest.testGetStatusREST, HttpRestApiHandlerTest.GetStatus
    assert rest.request("GET", path) == (200, STATUS_123)


def sorted_object(value):
    """TensorflowModelServerTestBase.SortedObject: lists sorted, for an order-free comparison."""
    if isinstance(value, dict):
        return sorted((key, sorted_object(item)) for key, item in value.items())
    if isinstance(value, list):
        return sorted(sorted_object(item) for item in value)
    return value


@pytest.mark.parametrize(
    "model, expected_file",
    [
        ("default", "half_plus_two_model_metadata.json"),  # testGetModelMetadataREST
        (TWO_VERSIONS, "saved_model_half_plus_two_2_versions_metadata.json"),  # HttpRestApiHandlerTest.GetModelMetadata
    ],
)
def test_get_model_metadata_rest(rest, model, expected_file):
    # TensorflowModelServerTest.testGetModelMetadataREST, HttpRestApiHandlerTest.GetModelMetadata
    status, metadata = rest.request("GET", f"/v1/models/{model}/metadata")
    assert status == 200
    assert sorted_object(metadata) == sorted_object(json.loads((TESTDATA / expected_file).read_text()))


def test_get_model_status_and_metadata_grpc(server, stub):
    # TensorflowModelServerTest.testGetModelStatus, testGetModelMetadata
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "default"}), timeout=30
    )
    channel.close()
    assert [(s.version, s.status.error_code) for s in status.model_version_status] == [(VERSION, 0)]
    metadata = stub.GetModelMetadata(
        get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec={"name": "default"}, metadata_field=["signature_def"]
        ),
        timeout=30,
    )
    assert (metadata.model_spec.name, metadata.model_spec.version.value) == ("default", VERSION)
    assert list(metadata.metadata) == ["signature_def"]


# -- MultiInference (multi_inference_test.cc, on its TF1 and TF2 models)


def multi_inference_request(
    model: str, tasks: list[tuple[str, str]], x: float | None = 2.0
) -> inference_pb2.MultiInferenceRequest:
    """multi_inference_test.cc's AddInput({{"x", x}}) and PopulateTask(signature, method) per task."""
    request = inference_pb2.MultiInferenceRequest()
    for signature_name, method_name in tasks:
        task = request.tasks.add(method_name=method_name)
        task.model_spec.name = model
        task.model_spec.signature_name = signature_name
    if x is not None:
        request.input.example_list.examples.add().CopyFrom(example(x=x))
    return request


MODEL_TYPES = ["default", "default_tf2"]  # MultiInferenceTest's ModelTypes: tf1_model_t, tf2_model_t


@pytest.mark.parametrize("model", MODEL_TYPES)
@pytest.mark.parametrize(
    "case, tasks, x, code, details",
    [
        ("MissingInputTest", [("regress_x_to_y", REGRESS)], None, grpc.StatusCode.INVALID_ARGUMENT, "Input is empty"),
        (
            "UndefinedSignatureTest",
            [("ThisSignatureDoesNotExist", REGRESS)],
            2.0,
            grpc.StatusCode.INVALID_ARGUMENT,
            "signature not found",
        ),
        (
            "EvaluateDuplicateSignaturesTest",
            [("regress_x_to_y", REGRESS), ("regress_x_to_y", REGRESS)],
            2.0,
            grpc.StatusCode.INVALID_ARGUMENT,
            "Duplicate evaluation of signature: regress_x_to_y",
        ),
        (
            "UsupportedSignatureTypeTest",
            [("serving_default", "tensorflow/serving/predict")],
            2.0,
            grpc.StatusCode.UNIMPLEMENTED,
            "Unsupported signature",
        ),
    ],
)
def test_multi_inference_errors(stub, model, case, tasks, x, code, details):
    # MultiInferenceTest.<case>
    assert_rpc_error(stub.MultiInference, multi_inference_request(model, tasks, x), code, details)


@pytest.mark.parametrize("model", MODEL_TYPES)
def test_multi_inference_inconsistent_model_specs(stub, model):
    # MultiInferenceTest.InconsistentModelSpecsInRequestTest
    request = multi_inference_request(model, [("regress_x_to_y", REGRESS)])
    task = request.tasks.add(method_name=REGRESS)
    task.model_spec.name = "ModelDoesNotExist"
    task.model_spec.signature_name = "regress_x_to_y"
    assert_rpc_error(stub.MultiInference, request, grpc.StatusCode.INVALID_ARGUMENT, "must access the same model name")


@pytest.mark.parametrize("model", MODEL_TYPES)
@pytest.mark.parametrize(
    "case, tasks, expected",
    [
        ("ValidSingleSignatureTest", [("regress_x_to_y", REGRESS)], ["regression_result { regressions { value: 3 } }"]),
        (
            "MultipleValidRegressSignaturesTest",
            [("regress_x_to_y", REGRESS), ("regress_x_to_y2", REGRESS)],
            ["regression_result { regressions { value: 3 } }", "regression_result { regressions { value: 4 } }"],
        ),
        (
            "RegressAndClassifySignaturesTest",
            [("regress_x_to_y", REGRESS), ("classify_x_to_y", CLASSIFY)],
            [
                "regression_result { regressions { value: 3 } }",
                "classification_result { classifications { classes { score: 3 } } }",
            ],
        ),
    ],
)
def test_multi_inference_results(stub, model, case, tasks, expected):
    # MultiInferenceTest.<case>: the expected response, model_spec = the task's with the version
    request = multi_inference_request(model, tasks)
    expected_response = inference_pb2.MultiInferenceResponse()
    for task, result in zip(request.tasks, expected, strict=True):
        added = text_format.Parse(result, expected_response.results.add())
        added.model_spec.CopyFrom(task.model_spec)
        added.model_spec.version.value = VERSION
    assert stub.MultiInference(request, timeout=30) == expected_response


# -- classifier_test.cc, on its fake Session's model


def classification_request(signature_name: str = "", examples=(), context=None):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "fake_classifier"
    request.model_spec.signature_name = signature_name
    if context is not None:
        request.input.example_list_with_context.context.CopyFrom(context)
        request.input.example_list_with_context.examples.extend(examples)
    elif examples:
        request.input.example_list.examples.extend(examples)
    return request


def with_empty_example_list(request):
    request.input.example_list.SetInParent()  # "touched", as upstream's mutable_example_list()
    return request


def classifications(result) -> list[list[tuple[str, float]]]:
    return [[(c.label, c.score) for c in classification.classes] for classification in result.classifications]


TWO_EXAMPLES = [class_scores(("dos", 2), ("uno", 1)), class_scores(("cuatro", 4), ("tres", 3))]


@pytest.mark.parametrize(
    "case, request_, expected",
    [
        (
            "ExampleList",
            classification_request(examples=TWO_EXAMPLES),
            [[("dos", 2), ("uno", 1)], [("cuatro", 4), ("tres", 3)]],
        ),
        (
            "ExampleListWithContext",
            classification_request(examples=[example(), example()], context=class_scores(("dos", 2), ("uno", 1))),
            [[("dos", 2), ("uno", 1)], [("dos", 2), ("uno", 1)]],
        ),
        (
            "ExampleListWithContext_DuplicateFeatures",
            classification_request(
                examples=[example(), class_scores(("tres", 3), ("cuatro", 4))],
                context=class_scores(("uno", 1), ("dos", 2)),
            ),
            [[("uno", 1), ("dos", 2)], [("tres", 3), ("cuatro", 4)]],
        ),
        (
            "ClassesOnly",
            classification_request("classes_only", TWO_EXAMPLES),
            [[("dos", 0), ("uno", 0)], [("cuatro", 0), ("tres", 0)]],
        ),
        ("ScoresOnly", classification_request("scores_only", TWO_EXAMPLES), [[("", 2), ("", 1)], [("", 4), ("", 3)]]),
        (
            "ZeroScoresArePresent",
            classification_request("scores_only", [class_scores(("minus", -1), ("zero", 0), ("one", 1))]),
            [[("", -1), ("", 0), ("", 1)]],
        ),
        (
            "ValidNamedSignature",
            classification_request("output_plus_one", TWO_EXAMPLES),
            [[("dos", 3), ("uno", 2)], [("cuatro", 5), ("tres", 4)]],
        ),
        ("MethodNameCheck", classification_request(examples=TWO_EXAMPLES[:1]), [[("dos", 2), ("uno", 1)]]),
    ],
)
def test_classifier(stub, case, request_, expected):
    # ClassifierTest.<case> (MethodNameCheck: with the check off, a predict-method signature classifies)
    response = stub.Classify(request_, timeout=30)
    assert classifications(response.result) == expected
    assert_model_spec(response.model_spec, "fake_classifier", request_.model_spec.signature_name or "serving_default")


@pytest.mark.parametrize(
    "case, request_, details",
    [
        (
            "InvalidNamedSignature",
            classification_request("invalid_regression_signature", TWO_EXAMPLES),
            'Expected classification signature outputs to contain at least one of "classes" or "scores"',
        ),
        (
            "MalformedScores",
            classification_request("ImproperlySizedScoresSignature", TWO_EXAMPLES),
            "Expected Tensor shape: [batch_size num_classes] but got [2,2,10]",
        ),
        (
            "MissingClassificationSignature",
            classification_request("no_inputs", TWO_EXAMPLES[:1]),
            "Expected one input Tensor.",
        ),
        ("EmptyInput", classification_request(), "Input is empty"),
        ("EmptyExampleList", with_empty_example_list(classification_request()), "Input is empty"),
        ("EmptyExampleListWithContext", classification_request(context=class_scores(("dos", 2))), "Input is empty"),
        ("RunsFails", classification_request("runs_fails", TWO_EXAMPLES[:1]), "Run totally failed"),
        ("ClassesIncorrectTensorBatchSize", classification_request("classes_batch_of_1", TWO_EXAMPLES), "batch size"),
        (
            "ClassesIncorrectTensorType",
            classification_request("classes_float", TWO_EXAMPLES),
            "Expected classes Tensor of DT_STRING",
        ),
        ("ScoresIncorrectTensorBatchSize", classification_request("scores_batch_of_1", TWO_EXAMPLES), "batch size"),
        (
            "ScoresIncorrectTensorType",
            classification_request("scores_string", TWO_EXAMPLES),
            "Expected scores Tensor of DT_FLOAT",
        ),
        (
            "MismatchedNumberOfTensorClasses",
            classification_request("scores_of_3_classes", TWO_EXAMPLES),
            "Tensors class and score should match in dim_size(1). Got 2 vs. 3",
        ),
    ],
)
def test_classifier_errors(stub, case, request_, details):
    # ClassifierTest.<case>: INVALID_ARGUMENT (RunsFails: upstream's mock fails with INTERNAL, a
    # failing op here with its own INVALID_ARGUMENT; the test checks the message only)
    assert_rpc_error(stub.Classify, request_, grpc.StatusCode.INVALID_ARGUMENT, details)


# -- regressor_test.cc, on its fake Session's model


def regression_request(signature_name: str = "", examples=(), context=None):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "fake_regressor"
    request.model_spec.signature_name = signature_name
    if context is not None:
        request.input.example_list_with_context.context.CopyFrom(context)
        request.input.example_list_with_context.examples.extend(examples)
    elif examples:
        request.input.example_list.examples.extend(examples)
    return request


@pytest.mark.parametrize(
    "case, request_, expected",
    [
        ("BasicExampleList", regression_request(examples=[example(output=2.0), example(output=3.0)]), [2.0, 3.0]),
        (
            "BasicExampleListWithContext",
            regression_request(examples=[example(), example()], context=example(output=3.0)),
            [3.0, 3.0],
        ),
        (
            "ValidNamedSignature",
            regression_request("output_plus_one", [example(output=2.0), example(output=3.0)]),
            [3.0, 4.0],
        ),
        ("MethodNameCheck", regression_request(examples=[example(output=2.0)]), [2.0]),
    ],
)
def test_regressor(stub, case, request_, expected):
    # RegressorTest.<case> (MethodNameCheck: with the check off, a predict-method signature regresses)
    response = stub.Regress(request_, timeout=30)
    assert [regression.value for regression in response.result.regressions] == expected
    assert_model_spec(response.model_spec, "fake_regressor", request_.model_spec.signature_name or "serving_default")


@pytest.mark.parametrize(
    "case, request_, details",
    [
        (
            "InvalidNamedSignature",
            regression_request("invalid_classification_signature", [example(output=2.0)]),
            "Expected one output Tensor.",
        ),
        (
            "MalformedOutputs",
            regression_request("ImproperlySizedOutputSignature", [example(output=2.0)]),
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [1,1,10]",
        ),
        ("EmptyInput", regression_request(), "Input is empty"),
        ("EmptyExampleList", with_empty_example_list(regression_request()), "Input is empty"),
        ("EmptyExampleListWithContext", regression_request(context=example(output=3.0)), "Input is empty"),
        ("RunsFails", regression_request("runs_fails", [example(output=2.0)]), "Run totally failed"),
        (
            "UnexpectedOutputTensorSize",
            regression_request("outputs_batch_of_2", [example(output=2.0)]),
            "output batch size",
        ),
        (
            "UnexpectedOutputTensorType",
            regression_request("outputs_string", [example(output=2.0)]),
            "Expected output Tensor of DT_FLOAT",
        ),
        (
            "MissingRegressionSignature",
            regression_request("no_inputs", [example(**{"class": "uno"})]),
            "Expected one input Tensor.",
        ),
    ],
)
def test_regressor_errors(stub, case, request_, details):
    # RegressorTest.<case>: INVALID_ARGUMENT
    assert_rpc_error(stub.Regress, request_, grpc.StatusCode.INVALID_ARGUMENT, details)


# -- json_tensor_test.cc: Classify and Regress JSON


def test_request_no_context():
    # ClassifyRegressRequestTest.RequestNoContext
    document = rest_json.parse_body(
        b'{"examples": [{"names": ["foo", "bar"], "ratings": [8.0, 9.0], "age": 20},'
        b' {"names": ["baz"], "ratings": 6.0}]}'
    )
    expected = text_format.Parse(
        """example_list {
        examples { features {
          feature { key: "names" value { bytes_list { value: "foo" value: "bar" } } }
          feature { key: "ratings" value { float_list { value: 8.0 value: 9.0 } } }
          feature { key: "age" value { int64_list { value: 20 } } } } }
        examples { features {
          feature { key: "names" value { bytes_list { value: "baz" } } }
          feature { key: "ratings" value { float_list { value: 6.0 } } } } } }""",
        input_pb2.Input(),
    )
    assert rest_examples.request_input(document) == expected


def test_request_with_context_and_signature():
    # ClassifyRegressRequestTest.RequestWithContextAndSignature (NaN and infinities read as rapidjson does)
    document = rest_json.parse_body(b"""{"signature_name": "custom_signture",
        "context": {"query": "pizza", "location": ["sfo"]},
        "examples": [{"names": ["foo", "bar"], "ratings": [8.0, 9.0, NaN, Infinity], "age": 20},
                     {"names": ["baz", {"b64": "aGVsbG8="}], "ratings": 6.0, "intboolmix": [1, true, false]},
                     {"names": "bar", "ratings": -Infinity}]}""")
    assert rest_json.signature_name(document) == "custom_signture"
    request = rest_examples.request_input(document)
    context = request.example_list_with_context.context.features.feature
    assert (list(context["query"].bytes_list.value), list(context["location"].bytes_list.value)) == (
        [b"pizza"],
        [b"sfo"],
    )
    first, second, third = (example.features.feature for example in request.example_list_with_context.examples)
    assert list(first["names"].bytes_list.value) == [b"foo", b"bar"]
    assert list(first["ratings"].float_list.value)[:2] == [8.0, 9.0]
    assert math.isnan(first["ratings"].float_list.value[2]) and first["ratings"].float_list.value[3] == math.inf
    assert list(first["age"].int64_list.value) == [20]
    assert list(second["names"].bytes_list.value) == [b"baz", b"hello"]
    assert list(second["ratings"].float_list.value) == [6.0]
    assert list(second["intboolmix"].int64_list.value) == [1, 1, 0]
    assert list(third["names"].bytes_list.value) == [b"bar"]
    assert list(third["ratings"].float_list.value) == [-math.inf]


@pytest.mark.parametrize(
    "body, error",
    [
        (
            b'{"signature_name": ["hello"], "examples": [{"names": ["foo", "bar"]}]}',
            "'signature_name' key must be a string",
        ),
        (b'{"context": [{"names": ["foo", "bar"]}]}', "Example must be JSON object"),
        (b'{"examples": {"names": ["foo", "bar"]}}', "list/array"),
        (b'{"examples": [[{"names": ["foo", "bar"]}]]}', "Example must be JSON object"),
        (b'{"examples": [{"names": [10, null]}]}', "names has element with unexpected JSON type: Null"),
        (b'{"examples": [{"names": [10, 10.0]}]}', "feature: names expecting type: int64"),
        (b'{"examples": [{"names": [10, {"test": 10}]}]}', "names has element with unexpected JSON type: Object"),
        (b'{"examples": [{"names": [[10], 20]}]}', "names has element with unexpected JSON type: Array"),
        (b'{"examples": [{"names": [20, 18446744073709551603]}]}', "Only int64_t is supported"),
    ],
)
@pytest.mark.parametrize("method", ["classify", "regress"])
def test_json_errors(rest, body, error, method):
    # ClassifyRegressRequestTest.JsonErrors (ClassificationRequest and RegressionRequest), over REST
    status, answer = post(rest, f"/v1/models/default:{method}", body)
    assert status == 400 and error in answer["error"]


def test_json_from_classification_and_regression_results():
    # ClassifyRegressnResultTest.JsonFromClassificationResult, JsonFromRegressionResult
    classification = text_format.Parse(
        """
        classifications { classes { label: "car" score: 0.2 } classes { label: "bike" score: 0.7 }
                          classes { label: "bus" score: 0.1 } }
        classifications { classes { label: "car" score: 0.7 } classes { label: "bike" score: 0.1 }
                          classes { label: "bus" score: 0.2 } }""",
        classification_pb2.ClassificationResult(),
    )
    assert rest_examples.classification_json(classification) == {
        "results": [[["car", 0.2], ["bike", 0.7], ["bus", 0.1]], [["car", 0.7], ["bike", 0.1], ["bus", 0.2]]]
    }
    regression = text_format.Parse(
        "regressions { value: 0.2 } regressions { value: 0.9 } regressions { value: 1.0 }",
        regression_pb2.RegressionResult(),
    )
    assert rest_examples.regression_json(regression) == {"results": [0.2, 0.9, 1.0]}


def test_json_from_regression_result_with_non_finite():
    # ClassifyRegressnResultTest.JsonFromRegressionResultWithNonFinite
    regression = text_format.Parse(
        "regressions { value: 0.2 } regressions { value: inf } regressions { value: 1.0 }"
        " regressions { value: -inf } regressions { value: nan }",
        regression_pb2.RegressionResult(),
    )
    assert rest_json.dumps(rest_examples.regression_json(regression)) == b'{"results":[0.2,Infinity,1.0,-Infinity,NaN]}'


def test_json_from_result_errors():
    # ClassifyRegressnResultTest.JsonFromResultErrors
    with pytest.raises(ServingError, match="empty ClassificationResults"):
        rest_examples.classification_json(classification_pb2.ClassificationResult())
    with pytest.raises(ServingError, match="empty RegressionResults"):
        rest_examples.regression_json(regression_pb2.RegressionResult())
