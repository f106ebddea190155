"""The models of the ported TF-Serving cases: TF-Serving's own test SavedModels (testdata/tf_serving/),
and the fakes of its classifier_test.cc and regressor_test.cc rebuilt as small TF2 SavedModels.

Upstream, those two tests run a fake Session that reads each tf.Example's "class" (bytes) and
"score" (floats) features as the classes and scores, or its "output" feature as the regression
value; mock Sessions return malformed outputs. Here each such Session is a signature of a SavedModel
built at test time, so the cases run through the server's Classify and Regress as a client sees them.
"""

from __future__ import annotations

from pathlib import Path

import taxi_model  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import tensorflow as tf

TESTDATA = Path(__file__).parent / "testdata" / "tf_serving"
HALF_PLUS_TWO = TESTDATA / "saved_model_half_plus_two_cpu"  # TF1
HALF_PLUS_TWO_TF2 = TESTDATA / "saved_model_half_plus_two_tf2_cpu"
HALF_PLUS_TWO_2_VERSIONS = TESTDATA / "saved_model_half_plus_two_2_versions"
HALF_PLUS_THREE = TESTDATA / "saved_model_half_plus_three"  # TF1, not loadable by tf.saved_model.load
VERSION = 123  # the version of all of them (00000123)

_EXAMPLES = tf.TensorSpec([None], tf.string, name="inputs")


def _dense(inputs, name: str, dtype: tf.DType) -> tf.Tensor:
    parsed = tf.io.parse_example(inputs, {name: tf.io.VarLenFeature(dtype)})[name]
    return tf.sparse.to_dense(parsed)


def _classes_and_scores(inputs) -> tuple[tf.Tensor, tf.Tensor]:
    return _dense(inputs, "class", tf.string), _dense(inputs, "score", tf.float32)


def _run_fails(inputs) -> tf.Tensor:
    """A zero per example, after an op that fails ("Run totally failed", the mock Session's error)."""
    check = tf.debugging.Assert(tf.constant(False), ["Run totally failed"])
    with tf.control_dependencies([check]):
        return tf.zeros([tf.size(inputs), 1])


def _fake_classifier_signatures() -> dict:
    """name: the signature's outputs from its inputs."""

    def both(inputs, classes_of=lambda c: c, scores_of=lambda s: s) -> dict:
        classes, scores = _classes_and_scores(inputs)
        return {"classes": classes_of(classes), "scores": scores_of(scores)}

    return {
        "serving_default": lambda inputs: both(inputs),
        "output_plus_one": lambda inputs: both(inputs, scores_of=lambda s: s + 1),
        "invalid_regression_signature": lambda inputs: {"outputs": both(inputs)["scores"] + 1},
        "ImproperlySizedScoresSignature": lambda inputs: both(
            inputs, scores_of=lambda s: tf.zeros(tf.concat([tf.shape(s), [10]], 0))
        ),
        "classes_only": lambda inputs: {"classes": both(inputs)["classes"]},
        "scores_only": lambda inputs: {"scores": both(inputs)["scores"]},
        "runs_fails": lambda inputs: {"scores": _run_fails(inputs)},
        "classes_batch_of_1": lambda inputs: both(inputs, classes_of=lambda c: c[:1]),
        "classes_float": lambda inputs: {"classes": both(inputs)["scores"], "scores": both(inputs)["scores"]},
        "scores_batch_of_1": lambda inputs: both(inputs, scores_of=lambda s: s[:1]),
        "scores_string": lambda inputs: {"classes": both(inputs)["classes"], "scores": both(inputs)["classes"]},
        "scores_of_3_classes": lambda inputs: both(inputs, scores_of=lambda s: tf.concat([s, s[:, :1]], 1)),
    }


