"""TFMA evaluation of a candidate model (against the model in service, if any) and its blessing.

    python -m taxi_model.evaluate --model <SavedModel> [--serving_base_path <dir>] \
        --eval '<raw eval CSV glob>' --output <dir> [--auc_floor 0.8]

The baseline is the model in service for this window: the newest version under --serving_base_path
(TF-Serving's `<base>/<version>/` layout) older than --baseline_before (the run's own version), found
when the evaluation runs; none when there is no such version. Bounding it by the run's own version
means a rerun of a window is never judged against its own earlier push, nor a backfill of an old
window against a model of a later one.

Runs on the raw eval split; the label comes from the model's `transform_features` signature, so
nothing restates the feature contract. Each model scores the split once, in process; TFMA's metrics
of every slice are then computed from those predictions by taxi_model.slice_metrics (TFMA's own
computations, without its per-example Beam pipeline, which took 418 s at 1M trips).
Writes atomically under --output:
    tfma/           TFMA's metrics, plots and validation result
    metrics.json    overall and per-slice metrics of the candidate (and baseline)
    plots.json      overall calibration (10 bins), confusion matrix at 0.5 and ROC points of each model
    blessing.json   the verdict and its reasons (taxi_model.blessing)
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence

import taxi_model  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split

import numpy as np
import tensorflow as tf
import tensorflow_model_analysis as tfma
from google.protobuf import wrappers_pb2
from tensorflow_model_analysis.proto import config_pb2

from taxi_model import features, serving_contract, slice_metrics, step_logging
from taxi_model.beam_options import BATCH_SIZE
from taxi_model.blessing import BlessingPolicy, Verdict
from taxi_model.fileio import atomic_output_dir
from taxi_model.serving_layout import newest_before, versions_in
from taxi_model.slice_metrics import Scored

CANDIDATE, BASELINE = "candidate", "baseline"
# The slices the Kubeflow taxi example analysed.
SLICES = ((), ("trip_start_hour",), ("company",), ("trip_start_day", "trip_start_month"))
METRICS = (
    "ExampleCount",
    "BinaryAccuracy",
    "AUC",
    "Precision",
    "Recall",
    "Calibration",
    "BinaryCrossEntropy",
    "CalibrationPlot",
    "ConfusionMatrixPlot",
)
AUC, ACCURACY = "auc", "binary_accuracy"
# AUC from 1,000 thresholds, not TFMA's default 10,000: its cost is a pure-Python pass over that many
# buckets for every slice and model (most of an evaluation's time), and at 1,000 the AUC moves by
# less than 0.001 on the sample, a tenth of the blessing's tolerance.
METRIC_CONFIGS = {"AUC": '"num_thresholds": 1000'}
log = logging.getLogger("taxi_model.evaluate")


def serving_version(base_path: str, before: int | None = None) -> str | None:
    """The newest complete version of a TF-Serving model base path, older than `before` if given
    (None if there is none)."""
    if not base_path or not tf.io.gfile.isdir(base_path):
        return None
    versions = versions_in(base_path, tf.io.gfile.listdir, tf.io.gfile.exists)
    version = newest_before(versions, before)
    return None if version is None else f"{base_path.rstrip('/')}/{version}"


def scored(model_dir: str, serialized: list[bytes]) -> Scored:
    """A model's labels and predictions on the serialized raw examples: the label from its
    `transform_features` signature, the prediction from `serving_default` (its `probabilities`, or its
    only output, as TFMA takes it), in batches of BATCH_SIZE, as TFMA's own extraction ran them."""
    loaded = tf.saved_model.load(model_dir)
    transform = loaded.signatures[serving_contract.TRANSFORM_SIGNATURE]
    serve = loaded.signatures[serving_contract.SERVING_SIGNATURE]
    outputs = list(serve.structured_outputs)
    output = serving_contract.OUTPUT_KEY if serving_contract.OUTPUT_KEY in outputs else outputs[0]
    if len(outputs) > 1 and output != serving_contract.OUTPUT_KEY:
        raise ValueError(f"{model_dir}: serving_default has no {serving_contract.OUTPUT_KEY!r} among {outputs}")
    labels, predictions = [], []
    for start in range(0, len(serialized), BATCH_SIZE):
        batch = tf.constant(serialized[start : start + BATCH_SIZE])
        labels.append(transform(examples=batch)[features.LABEL_KEY].numpy().reshape(-1))
        predictions.append(serve(examples=batch)[output].numpy().reshape(-1))
    try:
        return Scored(np.concatenate(labels).astype(np.int64), np.concatenate(predictions))
    except ValueError as error:
        raise ValueError(f"{model_dir}: {error}") from None


def majority_class_rate(labels: np.ndarray) -> float:
    """The accuracy of always predicting the eval set's majority class, with the contract's label."""
    rate = int(labels.sum()) / max(len(labels), 1)
    return max(rate, 1 - rate)


