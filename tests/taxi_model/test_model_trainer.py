"""The trainer: the exported SavedModel, train/serve skew, and multi-worker training."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf  # noqa: E402  (after taxi_model: Keras 2 must be selected first)
import tensorflow_transform as tft  # noqa: E402
import tf_keras as keras  # noqa: E402
from model_test_data import read_csv, runtime_env, train_args
from tensorflow.core.protobuf import fingerprint_pb2, saved_model_pb2  # noqa: E402
from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting as fingerprinting_pywrap  # noqa: E402
from tensorflow_serving.apis import prediction_log_pb2  # noqa: E402

from taxi_model import features, trainer
from taxi_model import serving_contract as contract
from taxi_model import transform_layout as layout


def _serialized_examples(rows) -> tf.Tensor:
    return tf.constant([features.raw_example(row).SerializeToString() for row in rows])


def _serve(model_dir: Path, rows) -> np.ndarray:
    """The served probabilities of raw CSV rows, as a client of the SavedModel gets them."""
    serving = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    return serving(examples=_serialized_examples(rows))[trainer.OUTPUT_KEY].numpy()


def _auc(labels, probabilities) -> float:
    metric = keras.metrics.AUC(num_thresholds=1000)
    metric.update_state(labels, probabilities)
    return float(metric.result())


def test_saved_model_signatures_take_serialized_examples(trained_model):
    signatures = tf.saved_model.load(str(trained_model["model"])).signatures
    assert set(signatures) == {"serving_default", "classification", "transform_features"}
    for name, signature in signatures.items():
        (spec,) = signature.structured_input_signature[1].values()
        input_key = contract.CLASSIFY_INPUT_KEY if name == "classification" else contract.SERVING_INPUT_KEY
        assert list(signature.structured_input_signature[1]) == [input_key]
        assert (spec.shape.as_list(), spec.dtype) == ([None], tf.string)
    (output,) = signatures["serving_default"].structured_outputs.items()
    assert (output[0], output[1].shape.as_list(), output[1].dtype) == (trainer.OUTPUT_KEY, [None, 1], tf.float32)
    classification = {
        key: (spec.shape.as_list(), spec.dtype) for key, spec in signatures["classification"].structured_outputs.items()
    }
    assert classification == {"classes": ([None, 2], tf.string), "scores": ([None, 2], tf.float32)}
    assert {features.LABEL_KEY, *features.MODEL_INPUT_KEYS} <= set(signatures["transform_features"].structured_outputs)


def _signature_defs(model_dir: Path) -> dict:
    saved_model = saved_model_pb2.SavedModel.FromString((model_dir / "saved_model.pb").read_bytes())
    (meta_graph,) = saved_model.meta_graphs
    return dict(meta_graph.signature_def)


def test_the_classification_signature_is_tf_servings_classify_of_serving_default(trained_model, window_dir):
    """What TF-Serving's Classify needs (even with its method-name check on): the classify method,
    one input `inputs`, outputs `classes` and `scores`; the scores are serving_default's (1 - p, p)."""
    model_dir = trained_model["model"]
    signature_defs = _signature_defs(model_dir)
    assert {name: s.method_name for name, s in signature_defs.items() if not name.startswith("__")} == {
        "serving_default": "tensorflow/serving/predict",
        "transform_features": "tensorflow/serving/predict",
        "classification": "tensorflow/serving/classify",
    }
    assert list(signature_defs["classification"].inputs) == ["inputs"]
    assert sorted(signature_defs["classification"].outputs) == ["classes", "scores"]
    # The fingerprint still matches the rewritten saved_model.pb (all but its uuid, new every time).
    written, fresh = (
        fingerprint_pb2.FingerprintDef.FromString(data)
        for data in (
            (model_dir / "fingerprint.pb").read_bytes(),
            fingerprinting_pywrap.CreateFingerprintDef(str(model_dir)),
        )
    )
    fresh.uuid = written.uuid
    assert written == fresh

    examples = _serialized_examples(read_csv(window_dir / "eval"))
    signatures = tf.saved_model.load(str(model_dir)).signatures
    probabilities = signatures["serving_default"](examples=examples)[trainer.OUTPUT_KEY].numpy()[:, 0]
    classified = signatures["classification"](inputs=examples)
    assert (classified["classes"].numpy() == [[b"0", b"1"]]).all() and classified["classes"].shape == (len(examples), 2)
    np.testing.assert_allclose(
        classified["scores"].numpy(), np.stack([1 - probabilities, probabilities], axis=1), atol=1e-6
    )


