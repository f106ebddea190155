"""The trainer: a wide-and-deep Keras classifier of big tippers, TFX `run_fn` style.

    python -m taxi_model.trainer --transform_output <the transform's --output dir> \\
        --serving_model_dir <model dir> --log_dir <TensorBoard dir> [--train_steps 300 --eval_steps 50]
    (or, instead of --transform_output: --transform_graph <dir> --train_files <glob> --eval_files <glob>)
        [--warmup_examples '<raw eval CSV glob>']

With a `TF_CONFIG` naming several workers it trains with MultiWorkerMirroredStrategy, so the
same command runs as every replica of a TFJob; only the chief writes the model and the logs.
The SavedModel (written atomically) has the signatures of taxi_model.serving_contract, all on
serialized raw tf.Examples: serving_default (the chance of a big tip), classification (for
TF-Serving's Classify) and transform_features (for TFMA). With --warmup_examples (the raw eval
rows: the transformed ones cannot be turned back into what clients send) it also holds
TF-Serving's warmup requests, built from the first rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence

import taxi_model  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

# isort: split
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tensorflow.core.framework import summary_pb2

from taxi_model import features, fileio, serving_contract, step_logging
from taxi_model import transform_layout as layout
from taxi_model.columns import read_rows
from taxi_model.serving_contract import (
    CLASS_LABELS,
    CLASSES_KEY,
    CLASSIFY_INPUT_KEY,
    OUTPUT_KEY,
    SCORES_KEY,
    SERVING_INPUT_KEY,
)

log = logging.getLogger("taxi_model.trainer")

HIDDEN_UNITS = (100, 70, 48, 34)
# 10x TFX's 0.001: the wide one-hot weights then converge within the few hundred steps we train
# (eval AUC on the sample data after 300 steps: 0.83 at 0.001, 0.95 at 0.01).
LEARNING_RATE = 0.01


@dataclasses.dataclass(frozen=True)
class FnArgs:
    """The part of TFX's Trainer `fn_args` that `run_fn` uses."""

    train_files: Sequence[str]  # globs of transformed train TFRecords (gzipped tf.Examples)
    eval_files: Sequence[str]
    transform_graph: str  # the transform graph dir (TFX calls it `transform_output`)
    serving_model_dir: str
    model_run_dir: str  # TensorBoard logs
    train_steps: int
    eval_steps: int
    batch_size: int = 256  # global: split across the replicas
    seed: int = 42
    warmup_examples: str | None = None  # glob of raw eval CSVs: the warmup requests' rows (none: no file)


def tf_config() -> dict:
    return json.loads(os.environ.get("TF_CONFIG") or "{}")


def worker_count(config: Mapping) -> int:
    cluster = config.get("cluster", {})
    return len(cluster.get("chief", ())) + len(cluster.get("worker", ()))


def is_chief(config: Mapping) -> bool:
    """The chief is the `chief` task or, in a cluster without one, worker 0; alone, we are the chief."""
    task = config.get("task", {})
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type is None or task_type == "chief":
        return True
    return task_type == "worker" and index == 0 and "chief" not in config.get("cluster", {})


