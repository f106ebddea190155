"""taxi_model.slice_metrics against TFMA itself: its combiners example by example, and its whole
Beam evaluation (ExtractEvaluateAndWriteResults, which taxi_model.evaluate ran until it was replaced)
on the same models and eval rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.evaluators import metrics_plots_and_validations_evaluator as tfma_evaluator
from tensorflow_model_analysis.metrics import metric_specs, metric_types
from tensorflow_model_analysis.utils import config_util

from taxi_model import evaluate, features, slice_metrics
from taxi_model.blessing import BlessingPolicy
from taxi_model.columns import read_rows


def test_slices_follow_tfmas_slicer():
    columns = {"hour": [3, 3, None, 4], "company": [b"A", None, b"B", b"A"], "day": [1, 2, 1, 1]}
    overall, hours, crossed = slice_metrics.slice_columns(columns, [(), ("hour",), ("hour", "company")])
    assert overall.keys == [()] and overall.rows.tolist() == [0, 0, 0, 0]
    assert hours.keys == [(("hour", 3),), (("hour", 4),)] and hours.rows.tolist() == [0, 0, -1, 1]
    # keys sorted by feature name; bytes as text; a row missing either feature is in no slice
    assert crossed.keys == [(("company", "A"), ("hour", 3)), (("company", "A"), ("hour", 4))]
    assert crossed.rows.tolist() == [0, -1, -1, 1]


def test_predictions_that_are_not_numbers_are_refused():
    with pytest.raises(ValueError, match="1 of 3 predictions are NaN or infinite"):
        slice_metrics.Scored(np.array([0, 1, 1]), np.array([0.1, np.nan, 0.9], np.float32))


def _tfma_combiners(config, scored: slice_metrics.Scored) -> dict:
    """What TFMA's own combiners extract, fed the examples one by one in order (one accumulator)."""
    config = config_util.update_eval_config_with_defaults(config, has_baseline=False)
    computations = tfma_evaluator._filter_and_separate_computations(
        metric_specs.to_computations(config.metrics_specs, config)
    )
    out = {}
    for computation in computations.non_derived_computations:
        combiner = computation.combiner
        accumulator = combiner.create_accumulator()
        for label, prediction in zip(scored.labels, scored.predictions, strict=True):
            inputs = {"labels": np.array([label]), "predictions": np.array([prediction]), "example_weights": None}
            accumulator = combiner.add_input(accumulator, metric_types.StandardMetricInputs(inputs))
        out.update(combiner.extract_output(accumulator))
    return out


def test_each_slices_metrics_are_tfmas_to_the_last_bit():
    rng = np.random.default_rng(1)
    predictions = rng.beta(0.7, 2.5, 3000).astype(np.float32)
    predictions[:6] = [0.5, 1e-7, 0.9999999, 0.50001, 0.99995, 0.0001]  # bucket and threshold edges
    labels = (rng.random(3000) < predictions).astype(np.int64)
    hours = rng.integers(0, 24, 3000).tolist()
    scored = slice_metrics.Scored(labels, predictions)
    config = evaluate.eval_config(BlessingPolicy(), 0.7, with_baseline=False)
    ours = slice_metrics.evaluate(config, slice_metrics.slice_columns({"h": hours}, [(), ("h",)]), [scored])
    for slice_key, rows in [((), np.arange(3000)), ((("h", 5),), np.flatnonzero(np.array(hours) == 5))]:
        theirs = _tfma_combiners(config, slice_metrics.Scored(labels[rows], predictions[rows]))
        for derived in tfma_evaluator._filter_and_separate_computations(
            metric_specs.to_computations(
                config_util.update_eval_config_with_defaults(config).metrics_specs,
                config_util.update_eval_config_with_defaults(config),
            )
        ).derived_computations:
            theirs.update(derived.result(theirs))
        _, theirs = tfma_evaluator._remove_private_metrics(slice_key, theirs)
        assert set(ours.metrics[slice_key]) | set(ours.plots[slice_key]) == set(theirs)
        for key, value in ours.metrics[slice_key].items():
            assert value == theirs[key] or (np.isnan(value) and np.isnan(theirs[key])), key.name
        for key, value in ours.plots[slice_key].items():
            assert value.SerializeToString() == theirs[key].SerializeToString(), key.name


def _records(load, path) -> dict:
    """TFMA's output records as {slice: sorted [(key, value)]}, in bytes: the order of slices and of
    the metrics within a slice is not part of what it says."""

    def pairs(record):
        values = getattr(record, "metric_keys_and_values", None) or record.plot_keys_and_values
        return sorted((kv.key.SerializeToString(), kv.value.SerializeToString(deterministic=True)) for kv in values)

    return {record.slice_key.SerializeToString(): pairs(record) for record in load(path)}


def test_an_evaluation_writes_what_tfmas_own_pipeline_writes(trained_model, one_step_model, window_dir, tmp_path):
    import apache_beam as beam
    from tfx_bsl.public.tfxio import TFExampleBeamRecord

    candidate, baseline = str(one_step_model), str(trained_model["model"])
    pattern = str(window_dir / "eval" / "part-*.csv")
    ours = evaluate.run(candidate, pattern, str(tmp_path / "ours"), baseline, BlessingPolicy(auc_floor=0.5))

    # The evaluation as taxi_model.evaluate ran it before: TFMA loading both models in a Beam pipeline.
    rows = read_rows(pattern)
    serialized = [features.raw_example(r).SerializeToString() for r in rows]
    accuracy_bar = ours.metrics["majority_class_rate"] + BlessingPolicy().accuracy_margin
    config = evaluate.eval_config(BlessingPolicy(auc_floor=0.5), accuracy_bar, with_baseline=True)
    models = [
        tfma.default_eval_shared_model(eval_saved_model_path=path, model_name=name, eval_config=config)
        for name, path in ((evaluate.CANDIDATE, candidate), (evaluate.BASELINE, baseline))
    ]
    examples = TFExampleBeamRecord(physical_format="inmem", raw_record_column_name=tfma.ARROW_INPUT_COLUMN)
    theirs = str(tmp_path / "theirs")
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        _ = (
            pipeline
            | beam.Create(serialized, reshuffle=False)
            | examples.BeamSource(batch_size=1000)
            | tfma.ExtractEvaluateAndWriteResults(eval_config=config, eval_shared_model=models, output_path=theirs)
        )
    ours_dir = str(tmp_path / "ours" / "tfma")
    assert _records(tfma.load_metrics, ours_dir) == _records(tfma.load_metrics, theirs)
    assert _records(tfma.load_plots, ours_dir) == _records(tfma.load_plots, theirs)
    assert tfma.load_validation_result(ours_dir) == tfma.load_validation_result(theirs)
    # and so the same reports (as JSON: a slice of one class has a NaN AUC, and NaN != NaN)
    table = evaluate.metrics_table(theirs)
    assert (tmp_path / "ours" / "metrics.json").read_text() == json.dumps(table, indent=1, sort_keys=True)
    assert json.dumps(evaluate.plots_table(ours_dir)) == json.dumps(evaluate.plots_table(theirs))
    verdict = evaluate.verdict_from(theirs, table, accuracy_bar, BlessingPolicy(auc_floor=0.5), baseline)
    assert ours.to_dict() == verdict.to_dict()
