"""Batch scoring with RunInference: the served model's answers for every trip, once each, the same on a rerun."""

from __future__ import annotations

import argparse
import collections
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import taxi_model  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to
from model_test_data import read_csv, runtime_env, synthetic_trips, write_csv

from taxi_model import batch_score, features
from taxi_model.beam_options import BATCH_SIZE
from taxi_model.serving.client import serialized_examples
from taxi_model.serving.inference import ModelVersion
from taxi_model.serving_contract import OUTPUT_KEY, SERVING_INPUT_KEY, SERVING_SIGNATURE

VERSION, DAY, SCORED_AT = 201601020000, "2016-01-01", "2016-01-02T00:00:00+00:00"


def test_a_probability_keeps_every_bit_of_its_float32_and_keys_are_quoted_as_csv():
    for value in (np.float32(1 / 3), np.nextafter(np.float32(0.5), np.float32(1)), np.float32(1e-30)):
        line = batch_score.prediction_line("abc", float(value), 7, DAY, SCORED_AT)
        day, key, version, probability, scored_at = line.split(",")
        assert (day, key, version, scored_at) == (DAY, "abc", "7", SCORED_AT)
        assert np.float32(float(probability)) == value
    assert batch_score.prediction_line('a,"b', 0.25, 7, DAY, SCORED_AT) == f'{DAY},"a,""b",7,0.25,{SCORED_AT}'


def test_a_csv_line_becomes_the_raw_example_that_clients_send(tmp_path):
    (row,) = synthetic_trips(1, seed=3)
    row["company"] = "Taxi, Inc."  # a quoted field with the separator in it
    line = write_csv(tmp_path / "part-00000.csv", [row]).read_text().splitlines()[1]
    assert batch_score.parse_line(line) == row
    assert list(batch_score.keyed_examples(line)) == [
        (row["unique_key"], features.raw_example(row).SerializeToString(deterministic=True))
    ]
    assert list(batch_score.keyed_examples("")) == []
    with pytest.raises(ValueError, match="has 19 columns, not 2"):
        batch_score.parse_line("a,b")


def test_scored_at_is_a_utc_iso_timestamp_kept_as_given():
    assert batch_score.utc_timestamp(SCORED_AT) == SCORED_AT
    assert batch_score.utc_timestamp("2016-01-02T00:00:00Z") == "2016-01-02T00:00:00Z"
    for bad in ("2016-01-02T00:00:00", "2016-01-02T01:00:00+01:00", "yesterday"):
        with pytest.raises(argparse.ArgumentTypeError):
            batch_score.utc_timestamp(bad)


def test_the_model_version_must_be_the_version_directorys(tmp_path, capsys):
    with pytest.raises(SystemExit):
        batch_score.main(
            [
                "--trips",
                "x",
                "--model",
                "/serving/taxi/5/",
                "--model_version",
                "6",
                "--day",
                DAY,
                "--scored_at",
                SCORED_AT,
            ]
            + ["--output", str(tmp_path / "out")]
        )
    assert "--model_version 6 is not the version of --model /serving/taxi/5/" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_mean_is_the_same_in_any_order_of_summing():
    rng = np.random.default_rng(1)
    values = [float(v) for v in rng.random(1000, dtype=np.float32)] + [float(np.float32(1e-40))]
    mean = batch_score.ExactMean()

    def combined(parts):
        accumulators = []
        for part in parts:
            accumulator = mean.create_accumulator()
            for value in part:
                accumulator = mean.add_input(accumulator, value)
            accumulators.append(accumulator)
        return mean.extract_output(mean.merge_accumulators(accumulators))

    shuffled = random.Random(2).sample(values, len(values))
    results = {combined([values]), combined([shuffled[:17], shuffled[17:600], shuffled[600:]])}
    assert results == {(1001, math.fsum(values) / 1001)}  # fsum: the correctly rounded sum
    assert mean.extract_output(mean.create_accumulator()) == (0, None)


def _batches_of(pairs: list[tuple[str, bytes]]) -> set[tuple]:
    """The batches the spec gives: rows grouped by their key's batch, sorted, cut at MAX_BATCH_SIZE."""
    batches = max(1, math.ceil(len(pairs) / BATCH_SIZE))
    groups = collections.defaultdict(list)
    for pair in pairs:
        groups[batch_score.batch_of(pair[0], batches)].append(pair)
    size = batch_score.MAX_BATCH_SIZE
    return {tuple(rows[i : i + size]) for rows in map(sorted, groups.values()) for i in range(0, len(rows), size)}