def _model_inputs(transformed: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    return {key: transformed[key] for key in features.MODEL_INPUT_KEYS}


SHUFFLE_BUFFER = 10_000  # records


def _read_columns(files: Sequence[str], feature_spec: Mapping, limit: int | None) -> dict[str, tf.Tensor]:
    """The model inputs and the label of the first `limit` (or all) records of `files`, in order,
    parsed in blocks of 8192 and concatenated: one tensor per feature."""
    keys = [*features.MODEL_INPUT_KEYS, features.LABEL_KEY]
    spec = {key: feature_spec[key] for key in keys}  # not the other columns (the example key)
    records = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if limit is not None:
        records = records.take(limit)
    blocks = list(
        records.batch(8192).map(
            lambda serialized: tf.io.parse_example(serialized, spec),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    )
    if not blocks:
        raise ValueError(f"no records in {list(files)}")
    columns = {key: tf.concat([block[key] for block in blocks], axis=0) for key in keys}
    columns[features.LABEL_KEY] = tf.reshape(tf.cast(columns[features.LABEL_KEY], tf.float32), [-1, 1])
    return columns


def _dataset(
    file_patterns: Sequence[str],
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int,
    shuffle_seed: int | None = None,
    max_batches: int | None = None,
) -> tf.data.Dataset:
    """Endless (features, label) batches of transformed examples.

    The records are read and parsed once, here, into one tensor per feature (a year of trips is a
    few MB); the dataset shuffles and batches their indices and gathers each batch. The order is
    the one shuffling and batching the records would give: the same seeded shuffle (buffer, seed,
    a new order each pass) of the same number of elements makes the same permutation whatever the
    elements are, so the batches, hence the model, are the same as the record pipeline's. Per step
    that is one small gather per feature instead of reading, gunzipping, shuffling and parsing 256
    records, which took the CPU the training step needs (bench figure 4: 0.49 of the in-memory
    steps/s at 100k trips).

    `max_batches` (the steps the caller will take) reads only the records those batches can hold:
    a shuffle with a buffer of B emits its first n elements from the first n + B records.
    """
    files = sorted(path for pattern in file_patterns for path in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no files match {list(file_patterns)}")
    limit = None
    if max_batches is not None:
        limit = max_batches * batch_size + (SHUFFLE_BUFFER if shuffle_seed is not None else 0)
    columns = _read_columns(files, tf_transform_output.transformed_feature_spec(), limit)
    label = columns.pop(features.LABEL_KEY)

    def gather(indices):
        return {key: tf.gather(column, indices) for key, column in columns.items()}, tf.gather(label, indices)

    dataset = tf.data.Dataset.range(label.shape[0])
    if shuffle_seed is not None:
        dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=shuffle_seed)
    dataset = dataset.repeat().batch(batch_size).map(gather)
    # Every worker reads every file and keeps its share of the examples: the splits may be one file.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    # No autotuning: nothing here to tune, and its bookkeeping per element (the index stream has
    # 256 a step) costs CPU the training step needs.
    options.autotune.enabled = False
    return dataset.with_options(options).prefetch(2)


def build_model(categorical_sizes: Mapping[str, int]) -> keras.Model:
    """Wide and deep: an MLP on the z-scored numbers plus a linear part on one-hot categories."""
    dense_inputs = {key: keras.Input(shape=(1,), name=key, dtype=tf.float32) for key in features.DENSE_INPUT_KEYS}
    categorical_inputs = {key: keras.Input(shape=(1,), name=key, dtype=tf.int64) for key in categorical_sizes}

    deep = keras.layers.concatenate(list(dense_inputs.values()))
    for units in HIDDEN_UNITS:
        deep = keras.layers.Dense(units, activation="relu")(deep)
    wide = keras.layers.concatenate(
        [
            keras.layers.CategoryEncoding(num_tokens=size, output_mode="one_hot")(categorical_inputs[key])
            for key, size in categorical_sizes.items()
        ]
    )
    output = keras.layers.Dense(1, activation="sigmoid", name=OUTPUT_KEY)(keras.layers.concatenate([deep, wide]))

    model = keras.Model(inputs={**dense_inputs, **categorical_inputs}, outputs=output)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE),
        loss="binary_crossentropy",
        metrics=[keras.metrics.BinaryAccuracy(), keras.metrics.AUC(name="auc")],
    )
    return model


def _signatures(model: keras.Model, tf_transform_output: tft.TFTransformOutput) -> dict:
    """The SavedModel's signatures (taxi_model.serving_contract), all on serialized raw tf.Examples."""
    # An attribute of the model so that the TFT graph and its vocabularies are saved with it.
    model.tft_layer = tf_transform_output.transform_features_layer()
    raw_feature_spec = tf_transform_output.raw_feature_spec()  # all VarLen: absent features are fine
    examples = tf.TensorSpec(shape=[None], dtype=tf.string, name=SERVING_INPUT_KEY)

    @tf.function(input_signature=[examples])
    def transform_features(examples):
        return model.tft_layer(tf.io.parse_example(examples, raw_feature_spec))

    @tf.function(input_signature=[examples])
    def serve(examples):
        return {OUTPUT_KEY: model(_model_inputs(transform_features(examples)))}

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name=CLASSIFY_INPUT_KEY)])
    def classify(inputs):
        probability = serve(inputs)[OUTPUT_KEY]
        classes = tf.tile(tf.constant([CLASS_LABELS]), [tf.shape(inputs)[0], 1])
        return {CLASSES_KEY: classes, SCORES_KEY: tf.concat([1 - probability, probability], axis=1)}

    return {
        serving_contract.SERVING_SIGNATURE: serve,
        serving_contract.CLASSIFICATION_SIGNATURE: classify,
        serving_contract.TRANSFORM_SIGNATURE: transform_features,
    }


class ScalarLogger(keras.callbacks.Callback):
    """Writes the metrics as TensorBoard scalars, in `train/` and `validation/` runs as Keras does.

    Keras' TensorBoard callback (like tf.summary.scalar) needs the `tensorboard` package, which the
    ML runtime does not have; core `tf.summary.write` with the scalars plugin's metadata does not.
    """

    _METADATA = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))

    def __init__(self, log_dir: str, every_n_steps: int = 10):
        super().__init__()
        self._writers = {run: tf.summary.create_file_writer(f"{log_dir}/{run}") for run in ("train", "validation")}
        self._every_n_steps = every_n_steps
        self._step = 0

    def _write(self, run: str, tag: str, value: float, step: int) -> None:
        with self._writers[run].as_default():
            tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=self._METADATA)

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self._every_n_steps == 0:
            for name, value in (logs or {}).items():
                self._write("train", f"batch_{name}", value, self._step)

    def on_epoch_end(self, epoch, logs=None):
        for name, value in (logs or {}).items():
            run, metric = ("validation", name[len("val_") :]) if name.startswith("val_") else ("train", name)
            self._write(run, f"epoch_{metric}", value, epoch)
        for writer in self._writers.values():
            writer.flush()


