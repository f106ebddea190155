"""A loaded version of a model, and running its signatures on validated inputs.

Both front ends (REST and gRPC) turn a request into numpy arrays keyed by input name and call
`ModelVersion.predict`, so the checks (input names, dtypes, batch size, output filter) and their
TF-Serving-style messages live here once. Shapes are left to the model, as TF-Serving leaves them
to Session::Run: whatever shape its ops accept is run, and what they refuse is a 400 with TF's message.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import taxi_model  # noqa: F401  (Keras 2 before TensorFlow: the SavedModels hold tf_keras layers)

# isort: split
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from taxi_model.serving import tf1_session
from taxi_model.serving.errors import ServingError, from_model_error, invalid_argument

if TYPE_CHECKING:
    from taxi_model.serving.batching import Batcher

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
SERVE_TAG = "serve"
log = logging.getLogger("taxi_model.serving")


@dataclasses.dataclass(frozen=True)
class Signature:
    name: str
    method_name: str
    inputs: Mapping[str, tf.TensorSpec]
    outputs: Mapping[str, tf.TensorSpec]
    function: Callable[..., Mapping[str, tf.Tensor]]
    # The function's graph called with its flat inputs (see `_flat_caller`), or None: call `function`.
    flat_call: Callable[[Mapping[str, tf.Tensor]], Mapping[str, tf.Tensor]] | None = None

    def call(self, tensors: Mapping[str, tf.Tensor]) -> Mapping[str, tf.Tensor]:
        """Runs the signature on tensors whose names and dtypes were checked."""
        if self.flat_call is not None:
            return self.flat_call(tensors)
        return self.function(**tensors)


def _flat_caller(
    function, input_names: Iterable[str]
) -> Callable[[Mapping[str, tf.Tensor]], Mapping[str, tf.Tensor]] | None:
    """A call of a loaded signature that skips its structured-argument handling: the inputs, in the
    function's flat order, and its captured inputs (variables and tables) go straight to the traced
    graph. So an input of any shape the graph's ops accept is run, as TF-Serving's Session::Run runs
    it (the signature's TensorSpec is not enforced there either); names and dtypes
    `ModelVersion.predict` checks first. The skipped layers also cost 0.1-0.3 ms a call (the model's
    own time on a batch of 100 is ~0.8 ms). Private TensorFlow attributes (pinned TF 2.21): None if
    they are not there, and the public call, which enforces the TensorSpecs, is used."""
    try:
        inference = function._inference_function
        order = list(function._arg_keywords)
        deferred = any(callable(c) for c in function._captured_inputs)
        captured = list(function.captured_inputs)
    except AttributeError:
        return None
    if sorted(order) != sorted(input_names):
        return None
    if deferred or any(isinstance(c, tf.Variable) for c in captured) or not hasattr(inference, "call_preflattened"):
        if not hasattr(function, "_call_flat"):
            return None
        # Captures read at each call (deferred ones, variables): the slower flat call resolves them.
        return lambda tensors: function._call_flat([tensors[name] for name in order], function.captured_inputs)

    def call(tensors: Mapping[str, tf.Tensor]) -> Mapping[str, tf.Tensor]:
        return inference.call_preflattened([tensors[name] for name in order] + captured)

    return call


def shape_text(shape: Iterable[int | None]) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def dtype_of(array: np.ndarray) -> tf.DType:
    return tf.string if array.dtype == object or array.dtype.kind in "SU" else tf.as_dtype(array.dtype)


def _as_array(tensor: tf.Tensor | np.ndarray) -> np.ndarray:
    """A tensor's values as an array, scalars too (`.numpy()` of a scalar string is `bytes`); a TF1
    Session's outputs are numpy values already."""
    value = tensor.numpy() if hasattr(tensor, "numpy") else tensor
    if isinstance(value, np.ndarray):
        return value
    return np.array(value, dtype=object if isinstance(value, bytes) else None)  # not "S": it drops trailing NULs


def _brace(names: Iterable[str]) -> str:
    return "{" + ",".join(sorted(names)) + "}"


def _op_error_message(message: str) -> str:
    """An op's own message and node, without the Python stack that eager execution puts first."""
    lines = message.splitlines()
    for i, line in enumerate(lines[1:], start=1):
        if line.lstrip().startswith("[["):
            return lines[i - 1] + "\n" + line
    return message


def _serving_meta_graph(path: str) -> meta_graph_pb2.MetaGraphDef:
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return meta_graph
    raise ValueError(f"{path} has no meta graph tagged {SERVE_TAG!r}")


def _load_signatures(path: str, meta_graph: meta_graph_pb2.MetaGraphDef) -> tuple[object, dict[str, Signature]]:
    """The SavedModel loaded (what owns its variables and tables) and its signatures: by
    `tf.saved_model.load`, or, for a TF1 SavedModel that it cannot import, in a TF1 Session."""
    try:
        saved_model = tf.saved_model.load(path, tags=[SERVE_TAG])
    except (ValueError, TypeError, tf.errors.OpError) as error:
        try:
            session, session_signatures = tf1_session.load(path, [SERVE_TAG])
        except Exception:
            raise error from None
        log.info(
            "%s: not loadable by tf.saved_model.load (%s), loaded in a TF1 Session", path, str(error).splitlines()[0]
        )
        return session, {
            key: Signature(
                name=key,
                method_name=meta_graph.signature_def[key].method_name,
                inputs=signature.inputs,
                outputs=signature.outputs,
                function=signature.call,
                flat_call=signature.call,
            )
            for key, signature in session_signatures.items()
        }
    return saved_model, {
        key: Signature(
            name=key,
            method_name=meta_graph.signature_def[key].method_name,
            inputs=function.structured_input_signature[1],
            outputs=function.structured_outputs,
            function=function,
            flat_call=_flat_caller(function, function.structured_input_signature[1]),
        )
        for key, function in saved_model.signatures.items()
    }


class ModelVersion:
    """One SavedModel version, loaded: its signatures and its SignatureDefs (for metadata)."""

    def __init__(
        self,
        name: str,
        version: int,
        path: str,
        saved_model,
        signatures: Mapping[str, Signature],
        signature_def_map: get_model_metadata_pb2.SignatureDefMap,
    ):
        self.name = name
        self.version = version
        self.path = path
        self._saved_model = saved_model  # owns the variables and tables the signatures use
        self.signatures = dict(signatures)
        self.signature_def_map = signature_def_map

    @classmethod
    def load(cls, name: str, version: int, path: str, warm_up: bool = True) -> ModelVersion:
        """The version loaded; warmed up on default values unless `warm_up` is False (the server
        loads through taxi_model.serving.warmup.load, which replays TF-Serving's warmup file)."""
        meta_graph = _serving_meta_graph(path)
        saved_model, signatures = _load_signatures(path, meta_graph)
        signature_def_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in meta_graph.signature_def.items():
            signature_def_map.signature_def[key].CopyFrom(signature_def)
        loaded = cls(name, version, path, saved_model, signatures, signature_def_map)
        if warm_up:
            loaded.warm_up()
        return loaded

    def warm_up(self) -> None:
        """Runs every signature once on a row of default values (empty strings parse as empty
        tf.Examples), so that the first real request does not pay for the kernels' first run
        (~200 ms on this model): a version is AVAILABLE only once it is fast."""
        for signature in self.signatures.values():
            inputs = {}
            for key, spec in signature.inputs.items():
                shape = [1 if d is None else d for d in spec.shape] if spec.shape.rank is not None else [1]
                inputs[key] = (
                    np.full(shape, b"", dtype=object)
                    if spec.dtype == tf.string
                    else np.zeros(shape, spec.dtype.as_numpy_dtype)
                )
            try:
                self.predict(signature.name, inputs)
            except ServingError as e:  # a signature that default values cannot satisfy: not fatal
                log.info(
                    "%s version %d: no warm-up of signature %s: %s", self.name, self.version, signature.name, e.message
                )

    def signature(self, name: str) -> Signature:
        name = name or DEFAULT_SIGNATURE
        if name not in self.signatures:
            raise invalid_argument(f'Serving signature name: "{name}" not found in signature def')
        return self.signatures[name]

    def predict(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Iterable[str] = (),
        max_batch_size: int | None = None,
        batcher: Batcher | None = None,
    ) -> tuple[Signature, dict[str, np.ndarray]]:
        """Runs the signature (in a batch of concurrent calls if a batcher is given); returns it (with its
        resolved name) and the outputs as numpy arrays."""
        signature = self.signature(signature_name)
        expected, given = set(signature.inputs), set(inputs)
        if expected != given:
            raise invalid_argument(
                f"input size does not match signature: {len(given)}!={len(expected)} len({_brace(given)}) != "
                f"len({_brace(expected)}). Sent extra: {_brace(given - expected)}. "
                f"Missing but required: {_brace(expected - given)}."
            )
        for key, array in inputs.items():
            spec = signature.inputs[key]
            if dtype_of(array) != spec.dtype:
                raise invalid_argument(
                    f"Expects arg[{key}] to be {spec.dtype.name} but {dtype_of(array).name} is provided"
                )
            if max_batch_size is not None and array.ndim and array.shape[0] > max_batch_size:
                raise invalid_argument(
                    f"Task size {array.shape[0]} is larger than maximum input batch size {max_batch_size}"
                )
        wanted = list(output_filter) or list(signature.outputs)
        unknown = [key for key in wanted if key not in signature.outputs]
        if unknown:
            raise invalid_argument(
                f"output tensor alias not found in signature: {unknown[0]} Outputs expected to "
                f"be in the set {_brace(signature.outputs)}."
            )
        call = functools.partial(self._run, signature, wanted)
        if batcher is None:
            return signature, call(inputs)
        return signature, batcher.run((self, signature.name, tuple(wanted)), inputs, call)

    @staticmethod
    def _run(signature: Signature, wanted: list[str], inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The wanted outputs of the signature on checked inputs."""
        tensors = {key: tf.constant(array, dtype=signature.inputs[key].dtype) for key, array in inputs.items()}
        try:
            outputs = signature.call(tensors)
        except tf.errors.OpError as e:
            raise from_model_error(e.error_code, _op_error_message(e.message)) from None
        except (TypeError, ValueError) as e:  # inputs the function's input signature does not accept
            raise invalid_argument(str(e)) from None
        return {key: _as_array(outputs[key]) for key in wanted}
