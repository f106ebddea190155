"""TFMA's metrics, plots and validation of every slice, from labels and predictions in memory.

TFMA's own evaluation feeds each example to its metric combiners one by one, once per slice the
example falls in, in a Beam pipeline: at 1M trips that was 418 s for two models x ~170 slices. The
combiners the taxi metrics need (example count, the confusion matrix at 0.5, the 10,000-bucket
calibration histogram, the weighted label and prediction sums, the binary cross-entropy) are all
sums, so here they are NumPy sums per slice. `np.bincount` adds its weights in input order, as one
TFMA accumulator adds its examples, so the sums are TFMA's to the last bit. Everything else is TFMA's
own code: the computations the config asks for, the derived metrics (AUC, precision, recall,
calibration, the plots), the difference against the baseline, the thresholds' validation, and the
output protos and files, which tfma.load_metrics, load_plots and load_validation_result read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tensorflow_model_analysis.contrib.aggregates import binary_confusion_matrices as bcm_aggregates
from tensorflow_model_analysis.evaluators import metrics_plots_and_validations_evaluator as tfma_evaluator
from tensorflow_model_analysis.evaluators import metrics_validator
from tensorflow_model_analysis.metrics import binary_confusion_matrices as bcm
from tensorflow_model_analysis.metrics import (
    calibration,
    calibration_histogram,
    cross_entropy_metrics,
    example_count,
    metric_specs,
    metric_types,
)
from tensorflow_model_analysis.proto import config_pb2
from tensorflow_model_analysis.utils import config_util
from tensorflow_model_analysis.writers import eval_config_writer
from tensorflow_model_analysis.writers import metrics_plots_and_validations_writer as tfma_writer

SliceKey = tuple[tuple[str, object], ...]


@dataclass(frozen=True)
class Scored:
    """One model's labels (0/1) and predicted probabilities, one per eval example, in input order."""

    labels: np.ndarray
    predictions: np.ndarray

    def __post_init__(self):
        bad = int(np.count_nonzero(~np.isfinite(self.predictions)))
        if bad:
            raise ValueError(f"{bad} of {len(self.predictions)} predictions are NaN or infinite")


@dataclass(frozen=True)
class SliceColumn:
    """The slices of one slicing spec: each row's slice number (-1: in none) and each slice's key."""

    rows: np.ndarray
    keys: list[SliceKey]


def slice_columns(columns: Mapping[str, Sequence], specs: Sequence[Sequence[str]]) -> list[SliceColumn]:
    """TFMA's slices of the rows for each spec (a tuple of feature names; () is the overall slice):
    a row is in the slice of its values of the spec's features, and in none of the spec's slices
    when one of them is missing (None). Keys are sorted by feature name, as TFMA's slicer sorts them,
    and bytes are text, as there."""
    n = len(next(iter(columns.values()))) if columns else 0
    out = []
    for spec in specs:
        names = sorted(spec)
        numbers: dict[tuple, int] = {}
        values = zip(*(columns[name] for name in names), strict=True) if names else ((),) * n
        rows = np.fromiter(
            (-1 if None in key else numbers.setdefault(key, len(numbers)) for key in values), np.int64, count=n
        )
        out.append(SliceColumn(rows, [tuple(zip(names, map(_slice_value, key), strict=True)) for key in numbers]))
    return out