def eval_config(policy: BlessingPolicy, accuracy_bar: float, with_baseline: bool) -> config_pb2.EvalConfig:
    specs = [
        config_pb2.ModelSpec(
            name=CANDIDATE,
            signature_name="serving_default",
            preprocessing_function_names=["transform_features"],
            label_key=features.LABEL_KEY,
        )
    ]
    if with_baseline:
        baseline = config_pb2.ModelSpec()
        baseline.CopyFrom(specs[0])
        baseline.name, baseline.is_baseline = BASELINE, True
        specs.append(baseline)
    overall = [config_pb2.SlicingSpec()]
    auc_threshold = config_pb2.MetricThreshold(
        value_threshold=config_pb2.GenericValueThreshold(lower_bound={"value": policy.auc_floor})
    )
    if with_baseline:
        auc_threshold.change_threshold.CopyFrom(
            config_pb2.GenericChangeThreshold(
                direction=config_pb2.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -policy.auc_tolerance}
            )
        )
    accuracy_threshold = config_pb2.MetricThreshold(
        value_threshold=config_pb2.GenericValueThreshold(lower_bound={"value": accuracy_bar})
    )
    metrics = []
    for name in METRICS:
        metric = config_pb2.MetricConfig(class_name=name, config=METRIC_CONFIGS.get(name, ""))
        gate = {"AUC": auc_threshold, "BinaryAccuracy": accuracy_threshold}.get(name)
        if gate is not None:  # gate only the overall slice
            metric.per_slice_thresholds.append(
                config_pb2.PerSliceMetricThreshold(slicing_specs=overall, threshold=gate)
            )
        metrics.append(metric)
    return config_pb2.EvalConfig(
        # Not the metrics compiled into the Keras model: TFMA would load each model again in another
        # stage to compute them (a third of an evaluation's time), and ours computes the same ones.
        options=config_pb2.Options(include_default_metrics=wrappers_pb2.BoolValue(value=False)),
        model_specs=specs,
        slicing_specs=[config_pb2.SlicingSpec(feature_keys=list(keys)) for keys in SLICES],
        metrics_specs=[config_pb2.MetricsSpec(metrics=metrics)],
    )


def _slice_name(slice_key) -> str:
    return "overall" if not slice_key else " x ".join(f"{k}={v}" for k, v in slice_key)


def metrics_table(output_dir: str) -> dict:
    """{model: {slice: {metric: value}}} from TFMA's output (scalars only)."""
    table: dict = {}
    for record in tfma.load_metrics(output_dir):
        key = tfma.slicer.deserialize_slice_key(record.slice_key)
        for kv in record.metric_keys_and_values:
            if kv.key.is_diff:
                continue
            if kv.value.WhichOneof("type") != "double_value":
                continue
            model = kv.key.model_name or CANDIDATE
            table.setdefault(model, {}).setdefault(_slice_name(key), {})[kv.key.name] = kv.value.double_value.value
    return table


def _calibration_bins(buckets, bins: int = 10) -> list[dict]:
    """TFMA's fine calibration histogram merged into `bins` equal prediction ranges."""
    out = [
        {"lower": i / bins, "upper": (i + 1) / bins, "examples": 0.0, "labels": 0.0, "predictions": 0.0}
        for i in range(bins)
    ]
    for bucket in buckets:
        n = bucket.num_weighted_examples.value
        if not n:
            continue
        index = min(int(min(max(bucket.lower_threshold_inclusive, 0.0), 1.0) * bins), bins - 1)
        out[index]["examples"] += n
        out[index]["labels"] += bucket.total_weighted_label.value
        out[index]["predictions"] += bucket.total_weighted_refined_prediction.value
    return out


def plots_table(output_dir: str) -> dict:
    """{model: {calibration, confusion_matrix, roc}} of the overall slice from TFMA's plots output."""
    table: dict = {}
    for record in tfma.load_plots(output_dir):
        if tfma.slicer.deserialize_slice_key(record.slice_key):
            continue
        for kv in record.plot_keys_and_values:
            plots = table.setdefault(kv.key.model_name or CANDIDATE, {})
            if kv.value.HasField("calibration_histogram_buckets"):
                plots["calibration"] = _calibration_bins(kv.value.calibration_histogram_buckets.buckets)
            if kv.value.HasField("confusion_matrix_at_thresholds"):
                matrices = kv.value.confusion_matrix_at_thresholds.matrices
                at_half = min(matrices, key=lambda m: abs(m.threshold - 0.5))
                plots["confusion_matrix"] = {
                    "threshold": round(at_half.threshold, 6),
                    "true_positives": at_half.true_positives,
                    "false_positives": at_half.false_positives,
                    "true_negatives": at_half.true_negatives,
                    "false_negatives": at_half.false_negatives,
                }
                plots["roc"] = [[m.false_positive_rate, m.recall] for m in matrices[::20]]
    return table


