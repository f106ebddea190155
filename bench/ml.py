"""ML-runtime measurements for bench/run.py (run with .venv-runtime/bin/python; prints one JSON line).

    ml.py tft     --train G --eval G --variant standard --output DIR
        the project's TFT transform (taxi_model.transform.run)
    ml.py numpy   --train G --eval G --variant standard                the same statistics and outputs, vectorized
    ml.py trainer --transform_output DIR [--steps 200]
        the trainer's input pipeline vs in-memory tensors
    ml.py imports --module taxi_model.trainer                           seconds to import a module (after start-up)

Times are measured inside the process, after the imports, so they are the step's own compute.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

START = time.perf_counter()
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "include"))


def _emit(result: dict) -> None:
    print("BENCH_RESULT " + json.dumps(result), flush=True)


def tft(args) -> dict:
    imported = time.perf_counter()
    from taxi_model import transform

    began = time.perf_counter()
    transform.run(args.train, args.eval, args.variant, args.output, ["--runner=FnApiRunner"])
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "imports": began - imported, "rows": _rows(args.train) + _rows(args.eval)}


def _rows(pattern: str) -> int:
    total = 0
    for path in glob.glob(pattern):
        with open(path, "rb") as f:
            total += sum(1 for _ in f) - 1
    return total


def numpy_reference(args) -> dict:
    """TFT's statistics (train only) and outputs (both splits), vectorized with pandas and NumPy.

    z-scores of the dense floats (missing -> 0, as `_fill_in_missing`), top-k vocabularies (by
    frequency, then value, descending, as TFT orders them) with hashed OOV buckets, quantile
    bucket boundaries of the coordinates, clipped calendar categories and the label.
    """
    import numpy as np
    import pandas as pd

    from taxi_model import columns, features, variants

    knobs = variants.variant(args.variant)
    dtypes = {
        name: {"string": "string", "int": "int64", "float": "float64"}[kind] for name, kind in columns.RAW_COLUMN_TYPES
    }
    began = time.perf_counter()

    def read(pattern):
        return pd.concat(
            [pd.read_csv(p, dtype=dtypes, engine="pyarrow") for p in sorted(glob.glob(pattern))], ignore_index=True
        )

    train, evaluation = read(args.train), read(args.eval)
    stats = {}
    for key in features.DENSE_FLOAT_FEATURE_KEYS:
        values = train[key].fillna(0).to_numpy(np.float32)
        stats[key] = (values.mean(), values.std())
    for key in features.VOCAB_FEATURE_KEYS:
        counts = train[key].fillna("").value_counts()
        ordered = sorted(counts.items(), key=lambda item: (item[1], item[0]), reverse=True)[: knobs.vocab_size]
        stats[key] = pd.Index([value for value, _ in ordered])
    for key in features.BUCKET_FEATURE_KEYS:
        values = train[key].fillna(0).to_numpy(np.float32)
        stats[key] = np.quantile(values, np.linspace(0, 1, knobs.bucket_count + 1)[1:-1])
    analyzed = time.perf_counter()

    outputs = []
    for frame in (train, evaluation):
        out = {}
        for key in features.DENSE_FLOAT_FEATURE_KEYS:
            mean, std = stats[key]
            out[key] = (frame[key].fillna(0).to_numpy(np.float32) - mean) / std
        for key in features.VOCAB_FEATURE_KEYS:
            values = frame[key].fillna("")
            index = stats[key].get_indexer(values)
            oov = len(stats[key]) + pd.util.hash_array(values.to_numpy(object)) % knobs.oov_buckets
            out[key] = np.where(index >= 0, index, oov)
        for key in features.BUCKET_FEATURE_KEYS:
            out[key] = np.searchsorted(stats[key], frame[key].fillna(0).to_numpy(np.float32), side="right")
        for key, size in features.CATEGORICAL_FEATURE_SIZES.items():
            out[key] = np.clip(frame[key].fillna(0).to_numpy(np.int64), 0, size - 1)
        fare, tips = frame["fare"].to_numpy(np.float32), frame["tips"].fillna(0).to_numpy(np.float32)
        out["big_tipper"] = np.where(np.isnan(fare), 0, tips > 0.2 * fare).astype(np.int64)
        outputs.append(out)
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "analyze": analyzed - began, "rows": len(train) + len(evaluation)}


def trainer(args) -> dict:
    """Steps/s of the trainer (its tf.data pipeline over the transformed TFRecords) and of the same
    model fed from the same batches held in memory, with the trainer's settings (seed, deterministic ops).
    `file_setup_s`: building the trainer's dataset (it reads and parses the records then), not in the steps/s."""
    import tensorflow as tf
    import tensorflow_transform as tft_lib
    import tf_keras as keras

    import taxi_model  # noqa: F401
    from taxi_model import features
    from taxi_model import trainer as taxi_trainer
    from taxi_model import transform_layout as layout

    keras.utils.set_random_seed(42)
    tf.config.experimental.enable_op_determinism()
    output = tft_lib.TFTransformOutput(layout.transform_graph_dir(args.transform_output))
    sizes = features.categorical_sizes(output.transformed_metadata.schema)
    files = [layout.transformed_glob(args.transform_output, "train")]

    def timed_fit(dataset) -> float:
        model = taxi_trainer.build_model(sizes)
        model.fit(dataset, steps_per_epoch=args.warmup, verbose=0)  # tracing, first batches
        began = time.perf_counter()
        model.fit(dataset, steps_per_epoch=args.steps, verbose=0)
        return args.steps / (time.perf_counter() - began)

    began = time.perf_counter()
    from_files = taxi_trainer._dataset(files, output, args.batch_size, shuffle_seed=42)
    setup = time.perf_counter() - began  # reading and parsing the records happens here, once
    file_rate = timed_fit(from_files)
    batches = list(from_files.take(args.steps + args.warmup))
    # the same batches, stacked: each element of the in-memory dataset is one ready batch
    inputs = {k: tf.stack([b[0][k] for b in batches]) for k in batches[0][0]}
    labels = tf.stack([b[1] for b in batches])
    memory_rate = timed_fit(tf.data.Dataset.from_tensor_slices((inputs, labels)).repeat().prefetch(2))
    return {
        "file_steps_per_s": file_rate,
        "memory_steps_per_s": memory_rate,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "file_setup_s": setup,
    }


def imports(args) -> dict:
    import importlib

    began = time.perf_counter()
    importlib.import_module(args.module)
    return {"seconds": time.perf_counter() - began, "since_start": time.perf_counter() - START}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("tft", "numpy"):
        p = sub.add_parser(name)
        p.add_argument("--train", required=True)
        p.add_argument("--eval", required=True)
        p.add_argument("--variant", default="standard")
        p.add_argument("--output")
    p = sub.add_parser("trainer")
    p.add_argument("--transform_output", required=True)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch_size", type=int, default=256)
    p = sub.add_parser("imports")
    p.add_argument("--module", required=True)
    args = parser.parse_args()
    _emit({"tft": tft, "numpy": numpy_reference, "trainer": trainer, "imports": imports}[args.command](args))


if __name__ == "__main__":
    main()