def _slice_value(value):
    """A feature value as TFMA's slicer keys it: bytes as text."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _ordered_sums(rows: np.ndarray, weights: np.ndarray, slices: int) -> np.ndarray:
    """Per slice, the sum of the weights in input order (np.bincount adds them one by one)."""
    return np.bincount(rows, weights=weights, minlength=slices)


def _combiner_outputs(
    computation: metric_types.MetricComputation, rows: np.ndarray, slices: int, scored: Scored
) -> list[dict]:
    """What the computation's TFMA combiner extracts for each slice, fed every example of it in order."""
    combiner, (key,) = computation.combiner, computation.keys
    keep = rows >= 0
    rows, labels = rows[keep], scored.labels[keep].astype(np.float64)
    predictions = scored.predictions[keep].astype(np.float64)  # TFMA adds them as Python floats
    examples = _ordered_sums(rows, np.ones(len(rows)), slices)
    if isinstance(combiner, example_count._ExampleCountCombiner):
        return [{key: examples[s]} for s in range(slices)]
    if isinstance(combiner, bcm._BinaryConfusionMatrixCombiner):
        positive = labels == 1.0
        out = [{key: {}} for _ in range(slices)]
        for threshold in combiner._binary_confusion_matrices._thresholds:
            above = predictions > threshold
            counts = [_ordered_sums(rows, (positive == p) & (above == a), slices) for p, a in _QUADRANTS]
            for s in range(slices):
                tp, fn, fp, tn = (float(c[s]) for c in counts)
                matrix = bcm_aggregates.Matrix(tp=tp, tn=tn, fp=fp, fn=fn)
                out[s][key][threshold] = bcm_aggregates._ThresholdEntry(matrix, [], [], [], [])
        return out
    if isinstance(combiner, calibration_histogram._CalibrationHistogramCombiner):
        buckets = combiner._num_buckets + 2
        index = np.floor((predictions - combiner._left) / combiner._range * combiner._num_buckets + 1)
        cell = rows * buckets + np.clip(index, 0, buckets - 1).astype(np.int64)
        cells, inverse = np.unique(cell, return_inverse=True)
        sums = [_ordered_sums(inverse, w, len(cells)) for w in (labels, predictions, np.ones(len(cell)))]
        out = [{key: []} for _ in range(slices)]
        for i, c in enumerate(cells.tolist()):
            out[c // buckets][key].append(
                calibration_histogram.Bucket(c % buckets, float(sums[0][i]), float(sums[1][i]), float(sums[2][i]))
            )
        return out
    if isinstance(combiner, calibration._WeightedLabelsPredictionsExamplesCombiner):
        label_sums, prediction_sums = _ordered_sums(rows, labels, slices), _ordered_sums(rows, predictions, slices)
        out = []
        for s in range(slices):
            sums = calibration._WeightedLabelsPredictionsExamples()
            sums.total_weighted_labels = float(label_sums[s])
            sums.total_weighted_predictions = float(prediction_sums[s])
            sums.total_weighted_examples = float(examples[s])
            out.append({key: sums})
        return out
    if isinstance(combiner, cross_entropy_metrics._BinaryCrossEntropyCombiner) and not combiner._from_logits:
        smoothing = combiner._label_smoothing
        label = labels * (1.0 - smoothing) + 0.5 * smoothing
        probability = scored.predictions[keep]  # TFMA takes the log of the model's float32
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = -np.multiply(label, np.log(probability)) - np.multiply(1 - label, np.log(1 - probability))
            mean = np.divide(_ordered_sums(rows, entropy, slices), examples)
        return [{key: mean[s]} for s in range(slices)]
    raise NotImplementedError(f"{key.name} needs TFMA's {type(combiner).__name__}, which is not computed here")


# (label is positive, prediction is above the threshold) for tp, fn, fp, tn
_QUADRANTS = ((True, True), (True, False), (False, True), (False, False))


def _with_diffs(metrics: dict, baseline: str | None) -> dict:
    """TFMA's cross-model differences (candidate - baseline) of every numeric metric; a copy of the
    `add_diff_metrics` step of its evaluator, which is local to a Beam transform there."""
    if not baseline:
        return metrics
    diffs = {}
    for key, value in metrics.items():
        if tfma_evaluator._is_private_metrics(key) or key.is_diff:
            continue
        base = key.make_baseline_key(baseline)
        if key.model_name != baseline and base in metrics and tfma_evaluator._is_metric_diffable(value):
            diffs[key.make_diff_key()] = value - metrics[base]
    return {**metrics, **diffs}