def test_the_export_holds_tf_servings_warmup_requests_of_real_eval_rows(trained_model, window_dir):
    """assets.extra/tf_serving_warmup_requests: PredictionLog records (TF-Serving's format) of the
    first eval rows, which the SavedModel answers."""
    path = trained_model["model"] / "assets.extra" / "tf_serving_warmup_requests"
    logs = [
        prediction_log_pb2.PredictionLog.FromString(record.numpy()) for record in tf.data.TFRecordDataset(str(path))
    ]
    assert 0 < len(logs) <= 1000
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log"] * 3 + ["classify_log"]
    rows = read_csv(window_dir / "eval")
    signatures = tf.saved_model.load(str(trained_model["model"])).signatures
    for log, size in zip(logs[:3], contract.WARMUP_BATCH_SIZES, strict=True):
        request = log.predict_log.request
        assert request.model_spec.signature_name == "serving_default" and list(request.inputs) == ["examples"]
        examples = tf.make_ndarray(request.inputs["examples"])
        assert [tf.train.Example.FromString(e) for e in examples] == [features.raw_example(r) for r in rows[:size]]
        assert signatures["serving_default"](examples=tf.constant(examples))[trainer.OUTPUT_KEY].shape == (size, 1)
    classify = logs[-1].classify_log.request
    assert classify.model_spec.signature_name == "classification"
    assert list(classify.input.example_list.examples) == [features.raw_example(r) for r in rows[:10]]


def test_model_learns_the_big_tippers(trained_model, window_dir):
    rows = read_csv(window_dir / "eval")
    examples = _serialized_examples(rows)
    loaded = tf.saved_model.load(str(trained_model["model"]))
    probabilities = loaded.signatures["serving_default"](examples=examples)[trainer.OUTPUT_KEY].numpy()
    labels = loaded.signatures["transform_features"](examples=examples)[features.LABEL_KEY].numpy()
    assert probabilities.shape == (len(rows), 1)
    assert ((probabilities > 0) & (probabilities < 1)).all()
    assert _auc(labels, probabilities[:, 0]) > 0.8


def test_serving_matches_the_model_on_the_beam_transformed_examples(trained_model, transform_dir, window_dir):
    """No train/serve skew: raw examples through the serving signature (TFT in the graph) give the
    same predictions and labels as the Keras model on the examples the Beam transform wrote."""
    rows = read_csv(window_dir / "eval")
    examples = _serialized_examples(rows)
    loaded = tf.saved_model.load(str(trained_model["model"]))
    served = loaded.signatures["serving_default"](examples=examples)[trainer.OUTPUT_KEY].numpy()[:, 0]
    served_labels = loaded.signatures["transform_features"](examples=examples)[features.LABEL_KEY].numpy()

    tf_transform_output = tft.TFTransformOutput(layout.transform_graph_dir(str(transform_dir)))
    files = tf.io.gfile.glob(layout.transformed_glob(str(transform_dir), "eval"))
    records = next(iter(tf.data.TFRecordDataset(files, compression_type="GZIP").batch(len(rows) + 1)))
    transformed = tf.io.parse_example(records, tf_transform_output.transformed_feature_spec())
    model = keras.models.load_model(str(trained_model["model"]))
    predicted = model({key: transformed[key] for key in features.MODEL_INPUT_KEYS}).numpy()[:, 0]

    row_of_key = {row["unique_key"].encode(): i for i, row in enumerate(rows)}
    order = [row_of_key[key] for key in transformed[features.EXAMPLE_KEY].numpy()]
    assert sorted(order) == list(range(len(rows)))
    np.testing.assert_allclose(served[order], predicted, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(served_labels[order], transformed[features.LABEL_KEY].numpy())


def test_training_writes_tensorboard_scalars(trained_model):
    def tags(run):
        files = tf.io.gfile.glob(str(trained_model["logs"] / run / "events.out.tfevents.*"))
        return {v.tag for f in files for event in tf.compat.v1.train.summary_iterator(f) for v in event.summary.value}

    assert {"epoch_loss", "epoch_auc", "batch_loss"} <= tags("train")
    assert {"epoch_loss", "epoch_auc"} <= tags("validation")


@pytest.mark.parametrize(
    "config, chief",
    [
        ({}, True),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False),
        ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief", "index": 0}}, True),
        ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}, False),
    ],
)
def test_chief_is_the_chief_task_or_else_worker_zero(config, chief):
    assert trainer.is_chief(config) is chief


def test_worker_count_counts_chief_and_workers():
    assert trainer.worker_count({}) == 0
    assert trainer.worker_count({"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"], "ps": ["d:1"]}}) == 3


