"""Broken exports of a real model, built in the ML runtime (the tests' stand-ins for a faulty trainer).

    .venv-runtime/bin/python tests/reliability/broken_model.py {constant,nan,misclassifying,unloadable} SOURCE DEST

- constant:   the real model's signatures, but serving_default answers 0.5 for every example
- nan:        serving_default answers NaN
- misclassifying: the real serving_default, but a classification signature whose scores are swapped
- unloadable: a copy of the real model whose saved_model.pb is cut in half
"""

from __future__ import annotations

import os
import shutil
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def build(kind: str, source: str, dest: str) -> None:
    if kind == "unloadable":
        shutil.copytree(source, dest)
        pb = os.path.join(dest, "saved_model.pb")
        data = open(pb, "rb").read()
        open(pb, "wb").write(data[: len(data) // 2])
        return

    import tensorflow as tf

    real = tf.saved_model.load(source)
    value = {"constant": 0.5, "nan": float("nan"), "misclassifying": None}[kind]

    class Broken(tf.Module):
        def __init__(self):
            super().__init__()
            self.real = real  # keeps the transform graph's resources tracked

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            if value is None:
                return self.real.signatures["serving_default"](examples=examples)
            return {"outputs": tf.fill([tf.shape(examples)[0], 1], tf.constant(value, tf.float32))}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            probability = self.real.signatures["serving_default"](examples=inputs)["probabilities"]
            return {
                "classes": tf.tile(tf.constant([[b"0", b"1"]]), [tf.shape(inputs)[0], 1]),
                "scores": tf.concat([probability, 1 - probability], axis=1),
            }

    module = Broken()
    signatures = {"serving_default": module.serve, "transform_features": real.signatures["transform_features"]}
    if kind == "misclassifying":
        signatures["classification"] = module.classify
    tf.saved_model.save(module, dest, signatures=signatures)


if __name__ == "__main__":
    build(*sys.argv[1:4])