def _with_defaults(config: config_pb2.EvalConfig) -> config_pb2.EvalConfig:
    """The config as TFMA's evaluation completes it (a single model's name emptied, the baseline's
    computations added)."""
    has_baseline = any(spec.is_baseline for spec in config.model_specs)
    return config_util.update_eval_config_with_defaults(config, has_baseline=has_baseline)


@dataclass(frozen=True)
class Evaluation:
    """Per slice, TFMA's metrics and plots; and TFMA's validation result of the thresholds."""

    metrics: dict[SliceKey, dict]
    plots: dict[SliceKey, dict]
    validation: object  # validation_result_pb2.ValidationResult


def evaluate(config: config_pb2.EvalConfig, slices: Sequence[SliceColumn], scored: Sequence[Scored]) -> Evaluation:
    """TFMA's evaluation of `config` (without confidence intervals or cross-slice metrics) on the
    slices, `scored` holding each model of the config's model_specs, in their order."""
    config = _with_defaults(config)
    computations = tfma_evaluator._filter_and_separate_computations(
        metric_specs.to_computations(config.metrics_specs, config)
    )
    if computations.cross_slice_computations or computations.ci_derived_computations:
        raise NotImplementedError("cross-slice and confidence-interval metrics are not computed here")
    by_model = {spec.name: s for spec, s in zip(config.model_specs, scored, strict=True)}
    baseline = next((spec.name for spec in config.model_specs if spec.is_baseline), None)
    per_slice: dict[SliceKey, dict] = {}
    for column in slices:
        combined = [{} for _ in column.keys]
        for computation in computations.non_derived_computations:
            model = by_model[computation.keys[0].model_name]
            for s, output in enumerate(_combiner_outputs(computation, column.rows, len(column.keys), model)):
                combined[s].update(output)
        per_slice.update(zip(column.keys, combined, strict=True))
    metrics, plots = {}, {}
    combine = tfma_writer.CombineValidations(config)
    validation = combine.create_accumulator()
    for slice_key, values in per_slice.items():
        for derived in computations.derived_computations:
            values.update(derived.result(values))
        _, values = tfma_evaluator._remove_private_metrics(slice_key, _with_diffs(values, baseline))
        _, metrics[slice_key] = tfma_evaluator._filter_by_key_type((slice_key, values), metric_types.MetricKey)
        _, plots[slice_key] = tfma_evaluator._filter_by_key_type((slice_key, values), metric_types.PlotKey)
        validation = combine.add_input(
            validation, metrics_validator.validate_metrics((slice_key, metrics[slice_key]), config)
        )
    return Evaluation(metrics, plots, combine.extract_output(validation))


def write(evaluation: Evaluation, config: config_pb2.EvalConfig, output_path: str, models: Mapping[str, str]) -> None:
    """The evaluation as TFMA's ExtractEvaluateAndWriteResults writes it under output_path (slices in
    sorted order, so the same evaluation always gives the same bytes)."""
    tf.io.gfile.makedirs(output_path)
    order = sorted(evaluation.metrics, key=repr)
    records = {
        "metrics-00000-of-00001.tfrecord": [
            tfma_writer.convert_slice_metrics_to_proto((k, evaluation.metrics[k]), None) for k in order
        ],
        "plots-00000-of-00001.tfrecord": [
            tfma_writer.convert_slice_plots_to_proto((k, evaluation.plots[k]), None) for k in order
        ],
        "validations.tfrecord": [evaluation.validation],
    }
    for name, protos in records.items():
        with tf.io.TFRecordWriter(f"{output_path}/{name}") as out:
            for proto in protos:
                out.write(proto.SerializeToString())
    config = _with_defaults(config)
    with tf.io.gfile.GFile(f"{output_path}/{eval_config_writer.EVAL_CONFIG_FILE}.json", "w") as f:
        f.write(eval_config_writer._serialize_eval_run(config, "<in memory>", "<unknown>", dict(models)))
