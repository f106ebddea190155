"""Classify, Regress and MultiInference, as TF-Serving runs them (servables/tensorflow/classifier.cc,
regressor.cc, multi_inference.cc, util.cc).

The request's tf.Examples are serialized into a string vector and fed to the signature's one input,
`inputs`; a classification signature answers `classes` (strings) and/or `scores` (floats), each
[batch, classes], a regression signature `outputs` (floats, [batch] or [batch, 1]). As TF-Serving
with its default `--enable_signature_method_name_check=false`, the signature's method name is not
checked: any signature (a TF2 SavedModel's are all predict signatures) whose input and output names
fit is run. Errors are INVALID_ARGUMENT with TF-Serving's messages.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from google.protobuf import text_format
from grpc import StatusCode
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2, inference_pb2, input_pb2, regression_pb2

from taxi_model.serving.batching import Batcher
from taxi_model.serving.errors import ServingError, invalid_argument
from taxi_model.serving.inference import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    REGRESS_METHOD,
    ModelVersion,
    dtype_of,
    shape_text,
)

INPUTS = "inputs"  # signature_constants: CLASSIFY_INPUTS and REGRESS_INPUTS
CLASSES, SCORES = "classes", "scores"
OUTPUTS = "outputs"


def serialized_examples(examples: input_pb2.Input) -> np.ndarray:
    """The input's tf.Examples as the string vector a signature takes; with a context, context and
    example serialized back to back, as TF-Serving does (parsed, the two merge: the example's
    features replace the context's of the same name)."""
    kind = examples.WhichOneof("kind")
    if kind == "example_list":
        serialized = [example.SerializeToString() for example in examples.example_list.examples]
    elif kind == "example_list_with_context":
        context = examples.example_list_with_context.context.SerializeToString()
        serialized = [context + example.SerializeToString() for example in examples.example_list_with_context.examples]
    else:
        serialized = []
    if not serialized:
        raise invalid_argument("Input is empty.")
    array = np.empty(len(serialized), dtype=object)
    array[:] = serialized
    return array


def _debug_string(signature_def) -> str:
    return text_format.MessageToString(signature_def)


def classification_outputs(signature_def) -> list[str]:
    """The outputs a classification runs (PreProcessClassification): `classes` and/or `scores`."""
    if len(signature_def.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature_def.outputs) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found {len(signature_def.outputs)}")
    if INPUTS not in signature_def.inputs:
        raise invalid_argument(f"No classification inputs found in SignatureDef: {_debug_string(signature_def)}")
    outputs = [key for key in (CLASSES, SCORES) if key in signature_def.outputs]
    if not outputs:
        raise invalid_argument(
            f'Expected classification signature outputs to contain at least one of "{CLASSES}" '
            f'or "{SCORES}". Signature was: {_debug_string(signature_def)}'
        )
    return outputs


def regression_outputs(signature_def) -> list[str]:
    """The output a regression runs (PreProcessRegression): `outputs`."""
    if len(signature_def.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature_def.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if INPUTS not in signature_def.inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: {_debug_string(signature_def)}")
    if OUTPUTS not in signature_def.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {_debug_string(signature_def)}")
    return [OUTPUTS]


def _dtype_name(array: np.ndarray) -> str:
    return types_pb2.DataType.Name(dtype_of(array).as_datatype_enum)


def _check_matrix(name: str, array: np.ndarray, dtype_name: str, num_examples: int) -> None:
    if array.ndim != 2:
        raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got {shape_text(array.shape)}")
    if _dtype_name(array) != dtype_name:
        raise invalid_argument(f"Expected {name} Tensor of {dtype_name}. Got: {_dtype_name(array)}")
    if array.shape[0] != num_examples:
        raise invalid_argument(f"Expected {name} output batch size of {num_examples}. Got: {array.shape[0]}")


def classification_result(
    outputs: Mapping[str, np.ndarray], num_examples: int
) -> classification_pb2.ClassificationResult:
    """PostProcessClassificationResult: one Classifications per example, one Class per column."""
    classes, scores = outputs.get(CLASSES), outputs.get(SCORES)
    if classes is not None:
        _check_matrix(CLASSES, classes, "DT_STRING", num_examples)
    if scores is not None:
        _check_matrix(SCORES, scores, "DT_FLOAT", num_examples)
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    num_classes = (classes if classes is not None else scores).shape[1]
    result = classification_pb2.ClassificationResult()
    for i in range(num_examples):
        classifications = result.classifications.add()
        for c in range(num_classes):
            added = classifications.classes.add()
            if classes is not None:
                label = classes[i, c]
                # Class.label is a proto `string`: Python's protobuf holds text only (TF-Serving's C++ any bytes).
                added.label = label if isinstance(label, str) else bytes(label).decode(errors="replace")
            if scores is not None:
                added.score = float(scores[i, c])
    return result


def regression_result(outputs: Mapping[str, np.ndarray], num_examples: int) -> regression_pb2.RegressionResult:
    """PostProcessRegressionResult: one value per example, from a [batch] or [batch, 1] float output."""
    values = outputs[OUTPUTS]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise invalid_argument(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{shape_text(values.shape)}"
        )
    if values.shape[0] != num_examples:
        raise invalid_argument(
            f"Input batch size did not match output batch size: {num_examples} vs. {values.shape[0]}"
        )
    if _dtype_name(values) != "DT_FLOAT":
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {_dtype_name(values)}")
    result = regression_pb2.RegressionResult()
    for value in values.reshape(-1).tolist():
        result.regressions.add(value=value)
    return result


_KINDS = {  # method name: (the outputs it runs, its result from them)
    CLASSIFY_METHOD: (classification_outputs, classification_result),
    REGRESS_METHOD: (regression_outputs, regression_result),
}


def _run(
    model: ModelVersion,
    signature_name: str,
    outputs: list[str],
    examples: np.ndarray,
    max_batch_size: int | None,
    batcher: Batcher | None,
) -> dict[str, np.ndarray]:
    if signature_name not in model.signatures:  # a SignatureDef the loader does not serve (an init op)
        raise invalid_argument(f"No signature was found with the name: {signature_name}")
    return model.predict(signature_name, {INPUTS: examples}, outputs, max_batch_size, batcher)[1]


def run(
    model: ModelVersion,
    method_name: str,
    signature_name: str,
    examples: input_pb2.Input,
    max_batch_size: int | None = None,
    batcher: Batcher | None = None,
):
    """Classify (CLASSIFY_METHOD) or Regress (REGRESS_METHOD) with a signature (the default if
    empty): its ClassificationResult or RegressionResult."""
    name = signature_name or DEFAULT_SIGNATURE
    if name not in model.signature_def_map.signature_def:
        raise invalid_argument(f"No signature was found with the name: {name}")
    outputs_of, result_of = _KINDS[method_name]
    outputs = outputs_of(model.signature_def_map.signature_def[name])
    serialized = serialized_examples(examples)
    return result_of(_run(model, name, outputs, serialized, max_batch_size, batcher), len(serialized))


def _check_tasks(request: inference_pb2.MultiInferenceRequest, model: ModelVersion) -> list[tuple[str, list[str]]]:
    """Each task's signature and outputs, checked as TensorFlowMultiInferenceRunner::Infer does."""
    checked, model_name = [], ""
    for task in request.tasks:
        if not task.model_spec.name:
            raise invalid_argument("Found ModelSpec with an empty model name.")
        if model_name and task.model_spec.name != model_name:
            raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        model_name = task.model_spec.name
        name = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if name in [done for done, _ in checked]:
            raise invalid_argument(f"Duplicate evaluation of signature: {name}")
        if name not in model.signature_def_map.signature_def:
            raise invalid_argument(f"Requested signature not found in model graph: {name}")
        if task.method_name not in _KINDS:
            raise ServingError(StatusCode.UNIMPLEMENTED, f"Unsupported signature method_name: {task.method_name}")
        checked.append((name, _KINDS[task.method_name][0](model.signature_def_map.signature_def[name])))
    return checked


def multi_inference(
    model: ModelVersion,
    request: inference_pb2.MultiInferenceRequest,
    max_batch_size: int | None = None,
    batcher: Batcher | None = None,
) -> list[inference_pb2.InferenceResult]:
    """The results of a MultiInference's tasks on one version of their model, in the tasks' order
    (model_spec not filled in). Each signature runs once on the same serialized examples."""
    checked = _check_tasks(request, model)
    serialized = serialized_examples(request.input)
    results = []
    for task, (name, outputs) in zip(request.tasks, checked, strict=True):
        result = inference_pb2.InferenceResult()
        field = "classification_result" if task.method_name == CLASSIFY_METHOD else "regression_result"
        values = _run(model, name, outputs, serialized, max_batch_size, batcher)
        getattr(result, field).CopyFrom(_KINDS[task.method_name][1](values, len(serialized)))
        results.append(result)
    return results