def _strategy(config: Mapping) -> tf.distribute.Strategy:
    if worker_count(config) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _warmup_rows(csv_pattern: str | None) -> list[dict[str, str]]:
    """The raw rows of TF-Serving's warmup requests: the first of the files, in order (a rerun writes
    the same requests); none without a pattern."""
    if not csv_pattern:
        return []
    rows = read_rows(csv_pattern, limit=serving_contract.WARMUP_ROWS)
    if not rows:
        raise FileNotFoundError(f"no rows in {csv_pattern} for the warmup requests")
    return rows


def run_fn(fn_args: FnArgs) -> keras.Model:
    """Trains the model and exports the SavedModel to `fn_args.serving_model_dir`."""
    config = tf_config()
    strategy = _strategy(config)  # first: MultiWorkerMirroredStrategy must precede other TF ops
    chief = is_chief(config)
    log.info(
        "Training on %d worker(s)%s",
        worker_count(config),
        " with MultiWorkerMirroredStrategy" if worker_count(config) > 1 else "",
    )
    keras.utils.set_random_seed(fn_args.seed)
    # A rerun of a window (retry, reprocessed backfill) must give the same model and metrics.
    tf.config.experimental.enable_op_determinism()

    warmup_rows = _warmup_rows(fn_args.warmup_examples) if chief else []  # before training: fails fast
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph)
    train = _dataset(
        fn_args.train_files,
        tf_transform_output,
        fn_args.batch_size,
        shuffle_seed=fn_args.seed,
        max_batches=fn_args.train_steps,
    )
    evaluation = _dataset(fn_args.eval_files, tf_transform_output, fn_args.batch_size, max_batches=fn_args.eval_steps)
    with strategy.scope():
        model = build_model(features.categorical_sizes(tf_transform_output.transformed_metadata.schema))

    callbacks = [ScalarLogger(fn_args.model_run_dir)] if chief else []
    model.fit(
        train,
        steps_per_epoch=fn_args.train_steps,
        validation_data=evaluation,
        validation_steps=fn_args.eval_steps,
        callbacks=callbacks,
        verbose=2,
    )

    # Every replica must save (the save is collective); only the chief's copy is kept.
    signatures = _signatures(model, tf_transform_output)
    if chief:
        with fileio.atomic_output_dir(fn_args.serving_model_dir) as staging_dir:
            model.save(staging_dir, save_format="tf", signatures=signatures)
            serving_contract.finish_export(staging_dir, warmup_rows)
    else:
        scratch_dir = tempfile.mkdtemp(prefix="taxi_model_worker_")
        model.save(scratch_dir, save_format="tf", signatures=signatures)
        fileio.remove_dir(scratch_dir)
    return model


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transform_output", help="the transform's --output dir: sets the next three")
    parser.add_argument("--transform_graph", help="the transform graph dir")
    parser.add_argument("--train_files", nargs="+", help="globs of transformed train TFRecords")
    parser.add_argument("--eval_files", nargs="+", help="globs of transformed eval TFRecords")
    parser.add_argument("--serving_model_dir", required=True, help="SavedModel dir, replaced atomically")
    parser.add_argument("--log_dir", required=True, help="TensorBoard log dir")
    parser.add_argument("--train_steps", type=int, default=300)
    parser.add_argument("--eval_steps", type=int, default=50)
    parser.add_argument("--batch_size", type=int, default=FnArgs.batch_size)
    parser.add_argument("--seed", type=int, default=FnArgs.seed)
    parser.add_argument("--warmup_examples", help="glob of raw eval CSVs: rows for TF-Serving's warmup requests")
    args = parser.parse_args(argv)
    if args.transform_output:
        args.transform_graph = args.transform_graph or layout.transform_graph_dir(args.transform_output)
        args.train_files = args.train_files or [layout.transformed_glob(args.transform_output, "train")]
        args.eval_files = args.eval_files or [layout.transformed_glob(args.transform_output, "eval")]
    if not (args.transform_graph and args.train_files and args.eval_files):
        parser.error("give --transform_output, or all of --transform_graph, --train_files and --eval_files")
    run_fn(
        FnArgs(
            train_files=args.train_files,
            eval_files=args.eval_files,
            transform_graph=args.transform_graph,
            serving_model_dir=args.serving_model_dir,
            model_run_dir=args.log_dir,
            train_steps=args.train_steps,
            eval_steps=args.eval_steps,
            batch_size=args.batch_size,
            seed=args.seed,
            warmup_examples=args.warmup_examples,
        )
    )


if __name__ == "__main__":
    step_logging.configure()
    main()
