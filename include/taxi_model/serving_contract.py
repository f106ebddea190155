"""The exported model's serving contract: its signatures, and what the export adds for TF-Serving.

All three signatures take serialized raw tf.Examples (string [batch]):
    serving_default     examples -> probabilities: float32 [batch, 1], the chance of a big tip
    classification      inputs   -> classes: string [batch, 2], CLASS_LABELS on every row
                                    scores: float32 [batch, 2], (1 - p, p) in the order of the classes
    transform_features  examples -> the TFT-transformed features, with the label `big_tipper` (for TFMA)

`classification` is what TF-Serving's Classify (REST `:classify`) runs: one string input named
`inputs`, outputs named `classes` and `scores`. Keras saves every signature with the predict method
name, which TF-Serving's default (no --enable_signature_method_name_check) accepts for Classify;
`finish_export` renames its method to classify so that a server with the check accepts it too.
It also writes TF-Serving's warmup file (taxi_model.serving.warmup) from real eval rows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.saved_model import fingerprinting_utils
from tensorflow_serving.apis import classification_pb2, model_pb2, predict_pb2, prediction_log_pb2

from taxi_model import features
from taxi_model.serving import warmup

SERVING_SIGNATURE = "serving_default"
CLASSIFICATION_SIGNATURE = "classification"
TRANSFORM_SIGNATURE = "transform_features"
SERVING_INPUT_KEY = "examples"
OUTPUT_KEY = "probabilities"
CLASSIFY_INPUT_KEY = "inputs"  # TF-Serving's Classify feeds the examples to the input of this name
CLASSES_KEY = "classes"
SCORES_KEY = "scores"
# The label's values, as class names: not a big tipper, a big tipper.
CLASS_LABELS = (b"0", b"1")
# The rows of the warmup predict requests: one (most online requests) and two batches.
WARMUP_BATCH_SIZES = (1, 10, 100)
WARMUP_ROWS = max(WARMUP_BATCH_SIZES)
CLASSIFY_WARMUP_ROWS = 10


def _serialized(examples: Sequence[tf.train.Example]) -> np.ndarray:
    return np.array([e.SerializeToString(deterministic=True) for e in examples], dtype=object)


def warmup_requests(rows: Sequence[Mapping[str, str]]) -> list[prediction_log_pb2.PredictionLog]:
    """Predict requests of serving_default on the first 1, 10 and 100 rows (as many as there are) and
    a Classify request on the first 10: the signatures clients call, each run once before serving."""
    if not rows:
        raise ValueError("no rows for the warmup requests")
    examples = [features.raw_example(row) for row in rows[:WARMUP_ROWS]]
    logs = []
    for size in sorted({min(size, len(examples)) for size in WARMUP_BATCH_SIZES}):
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(signature_name=SERVING_SIGNATURE))
        request.inputs[SERVING_INPUT_KEY].CopyFrom(tf.make_tensor_proto(_serialized(examples[:size])))
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    classify = classification_pb2.ClassificationRequest(
        model_spec=model_pb2.ModelSpec(signature_name=CLASSIFICATION_SIGNATURE)
    )
    classify.input.example_list.examples.extend(examples[:CLASSIFY_WARMUP_ROWS])
    logs.append(prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(request=classify)))
    return logs


def set_classify_method(export_dir: str) -> None:
    """Gives the classification SignatureDef the classify method name, in saved_model.pb (and its
    fingerprint, whose checksum covers it). Loaders of TF2 SavedModels do not read method names."""
    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if CLASSIFICATION_SIGNATURE not in meta_graph.signature_def:
            raise ValueError(f"{export_dir} has no {CLASSIFICATION_SIGNATURE} signature")
        meta_graph.signature_def[CLASSIFICATION_SIGNATURE].method_name = tf.saved_model.CLASSIFY_METHOD_NAME
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(saved_model.SerializeToString(deterministic=True))  # as tf.saved_model.save writes it
    fingerprinting_utils.write_fingerprint(export_dir)  # what tf.saved_model.save calls (TF 2.21)


def finish_export(export_dir: str, warmup_rows: Sequence[Mapping[str, str]]) -> None:
    """What the export adds to a saved model for TF-Serving (see the module's doc); no warmup file
    without rows (TF-Serving then loads without warmup)."""
    set_classify_method(export_dir)
    if warmup_rows:
        warmup.write(export_dir, warmup_requests(warmup_rows))