def test_cli_takes_the_transform_output_or_its_three_parts(monkeypatch):
    calls = []
    monkeypatch.setattr(trainer, "run_fn", calls.append)
    common = ["--serving_model_dir", "m", "--log_dir", "l", "--train_steps", "7"]
    trainer.main(["--transform_output", "out/transform", *common])
    trainer.main(["--transform_graph", "g", "--train_files", "a*", "b*", "--eval_files", "e*", *common])
    assert [(c.transform_graph, c.train_files, c.eval_files, c.train_steps) for c in calls] == [
        (
            "out/transform/transform_graph",
            ["out/transform/transformed/train-*.tfrecord.gz"],
            ["out/transform/transformed/eval-*.tfrecord.gz"],
            7,
        ),
        ("g", ["a*", "b*"], ["e*"], 7),
    ]
    with pytest.raises(SystemExit):
        trainer.main(["--transform_graph", "g", *common])


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_two_workers_train_together_and_the_chief_exports(transform_dir, window_dir, tmp_path):
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    scratch = tmp_path / "scratch"  # the workers' TMPDIR: the non-chief's throwaway export goes here
    scratch.mkdir()
    command = [
        sys.executable,
        "-m",
        "taxi_model.trainer",
        "--transform_output",
        str(transform_dir),
        "--serving_model_dir",
        str(tmp_path / "model"),
        "--log_dir",
        str(tmp_path / "logs"),
        "--train_steps",
        "40",
        "--eval_steps",
        "2",
        "--batch_size",
        "64",
    ]
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = []
    try:
        for index, log in enumerate(logs):
            tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            env = {**runtime_env(), "TF_CONFIG": json.dumps(tf_config), "TMPDIR": str(scratch)}
            workers.append(subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT))
        exit_codes = [worker.wait(timeout=300) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    assert exit_codes == [0, 0], "\n".join(log.read_text()[-3000:] for log in logs)
    assert all("MultiWorkerMirroredStrategy" in log.read_text() for log in logs)

    probabilities = _serve(tmp_path / "model", read_csv(window_dir / "eval")[:20])
    assert probabilities.shape == (20, 1) and ((probabilities > 0) & (probabilities < 1)).all()
    assert list(scratch.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "model", "scratch", "worker0.log", "worker1.log"]


def _record_batches(transform_dir, split: str, batch_size: int, count: int, shuffle_seed: int | None) -> list:
    """What the trainer's batches must be: the transformed records, shuffled (buffer, seed) and
    batched as records, then parsed; the model inputs and the label of `count` batches."""
    output = tft.TFTransformOutput(layout.transform_graph_dir(str(transform_dir)))
    spec = output.transformed_feature_spec()
    records = tf.data.TFRecordDataset(
        tf.io.gfile.glob(layout.transformed_glob(str(transform_dir), split)), compression_type="GZIP"
    )
    if shuffle_seed is not None:
        records = records.shuffle(trainer.SHUFFLE_BUFFER, seed=shuffle_seed)
    batches = []
    for serialized in records.repeat().batch(batch_size).take(count):
        parsed = tf.io.parse_example(serialized, spec)
        batches.append(
            (
                {key: parsed[key].numpy() for key in features.MODEL_INPUT_KEYS},
                parsed[features.LABEL_KEY].numpy().astype(np.float32).reshape(-1, 1),
            )
        )
    return batches


def _assert_same_batches(dataset, expected: list) -> None:
    got = list(dataset.take(len(expected)))
    assert len(got) == len(expected)
    for (inputs, label), (want_inputs, want_label) in zip(got, expected, strict=True):
        assert set(inputs) == set(want_inputs)
        for key, value in want_inputs.items():
            assert inputs[key].dtype.as_numpy_dtype == value.dtype and inputs[key].shape == value.shape, key
            np.testing.assert_array_equal(inputs[key].numpy(), value)
        assert label.dtype == tf.float32 and label.shape == want_label.shape
        np.testing.assert_array_equal(label.numpy(), want_label)


@pytest.mark.parametrize("split, shuffle_seed", [("train", 42), ("eval", None)])
def test_batches_are_the_records_shuffled_and_batched(transform_dir, monkeypatch, split, shuffle_seed):
    """The in-memory pipeline (records parsed once, indices shuffled) gives exactly the batches of
    shuffling the records themselves, over several passes (a new order each pass); and reading only
    what `max_batches` batches need changes none of them. A small buffer, so that it matters."""
    monkeypatch.setattr(trainer, "SHUFFLE_BUFFER", 100)
    output = tft.TFTransformOutput(layout.transform_graph_dir(str(transform_dir)))
    files = [layout.transformed_glob(str(transform_dir), split)]
    # The seeds as run_fn sets them (the global seed counts too), whichever tests ran before.
    keras.utils.set_random_seed(42)
    expected = _record_batches(transform_dir, split, 64, 40, shuffle_seed)  # 2560 rows: > 2 passes
    keras.utils.set_random_seed(42)
    _assert_same_batches(trainer._dataset(files, output, 64, shuffle_seed=shuffle_seed), expected)
    keras.utils.set_random_seed(42)
    _assert_same_batches(trainer._dataset(files, output, 64, shuffle_seed=shuffle_seed, max_batches=5), expected[:5])


def test_a_rerun_trains_a_bit_identical_model(transform_dir, window_dir, tmp_path):
    """A retried or reprocessed window must give the same model: every weight bit for bit, and the
    same warmup requests byte for byte."""
    weights = []
    for run in ("first", "second"):
        model = trainer.run_fn(
            train_args(
                transform_dir,
                tmp_path / run,
                train_steps=30,
                eval_steps=2,
                batch_size=64,
                warmup_examples=str(window_dir / "eval" / "*.csv"),
            )
        )
        weights.append([w.numpy() for w in model.weights])
    warmup = [
        (tmp_path / run / "model" / "assets.extra" / "tf_serving_warmup_requests").read_bytes()
        for run in ("first", "second")
    ]
    assert warmup[0] == warmup[1]
    assert len(weights[0]) == len(weights[1])
    for first, second in zip(*weights, strict=True):
        assert first.tobytes() == second.tobytes()
