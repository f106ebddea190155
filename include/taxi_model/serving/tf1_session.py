"""TF1 SavedModels that `tf.saved_model.load` cannot import, served from a TF1 Session.

`tf.saved_model.load` rebuilds each signature of a TF1 SavedModel as a function, and refuses one
whose SignatureDef contradicts its graph (TF-Serving's test model `saved_model_half_plus_three`:
a regression input declared a float scalar, fed to ParseExample as strings). TF-Serving's C++
loader never rebuilds anything: it imports the MetaGraph into a Session and feeds and fetches each
signature's tensors by name. This does the same (`tf.compat.v1` loader, a Session callable per
signature, no Python-side shape check of the feeds), so such models are served as there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

INIT_OP_SIGNATURE = "__saved_model_init_op"  # TF2's init op, stored as a signature: not servable


@dataclasses.dataclass(frozen=True)
class SessionSignature:
    """A signature run by a Session: the specs of its graph tensors, and its call on named tensors."""

    inputs: Mapping[str, tf.TensorSpec]
    outputs: Mapping[str, tf.TensorSpec]
    call: Callable[[Mapping[str, tf.Tensor]], Mapping[str, object]]


def _spec(tensor: tf.Tensor, name: str) -> tf.TensorSpec:
    # The graph's own dtype and shape: what the Session accepts, whatever the SignatureDef says.
    return tf.TensorSpec(tensor.shape, tensor.dtype, name=name)


def _signature(session: tf.compat.v1.Session, signature_def) -> SessionSignature:
    graph = session.graph
    input_keys, output_keys = list(signature_def.inputs), list(signature_def.outputs)
    callable_ = session._make_callable_from_options(
        config_pb2.CallableOptions(  # Session::MakeCallable
            feed=[signature_def.inputs[key].name for key in input_keys],
            fetch=[signature_def.outputs[key].name for key in output_keys],
        )
    )

    def call(tensors: Mapping[str, tf.Tensor]) -> Mapping[str, object]:
        return dict(zip(output_keys, callable_(*(tensors[key] for key in input_keys)), strict=True))

    return SessionSignature(
        inputs={key: _spec(graph.get_tensor_by_name(signature_def.inputs[key].name), key) for key in input_keys},
        outputs={key: _spec(graph.get_tensor_by_name(signature_def.outputs[key].name), key) for key in output_keys},
        call=call,
    )


def load(path: str, tags: list[str]) -> tuple[tf.compat.v1.Session, dict[str, SessionSignature]]:
    """The SavedModel's MetaGraph tagged `tags` in a new Session (its variables restored, its init op
    run), and its signatures. The Session owns everything: keep it as long as the signatures."""
    session = tf.compat.v1.Session(graph=tf.Graph())
    try:
        meta_graph = tf.compat.v1.saved_model.load(session, tags, path)
        signatures = {
            key: _signature(session, signature_def)
            for key, signature_def in meta_graph.signature_def.items()
            if key != INIT_OP_SIGNATURE and signature_def.outputs
        }
    except BaseException:
        session.close()
        raise
    return session, signatures