@pytest.mark.parametrize("repeated_keys", [False, True])
def test_batches_depend_only_on_the_set_of_rows(repeated_keys):
    # Shuffled and spread over bundles (reshuffle) the pairs still make the same batches: 3 of about
    # 830 rows, or, with one key on every row, a full batch and the rest.
    keys = ["same"] * 2500 if repeated_keys else [f"{i:024x}" for i in range(2500)]
    pairs = [(key, f"example {i}".encode()) for i, key in enumerate(keys)]
    expected = _batches_of(pairs)
    assert len(expected) == (2 if repeated_keys else 3)
    shuffled = random.Random(3).sample(pairs, len(pairs))
    with beam.Pipeline(options=batch_score.pipeline_options([])) as pipeline:
        batches = (
            pipeline | beam.Create(shuffled, reshuffle=True) | batch_score.DeterministicBatches() | beam.Map(tuple)
        )
        assert_that(batches, equal_to(list(expected)))


def _score(trips: str, model: Path, output: Path) -> None:
    """The step as Airflow's local platform runs it."""
    subprocess.run(
        [sys.executable, "-m", "taxi_model.batch_score", "--runner=FnApiRunner", f"--trips={trips}"]
        + [
            f"--model={model}",
            f"--model_version={VERSION}",
            f"--day={DAY}",
            f"--scored_at={SCORED_AT}",
            f"--output={output}",
        ],
        check=True,
        env=runtime_env(),
    )


def _lines(output: Path) -> tuple[list[str], list[str]]:
    """(headers, data lines) of the predictions shards."""
    headers, lines = [], []
    for shard in sorted(output.glob("predictions-*.csv")):
        header, *rows = shard.read_text().splitlines()
        headers.append(header)
        lines.extend(rows)
    return headers, lines


@pytest.fixture(scope="module")
def scored(trained_model, window_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("batch_score") / "scores"
    _score(str(window_dir / "eval" / "part-*.csv"), trained_model["model"], output)
    return output


def test_every_trip_is_scored_once_with_the_served_models_answer(scored, trained_model, window_dir):
    rows = read_csv(window_dir / "eval")
    headers, lines = _lines(scored)
    assert headers and set(headers) == {batch_score.HEADER}
    parsed = [line.split(",") for line in lines]
    assert {day for day, *_ in parsed} == {DAY}
    assert collections.Counter(key for _day, key, *_ in parsed) == collections.Counter(r["unique_key"] for r in rows)
    assert {(version, scored_at) for _, _, version, _, scored_at in parsed} == {(str(VERSION), SCORED_AT)}
    # The model server's own answer for each row (its in-process path: what REST and gRPC run).
    served = ModelVersion.load("taxi", VERSION, str(trained_model["model"]), warm_up=False)
    _, outputs = served.predict(
        SERVING_SIGNATURE, {SERVING_INPUT_KEY: np.array(serialized_examples(rows), dtype=object)}
    )
    expected = dict(zip((r["unique_key"] for r in rows), outputs[OUTPUT_KEY].reshape(-1).tolist(), strict=True))
    probabilities = {key: float(probability) for _, key, _, probability, _ in parsed}
    assert max(abs(probabilities[key] - expected[key]) for key in expected) <= 1e-6
    summary = json.loads((scored / batch_score.SUMMARY_FILE).read_text())
    assert summary["rows"] == len(rows) == 300 and summary["model_version"] == VERSION
    assert summary["mean_probability"] == pytest.approx(math.fsum(probabilities.values()) / len(rows), abs=1e-9)


def test_a_rerun_replaces_the_output_with_the_same_rows(scored, trained_model, window_dir):
    _, before = _lines(scored)
    summary_before = (scored / batch_score.SUMMARY_FILE).read_text()
    _score(str(window_dir / "eval" / "part-*.csv"), trained_model["model"], scored)
    _, after = _lines(scored)
    assert len(after) == len(before) == 300 and set(after) == set(before)
    assert (scored / batch_score.SUMMARY_FILE).read_text() == summary_before
    assert sorted(p.name for p in scored.parent.iterdir()) == ["scores"]  # no .tmp-* or .old-* left