def _fake_regressor_signatures() -> dict:
    """name: the signature's outputs from its inputs."""

    def values(inputs) -> tf.Tensor:
        return _dense(inputs, "output", tf.float32)

    return {
        "serving_default": lambda inputs: {"outputs": tf.reshape(values(inputs), [-1])},
        "output_plus_one": lambda inputs: {"outputs": values(inputs) + 1},
        "invalid_classification_signature": lambda inputs: {
            "classes": tf.strings.as_string(values(inputs)),
            "scores": values(inputs) + 1,
        },
        "ImproperlySizedOutputSignature": lambda inputs: {
            "outputs": tf.zeros(tf.concat([tf.shape(values(inputs)), [10]], 0))
        },
        "runs_fails": lambda inputs: {"outputs": _run_fails(inputs)},
        "outputs_batch_of_2": lambda inputs: {"outputs": tf.zeros([2])},
        "outputs_string": lambda inputs: {"outputs": tf.strings.as_string(tf.reshape(values(inputs), [-1]))},
    }


def _save(export_dir: Path, signatures: dict) -> None:
    """A SavedModel of the signatures, each on serialized examples, plus `no_inputs` (a signature
    with no input, as upstream's empty SignatureDef)."""
    concrete = {
        name: tf.function(outputs_of, input_signature=[_EXAMPLES]).get_concrete_function()
        for name, outputs_of in signatures.items()
    }
    concrete["no_inputs"] = tf.function(
        lambda: {"scores": tf.zeros([1, 1])}, input_signature=[]
    ).get_concrete_function()
    tf.saved_model.save(tf.Module(), str(export_dir), signatures=concrete)


def save_fake_classifier(base_path: Path) -> Path:
    _save(base_path / str(VERSION), _fake_classifier_signatures())
    return base_path


def save_fake_regressor(base_path: Path) -> Path:
    _save(base_path / str(VERSION), _fake_regressor_signatures())
    return base_path


def save_tf_saved_model(base_path: Path) -> Path:
    """tensorflow_model_server_test.py's test_tf_saved_model_save: y = v1 * v2 * x, x of any shape."""
    root = tf.train.Checkpoint()
    root.v1, root.v2 = tf.Variable(3.0), tf.Variable(2.0)
    root.f = tf.function(lambda x: {"y": root.v1 * root.v2 * x})
    tf.saved_model.save(
        root, str(base_path / str(VERSION)), root.f.get_concrete_function(tf.TensorSpec(None, tf.float32))
    )
    return base_path


def save_tf_saved_model_multiple_signatures(base_path: Path) -> Path:
    """test_tf_saved_model_save_multiple_signatures: serving_default answers 1, custom_signature_key 2."""
    root = tf.train.Checkpoint()
    root.f = tf.function(lambda x: {"y": 1.0}, input_signature=[tf.TensorSpec(None, tf.float32)])
    root.g = tf.function(lambda x: {"y": 2.0}, input_signature=[tf.TensorSpec(None, tf.float32)])
    tf.saved_model.save(
        root, str(base_path / str(VERSION)), signatures={"serving_default": root.f, "custom_signature_key": root.g}
    )
    return base_path


def save_keras_sequential(base_path: Path) -> Path:
    """test_sequential_keras_saved_model_save: a Keras Sequential model, y = x (tf.keras is Keras 2 here)."""
    model = tf.keras.models.Sequential()
    model.add(tf.keras.layers.Input(dtype="float32", shape=(1,), name="x"))
    model.add(tf.keras.layers.Lambda(lambda x: x, name="y"))
    tf.saved_model.save(model, str(base_path / str(VERSION)))
    return base_path


def example(**features) -> tf.train.Example:
    """A tf.Example: bytes for str values, floats for float values (lists of them too)."""
    proto = tf.train.Example()
    for name, values in features.items():
        values = values if isinstance(values, list) else [values]
        feature = proto.features.feature[name]
        if values and isinstance(values[0], str):
            feature.bytes_list.value.extend(value.encode() for value in values)
        else:
            feature.float_list.value.extend(values)
    return proto


def class_scores(*pairs: tuple[str, float]) -> tf.train.Example:
    """classifier_test.cc's example(): the "class" and "score" features of (label, score) pairs."""
    return example(**{"class": [label for label, _ in pairs], "score": [float(score) for _, score in pairs]})