def verdict_from(
    output_dir: str, table: dict, accuracy_bar: float, policy: BlessingPolicy, baseline: str | None
) -> Verdict:
    result = tfma.load_validation_result(output_dir)
    overall = table.get(CANDIDATE, {}).get("overall", {})
    reasons = []
    for per_slice in result.metric_validations_per_slice:
        for failure in per_slice.failures:
            name = failure.metric_key.name
            if failure.metric_key.is_diff:
                base = table.get(BASELINE, {}).get("overall", {}).get(name, float("nan"))
                reasons.append(
                    f"{name} {overall.get(name, float('nan')):.4f} is more than "
                    f"{policy.auc_tolerance} below the serving model's {base:.4f}"
                )
            else:
                bar = policy.auc_floor if name == AUC else accuracy_bar
                reasons.append(f"{name} {failure.metric_value.double_value.value:.4f} is below the bar {bar:.4f}")
    if result.validation_ok:
        reasons.append(f"auc {overall.get(AUC, float('nan')):.4f} >= floor {policy.auc_floor}")
        reasons.append(
            f"binary_accuracy {overall.get(ACCURACY, float('nan')):.4f} >= majority-class rate "
            f"{accuracy_bar - policy.accuracy_margin:.4f} + {policy.accuracy_margin}"
        )
        if baseline:
            base = table.get(BASELINE, {}).get("overall", {}).get(AUC, float("nan"))
            reasons.append(f"auc not worse than the serving model's {base:.4f} (tolerance {policy.auc_tolerance})")
        else:
            reasons.append("no model in service to compare with")
    metrics = {
        k: overall[k] for k in ("example_count", AUC, ACCURACY, "precision", "recall", "calibration") if k in overall
    }
    metrics["majority_class_rate"] = accuracy_bar - policy.accuracy_margin
    return Verdict(blessed=bool(result.validation_ok), reasons=reasons, metrics=metrics, baseline=baseline)


def run(
    model: str,
    eval_pattern: str,
    output: str,
    baseline_model: str | None = None,
    policy: BlessingPolicy = BlessingPolicy(),
) -> Verdict:
    eval_split = features.read_raw_columns(eval_pattern)
    if not eval_split.num_rows:
        raise ValueError(f"no eval rows match {eval_pattern}")
    serialized = features.serialized_examples(eval_split)
    models = {CANDIDATE: model, **({BASELINE: baseline_model} if baseline_model else {})}
    scores = {name: scored(path, serialized) for name, path in models.items()}
    del serialized
    accuracy_bar = majority_class_rate(scores[CANDIDATE].labels) + policy.accuracy_margin
    config = eval_config(policy, accuracy_bar, with_baseline=bool(baseline_model))
    columns = {name: eval_split.column(name).to_pylist() for keys in SLICES for name in keys}
    evaluation = slice_metrics.evaluate(config, slice_metrics.slice_columns(columns, SLICES), list(scores.values()))
    with atomic_output_dir(output) as staging:
        tfma_dir = f"{staging}/tfma"
        slice_metrics.write(evaluation, config, tfma_dir, models)
        table = metrics_table(tfma_dir)
        verdict = verdict_from(tfma_dir, table, accuracy_bar, policy, baseline_model)
        with tf.io.gfile.GFile(f"{staging}/metrics.json", "w") as f:  # closed: flushed to gs:// too
            f.write(json.dumps(table, indent=1, sort_keys=True))
        with tf.io.gfile.GFile(f"{staging}/plots.json", "w") as f:  # closed: flushed to gs:// too
            f.write(json.dumps(plots_table(tfma_dir), indent=1))
        with tf.io.gfile.GFile(f"{staging}/blessing.json", "w") as f:  # closed: flushed to gs:// too
            f.write(json.dumps(verdict.to_dict(), indent=1))
    return verdict


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--serving_base_path", default="", help="TF-Serving base path of the model in service")
    parser.add_argument(
        "--baseline_before",
        type=int,
        default=None,
        help="only versions older than this one (the run's own version) can be the baseline",
    )
    parser.add_argument("--eval", required=True, help="glob of the raw eval CSV files")
    parser.add_argument("--output", required=True)
    parser.add_argument("--variant", default="model", help="only names the log lines")
    parser.add_argument("--auc_floor", type=float, default=BlessingPolicy.auc_floor)
    parser.add_argument("--auc_tolerance", type=float, default=BlessingPolicy.auc_tolerance)
    args = parser.parse_args(argv)
    step_logging.configure()
    policy = BlessingPolicy(auc_floor=args.auc_floor, auc_tolerance=args.auc_tolerance)
    baseline = serving_version(args.serving_base_path, before=args.baseline_before)
    log.info(
        "%s: baseline %s",
        args.variant,
        baseline or (f"none (no version under {args.serving_base_path!r} older than {args.baseline_before})"),
    )
    verdict = run(args.model, args.eval, args.output, baseline, policy)
    for line in verdict.lines(args.variant):
        log.info(line)


if __name__ == "__main__":
    main()
